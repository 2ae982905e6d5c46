"""The whole page: the banner and the tabs laid out first, then wired; a deep link
(``?tab=latent&latent=12``, ``?text=a%20red%20circle``, ``?item=42``, ``?tab=steer&text=...``,
``?tab=overview``) is opened when the page loads, and the address bar follows what the page shows
afterwards (``address``): Back and Forward reopen the links they return to."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

import gradio as gr

from explorer_ui import (
    address,
    browse_tab,
    compare_tab,
    inspect_tab,
    latent_tab,
    overview_tab,
    steer_tab,
)
from explorer_ui.banner import banner
from explorer_ui.inputs import show_item, show_text
from explorer_ui.inspect_tab import ALL_PERCENT, InspectView, inspect_view
from explorer_ui.latent_tab import LatentView, latent_view
from explorer_ui.wiring import bind, warn
from sae_explorer.explorer import Explorer

TABS = (
    inspect_tab.TAB_ID,
    latent_tab.TAB_ID,
    browse_tab.TAB_ID,
    steer_tab.TAB_ID,
    overview_tab.TAB_ID,
    compare_tab.TAB_ID,
)


def build_demo(explorer: Explorer) -> gr.Blocks:
    """The whole page over one shared, read-only explorer; per-user state lives in ``gr.State``."""
    overview = explorer.overview()
    with gr.Blocks(title="SAE explorer") as demo:
        banner(explorer)
        with gr.Tabs(selected=inspect_tab.TAB_ID) as tabs:
            inspect = inspect_tab.layout()
            latent = latent_tab.layout(explorer)
            browse = browse_tab.layout(explorer)
            steer = steer_tab.layout()
            overview_view = overview_tab.layout(overview)
            compare = compare_tab.layout()
        back = address.back_button()

        inspect_tab.wire(explorer, inspect)
        clicks = [inspect.thumbs, browse.map_click]  # thumbnails, and points of the latent map
        tables = [inspect.table, compare.table, browse.table]
        latent_tab.wire(explorer, latent, tabs, tables, clicks)
        browse_tab.wire(explorer, browse)
        browse_tab.wire_opened_from(
            explorer, browse, tabs, overview_view.frequency_click, overview_view.level_click
        )
        steer_tab.wire(explorer, steer)
        compare_tab.wire(explorer, compare)
        wire_item_clicks(explorer, tabs, inspect, latent, steer)
        linked = [
            tabs,
            *inspect.outputs,
            *latent.outputs,
            steer.inputs.text,
            steer.inputs.item,
            *steer.start_outputs,
        ]
        private: dict[str, Any] = {"api_visibility": "private"}
        demo.load(bind(open_link, explorer), inspect.max_percent, linked, **private).then(
            None, None, None, js=address.script(TABS), **private
        )
        back.click(  # quick Back presses: the last address wins, none is dropped
            bind(reopen, explorer),
            [back, inspect.max_percent],
            linked,
            js=address.LOCATION_JS,
            trigger_mode="always_last",
            **private,
        ).then(None, None, None, js=address.SETTLED_JS, **private)
    return demo


def wire_item_clicks(
    explorer: Explorer,
    tabs: gr.Tabs,
    inspect: inspect_tab.InspectTab,
    latent: latent_tab.LatentTab,
    steer: steer_tab.SteerTab,
) -> None:
    """A click on a corpus example (a latent's images, Steer's neighbours) inspects it."""
    opened = [tabs, *inspect.outputs]
    grids = (latent.top_images, latent.quantile_images)
    for grid in (*grids, steer.results.images_before, steer.results.images_after):
        click = bind(inspect_tab.open_item, explorer)
        grid.click(click, inspect.max_percent, opened, api_visibility="private")
    for table in (steer.results.neighbours_before, steer.results.neighbours_after):
        select = bind(inspect_tab.open_item_row, explorer)
        table.select(select, [table, inspect.max_percent], opened, api_visibility="private")


class LinkView(NamedTuple):
    """What a link opens: a tab (None: the default), and the Inspect, Latent or Steer view
    (Steer's: the text or item put in its input, and the tab's start outputs)."""

    tab: str | None
    inspect: InspectView | None = None
    latent: LatentView | None = None
    steer_input: tuple[str | None, int | None] | None = None
    steer: tuple[Any, ...] | None = None


def link_view(
    explorer: Explorer, params: Mapping[str, str], max_percent: float | None = ALL_PERCENT
) -> LinkView:
    """The link's latent, text or item (in that order of precedence; a text or item opens in
    Steer when the link's tab is Steer, else in Inspect, under the dense-latent control's
    ``max_percent``), else its tab; ``ValueError`` when the latent or item does not exist or the
    text is empty."""
    if "latent" in params:
        return LinkView(latent_tab.TAB_ID, latent=latent_view(explorer, params["latent"]))
    if linked_tab(params) == steer_tab.TAB_ID and ("text" in params or "item" in params):
        return steer_link_view(explorer, params)
    if "text" in params:
        shown = show_text(explorer, inspect_view, params["text"], max_percent)
        return LinkView(inspect_tab.TAB_ID, shown)
    if "item" in params:
        shown = show_item(explorer, inspect_view, params["item"], max_percent)
        return LinkView(inspect_tab.TAB_ID, shown)
    return LinkView(linked_tab(params))


def steer_link_view(explorer: Explorer, params: Mapping[str, str]) -> LinkView:
    """Steer started from the link's text (or item), which is filled into Steer's input."""
    if "text" in params:
        started = show_text(explorer, steer_tab.start_outputs, params["text"])
        return LinkView(steer_tab.TAB_ID, steer_input=(params["text"], None), steer=started)
    started = show_item(explorer, steer_tab.start_outputs, params["item"])
    return LinkView(steer_tab.TAB_ID, steer_input=(None, started[0].item), steer=started)


def linked_tab(params: Mapping[str, str]) -> str | None:
    tab = params.get("tab")
    return tab if tab in TABS else None


def open_link(
    explorer: Explorer, max_percent: float | None, request: gr.Request
) -> tuple[Any, ...]:
    """On page load: the linked view, or a warning and the linked tab when it cannot be shown.
    Outputs: the tabs, the Inspect and Latent outputs, Steer's text and item inputs and its
    start outputs (each left as it is when not linked)."""
    params = dict(request.query_params) if request is not None else {}
    return opened(explorer, params, max_percent)


def reopen(explorer: Explorer, search: str | None, max_percent: float | None) -> tuple[Any, ...]:
    """On Back / Forward: the view of the address returned to (``location.search``); an
    address without a tab shows the first tab. Outputs as :func:`open_link`'s."""
    params = dict(parse_qsl((search or "").lstrip("?"), keep_blank_values=True))
    return opened(explorer, params, max_percent, default_tab=TABS[0])


def opened(
    explorer: Explorer,
    params: Mapping[str, str],
    max_percent: float | None,
    default_tab: str | None = None,
) -> tuple[Any, ...]:
    try:
        link = link_view(explorer, params, max_percent)
    except ValueError as e:
        warn([f"could not open the link: {e}"])
        link = LinkView(linked_tab(params))
    tab = link.tab or default_tab
    return (
        gr.Tabs(selected=tab) if tab else gr.skip(),
        *(link.inspect or skipped(len(InspectView._fields))),
        *(link.latent or skipped(len(LatentView._fields))),
        *(link.steer_input or skipped(2)),
        *(link.steer or skipped(steer_tab.N_START_OUTPUTS)),
    )


def skipped(n: int) -> list[Any]:
    """``n`` outputs left as they are."""
    return [gr.skip() for _ in range(n)]
