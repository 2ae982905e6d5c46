"""``UploadedImage``: the image input of every tab, handing over the uploaded file unopened.

In a module of its own because Gradio writes a type stub (``uploaded_image.pyi``, ignored by git)
beside any module that defines a component class."""

from __future__ import annotations

import gradio as gr

from sae_explorer.images import decode_data_url


class UploadedImage(gr.Image):
    """``gr.Image`` that hands the handler the uploaded file's path without opening it, so the
    library's validator (pixel limit, size after CLIP's resize, corrupt files, odd modes) gives
    the user a clear message instead of PIL failing inside Gradio. An inline ``data:`` URL (API
    clients) is handed over as its bytes, size-checked before decoding, never decoded and
    re-saved by Gradio."""

    is_template = True  # render with gr.Image's own frontend (as Gradio's ClearButton does)

    def preprocess(self, payload):  # type: ignore[override]
        if payload is None:
            return None
        if payload.url and payload.url.startswith("data:"):
            try:
                return decode_data_url(payload.url)
            except ValueError as e:
                raise gr.Error(str(e), print_exception=False) from e
        return payload.path
