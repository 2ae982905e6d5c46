"""Grids of corpus thumbnails: plain HTML over the thumbnail files, which are served as they are
(nothing is re-encoded or copied per request, unlike ``gr.Gallery``). A clickable grid reports
the ``data-latent`` of the clicked thumbnail as the event's ``latent``."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import gradio as gr

from explorer_ui.wiring import static_text

THUMBS_CSS = static_text("thumbs.css")
THUMBS_CLICK_JS = static_text("thumbs_click.js")


def thumbs_component(elem_id: str, clickable: bool = False) -> gr.HTML:
    """An empty grid; clickable grids fire ``click`` with ``latent`` in the event data."""
    return gr.HTML(
        thumbs_html([]),
        elem_id=elem_id,
        css_template=THUMBS_CSS,
        js_on_load=THUMBS_CLICK_JS if clickable else None,
    )


def thumbs_html(items: Sequence[tuple[Path, str] | tuple[Path, str, int]]) -> str:
    """``(fpath, caption)`` or ``(fpath, caption, latent_id)`` items -> the grid's HTML."""
    clickable = any(len(item) > 2 for item in items)
    figures = []
    for fpath, caption, *latent in items:
        src = "gradio_api/file=" + quote(str(fpath))
        data = f' data-latent="{int(latent[0])}"' if latent else ""
        title = f"open latent {int(latent[0])}" if latent else html.escape(caption)
        figures.append(
            f'<figure{data} title="{title}"><img src="{src}" loading="lazy" alt="">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    if not figures:
        figures.append("<em>no images</em>")
    kind = "thumbs clickable" if clickable else "thumbs"
    return f'<div class="{kind}">{"".join(figures)}</div>'
