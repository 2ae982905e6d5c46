"""The Overview tab: what is loaded (models, corpus, index) and how well the SAE reconstructs
the whole corpus, overall and per Matryoshka level."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from sae_explorer.corpus import SOURCE_SEPARATOR, Modality
from sae_explorer.explorer import plots, quality

if TYPE_CHECKING:
    from sae_explorer.explorer.state import Explorer

DENSE_FREQUENCY = 0.1
"""Latents active on more than this fraction of the corpus count as dense in the overview."""


class OverviewStats(NamedTuple):
    """The SAE on the whole corpus."""

    n_items: int
    n_images: int
    n_texts: int
    n_latents: int
    l0: float  # mean active latents per item
    fvu: float  # fraction of variance unexplained
    dead_latents: int  # never active on the corpus
    dense_latents: int  # active on more than dense_threshold of the items
    dense_threshold: float
    levels: list[int]  # latents kept at each Matryoshka level
    level_fvu: list[float]  # FVU of each level's reconstruction
    level_cosine: list[float]  # mean cosine of the items with each level's reconstruction
    input_statistics: dict[Modality, str]  # where each modality's input statistics came from


class ModelRow(NamedTuple):
    """One row of the table of what is loaded."""

    what: str  # CLIP, SAE, corpus, index
    id: str
    hash: str  # leading hex digits of its content hash ("" when it has none)
    size: str


class Overview(NamedTuple):
    models: pd.DataFrame  # ModelRow columns: what, id, hash, size
    stats: OverviewStats
    frequency_histogram: go.Figure
    levels_plot: go.Figure


class CorpusQuality(NamedTuple):
    """Sums over the corpus, in one pass over its embeddings."""

    sq_err: float  # squared reconstruction error
    total_var: float  # squared distance from the corpus mean
    l0_sum: float  # active latents
    level_sq_err_v: np.ndarray  # [n_levels] squared error of each level's reconstruction
    level_cos_sum_v: np.ndarray  # [n_levels] cosine of each item with its level reconstruction


def compute_overview(explorer: Explorer, batch_size: int = 512) -> Overview:
    """Models, corpus and whole-corpus SAE quality (``Explorer.overview`` caches it)."""
    n = explorer.index.embeddings.shape[0]
    assert n > 0, "empty corpus"
    q = corpus_quality(explorer, batch_size)
    levels = list(explorer.sae.cfg.levels)
    level_fvu = q.level_sq_err_v / max(q.total_var, 1e-12)
    level_cos = q.level_cos_sum_v / n
    modality_n = explorer.items["modality"]
    stats = OverviewStats(
        n_items=n,
        n_images=int((modality_n == "image").sum()),
        n_texts=int((modality_n == "text").sum()),
        n_latents=explorer.n_latents,
        l0=q.l0_sum / n,
        fvu=q.sq_err / max(q.total_var, 1e-12),
        dead_latents=int((explorer.frequency_l == 0).sum()),
        dense_latents=int((explorer.frequency_l > DENSE_FREQUENCY).sum()),
        dense_threshold=DENSE_FREQUENCY,
        levels=levels,
        level_fvu=[float(v) for v in level_fvu],
        level_cosine=[float(v) for v in level_cos],
        input_statistics=explorer.input_stats.manifest(),
    )
    levels_fig = plots.levels_plot(
        levels,
        list(level_cos),
        fvu=list(level_fvu),
        title="Corpus reconstruction per Matryoshka level",
    )
    return Overview(
        models_table(explorer), stats, plots.frequency_histogram(explorer.frequency_l), levels_fig
    )


@torch.inference_mode()
def corpus_quality(explorer: Explorer, batch_size: int) -> CorpusQuality:
    """Reconstruction error, L0 and per-level quality summed over the indexed embeddings."""
    x_nd = torch.as_tensor(np.asarray(explorer.index.embeddings, dtype=np.float32))
    sq_err, l0_sum = 0.0, 0.0
    level_sq_err = level_cos_sum = np.zeros(len(explorer.sae.cfg.levels))
    total_var = float(((x_nd - x_nd.mean(0)) ** 2).sum())
    for x_bd, modality in corpus_batches(explorer, x_nd, batch_size):
        out = explorer.sae_of(modality).forward(x_bd)
        sq_err += float(((x_bd - out.x_hat_bd) ** 2).sum())
        l0_sum += float((out.z_bl > 0).sum())
        metrics = quality.level_metrics(explorer, x_bd, modality)
        level_sq_err = level_sq_err + metrics.sq_err_vb.sum(1)
        level_cos_sum = level_cos_sum + metrics.cosine_vb.sum(1)
    return CorpusQuality(sq_err, total_var, l0_sum, level_sq_err, level_cos_sum)


def corpus_batches(
    explorer: Explorer, x_nd: torch.Tensor, batch_size: int
) -> Iterator[tuple[torch.Tensor, Modality | None]]:
    """Batches of the corpus embeddings with the modality whose statistics they go through:
    in corpus order when both modalities share the checkpoint's (None), else per modality."""
    if explorer.saes.shared:
        for start in range(0, len(x_nd), batch_size):
            yield x_nd[start : start + batch_size], None
        return
    for modality, rows in explorer.modality_rows.items():
        for start in range(0, len(rows), batch_size):
            yield x_nd[torch.from_numpy(rows[start : start + batch_size])], modality


def models_table(explorer: Explorer) -> pd.DataFrame:
    """What is loaded: what, id, hash, size (one row each for CLIP, the SAE, corpus, index)."""
    sae, n = explorer.sae, explorer.index.embeddings.shape[0]
    encoder = explorer.encoder
    rows = [
        ModelRow("CLIP", encoder.model_id, "", f"{encoder.embed_dim}-d"),
        ModelRow(
            "SAE",
            public_id(explorer.sources.sae),
            explorer.sae_hash[:16],
            f"{sae.n_inputs} -> {explorer.n_latents} ({sae.cfg.architecture}, "
            f"levels {list(sae.cfg.levels)})",
        ),
        ModelRow(
            "corpus",
            SOURCE_SEPARATOR.join(
                public_id(part) for part in explorer.sources.corpus.split(SOURCE_SEPARATOR)
            ),
            (explorer.corpus_hash or "")[:16],
            f"{n} items",
        ),
        ModelRow(
            "index", "activation index", explorer.index_key[:16], f"{n} x {explorer.n_latents}"
        ),
    ]
    return pd.DataFrame(rows, columns=list(ModelRow._fields))


def public_id(source: str) -> str:
    """What a visitor may see of a source: a local file or folder by its name only (the
    server's paths are not theirs to read); Hub, dataset and built-in names as they are; each
    part of a multi-source corpus so."""
    if SOURCE_SEPARATOR in source:
        return SOURCE_SEPARATOR.join(public_id(part) for part in source.split(SOURCE_SEPARATOR))
    if not source or "://" in source or source.startswith(("hf-hub:", "hf:", "builtin:")):
        return source
    path, _, query = source.partition("?")
    if Path(path).is_absolute() or os.sep in path or Path(path).exists():
        return f".../{Path(path).name}" + (f"?{query}" if query else "")
    return source
