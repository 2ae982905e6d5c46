"""The Latent tab: one latent by id, by a search of the names, or opened from a click anywhere
(a table row, a thumbnail, a point of the latent map); its statistics, strongest images and
texts side by side with their cross-modal agreement, lower quantiles, histogram, the labels of
its examples, names and similar latents; the page exported as JSON or CSV, or drawn as a
card for a paper (PNG, SVG, PDF)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from explorer_ui import address
from explorer_ui.exports import ExportControls, ExportFormat, export_controls, export_dpath
from explorer_ui.figure_export import FigureControls, figure_controls, latent_figure
from explorer_ui.page_cache import cached
from explorer_ui.tables import Table
from explorer_ui.thumbs import item_figures, thumbs_component, thumbs_html
from explorer_ui.wiring import bind, warn
from sae_explorer.coactivation import TreeNode
from sae_explorer.explorer import Explorer, LatentPage
from sae_explorer.explorer.names import score_label

TAB_ID = "latent"


class LatentTab(NamedTuple):
    latent_id: gr.Number
    open_button: gr.Button
    search: gr.Textbox
    search_button: gr.Button
    hits: gr.Dataframe  # hidden until the first search
    summary: gr.Markdown
    top_images: gr.HTML
    quantile_images: gr.HTML
    histogram: gr.Plot
    names: gr.Dataframe
    top_texts: gr.Dataframe
    similar: gr.Dataframe
    quantiles: gr.Dataframe
    family: gr.Dataframe
    tree: gr.Markdown
    export: ExportControls
    agreement: gr.Markdown
    label_mix: gr.Plot
    figure: FigureControls

    @property
    def outputs(self) -> list[Any]:
        """The components a :class:`LatentView` fills, in its order."""
        return [
            self.latent_id,
            self.summary,
            self.top_images,
            self.quantile_images,
            self.histogram,
            self.names,
            self.top_texts,
            self.similar,
            self.quantiles,
            self.family,
            self.tree,
            self.agreement,
            self.label_mix,
        ]


class LatentView(NamedTuple):
    """What the tab shows for one latent."""

    latent_id: int
    summary: str  # markdown: names, statistics, Matryoshka level, a link to this page
    top_images: str  # HTML grid, activation captions
    quantile_images: str  # HTML grid
    histogram: go.Figure
    names: pd.DataFrame
    top_texts: pd.DataFrame
    similar: pd.DataFrame  # latent, cosine, names
    quantiles: pd.DataFrame
    family: pd.DataFrame  # Matryoshka parents and children
    tree: str  # markdown: the tree of its descendants, each a link
    agreement: str  # markdown: the cross-modal agreement of the top images and texts
    label_mix: go.Figure  # label shares of the top examples and of each quantile bin


def layout(explorer: Explorer) -> LatentTab:
    with gr.Tab("Latent", id=TAB_ID, elem_id=address.tab_panel_id(TAB_ID)):
        with gr.Row():
            # No minimum: Gradio's range check fails with a TypeError on an API string such as
            # "3.0"; the handler checks the id itself (whole, in range) with a clear message.
            latent_id = gr.Number(label="Latent id", elem_id="latent-id")
            open_button = gr.Button("Open", size="sm")
            search = gr.Textbox(label="…or search names", placeholder="e.g. blue")
            search_button = gr.Button("Search", size="sm")
        hits = Table(
            label="Matches (click to open); score = cosine of the word with the latent's "
            "direction, +1 when one of its names contains the word",
            interactive=False,
            visible=False,
        )
        summary = gr.Markdown(elem_id="latent-summary")
        agreement = gr.Markdown(elem_id="latent-agreement")
        with gr.Row():  # both modalities side by side
            with gr.Column(scale=2):
                gr.Markdown("**Max-activating images** (activation)")
                top_images = thumbs_component("latent-top", clickable=True)
            with gr.Column(scale=1):
                top_texts = Table(
                    label="Max-activating texts", interactive=False, elem_id="latent-texts"
                )
        with gr.Row():
            with gr.Column(scale=2):
                gr.Markdown("**Samples from lower activation quantiles**")
                quantile_images = thumbs_component("latent-quantiles", clickable=True)
                histogram = gr.Plot(label="Activation histogram")
                label_mix = gr.Plot(label="Labels of its examples", elem_id="latent-labels")
            with gr.Column(scale=1):
                release = " beside the MSAE release's" if explorer.release_names else ""
                names = Table(
                    label=f"Names (vocabulary; {score_label(explorer)}){release}",
                    interactive=False,
                )
                similar = Table(
                    label="Most similar decoder directions (click to open)", interactive=False
                )
                quantiles = Table(
                    label="Quantile samples: active items from each activation quantile bin "
                    "(quantile_bin 0 = weakest), not only the strongest",
                    interactive=False,
                )
                family = Table(
                    label="Matryoshka parents and children (click to open): p_parent = "
                    "P(parent active | child active), p_child = P(child active | parent active)",
                    interactive=False,
                )
                tree = gr.Markdown(elem_id="latent-tree")
        export = export_controls("Export this latent")
        figure = figure_controls()
    return LatentTab(
        latent_id,
        open_button,
        search,
        search_button,
        hits,
        summary,
        top_images,
        quantile_images,
        histogram,
        names,
        top_texts,
        similar,
        quantiles,
        family,
        tree,
        export,
        agreement,
        label_mix,
        figure,
    )


def wire(
    explorer: Explorer,
    tab: LatentTab,
    tabs: gr.Tabs,
    clickable_tables: Sequence[gr.Dataframe],
    clickable_thumbs: Sequence[gr.HTML],
) -> None:
    """Open by id, search, export; a click on a row of ``clickable_tables`` (and of this tab's
    similar latents and search hits) or on a thumbnail opens that latent here."""
    show = bind(latent_view, explorer)
    tab.open_button.click(show, tab.latent_id, tab.outputs, api_name="latent")
    tab.latent_id.submit(show, tab.latent_id, tab.outputs, api_visibility="private")
    hits = bind(show_hits, explorer)
    tab.search_button.click(hits, tab.search, tab.hits, api_name="search")
    tab.search.submit(hits, tab.search, tab.hits, api_visibility="private")
    tab.export.button.click(
        bind(export_latent, explorer),
        [tab.latent_id, tab.export.format],
        tab.export.file,
        api_name="export_latent",
    )
    tab.figure.button.click(
        bind(latent_figure, explorer),
        [tab.latent_id, tab.figure.format],
        tab.figure.file,
        api_name="latent_figure",
    )
    opened = [tabs, *tab.outputs]
    for table in (*clickable_tables, tab.similar, tab.hits, tab.family):
        table.select(bind(open_row, explorer), table, opened, api_visibility="private")
    for thumbs in clickable_thumbs:
        thumbs.click(bind(open_thumb, explorer), None, opened, api_visibility="private")


def latent_view(explorer: Explorer, latent: float | str | None) -> LatentView:
    """The page of one latent. ``latent`` is what the Number input hands over (a float, never
    rounded: 1.5 is refused, 3.0 is latent 3) or a deep link's or API caller's string ("3.0" is
    latent 3, "NaN" is refused: never a name search). Kept in the page cache by id."""
    latent_id = explorer.check_latent(latent)
    return cached(explorer, "latent", (latent_id,), build_latent_view, latent_id)


def build_latent_view(explorer: Explorer, latent_id: int) -> LatentView:
    page = explorer.latent_page(latent_id)
    return LatentView(
        page.latent_id,
        summary_markdown(page),
        thumbs_html(item_figures(page.top_images)),
        thumbs_html(item_figures(page.quantile_images)),
        page.histogram,
        page.names,
        page.top_texts,
        page.similar,
        page.quantiles,
        page.family,
        tree_markdown(explorer, page.descendants),
        agreement_markdown(page),
        page.label_mix.figure,
    )


def tree_markdown(explorer: Explorer, nodes: Sequence[TreeNode]) -> str:
    """The descendant tree as a nested list of latent links with names, P(parent | child),
    Matryoshka level and items; a latent shown twice is marked, not expanded again."""
    if len(nodes) <= 1:
        return "**Descendants:** none (no finer latent has this one as a parent)"
    lines = [f"**Descendants of latent {nodes[0].latent}** (P(parent | child), level, items)"]
    for node in nodes[1:]:
        repeated = " · *shown above*" if node.repeated else ""
        lines.append(
            f"{'  ' * (node.depth - 1)}- [{node.latent}]({latent_link(node.latent)}) "
            f"{explorer.names_text(node.latent, 2) or 'no names'} · {node.p_parent:.2f} · "
            f"level {node.level} · {node.n_active} items{repeated}"
        )
    return "\n".join(lines)


def summary_markdown(page: LatentPage) -> str:
    s = page.summary
    level = "never kept" if s.level < 0 else f"{s.level} (k={s.level_k})"
    link = latent_link(page.latent_id)
    return (
        f"### Latent {page.latent_id}: {s.names or 'no names'}\n"
        + (f"MSAE release names: {s.msae_names}  \n" if s.msae_names is not None else "")
        + f"frequency {s.frequency:.4f} · mean {s.mean_activation:.3f} · "
        f"max {s.max_activation:.3f} · images {s.image_fraction:.0%} / texts "
        f"{s.text_fraction:.0%} · Matryoshka level {level}"
        + purity_text(page)
        + (" · **dead on this corpus**" if s.dead else "")
        + address.link_markdown(link)
    )


def purity_text(page: LatentPage) -> str:
    """`` · label purity 75% (cross)`` when the corpus has labels, else nothing."""
    purity = page.label_mix.purity
    if purity.top_label is None:
        return ""
    return f" · label purity {purity.purity:.0%} ({purity.top_label}, of {purity.n_labelled})"


def agreement_markdown(page: LatentPage) -> str:
    """The cross-modal agreement in words, with the chance level beside it."""
    a = page.agreement
    if math.isnan(a.score):
        missing = "image" if a.k == 0 else "text"
        return f"**Cross-modal agreement:** none (no active {missing} in the corpus)"
    return (
        f"**Cross-modal agreement {a.score:.2f}** (chance {a.chance:.2f}): of the {a.k} "
        f"corpus images nearest each of the top {a.n_texts} texts in CLIP space, this share "
        f"on average is among the latent's top {a.k} images."
    )


def latent_link(latent_id: int) -> str:
    """The deep link opening this latent (the page reads it back on load)."""
    return address.link(TAB_ID, latent=latent_id)


def search_hits(explorer: Explorer, text: str | None) -> pd.DataFrame:
    """Latents whose names match (latent, score, names); a warning when none does."""
    query = (text or "").strip()
    hits = cached(explorer, "search", (query,), Explorer.search_latents, query)
    if hits.empty:
        warn([f"no latent names match {text!r}"])
    return hits


def show_hits(explorer: Explorer, text: str | None) -> gr.Dataframe:
    """The hits, in their table made visible (it starts hidden)."""
    return gr.Dataframe(value=search_hits(explorer, text), visible=True)


def export_latent(explorer: Explorer, latent: float | str | None, fmt: ExportFormat) -> str:
    """The path of the exported latent page."""
    return str(explorer.export_latent(latent, export_dpath(explorer), fmt))


def clicked_latent(table: pd.DataFrame, row_value: Sequence[Any] | None) -> int:
    """The latent of a clicked row, read by column name: ``row_value`` is the row as displayed,
    however the user sorted or filtered the table."""
    row = dict(zip(table.columns, row_value or ()))
    if "latent" not in row:
        raise ValueError("click a row of the table to open its latent")
    return int(row["latent"])


def open_row(explorer: Explorer, table: pd.DataFrame, evt: gr.SelectData) -> tuple[Any, ...]:
    """This tab, selected, showing the latent of the clicked row."""
    return (gr.Tabs(selected=TAB_ID), *latent_view(explorer, clicked_latent(table, evt.row_value)))


def open_thumb(explorer: Explorer, evt: gr.EventData) -> tuple[Any, ...]:
    """This tab, selected, showing the latent of the clicked thumbnail."""
    return (gr.Tabs(selected=TAB_ID), *latent_view(explorer, evt.latent))
