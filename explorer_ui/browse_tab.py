"""The Latents tab: every latent in one table, filtered (frequency range, Matryoshka level, dead
and dense flags, image/text split, name), sorted and paged on the server; beside it the map of
the decoder directions of the listed latents and the frequency histogram of the listed latents
(its shaded band is the frequency filter). A click on a row or on a point of the map opens that
latent in the Latent tab (``latent_tab.wire`` is handed the table and the map's click)."""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple

import gradio as gr
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from explorer_ui import address
from explorer_ui.wiring import bind, plot_click_js
from sae_explorer.explorer import Explorer
from sae_explorer.explorer import plots as library_plots
from sae_explorer.explorer.decoder_map import MAP_COLOURS, MAP_METHODS
from sae_explorer.explorer.latent_table import (
    COLUMNS,
    NAME_SCORE_COLUMN,
    PAGE_SIZE,
    PRESENCE,
    LatentFilter,
    LatentTablePage,
    filter_mask,
)

TAB_ID = "latents"
MAP_ID = "browse-map"
HISTOGRAM_ID = "browse-histogram"
PAGE_SIZES = (25, 50, 100, 250)
SHOWN_DECIMALS = {
    NAME_SCORE_COLUMN: 3,
    "frequency": 5,
    "mean_act": 3,
    "max_act": 3,
    "image_share": 3,
    "label_purity": 3,
}
"""Digits the table shows (the library keeps full precision; sorting happens before rounding)."""
PageMove = Literal["first", "this", "previous", "next"]
"""Which page a request shows: the first (a filter changed), the typed one, or a neighbour."""
COLUMNS_HELP = (
    f"**{NAME_SCORE_COLUMN}**: cosine of the decoder direction with the name's word embedding · "
    "**frequency**: share of corpus items it is active on · **image_share**: share of its "
    "active items that are images · **label_purity**: share of the most common label "
    "(**top_label**) among its labelled top examples · **dense**: active on more than 10% of "
    "items. Click a row, or a point of the map, to open the latent."
)


class BrowseTab(NamedTuple):
    filters: list[Any]  # min/max frequency %, levels, dead, dense, min/max image %, name
    sort_by: gr.Dropdown
    descending: gr.Checkbox
    page_size: gr.Dropdown
    page: gr.Number
    previous: gr.Button
    next: gr.Button
    info: gr.Markdown
    table: gr.Dataframe
    histogram: gr.Plot
    method: gr.Radio
    colour_by: gr.Radio
    map_plot: gr.Plot
    map_click: gr.HTML  # fires 'click' with the clicked point's latent
    histogram_click: gr.HTML  # fires 'click' with the clicked bar's frequency range, in %

    @property
    def inputs(self) -> list[Any]:
        """:func:`browse_view`'s inputs after its bound move, in its order."""
        return [self.page, *self.filters, self.sort_by, self.descending, self.page_size]

    @property
    def outputs(self) -> list[Any]:
        """The components a :class:`BrowseView` fills, in its order."""
        return [self.table, self.info, self.page, self.histogram]


class BrowseView(NamedTuple):
    table: pd.DataFrame  # one page of latent_table.COLUMNS
    info: str  # markdown: how many latents pass, which page
    page: int
    histogram: go.Figure  # frequency of the listed latents, the frequency range shaded


