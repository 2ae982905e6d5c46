"""The Inspect tab: an upload, a text or a corpus item -> its top latents, how well the SAE
reconstructs it (per Matryoshka level too), and the strongest corpus images of those latents;
the analysis exported as JSON or CSV."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from explorer_ui import address, heatmap_panel
from explorer_ui.exports import ExportControls, ExportFormat, export_controls, export_dpath
from explorer_ui.inputs import QueryInputs, query_inputs, show_item, wire_query_inputs
from explorer_ui.page_cache import cached, query_key
from explorer_ui.tables import Table
from explorer_ui.thumbs import Figure, grouped_thumbs_html, thumbs_component
from explorer_ui.wiring import bind, markdown_text
from sae_explorer.explorer import Diagnostics, Explorer, Query, Thumb

TAB_ID = "inspect"


ALL_PERCENT = 100.0
"""The dense-latent control's value that hides nothing."""


class InspectTab(NamedTuple):
    query: gr.State  # the Query last inspected in this session (for export)
    inputs: QueryInputs
    max_percent: gr.Slider  # hide latents active on more than this % of the corpus
    diagnostics: gr.Markdown
    levels_plot: gr.Plot
    table: gr.Dataframe
    bar: gr.Plot
    thumbs: gr.HTML
    heat: heatmap_panel.HeatmapControls
    export: ExportControls

    @property
    def outputs(self) -> list[Any]:
        """The components an :class:`InspectView` fills, in its order."""
        return [
            self.query,
            self.inputs.description,
            self.diagnostics,
            self.levels_plot,
            self.table,
            self.bar,
            self.thumbs,
        ]


class InspectView(NamedTuple):
    """What the tab shows for one input."""

    query: Query
    description: str  # markdown
    diagnostics: str  # markdown
    levels_plot: go.Figure
    table: pd.DataFrame  # latent, names, activation, level, corpus_level, frequency
    bar: go.Figure
    thumbs: str  # HTML grid; each thumbnail opens its latent


def layout() -> InspectTab:
    with gr.Tab("Inspect", id=TAB_ID, elem_id=address.tab_panel_id(TAB_ID)), gr.Row():
        query = gr.State(None)
        with gr.Column(scale=1, min_width=280):
            inputs = query_inputs("inspect", "Inspect", image_height=220)
            diagnostics = gr.Markdown(elem_id="inspect-diagnostics")
            levels_plot = gr.Plot(label="Reconstruction vs Matryoshka level")
        with gr.Column(scale=2):
            max_percent = gr.Slider(
                0.5,
                ALL_PERCENT,
                value=ALL_PERCENT,
                step=0.5,
                label="Hide latents active on more than this % of corpus items",
                info="Dense latents fire on most inputs and top every table on real photos; "
                "100 shows them all.",
                elem_id="inspect-max-percent",
            )
            table = Table(
                label="Top latents (click a row to open it)",
                interactive=False,
                elem_id="inspect-table",
            )
            gr.Markdown(COLUMNS_HELP, elem_id="inspect-columns-help")
            bar = gr.Plot(label="Activations")
            gr.Markdown(
                "Max-activating corpus images of each top latent, under its id and name "
                "(click one to open the latent)"
            )
            thumbs = thumbs_component("inspect-thumbs", clickable=True)
            heat = heatmap_panel.layout()
            export = export_controls("Export this analysis")
    return InspectTab(
        query, inputs, max_percent, diagnostics, levels_plot, table, bar, thumbs, heat, export
    )


def wire(explorer: Explorer, tab: InspectTab) -> None:
    """Inputs -> :func:`inspect_view`; export. (Clicks that open a latent: ``latent_tab``.)"""
    wire_query_inputs(tab.inputs, explorer, inspect_view, tab.outputs, "inspect", [tab.max_percent])
    tab.max_percent.release(
        bind(refilter, explorer), [tab.query, tab.max_percent], tab.outputs, api_name=False
    )
    heatmap_panel.wire(explorer, tab.heat, tab.query, tab.inputs.image)
    tab.export.button.click(
        bind(export_inspect, explorer),
        [tab.query, tab.export.format, tab.max_percent],
        tab.export.file,
        api_name="export_inspect",
    )


def max_frequency(max_percent: float | None) -> float | None:
    """The dense-latent control as a fraction of the corpus (None: hide nothing);
    ``ValueError`` outside (0, 100]."""
    if max_percent is None or max_percent == ALL_PERCENT:
        return None
    if not 0 < max_percent < ALL_PERCENT:
        raise ValueError(
            f"the share of corpus items above which latents are hidden must be in (0, 100] %, "
            f"got {max_percent}"
        )
    return max_percent / 100


