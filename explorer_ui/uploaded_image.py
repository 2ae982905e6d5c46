"""``UploadedImage``: the image input of every tab, handing over the uploaded file unopened.

In a module of its own because Gradio writes a type stub (``uploaded_image.pyi``, ignored by git)
beside any module that defines a component class."""

from __future__ import annotations

import gradio as gr


class UploadedImage(gr.Image):
    """``gr.Image`` that hands the handler the uploaded file's path without opening it, so the
    library's validator (pixel limit, corrupt files, odd modes) gives the user a clear message
    instead of PIL failing inside Gradio."""

    is_template = True  # render with gr.Image's own frontend (as Gradio's ClearButton does)

    def preprocess(self, payload):  # type: ignore[override]
        if payload is None or (payload.url and payload.url.startswith("data:")):
            return super().preprocess(payload)
        return payload.path