def layout(explorer: Explorer) -> BrowseTab:
    levels = sorted({int(v) for v in explorer.levels_l})
    nesting = explorer.sae.nesting_list or ()
    level_choices = [(level_label(level, nesting), level) for level in levels]
    first = browse_view(explorer, "first", 1, *DEFAULT_FILTER_VALUES, "frequency", True, PAGE_SIZE)
    with gr.Tab("Latents", id=TAB_ID, elem_id=address.tab_panel_id(TAB_ID)), gr.Row():
        with gr.Column(scale=3):
            with gr.Row():
                min_freq = gr.Number(
                    0, label="min frequency %", minimum=0, maximum=100, elem_id="browse-min-freq"
                )
                max_freq = gr.Number(100, label="max frequency %", minimum=0, maximum=100)
                level = gr.Dropdown(
                    level_choices, value=[], multiselect=True, label="levels (none: all)"
                )
                dead = gr.Radio(list(PRESENCE), value="any", label="dead")
                dense = gr.Radio(list(PRESENCE), value="any", label="dense")
            with gr.Row():
                min_image = gr.Slider(0, 100, 0, step=1, label="min image share %")
                max_image = gr.Slider(0, 100, 100, step=1, label="max image share %")
                name = gr.Textbox(label="name contains", placeholder="e.g. blue")
            with gr.Row():
                sort_by = gr.Dropdown(
                    list(COLUMNS), value="frequency", label="sort by", elem_id="browse-sort"
                )
                descending = gr.Checkbox(True, label="descending")
                page_size = gr.Dropdown(list(PAGE_SIZES), value=PAGE_SIZE, label="rows")
                previous = gr.Button("◀ previous", size="sm")
                page = gr.Number(1, label="page", minimum=1, precision=0, elem_id="browse-page")
                following = gr.Button("next ▶", size="sm", elem_id="browse-next")
            info = gr.Markdown(first.info, elem_id="browse-info")
            table = gr.Dataframe(
                first.table, interactive=False, elem_id="browse-table", max_height=640
            )
            gr.Markdown(COLUMNS_HELP)
        with gr.Column(scale=2, min_width=360):
            with gr.Row():
                method = gr.Radio(list(MAP_METHODS), value="pca", label="map projection")
                colour_by = gr.Radio(list(MAP_COLOURS), value="level", label="colour by")
            map_plot = gr.Plot(explorer.map_figure("pca", "level"), elem_id=MAP_ID)
            map_click = gr.HTML("", js_on_load=map_click_js(), elem_id="browse-map-click")
            histogram = gr.Plot(
                first.histogram,
                label="Frequency of the listed latents (click a bar to list only its latents)",
                elem_id=HISTOGRAM_ID,
            )
            histogram_click = gr.HTML("", js_on_load=plot_click_js(HISTOGRAM_ID, "range"))
    filters = [min_freq, max_freq, level, dead, dense, min_image, max_image, name]
    return BrowseTab(
        filters, sort_by, descending, page_size, page, previous, following, info, table,
        histogram, method, colour_by, map_plot, map_click, histogram_click,
    )  # fmt: skip


DEFAULT_FILTER_VALUES = (0.0, 100.0, [], "any", "any", 0.0, 100.0, "")


def map_click_js() -> str:
    return plot_click_js(MAP_ID, "latent")


def level_label(level: int, nesting: tuple[int, ...]) -> str:
    if level < 0:
        return "never kept"
    return f"level {level} (k={nesting[level]})" if level < len(nesting) else f"level {level}"


def wire(explorer: Explorer, tab: BrowseTab) -> None:
    """Filters and sorting show the first page, the page box its page, the buttons the pages
    beside it; the map follows the filters and its own settings. Row and map clicks are wired by
    ``latent_tab.wire``."""
    private: dict[str, Any] = {"api_visibility": "private"}
    map_inputs = [tab.method, tab.colour_by, *tab.filters]

    def on(event: Any, move: PageMove, with_map: bool) -> None:
        shown = event(bind(browse_view, explorer, move), tab.inputs, tab.outputs, **private)
        if with_map:
            shown.then(bind(map_view, explorer), map_inputs, tab.map_plot, **private)

    for control in tab.filters:
        changed = control.submit if isinstance(control, gr.Number | gr.Textbox) else control.change
        on(changed, "first", with_map=True)
    for control in (tab.sort_by, tab.descending, tab.page_size):
        on(control.change, "first", with_map=False)
    on(tab.page.submit, "this", with_map=False)
    on(tab.previous.click, "previous", with_map=False)
    on(tab.next.click, "next", with_map=False)
    for control in (tab.method, tab.colour_by):
        control.change(bind(map_view, explorer), map_inputs, tab.map_plot, **private)
    tab.histogram_click.click(
        bind(histogram_bar_view, explorer),
        [*tab.filters[2:], tab.sort_by, tab.descending, tab.page_size],
        [*tab.filters[:2], *tab.outputs],
        **private,
    ).then(bind(map_view, explorer), map_inputs, tab.map_plot, **private)


