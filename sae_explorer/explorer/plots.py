"""Plotly figures of the explorer's pages: small, explicit, and light to send to a browser."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

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


def label_mix_bars(table: pd.DataFrame, latent_id: int) -> go.Figure:
    """Stacked horizontal bars of label shares, one bar per group (top examples first, then the
    activation-quantile bins from strongest to weakest); ``table``: group, label, count, share."""
    fig = go.Figure()
    groups = list(dict.fromkeys(table["group"])) if len(table) else []
    for label in dict.fromkeys(table["label"]) if len(table) else []:
        part = table[table["label"] == label].set_index("group").reindex(groups)
        fig.add_trace(
            go.Bar(
                y=groups,
                x=part["share"].fillna(0.0),
                name=str(label),
                orientation="h",
                customdata=part["count"].fillna(0).astype(int),
                hovertemplate="%{y}: %{fullData.name} %{x:.0%} (%{customdata} items)<extra></extra>",
            )
        )
    fig.update_layout(
        title=f"Labels of latent {latent_id}'s examples"
        + ("" if len(table) else " (the corpus has no labels)"),
        barmode="stack",
        xaxis={"title": "share of the group's labelled items", "range": [0, 1]},
        yaxis={"autorange": "reversed"},
        height=110 + 32 * max(len(groups), 1),
        legend={"orientation": "h", "y": -0.3},
        template=PLOT_TEMPLATE,
    )
    return fig


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
    scatter = go.Scattergl if len(latent_l) > WEBGL_ABOVE else go.Scatter
    hover = np.asarray(hover_l, dtype=object)
    fig = go.Figure()
    marker = {"size": 5, "opacity": 0.8}
    template = "%{text}<extra></extra>"
    if categorical:
        for value in np.unique(colour_l):
            keep = colour_l == value
            fig.add_trace(
                scatter(
                    x=xy_l2[keep, 0], y=xy_l2[keep, 1], mode="markers", marker=marker,
                    name=f"{colour_title} {value}", customdata=latent_l[keep], text=hover[keep],
                    hovertemplate=template,
                )
            )  # fmt: skip
    else:
        fig.add_trace(
            scatter(
                x=xy_l2[:, 0], y=xy_l2[:, 1], mode="markers", customdata=latent_l, text=hover,
                marker={**marker, "color": colour_l, "colorscale": "Viridis",
                        "colorbar": {"title": colour_title}},
                hovertemplate=template, showlegend=False,
            )
        )  # fmt: skip
    fig.update_layout(
        title="Decoder directions (click a point to open its latent)",
        xaxis={"showticklabels": False, "title": ""},
        yaxis={"showticklabels": False, "title": ""},
        height=480,
        clickmode="event",
        hovermode="closest",
        template=PLOT_TEMPLATE,
    )
    return fig
