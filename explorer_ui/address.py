"""The address bar follows the page: what a tab shows has a link (``?tab=latent&latent=12``,
``?tab=inspect&text=...``, ``?tab=steer&item=42``), the page pushes a history entry whenever the
tab or its subject changes, and Back / Forward reopen the entry's link.

The links are written by the server into the text each view shows anyway (the Latent summary,
the Inspect and Steer descriptions), so whatever opened a view (a button, a click on a table row
or thumbnail, a deep link) updates the address alike. ``static/address.js`` watches the shown
tab and its link, and on Back / Forward clicks a hidden button whose handler (``page.reopen``)
opens ``location.search`` again.
"""

from __future__ import annotations

import html
import json
from urllib.parse import urlencode

import gradio as gr

from explorer_ui.wiring import static_text
from sae_explorer.explorer import Query

BACK_ID = "address-back"
LINK_CLASS = "page-link"


def tab_panel_id(tab_id: str) -> str:
    """The element id of a tab's panel (``gr.Tab(elem_id=...)``), which the script watches."""
    return f"tab-{tab_id}"


def link(tab_id: str, **params: str | int) -> str:
    """The query string opening ``tab_id`` with ``params`` (``page.link_view`` reads it back)."""
    return "?" + urlencode({"tab": tab_id, **params})


def query_link(tab_id: str, query: Query) -> str | None:
    """The link reopening ``query`` in ``tab_id``: texts and corpus items have one, uploads not."""
    if query.kind == "text" and query.text is not None:
        return link(tab_id, text=query.text)
    if query.kind == "item" and query.item is not None:
        return link(tab_id, item=query.item)
    return None


def link_markdown(target: str | None) -> str:
    """``target`` as a Markdown link the script finds (empty when there is none)."""
    if target is None:
        return ""
    shown = html.escape(target, quote=True)
    return f'  \n<small>Link: <a class="{LINK_CLASS}" href="{shown}">{shown}</a></small>'


def back_button() -> gr.Button:
    """The hidden button the script clicks on Back / Forward (in the page, never shown)."""
    return gr.Button("reopen the address", visible="hidden", elem_id=BACK_ID)


def script(tab_ids: tuple[str, ...]) -> str:
    """The JavaScript function that starts following the address (run once, after the page's
    own link was opened)."""
    panels = {tab_id: tab_panel_id(tab_id) for tab_id in tab_ids}
    return (
        static_text("address.js")
        .replace("__PANELS__", json.dumps(panels))
        .replace("__BACK_ID__", json.dumps(BACK_ID))
        .replace("__LINK_CLASS__", json.dumps(LINK_CLASS))
    )


SETTLED_JS = "() => { window.saeAddress && window.saeAddress.settled(); }"
"""Run after a Back / Forward reopened its link: follow the page again once it shows it."""

LOCATION_JS = "(ignored, maxPercent) => [window.location.search, maxPercent]"
"""The reopen handler's input: the address the browser went back (or forward) to."""