def wire_opened_from(
    explorer: Explorer,
    tab: BrowseTab,
    tabs: gr.Tabs,
    frequency_click: gr.HTML,
    level_click: gr.HTML,
) -> None:
    """Clicks elsewhere that list latents here: a bar of the Overview's frequency histogram (its
    latents) and a point of its per-level plot (the latents of that Matryoshka level)."""
    private: dict[str, Any] = {"api_visibility": "private"}
    opened = [tabs, *tab.filters, *tab.outputs]
    map_inputs = [tab.method, tab.colour_by, *tab.filters]
    for click, handler in ((frequency_click, frequency_bin_view), (level_click, level_view)):
        click.click(
            bind(handler, explorer), [tab.sort_by, tab.descending, tab.page_size], opened, **private
        ).then(bind(map_view, explorer), map_inputs, tab.map_plot, **private)


def clicked_range(evt: gr.EventData) -> tuple[float, float]:
    """The frequency range (percent) a histogram click carries (``plot_click.js``)."""
    value = evt._data.get("range") if isinstance(evt._data, dict) else None
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError("click a bar of the frequency histogram to list its latents")
    low, high = (float(v) for v in value)
    if not (math.isfinite(low) and math.isfinite(high) and 0 <= low <= high <= 100):
        raise ValueError(f"a frequency range must lie within 0-100 %, got {low}-{high}")
    return low, high


def histogram_bar_view(
    explorer: Explorer,
    levels: list[int] | None,
    dead: str,
    dense: str,
    min_image_pct: float | None,
    max_image_pct: float | None,
    name: str | None,
    sort_by: str,
    descending: bool,
    page_size: float,
    evt: gr.EventData,
) -> tuple[Any, ...]:
    """A bar of this tab's histogram clicked: its frequency range becomes the filter (the
    other filters kept, so the list is the bar's latents); the range, then the view."""
    low, high = clicked_range(evt)
    others = (levels, dead, dense, min_image_pct, max_image_pct, name)
    shown = browse_view(
        explorer, "first", 1, low, high, *others, sort_by, descending, page_size
    )  # fmt: skip
    return (low, high, *shown)


def frequency_bin_view(
    explorer: Explorer, sort_by: str, descending: bool, page_size: float, evt: gr.EventData
) -> tuple[Any, ...]:
    """A bar of the Overview's histogram (all latents) clicked: this tab, every filter reset but
    the frequency range, which becomes the bar's."""
    low, high = clicked_range(evt)
    return opened_on(
        explorer, (low, high, *DEFAULT_FILTER_VALUES[2:]), sort_by, descending, page_size
    )


def level_view(
    explorer: Explorer, sort_by: str, descending: bool, page_size: float, evt: gr.EventData
) -> tuple[Any, ...]:
    """A level of the Overview's per-level plot clicked: this tab listing that level's latents
    (the other filters reset)."""
    level = evt._data.get("level") if isinstance(evt._data, dict) else None
    if not isinstance(level, int | float) or not float(level).is_integer():
        raise ValueError("click a point of the per-level plot to list that level's latents")
    values = list(DEFAULT_FILTER_VALUES)
    values[2] = [int(level)]
    return opened_on(explorer, tuple(values), sort_by, descending, page_size)


def opened_on(
    explorer: Explorer, filters: tuple[Any, ...], sort_by: str, descending: bool, page_size: float
) -> tuple[Any, ...]:
    """This tab, selected, with ``filters`` (``DEFAULT_FILTER_VALUES``' order) set and applied."""
    shown = browse_view(explorer, "first", 1, *filters, sort_by, descending, page_size)
    return (gr.Tabs(selected=TAB_ID), *filters, *shown)


