"""The input every tab that analyses something starts from, written once: an image upload, a
text or a corpus item (:class:`QueryInputs`), and its wiring, which turns each into a ``Query``
and hands it to the tab's view."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import gradio as gr

from explorer_ui.page_cache import cached, file_digest
from explorer_ui.uploaded_image import UploadedImage
from explorer_ui.wiring import bind, warn
from sae_explorer.explorer import Explorer, Query
from sae_explorer.explorer.queries import check_item, image_query, item_query, text_query
from sae_explorer.images import check_text

View = Callable[[Explorer, Query], Sequence[Any]]
"""A tab's view of one input: its output values, in the order of the tab's outputs."""


class QueryInputs(NamedTuple):
    image: UploadedImage
    text: gr.Textbox
    text_button: gr.Button
    item: gr.Number
    item_button: gr.Button
    description: gr.Markdown  # what the current input is


def query_inputs(
    name: str, action: str, image_height: int, image_beside: bool = False
) -> QueryInputs:
    """The inputs, with ids ``<name>-image``, ``<name>-text``, ``<name>-text-start`` and
    ``<name>-desc``; buttons read "<action> text" and "<action> item". ``image_beside`` puts the
    upload left of the rest instead of above it."""
    with gr.Row() if image_beside else contextlib.nullcontext():
        image = UploadedImage(
            type="filepath",
            label="Image",
            sources=["upload", "clipboard"],
            height=image_height,
            elem_id=f"{name}-image",
        )
        with gr.Column() if image_beside else contextlib.nullcontext():
            # One line that grows: Enter submits, Shift+Enter starts a new line.
            text = gr.Textbox(
                label="…or a text (Enter to submit, Shift+Enter for a new line)",
                lines=1,
                max_lines=6,
                elem_id=f"{name}-text",
            )
            text_button = gr.Button(f"{action} text", size="sm", elem_id=f"{name}-text-start")
            with gr.Row():
                # No precision: 2.5 reaches the library, which refuses it (not rounded to 2).
                item = gr.Number(label="…or corpus item #", minimum=0)
                item_button = gr.Button(f"{action} item", size="sm")
            description = gr.Markdown(elem_id=f"{name}-desc")
    return QueryInputs(image, text, text_button, item, item_button, description)


def show_query(explorer: Explorer, view: View, query: Query, *options: Any) -> Sequence[Any]:
    """The view of an input (``options``: the view's own settings, after the query); its notes
    (e.g. "resized from 1x1") as warnings."""
    warn(query.warnings)
    return view(explorer, query, *options)


def show_image(explorer: Explorer, view: View, path: str | None, *options: Any) -> Sequence[Any]:
    """An uploaded file; ``ValueError`` says why it is not a usable image."""
    return show_query(explorer, view, cached_image_query(explorer, path), *options)


def show_text(explorer: Explorer, view: View, text: str | None, *options: Any) -> Sequence[Any]:
    return show_query(explorer, view, cached_text_query(explorer, text), *options)


def cached_text_query(explorer: Explorer, text: str | None) -> Query:
    """:func:`text_query`, kept in the page cache by the text as checked (cut, cleaned)."""
    checked = check_text(text)
    key = (checked.text, checked.warnings)
    return cached(explorer, "text_query", key, text_query, text)


def cached_image_query(explorer: Explorer, path: str | None) -> Query:
    """:func:`image_query` of an upload, kept in the page cache by the file's content."""
    if not isinstance(path, str) or not os.path.isfile(path):
        return image_query(explorer, path)  # its own message for a missing file
    return cached(explorer, "image_query", (file_digest(path),), image_query, path)


def show_item(explorer: Explorer, view: View, item: float | None, *options: Any) -> Sequence[Any]:
    """A corpus item by number; ``ValueError`` names the valid range."""
    i = check_item(explorer, item)
    return show_query(explorer, view, cached(explorer, "item_query", (i,), item_query, i), *options)


def wire_query_inputs(
    inputs: QueryInputs,
    explorer: Explorer,
    view: View,
    outputs: Sequence[Any],
    api_prefix: str,
    options: Sequence[Any] = (),
) -> None:
    """Upload, text (Enter or button) and item button each show ``view`` (given the values of
    the ``options`` components too); the API names are ``<api_prefix>_image``, ``_text`` and
    ``_item``."""
    image, text, item = (bind(show, explorer, view) for show in (show_image, show_text, show_item))
    options = list(options)
    inputs.image.upload(image, [inputs.image, *options], outputs, api_name=f"{api_prefix}_image")
    inputs.text.submit(text, [inputs.text, *options], outputs, api_name=f"{api_prefix}_text")
    inputs.text_button.click(text, [inputs.text, *options], outputs, api_visibility="private")
    inputs.item_button.click(item, [inputs.item, *options], outputs, api_name=f"{api_prefix}_item")
