"""Plotly figures of the explorer's pages: small, explicit, and light to send to a browser."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from sae_explorer.evaluation import Evaluation

PLOT_TEMPLATE = go.layout.Template(
    layout={
        "font": {"family": "sans-serif", "size": 12},
        "plot_bgcolor": "white",
        "paper_bgcolor": "white",
        "colorway": ["#3b6fd4", "#e07b39", "#4aa564", "#b64fc8", "#d4443b"],
        "xaxis": {"gridcolor": "#e6e6e6", "zerolinecolor": "#cccccc", "automargin": True},
        "yaxis": {"gridcolor": "#e6e6e6", "zerolinecolor": "#cccccc", "automargin": True},
        "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
    }
)
"""A small explicit template: plotly's default one adds ~6 kB of JSON to every figure sent."""


def bar(table: pd.DataFrame) -> go.Figure:
    labels = [f"#{r.latent} {r.names.split(' (')[0]}" for r in table.itertuples()]
    fig = go.Figure(go.Bar(x=table["activation"], y=labels, orientation="h"))
    fig.update_layout(
        title="Top latents",
        yaxis={"autorange": "reversed"},
        xaxis_title="activation",
        height=320,
        template=PLOT_TEMPLATE,
    )
    return fig


def levels_plot(
    levels: Sequence[int],
    cosines: Sequence[float],
    fvu: Sequence[float] | None = None,
    title: str = "Reconstruction vs Matryoshka level",
) -> go.Figure:
    x = [str(k) for k in levels]
    fig = go.Figure(go.Scatter(x=x, y=list(cosines), mode="lines+markers", name="cosine"))
    if fvu is not None:
        fig.add_trace(go.Scatter(x=x, y=list(fvu), mode="lines+markers", name="FVU"))
    fig.update_layout(
        title=title,
        xaxis_title="latents kept (k of each level)",
        xaxis_type="category",
        yaxis_title="cosine" if fvu is None else "value",
        height=280,
        template=PLOT_TEMPLATE,
    )
    return fig


def fidelity_plot(evaluation: Evaluation, levels: Sequence[int]) -> go.Figure:
    """CLIP zero-shot with the SAE spliced in, per Matryoshka level: argmax agreement with the
    original embeddings' predictions (solid) and the spliced accuracy (dashed) of each label
    column, on images (texts when the corpus has no labelled images)."""
    modalities = {row.modality for row in evaluation.fidelity}
    modality = "image" if "image" in modalities else "text"
    level_cuts = evaluation.cuts[: len(levels)]
    x = [str(k) for k in levels]
    fig = go.Figure()
    tasks = dict.fromkeys(row.task for row in evaluation.fidelity if row.modality == modality)
    for task in tasks:
        by_cut = {
            r.cut: r for r in evaluation.fidelity if r.task == task and r.modality == modality
        }
        rows = [by_cut[cut] for cut in level_cuts]
        name = task.removeprefix("attr_")
        fig.add_trace(
            go.Scatter(
                x=x, y=[r.agreement for r in rows], mode="lines+markers", name=f"{name}: agreement"
            )
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[r.accuracy_reconstruction for r in rows],
                mode="lines+markers",
                line={"dash": "dash"},
                name=f"{name}: accuracy (CLIP alone {rows[0].accuracy_original:.3f})",
            )
        )
    fig.update_layout(
        title=f"Zero-shot with the SAE spliced in, per Matryoshka level ({modality}s)",
        xaxis_title="latents kept (k of each level)",
        xaxis_type="category",
        yaxis_title="fraction of items",
        legend={"orientation": "h", "y": -0.35},
        height=380,
        template=PLOT_TEMPLATE,
    )
    return fig


def histogram(counts: np.ndarray, edges: np.ndarray, latent_id: int) -> go.Figure:
    """The index's activation histogram drawn on a log activation axis: its bins are 1/8 octave
    wide, so on a log axis they are equally wide and raw counts read honestly (on a linear axis
    the wide high bins would look heavy)."""
    counts = np.asarray(counts)
    edges = np.asarray(edges, dtype=np.float64)
    steps = np.append(counts, counts[-1] if len(counts) else 0)  # a step per bin, edge to edge
    fig = go.Figure(go.Scatter(x=edges, y=steps, line_shape="hv", fill="tozeroy", mode="lines"))
    fig.update_layout(
        title=f"Activations of latent {latent_id} on the corpus (active items)",
        xaxis_title="activation (log scale; bins 1/8 octave wide)",
        xaxis_type="log",
        yaxis_title="items per bin",
        yaxis_type="log",
        height=280,
        template=PLOT_TEMPLATE,
    )
    return fig


def frequency_histogram(frequency_l: np.ndarray) -> go.Figure:
    live = frequency_l[frequency_l > 0]
    fig = go.Figure(go.Histogram(x=np.log10(live), nbinsx=40))
    fig.update_layout(
        title=f"Latent frequency ({int((frequency_l == 0).sum())} dead latents not shown)",
        xaxis_title="log10(fraction of items it is active on)",
        yaxis_title="latents",
        height=300,
        template=PLOT_TEMPLATE,
    )
    return fig


def sweep_plot(table: pd.DataFrame, latent_id: int, baseline: int, target: str) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=table["strength"], y=table["latent"], mode="lines+markers", name=f"latent {latent_id}"
        )
    )
    fig.add_trace(
        go.Scatter(
            x=table["strength"],
            y=table["baseline"],
            mode="lines+markers",
            name=f"baseline: latent {baseline} (similar frequency)",
            line={"dash": "dash"},
        )
    )
    fig.update_layout(
        title=f"Zero-shot score of {target!r} vs steering strength",
        xaxis_title="strength (x the latent's max activation on the corpus)",
        yaxis_title=f"P({target})",
        yaxis_range=[0, 1],
        height=320,
        template=PLOT_TEMPLATE,
    )
    return fig