def inspect_view(
    explorer: Explorer, query: Query, max_percent: float | None = ALL_PERCENT
) -> InspectView:
    """The tab's view of ``query``, leaving out latents active on more than ``max_percent`` %
    of the corpus. Kept in the page cache by input and ``max_percent``."""
    key = (*query_key(query), max_frequency(max_percent))  # None and 100 are one page
    return cached(explorer, "inspect", key, build_inspect_view, query, max_percent)


def build_inspect_view(
    explorer: Explorer, query: Query, max_percent: float | None = ALL_PERCENT
) -> InspectView:
    result = explorer.inspect(query, max_frequency=max_frequency(max_percent))
    link = address.link_markdown(address.query_link(TAB_ID, query))
    hidden = (
        f"  \n{result.n_hidden} of its active latents hidden: active on more than "
        f"{max_percent:g}% of corpus items"
        if result.n_hidden
        else ""
    )
    return InspectView(
        query,
        f"**Input:** {markdown_text(query.description)}{link}",
        diagnostics_markdown(result.diagnostics) + hidden,
        result.levels_plot,
        result.table,
        result.bar,
        grouped_thumbs_html(thumb_groups(explorer, result.thumbs)),
    )


def thumb_groups(explorer: Explorer, thumbs: Sequence[Thumb]) -> list[tuple[str, list]]:
    """The thumbnails grouped by latent, in table order, each titled ``#id name``."""
    groups: dict[int, list] = {}
    for t in thumbs:
        groups.setdefault(t.latent_id, []).append(Figure(t.fpath, t.caption, t.latent_id, t.item))
    return [
        (f"#{latent_id} {explorer.names_text(latent_id, 1) or '(unnamed)'}", items)
        for latent_id, items in groups.items()
    ]


COLUMNS_HELP = (
    "<small>**activation**: the latent's value for this input · **level**: the first Matryoshka "
    "level whose TopK keeps it for this input (-1: none; plain SAEs: -1) · **corpus_level**: "
    "the level that usually keeps it over the corpus · **frequency**: the fraction of corpus "
    "items it is active on (dense latents, active on most items, say little about one input)"
    "</small>"
)


def diagnostics_markdown(d: Diagnostics) -> str:
    return (
        f"**Reconstruction** cosine {d.cosine:.3f} · relative error "
        f"{d.relative_error:.3f} · L0 {d.l0} active latents (the SAE's own sparse code keeps "
        f"{d.code_l0}; MSAE shows every latent the ReLU lets through, not only its TopK)  \n"
        f"Encoded with {d.input_statistics}"
    )


def refilter(
    explorer: Explorer, query: Query | None, max_percent: float | None
) -> InspectView | list[Any]:
    """The session's input again under a moved dense-latent control (nothing before an input)."""
    if query is None:
        return [gr.skip() for _ in InspectView._fields]
    return inspect_view(explorer, query, max_percent)


def export_inspect(
    explorer: Explorer,
    query: Query | None,
    fmt: ExportFormat,
    max_percent: float | None = ALL_PERCENT,
) -> str:
    """The path of the exported analysis of the session's last input, as shown (dense latents
    hidden alike)."""
    if query is None:
        raise ValueError("inspect an image, text or corpus item first, then export it")
    dpath = export_dpath(explorer)
    return str(explorer.export_inspect(query, dpath, fmt, max_frequency(max_percent)))


def open_item(explorer: Explorer, max_percent: float | None, evt: gr.EventData) -> tuple[Any, ...]:
    """This tab, selected, inspecting the corpus item of a clicked thumbnail."""
    item = getattr(evt, "item", None)
    if item is None:
        raise ValueError("click a thumbnail to inspect its item")
    return (gr.Tabs(selected=TAB_ID), *show_item(explorer, inspect_view, item, max_percent))


def open_item_row(
    explorer: Explorer, table: pd.DataFrame, max_percent: float | None, evt: gr.SelectData
) -> tuple[Any, ...]:
    """This tab, selected, inspecting the item of a clicked row (read by column name, however
    the table is sorted)."""
    row = dict(zip(table.columns, evt.row_value or ()))
    if "item" not in row:
        raise ValueError("click a row of the table to inspect its item")
    opened = show_item(explorer, inspect_view, row["item"], max_percent)
    return (gr.Tabs(selected=TAB_ID), *opened)
