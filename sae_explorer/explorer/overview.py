"""The Overview tab: what is loaded (models, corpus, index), how well the SAE reconstructs the
whole corpus, overall and per Matryoshka level, and what it costs CLIP's zero-shot classification
when spliced in (labelled corpora only): the numbers of ``python -m sae_explorer evaluate``,
computed by :mod:`sae_explorer.evaluation` once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pandas as pd
import plotly.graph_objects as go

from sae_explorer.corpus import SOURCE_SEPARATOR, Modality
from sae_explorer.evaluation import Evaluation, EvaluationConfig, evaluate
from sae_explorer.evaluation.run import label_tasks, prompts_for_items
from sae_explorer.explorer import plots

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
    evaluation: Evaluation  # MSAE's metrics and spliced fidelity per cut, as ``evaluate`` reports
    fidelity_plot: go.Figure | None  # None when the corpus has no labels
    fidelity_note: str  # why there is no fidelity plot ("" when there is one)


def compute_overview(explorer: Explorer, batch_size: int = 512) -> Overview:
    """Models, corpus and whole-corpus SAE quality (``Explorer.overview`` caches it)."""
    n = explorer.index.embeddings.shape[0]
    assert n > 0, "empty corpus"
    evaluation = corpus_evaluation(explorer, batch_size)
    levels = list(explorer.sae.cfg.levels)
    rows = {row.cut: row for row in evaluation.corpus_rows()}
    level_rows = [rows[name] for name in evaluation.cuts[: len(levels)]]
    inference = rows.get("inference", level_rows[-1])  # the last level when that is inference
    modality_n = explorer.items["modality"]
    stats = OverviewStats(
        n_items=n,
        n_images=int((modality_n == "image").sum()),
        n_texts=int((modality_n == "text").sum()),
        n_latents=explorer.n_latents,
        l0=inference.l0,
        fvu=inference.fvu_clip,
        dead_latents=int((explorer.frequency_l == 0).sum()),
        dense_latents=int((explorer.frequency_l > DENSE_FREQUENCY).sum()),
        dense_threshold=DENSE_FREQUENCY,
        levels=levels,
        level_fvu=[row.fvu_clip for row in level_rows],
        level_cosine=[row.cosine_clip for row in level_rows],
        input_statistics=explorer.input_stats.manifest(),
    )
    levels_fig = plots.levels_plot(
        levels,
        stats.level_cosine,
        fvu=stats.level_fvu,
        title="Corpus reconstruction per Matryoshka level",
    )
    fidelity_fig = plots.fidelity_plot(evaluation, levels) if evaluation.fidelity else None
    return Overview(
        models_table(explorer),
        stats,
        plots.frequency_histogram(explorer.frequency_l, n),
        levels_fig,
        evaluation,
        fidelity_fig,
        evaluation.fidelity_note,
    )


def corpus_evaluation(explorer: Explorer, batch_size: int) -> Evaluation:
    """``evaluate`` over the index's embeddings, its label columns classified zero-shot with the
    loaded CLIP's prompts (no fidelity, and a note saying why, without labels)."""
    items = explorer.index.items  # a whole-corpus pass: the whole table
    tasks = label_tasks(items)
    prompts = prompts_for_items(
        items,
        tasks,
        explorer.encoder.model_id,
        lambda texts: explorer.label_embeddings(tuple(texts)),
        explorer.logit_scale,
    )
    cfg = EvaluationConfig(batch_size=batch_size)
    return evaluate(explorer.saes, explorer.index.embeddings, items, prompts, cfg)


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
