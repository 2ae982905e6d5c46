"""Plotly figures of the explorer's pages: small, explicit, and light to send to a browser."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

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
    level_index = list(range(len(x)))  # each point's level, for clicks (``customdata``)
    fig = go.Figure(
        go.Scatter(
            x=x, y=list(cosines), mode="lines+markers", name="cosine", customdata=level_index
        )
    )
    if fvu is not None:
        fig.add_trace(
            go.Scatter(x=x, y=list(fvu), mode="lines+markers", name="FVU", customdata=level_index)
        )
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


class FrequencyBins(NamedTuple):
    """The histogram of live latents' frequencies, binned so that a bin is an exact filter: its
    edges sit half-way between whole numbers of active items, so the latents in a bin are exactly
    those whose frequency lies in ``[low_b, high_b]`` (inclusive or not: no frequency is an edge)."""

    low_b: np.ndarray  # float64 [n_bins]: lower edge, as a share of items
    high_b: np.ndarray  # float64 [n_bins]: upper edge, as a share of items
    count_b: np.ndarray  # int64 [n_bins]: latents in the bin


def frequency_bins(frequency_l: np.ndarray, n_items: int, n_bins: int = 40) -> FrequencyBins:
    """Live latents binned by how many items they are active on, on a log scale (narrow bins
    that would hold no whole number of items are merged into their neighbour)."""
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    active_l = np.rint(np.asarray(frequency_l, dtype=np.float64) * n_items).astype(np.int64)
    active_l = active_l[active_l > 0]
    if not len(active_l):
        empty = np.zeros(0)
        return FrequencyBins(empty, empty, np.zeros(0, dtype=np.int64))
    top = int(active_l.max())
    edges_e = np.unique(np.rint(np.geomspace(1, top + 1, n_bins + 1))) - 0.5
    count_b = np.histogram(active_l, bins=edges_e)[0].astype(np.int64)
    return FrequencyBins(edges_e[:-1] / n_items, edges_e[1:] / n_items, count_b)


def percent_decimals(n_items: int) -> int:
    """Decimals that keep a bin edge in percent (half an item from a whole count) on the same
    side of every count: the rounding error stays below 0.1 % of an item's step."""
    return max(2, int(np.ceil(np.log10(max(n_items, 1)))) + 1)


def frequency_histogram(frequency_l: np.ndarray, n_items: int) -> go.Figure:
    """The frequency histogram of the live latents on a log axis; each bar carries its range in
    percent (``customdata``: [low, high]) so a click can list exactly its latents."""
    bins = frequency_bins(frequency_l, n_items)
    log_low, log_high = np.log10(bins.low_b), np.log10(bins.high_b)
    decimals = percent_decimals(n_items)
    range_b2 = np.round(np.stack([bins.low_b, bins.high_b], axis=1) * 100, decimals)
    hover = [
        f"{c} latents active on {lo:.3g}–{hi:.3g} % of items (click to list them)"
        for c, lo, hi in zip(bins.count_b, range_b2[:, 0], range_b2[:, 1])
    ]
    fig = go.Figure(
        go.Bar(
            x=(log_low + log_high) / 2,
            y=bins.count_b,
            width=log_high - log_low,
            customdata=range_b2,
            hovertext=hover,
            hoverinfo="text",
        )
    )
    dead = int((np.asarray(frequency_l) == 0).sum())
    fig.update_layout(
        title=f"Latent frequency ({dead} dead latents not shown)",
        xaxis_title="log10(fraction of items it is active on)",
        yaxis_title="latents",
        bargap=0,
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


def label_mix_bars(table: pd.DataFrame, latent_id: int) -> go.Figure:
    """Stacked horizontal bars of label shares, one bar per group (top examples first, then the
    activation-quantile bins from strongest to weakest); ``table``: group, label, count, share.
    Built from plain lists in one constructor: per-trace numpy arrays cost plotly ~10x more."""
    groups = list(dict.fromkeys(table["group"]))
    share = table.pivot(index="group", columns="label", values="share").reindex(groups).fillna(0)
    count = table.pivot(index="group", columns="label", values="count").reindex(groups).fillna(0)
    bars = [
        {
            "type": "bar",
            "y": groups,
            "x": share[label].tolist(),
            "name": str(label),
            "orientation": "h",
            "customdata": count[label].astype(int).tolist(),
            "hovertemplate": "%{y}: %{fullData.name} %{x:.0%} (%{customdata} items)<extra></extra>",
        }
        for label in dict.fromkeys(table["label"])
    ]
    layout = {
        "title": f"Labels of latent {latent_id}'s examples"
        + ("" if len(table) else " (the corpus has no labels)"),
        "barmode": "stack",
        "xaxis": {"title": "share of the group's labelled items", "range": [0, 1]},
        "yaxis": {"autorange": "reversed"},
        "height": 110 + 32 * max(len(groups), 1),
        "legend": {"orientation": "h", "y": -0.3},
        "template": PLOT_TEMPLATE,
    }
    return go.Figure(data=bars, layout=layout)


MAP_COLOURWAY = [
    "#3b6fd4", "#e07b39", "#4aa564", "#b64fc8", "#d4443b",
    "#8c6d31", "#e377c2", "#7f7f7f", "#17becf", "#bcbd22",
]  # fmt: skip
"""Ten distinguishable colours: Matryoshka SAEs have up to ten levels or so."""
WEBGL_ABOVE = 5000
"""Maps of more points are drawn with WebGL (scattergl): SVG slows down past a few thousand."""


def decoder_map(
    xy_l2: np.ndarray,
    latent_l: np.ndarray,
    colour_l: np.ndarray,
    colour_title: str,
    hover_l: Sequence[str],
    categorical: bool,
) -> go.Figure:
    """One point per latent at ``xy_l2``; ``customdata`` is the latent id (what a click opens).
    Categorical colours (e.g. Matryoshka levels) get one trace each, numeric ones a colour bar."""
    kind = "scattergl" if len(latent_l) > WEBGL_ABOVE else "scatter"
    hover = np.asarray(hover_l, dtype=object)
    marker = {"size": 5, "opacity": 0.8}

    def trace(keep: np.ndarray, **extra: object) -> dict:
        return {
            "type": kind,
            "mode": "markers",
            "x": xy_l2[keep, 0],
            "y": xy_l2[keep, 1],
            "customdata": latent_l[keep],
            "text": hover[keep],
            "hovertemplate": "%{text}<extra></extra>",
            **extra,
        }

    if categorical:
        traces = [
            trace(colour_l == value, marker=marker, name=f"{colour_title} {value}")
            for value in np.unique(colour_l)
        ]
    else:
        colours = {"color": colour_l, "colorscale": "Viridis"}
        colour_bar = {"colorbar": {"title": {"text": colour_title}}}
        every = np.ones(len(latent_l), dtype=bool)
        traces = [trace(every, marker={**marker, **colours, **colour_bar}, showlegend=False)]
    layout = {
        "title": "Decoder directions (click a point to open its latent)",
        "xaxis": {"showticklabels": False},
        "yaxis": {"showticklabels": False},
        "height": 480,
        "clickmode": "event",
        "hovermode": "closest",
        "colorway": MAP_COLOURWAY,
        "template": PLOT_TEMPLATE,
    }
    return go.Figure(data=traces, layout=layout)
