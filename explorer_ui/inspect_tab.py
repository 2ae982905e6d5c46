"""The Inspect tab: an upload, a text or a corpus item -> its top latents, how well the SAE
reconstructs it (per Matryoshka level too), and the strongest corpus images of those latents;
the analysis exported as JSON or CSV."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from explorer_ui.exports import ExportControls, ExportFormat, export_controls, export_dpath
from explorer_ui.inputs import QueryInputs, query_inputs, show_item, wire_query_inputs
from explorer_ui.thumbs import Figure, grouped_thumbs_html, thumbs_component
from explorer_ui.wiring import bind, markdown_text
from sae_explorer.explorer import Diagnostics, Explorer, Query, Thumb

TAB_ID = "inspect"


class InspectTab(NamedTuple):
    query: gr.State  # the Query last inspected in this session (for export)
    inputs: QueryInputs
    diagnostics: gr.Markdown
    levels_plot: gr.Plot
    table: gr.Dataframe
    bar: gr.Plot
    thumbs: gr.HTML
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
    with gr.Tab("Inspect", id=TAB_ID), gr.Row():
        query = gr.State(None)
        with gr.Column(scale=1, min_width=280):
            inputs = query_inputs("inspect", "Inspect", image_height=220)
            diagnostics = gr.Markdown(elem_id="inspect-diagnostics")
            levels_plot = gr.Plot(label="Reconstruction vs Matryoshka level")
        with gr.Column(scale=2):
            table = gr.Dataframe(
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
            export = export_controls("Export this analysis")
    return InspectTab(query, inputs, diagnostics, levels_plot, table, bar, thumbs, export)


def wire(explorer: Explorer, tab: InspectTab) -> None:
    """Inputs -> :func:`inspect_view`; export. (Clicks that open a latent: ``latent_tab``.)"""
    wire_query_inputs(tab.inputs, explorer, inspect_view, tab.outputs, "inspect")
    tab.export.button.click(
        bind(export_inspect, explorer),
        [tab.query, tab.export.format],
        tab.export.file,
        api_name="export_inspect",
    )


def inspect_view(explorer: Explorer, query: Query) -> InspectView:
    result = explorer.inspect(query)
    return InspectView(
        query,
        f"**Input:** {markdown_text(query.description)}",
        diagnostics_markdown(result.diagnostics),
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


def export_inspect(explorer: Explorer, query: Query | None, fmt: ExportFormat) -> str:
    """The path of the exported analysis of the session's last input."""
    if query is None:
        raise ValueError("inspect an image, text or corpus item first, then export it")
    return str(explorer.export_inspect(query, export_dpath(explorer), fmt))


def open_item(explorer: Explorer, evt: gr.EventData) -> tuple[Any, ...]:
    """This tab, selected, inspecting the corpus item of a clicked thumbnail."""
    item = getattr(evt, "item", None)
    if item is None:
        raise ValueError("click a thumbnail to inspect its item")
    return (gr.Tabs(selected=TAB_ID), *show_item(explorer, inspect_view, item))


def open_item_row(explorer: Explorer, table: pd.DataFrame, evt: gr.SelectData) -> tuple[Any, ...]:
    """This tab, selected, inspecting the item of a clicked row (read by column name, however
    the table is sorted)."""
    row = dict(zip(table.columns, evt.row_value or ()))
    if "item" not in row:
        raise ValueError("click a row of the table to inspect its item")
    return (gr.Tabs(selected=TAB_ID), *show_item(explorer, inspect_view, row["item"]))
