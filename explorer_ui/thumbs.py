"""Grids of corpus thumbnails: plain HTML over the thumbnail files, which are served as they are
(nothing is re-encoded or copied per request, unlike ``gr.Gallery``) from a route naming them by
size and item only (``serving.thumbs_route``: no server folder in the page). A clickable grid
reports the ``data-latent`` of the clicked thumbnail as the event's ``latent``."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import gradio as gr

from explorer_ui.serving import THUMBS_ROUTE
from explorer_ui.wiring import static_text
from sae_explorer.explorer import CaptionedImage

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


class Figure(NamedTuple):
    """One thumbnail of a grid: its file, the caption under it, and what a click opens: the
    latent (``latent``) or, failing that, the corpus item in Inspect (``item``)."""

    fpath: Path
    caption: str
    latent: int | None = None
    item: int | None = None


def grouped_thumbs_html(groups: Sequence[tuple[str, Sequence[Figure]]]) -> str:
    """One titled grid per group (``(title, figures)``): e.g. each top latent's images under its
    id and name, instead of one grid mixing them."""
    if not groups:
        return thumbs_html([])
    return "".join(
        f'<div class="thumb-group"><div class="thumb-group-title">{html.escape(title)}</div>'
        f"{thumbs_html(figures)}</div>"
        for title, figures in groups
    )


def thumbs_html(figures: Sequence[Figure]) -> str:
    """The grid's HTML; ``data-latent`` / ``data-item`` say what a click on a figure opens."""
    clickable = any(f.latent is not None or f.item is not None for f in figures)
    parts = []
    for f in figures:
        src = thumb_src(f.fpath)
        caption = html.escape(f.caption)
        data, title = "", caption
        if f.item is not None:
            data += f' data-item="{int(f.item)}"'
            title = f"item {int(f.item)}: {caption}; click to inspect it"
        if f.latent is not None:
            data += f' data-latent="{int(f.latent)}"'
            title = title.replace("click to inspect it", "") + f"click to open latent {f.latent}"
        parts.append(
            f'<figure{data} title="{title}"><img src="{src}" loading="lazy" alt="">'
            f"<figcaption>{caption}</figcaption></figure>"
        )
    if not parts:
        parts.append("<em>no images</em>")
    kind = "thumbs clickable" if clickable else "thumbs"
    return f'<div class="{kind}">{"".join(parts)}</div>'


def thumb_src(fpath: Path) -> str:
    """The page's URL of a thumbnail file (``<thumbs>/<px>/<item>.webp``), relative to the app."""
    return f"{THUMBS_ROUTE}/{int(fpath.parent.name)}/{int(fpath.stem)}.webp"


def item_figures(images: Sequence[CaptionedImage]) -> list[Figure]:
    """Corpus images whose click inspects the item."""
    return [Figure(image.fpath, image.caption, item=image.item) for image in images]
