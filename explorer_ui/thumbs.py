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


def grouped_thumbs_html(groups: Sequence[tuple[str, Sequence[tuple[Path, str, int]]]]) -> str:
    """One titled grid per group (``(title, items)``): e.g. each top latent's images under its
    id and name, instead of one grid mixing them."""
    if not groups:
        return thumbs_html([])
    return "".join(
        f'<div class="thumb-group"><div class="thumb-group-title">{html.escape(title)}</div>'
        f"{thumbs_html(items)}</div>"
        for title, items in groups
    )


def thumbs_html(
    items: Sequence[tuple[Path, str] | tuple[Path, str, int] | tuple[Path, str, int, int]],
) -> str:
    """``(fpath, caption)``, ``(fpath, caption, latent_id)`` or ``(fpath, caption, latent_id,
    item)`` items -> the grid's HTML; the item id goes into ``data-item`` and the tooltip."""
    clickable = any(len(item) > 2 for item in items)
    figures = []
    for fpath, caption, *ids in items:
        src = "gradio_api/file=" + quote(str(fpath))
        data = f' data-latent="{int(ids[0])}"' if ids else ""
        title = html.escape(caption) if not ids else f"open latent {int(ids[0])}"
        if len(ids) > 1:
            data += f' data-item="{int(ids[1])}"'
            title = f"item {int(ids[1])}: {html.escape(caption)}; click to {title}"
        figures.append(
            f'<figure{data} title="{title}"><img src="{src}" loading="lazy" alt="">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    if not figures:
        figures.append("<em>no images</em>")
    kind = "thumbs clickable" if clickable else "thumbs"
    return f'<div class="{kind}">{"".join(figures)}</div>'
