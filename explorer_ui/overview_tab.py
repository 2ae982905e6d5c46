"""The Overview tab: what is loaded (models, corpus, index, with hashes and sizes), how well
the SAE does on the whole corpus (L0, FVU, dead and dense latents, per Matryoshka level), MSAE's
metrics per level and CLIP's zero-shot with the SAE spliced in (the ``evaluate`` report).
Computed once at start; nothing here changes per request."""

from __future__ import annotations

from typing import NamedTuple

import gradio as gr

from explorer_ui import address
from explorer_ui.wiring import plot_click_js
from sae_explorer.evaluation.report import DEFINITIONS, fidelity_table, reconstruction_table
from sae_explorer.explorer import Overview, OverviewStats

TAB_ID = "overview"
FREQUENCY_ID = "overview-frequency"
LEVELS_ID = "overview-levels"
PLOT_MIN_PX = 360
"""Narrowest a plot is drawn before the row wraps it below its neighbour (titles stay whole)."""


class OverviewTab(NamedTuple):
    frequency_click: gr.HTML  # fires 'click' with a histogram bar's frequency range (%)
    level_click: gr.HTML  # fires 'click' with the clicked point's Matryoshka level


def layout(overview: Overview) -> OverviewTab:
    """The tab; its frequency histogram and per-level plot are the Latents tab's filters (a
    click lists the bar's or the level's latents there, ``browse_tab.wire_opened_from``)."""
    with gr.Tab("Overview", id=TAB_ID, elem_id=address.tab_panel_id(TAB_ID)):
        gr.Dataframe(value=overview.models, label="Loaded models and corpus", interactive=False)
        gr.Markdown(stats_markdown(overview.stats), elem_id="overview-stats")
        with gr.Row():  # side by side when wide; stacked on a phone (each needs PLOT_MIN_PX)
            gr.Plot(
                value=overview.frequency_histogram,
                label="Latent frequency (click a bar to list its latents)",
                elem_id=FREQUENCY_ID,
                min_width=PLOT_MIN_PX,
            )
            gr.Plot(
                value=overview.levels_plot,
                label="Per-level reconstruction (click a level to list its latents)",
                elem_id=LEVELS_ID,
                min_width=PLOT_MIN_PX,
            )
            if overview.fidelity_plot is not None:
                gr.Plot(
                    value=overview.fidelity_plot,
                    label="Per-level zero-shot fidelity",
                    elem_id="overview-fidelity",
                    min_width=PLOT_MIN_PX,
                )
            else:
                gr.Markdown(overview.fidelity_note, elem_id="overview-fidelity")
        frequency_click = gr.HTML("", js_on_load=plot_click_js(FREQUENCY_ID, "range"))
        level_click = gr.HTML("", js_on_load=plot_click_js(LEVELS_ID, "level"))
        with gr.Accordion("MSAE metrics and spliced fidelity per level", open=False):
            gr.Markdown(DEFINITIONS)
            for table in metrics_tables(overview):
                gr.Dataframe(value=table, interactive=False)
    return OverviewTab(frequency_click, level_click)


def stats_markdown(stats: OverviewStats) -> str:
    levels = ", ".join(
        f"k={k}: cos {c:.3f} / FVU {f:.3g}"
        for k, c, f in zip(stats.levels, stats.level_cosine, stats.level_fvu)
    )
    return (
        f"**Corpus** {stats.n_items} items ({stats.n_images} images, {stats.n_texts} texts) · "
        f"**SAE** {stats.n_latents} latents · **L0** {stats.l0:.1f} · **FVU** {stats.fvu:.3g} · "
        f"**dead** {stats.dead_latents} · **dense** (> {stats.dense_threshold:.0%} of items) "
        f"{stats.dense_latents}  \n**Per level:** {levels}"
    )


def metrics_tables(overview: Overview) -> list:
    """The report's tables (``python -m sae_explorer evaluate``): reconstruction per modality and
    cut, then fidelity when the corpus has labels; numbers rounded to 4 decimals."""
    tables = [reconstruction_table(overview.evaluation)]
    if overview.evaluation.fidelity:
        tables.append(fidelity_table(overview.evaluation))
    return [table.round(4) for table in tables]
