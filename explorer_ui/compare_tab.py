"""The Compare tab: the loaded SAE against a second SAE of the same CLIP (a path, a Hub id or
``builtin:``, read by ``load_sae``): latents matched one-to-one by decoder cosine, each pair's
activation correlation over the corpus, a summary and a sortable table whose rows open the
latent."""

from __future__ import annotations

from typing import NamedTuple

import gradio as gr
import pandas as pd

from explorer_ui import address
from explorer_ui.wiring import bind
from sae_explorer.explorer import Explorer
from sae_explorer.latent_matching import ComparisonSummary, SAEComparison

TAB_ID = "compare"
MAX_LISTED = 20
"""Unmatched latents listed by id in the summary (the rest are counted)."""


class CompareTab(NamedTuple):
    source: gr.Textbox
    button: gr.Button
    summary: gr.Markdown
    table: gr.Dataframe

    @property
    def outputs(self) -> list[gr.Markdown | gr.Dataframe]:
        """The components a :class:`CompareView` fills, in its order."""
        return [self.summary, self.table]


class CompareView(NamedTuple):
    summary: str  # markdown: the numbers, and the unmatched latents of each
    table: pd.DataFrame  # latent, names, match, cosine, correlation; best matches first


def layout() -> CompareTab:
    with gr.Tab("Compare", id=TAB_ID, elem_id=address.tab_panel_id(TAB_ID)):
        gr.Markdown(
            "Compare the loaded SAE (**A**) with a second SAE (**B**) of the same CLIP: latents "
            "are matched one-to-one by decoder cosine (Hungarian algorithm) and each pair's "
            "activations are correlated over the corpus."
        )
        with gr.Row():
            source = gr.Textbox(
                label="Second SAE",
                placeholder="a folder or file, hf-hub:org/repo/path, or builtin:shapes",
                scale=4,
            )
            button = gr.Button("Compare", variant="primary", scale=1)
        summary = gr.Markdown(elem_id="compare-summary")
        table = gr.Dataframe(
            label="Each latent of A, its match in B (click a row to open the latent; click a "
            "header to sort)",
            interactive=False,
            max_height=600,
        )
    return CompareTab(source, button, summary, table)


def wire(explorer: Explorer, tab: CompareTab) -> None:
    compare = bind(compare_view, explorer)
    tab.button.click(compare, tab.source, tab.outputs, api_name="compare")
    tab.source.submit(compare, tab.source, tab.outputs, api_visibility="private")


def compare_view(
    explorer: Explorer,
    source: str | None,
    progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio finds its progress bar by this default)
) -> CompareView:
    """The loaded SAE against the SAE at ``source``; ``ValueError`` when it cannot be read or
    is for another CLIP width."""
    source = (source or "").strip()
    if not source:
        raise ValueError("give the second SAE: a folder or file, hf-hub:org/repo/path or builtin:")
    result = explorer.compare_sae(source, progress=lambda f, m: progress(f, desc=m))
    return CompareView(
        summary_markdown(result.summary, result, source), comparison_table(explorer, result)
    )


def comparison_table(explorer: Explorer, result: SAEComparison) -> pd.DataFrame:
    """The comparison's table with A's names after the latent id."""
    table = result.table().reset_index(drop=True)
    table.insert(1, "names", [explorer.names_text(int(i), 2) for i in table["latent"]])
    return table


def summary_markdown(s: ComparisonSummary, result: SAEComparison, source: str) -> str:
    def listed(ids) -> str:
        shown = ", ".join(str(int(i)) for i in ids[:MAX_LISTED])
        return shown + (f", … ({len(ids) - MAX_LISTED} more)" if len(ids) > MAX_LISTED else "")

    lines = [
        f"**A** the loaded SAE ({s.n_latents_a:,} latents) · **B** `{source}` "
        f"({s.n_latents_b:,} latents) · {s.n_matched:,} pairs",
        f"**Mean matched cosine** {s.mean_cosine:.3f} · **matches with cosine ≥ "
        f"{s.threshold:g}**: {s.share_above_a:.1%} of A, {s.share_above_b:.1%} of B · "
        f"**mean activation correlation** {s.mean_correlation:.3f} over {s.n_items:,} items",
        f"**Unmatched** in A: {s.n_unmatched_a:,}"
        + (f" ({listed(result.unmatched_a)})" if s.n_unmatched_a else "")
        + f" · in B: {s.n_unmatched_b:,}"
        + (f" ({listed(result.unmatched_b)})" if s.n_unmatched_b else ""),
    ]
    return "  \n".join(lines)
