"""Inspect one input: its strongest latents, how well the SAE reconstructs it (at each
Matryoshka level), and the corpus images where those latents fire most."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import pandas as pd
import plotly.graph_objects as go
import torch

from sae_explorer.corpus import Modality
from sae_explorer.explorer import names, plots, queries
from sae_explorer.explorer.batches import SaeRow
from sae_explorer.explorer.queries import Query
from sae_explorer.explorer.thumbnails import Thumb

if TYPE_CHECKING:
    from sae_explorer.explorer.state import Explorer

TABLE_COLUMNS = ["latent", "names", "activation", "level", "corpus_level", "frequency"]


class Diagnostics(NamedTuple):
    """How well the SAE reconstructs one input."""

    cosine: float  # of the input with its reconstruction
    relative_error: float  # |x - x_hat| / |x|
    l0: int  # active latents (what the table ranks: MSAE's full latents are many)
    code_l0: int  # active latents in the SAE's own sparse code (TopK k, its largest level)
    levels: list[int]  # latents kept at each Matryoshka level (one level for plain SAEs)
    level_cosines: list[float]  # cosine of the input with each level's reconstruction
    input_statistics: str  # which statistics the input went through, e.g. "text statistics: ..."


class InspectResult(NamedTuple):
    table: pd.DataFrame  # latent, names, activation, level, corpus_level, frequency
    bar: go.Figure
    diagnostics: Diagnostics
    levels_plot: go.Figure
    thumbs: list[Thumb]
    n_hidden: int = 0  # active latents left out as denser than ``max_frequency``


@torch.inference_mode()
def inspect(
    explorer: Explorer,
    query: Query,
    n_top: int = 10,
    n_thumbs: int = 4,
    max_frequency: float | None = None,
) -> InspectResult:
    """Top latents of one input, its reconstruction diagnostics and example thumbnails.
    ``max_frequency`` leaves out latents active on more than that fraction of the corpus
    (dense latents top every table on real photos)."""
    if max_frequency is not None and not 0 < max_frequency <= 1:
        raise ValueError(f"max_frequency must be in (0, 1], got {max_frequency}")
    modality = queries.query_modality(explorer, query)
    row = explorer.batchers.sae[modality](query.x_d)  # batched with concurrent requests
    z_l = row.z_l
    n_active = int((z_l > 0).sum())
    ranked = z_l.argsort(descending=True)[:n_active].tolist()
    n_ranked = len(ranked)
    if max_frequency is not None:
        ranked = [i for i in ranked if explorer.frequency_l[i] <= max_frequency]
    top = ranked[:n_top]
    rows = [
        {
            "latent": i,
            "names": names.names_text(explorer, i),
            "activation": round(float(z_l[i]), 4),
            "level": int(row.levels_l[i]),
            "corpus_level": int(explorer.levels_l[i]),
            "frequency": round(float(explorer.frequency_l[i]), 4),
        }
        for i in top
    ]
    table = names.with_release_names(explorer, pd.DataFrame(rows, columns=TABLE_COLUMNS))
    x_1d = torch.as_tensor(query.x_d, dtype=torch.float32)[None]
    d = diagnostics(explorer, x_1d, row, n_active, modality)
    thumbs = [t for i in top[:5] for t in explorer.latent_thumbs(i, n_thumbs)]
    levels_plot = plots.levels_plot(d.levels, d.level_cosines)
    n_hidden = n_ranked - len(ranked)
    return InspectResult(table, plots.bar(table), d, levels_plot, thumbs, n_hidden)


def diagnostics(
    explorer: Explorer, x_1d: torch.Tensor, row: SaeRow, l0: int, modality: Modality
) -> Diagnostics:
    """How well the SAE reconstructs one input ``x_1d`` [1, n_inputs] (``row``: the SAE's pass
    over it), overall and per level."""
    x_hat_1d = row.x_hat_d[None]
    cosine = float(torch.nn.functional.cosine_similarity(x_1d, x_hat_1d)[0])
    rel_error = float((x_1d - x_hat_1d).norm() / x_1d.norm().clamp_min(1e-12))
    return Diagnostics(
        cosine=round(cosine, 4),
        relative_error=round(rel_error, 4),
        l0=l0,
        code_l0=row.code_l0,
        levels=list(explorer.sae.cfg.levels),
        level_cosines=[round(c, 4) for c in row.level_cosines_v.tolist()],
        input_statistics=explorer.input_stats.describe(modality, explorer.sae.training_modality),
    )