def latent_filter(
    min_frequency_pct: float | None,
    max_frequency_pct: float | None,
    levels: list[int] | None,
    dead: str,
    dense: str,
    min_image_pct: float | None,
    max_image_pct: float | None,
    name: str | None,
) -> LatentFilter:
    """The filter the controls describe (percentages become shares; an empty box: no bound)."""
    return LatentFilter(
        min_frequency=percent(min_frequency_pct, 0.0),
        max_frequency=percent(max_frequency_pct, 100.0),
        levels=tuple(int(v) for v in levels) if levels else None,
        dead=dead,  # type: ignore[arg-type] (checked by LatentFilter)
        dense=dense,  # type: ignore[arg-type]
        min_image_share=percent(min_image_pct, 0.0),
        max_image_share=percent(max_image_pct, 100.0),
        name=name or "",
    )


def percent(value: float | None, empty: float) -> float:
    value = empty if value is None else float(value)
    if not math.isfinite(value):
        raise ValueError(f"a percentage must be a finite number, got {value}")
    return value / 100.0


def browse_view(
    explorer: Explorer,
    move: PageMove,
    page: float | None,
    min_frequency_pct: float | None,
    max_frequency_pct: float | None,
    levels: list[int] | None,
    dead: str,
    dense: str,
    min_image_pct: float | None,
    max_image_pct: float | None,
    name: str | None,
    sort_by: str,
    descending: bool,
    page_size: float,
) -> BrowseView:
    """One page of the filtered, sorted latents. ``move``: ``first`` after a filter or sort
    change, ``this`` for the typed page (``ValueError`` outside the result), ``previous`` and
    ``next`` stop at the ends."""
    flt = latent_filter(
        min_frequency_pct, max_frequency_pct, levels, dead, dense, min_image_pct, max_image_pct,
        name,
    )  # fmt: skip
    size = int(page_size)
    wanted = 1 if move == "first" or page is None else int(page)
    if move in ("previous", "next"):
        n_pages = explorer.browse_latents(flt, sort_by, descending, 1, size).n_pages
        wanted = min(max(wanted + (1 if move == "next" else -1), 1), n_pages)
    shown = explorer.browse_latents(flt, sort_by, descending, wanted, size)
    return BrowseView(
        shown.rows.round(SHOWN_DECIMALS),
        page_info(shown, size, explorer.n_latents),
        shown.page,
        listed_histogram(explorer, flt),
    )


def page_info(shown: LatentTablePage, page_size: int, n_latents: int) -> str:
    first = (shown.page - 1) * page_size + 1 if len(shown.rows) else 0
    return (
        f"**{shown.total}** of {n_latents} latents pass the filters · page **{shown.page}** of "
        f"{shown.n_pages}" + (f" (rows {first}–{first + len(shown.rows) - 1})" if first else "")
    )


def listed_histogram(explorer: Explorer, flt: LatentFilter) -> go.Figure:
    """The frequency histogram of the listed latents, the filter's frequency range shaded."""
    frequency = explorer.latent_table.frame["frequency"].to_numpy()
    listed = frequency[filter_mask(explorer.latent_table, flt)]
    fig = library_plots.frequency_histogram(listed, explorer.index.n_items)
    floor = 0.5 / max(explorer.index.n_items, 1)
    lo, hi = (np.log10(max(f, floor)) for f in (flt.min_frequency, flt.max_frequency))
    fig.add_vrect(x0=lo, x1=hi, fillcolor="#3b6fd4", opacity=0.12, line_width=0)
    return fig


def map_view(
    explorer: Explorer,
    method: str,
    colour_by: str,
    min_frequency_pct: float | None,
    max_frequency_pct: float | None,
    levels: list[int] | None,
    dead: str,
    dense: str,
    min_image_pct: float | None,
    max_image_pct: float | None,
    name: str | None,
    progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio's way to ask for progress)
) -> go.Figure:
    """The decoder map of the latents passing the filters (projected once per SAE and method,
    with progress the first time)."""
    flt = latent_filter(
        min_frequency_pct, max_frequency_pct, levels, dead, dense, min_image_pct, max_image_pct,
        name,
    )  # fmt: skip
    shown = np.flatnonzero(filter_mask(explorer.latent_table, flt))
    return explorer.map_figure(method, colour_by, shown, lambda f, m: progress(f, desc=m))
