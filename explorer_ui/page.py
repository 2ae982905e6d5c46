"""The whole page: the banner and the four tabs laid out first, then wired; a deep link
(``?tab=latent&latent=12``, ``?text=a%20red%20circle``, ``?item=42``, ``?tab=overview``) is
opened when the page loads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import gradio as gr

from explorer_ui import inspect_tab, latent_tab, overview_tab, steer_tab
from explorer_ui.banner import banner
from explorer_ui.inputs import show_item, show_text
from explorer_ui.inspect_tab import InspectView, inspect_view
from explorer_ui.latent_tab import LatentView, latent_view
from explorer_ui.wiring import bind, warn
from sae_explorer.explorer import Explorer

TABS = (inspect_tab.TAB_ID, latent_tab.TAB_ID, steer_tab.TAB_ID, overview_tab.TAB_ID)


def build_demo(explorer: Explorer) -> gr.Blocks:
    """The whole page over one shared, read-only explorer; per-user state lives in ``gr.State``."""
    overview = explorer.overview()
    with gr.Blocks(title="SAE explorer") as demo:
        banner(explorer)
        with gr.Tabs(selected=inspect_tab.TAB_ID) as tabs:
            inspect = inspect_tab.layout()
            latent = latent_tab.layout(explorer)
            steer = steer_tab.layout()
            overview_tab.layout(overview)

        inspect_tab.wire(explorer, inspect)
        latent_tab.wire(explorer, latent, tabs, [inspect.table], [inspect.thumbs])
        steer_tab.wire(explorer, steer)
        wire_item_clicks(explorer, tabs, inspect, latent, steer)
        demo.load(
            bind(open_link, explorer),
            None,
            [tabs, *inspect.outputs, *latent.outputs],
            api_visibility="private",
        )
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
        grid.click(bind(inspect_tab.open_item, explorer), None, opened, api_visibility="private")
    for table in (steer.results.neighbours_before, steer.results.neighbours_after):
        select = bind(inspect_tab.open_item_row, explorer)
        table.select(select, table, opened, api_visibility="private")


class LinkView(NamedTuple):
    """What a deep link opens: a tab (None: the default), and the Inspect or Latent view."""

    tab: str | None
    inspect: InspectView | None = None
    latent: LatentView | None = None


def link_view(explorer: Explorer, params: Mapping[str, str]) -> LinkView:
    """The link's latent, text or item (in that order of precedence), else its tab;
    ``ValueError`` when the latent or item does not exist or the text is empty."""
    if "latent" in params:
        return LinkView(latent_tab.TAB_ID, latent=latent_view(explorer, params["latent"]))
    if "text" in params:
        return LinkView(inspect_tab.TAB_ID, show_text(explorer, inspect_view, params["text"]))
    if "item" in params:
        return LinkView(inspect_tab.TAB_ID, show_item(explorer, inspect_view, params["item"]))
    return LinkView(linked_tab(params))


def linked_tab(params: Mapping[str, str]) -> str | None:
    tab = params.get("tab")
    return tab if tab in TABS else None


def open_link(explorer: Explorer, request: gr.Request) -> tuple[Any, ...]:
    """On page load: the linked view, or a warning and the linked tab when it cannot be shown.
    Outputs: the tabs, then the Inspect and Latent outputs (left as they are when not linked)."""
    params = dict(request.query_params) if request is not None else {}
    try:
        link = link_view(explorer, params)
    except ValueError as e:
        warn([f"could not open the link: {e}"])
        link = LinkView(linked_tab(params))
    return (
        gr.Tabs(selected=link.tab) if link.tab else gr.skip(),
        *(link.inspect or [gr.skip() for _ in InspectView._fields]),
        *(link.latent or [gr.skip() for _ in LatentView._fields]),
    )
