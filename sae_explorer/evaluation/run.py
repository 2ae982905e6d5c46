"""One evaluation of an SAE over the embeddings of an index: reconstruction metrics, CKNNA and
spliced fidelity at every cut, image and text items separately, in one pass over the embeddings
(batches of one modality at a time, each through that modality's input statistics; the first
batch of each is an evenly spread sample, on which CKNNA is computed)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from sae_explorer.cli import doc
from sae_explorer.corpus import MODALITIES, spread_indices
from sae_explorer.evaluation.cknna import DEFAULT_K, cknna_of_kernels
from sae_explorer.evaluation.cuts import BatchCuts, Cut, cuts_of, run_cuts
from sae_explorer.evaluation.fidelity import ClassFidelityRow, FidelityRow, FidelitySums
from sae_explorer.evaluation.prompts import (
    ATTRIBUTE_PREFIX,
    ClassPrompts,
    class_prompts,
    log_probs,
    templates_for,
)
from sae_explorer.evaluation.reconstruction import (
    ReconstructionRow,
    ReconstructionSums,
    input_sums,
)
from sae_explorer.modality_stats import ModalitySAEs
from sae_explorer.progress import Progress


def _words(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _ks(raw: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in _words(raw))
    except ValueError:
        raise ValueError("give whole numbers separated by commas, e.g. 32,128") from None


def _templates(raw: str) -> tuple[str, ...]:
    """Templates separated by ';', or a ``.txt`` file of them, one per line."""
    if raw.endswith(".txt") and Path(raw).is_file():
        lines = Path(raw).read_text(encoding="utf-8").splitlines()
        return tuple(line.strip() for line in lines if line.strip())
    return tuple(part.strip() for part in raw.split(";") if part.strip())


@dataclass(frozen=True)
class EvaluationConfig:
    """What an evaluation computes; each field is a flag of ``python -m sae_explorer evaluate``."""

    labels: tuple[str, ...] = field(
        default=(),
        metadata=doc(
            "label columns of the items to classify, comma separated (label, or an attribute "
            "such as color); default: every ground-truth attribute, else the label column",
            parse=_words,
        ),
    )
    templates: tuple[str, ...] = field(
        default=(),
        metadata=doc(
            "zero-shot prompt templates separated by ';', each holding {} (or a .txt file, one "
            "per line); default: a built-in world's own, else a generic photo ensemble",
            parse=_templates,
        ),
    )
    ks: tuple[int, ...] = field(
        default=(),
        metadata=doc("extra cuts: keep the k largest inference latents, e.g. 32,128", parse=_ks),
    )
    cknna_k: int = field(default=DEFAULT_K, metadata=doc("CKNNA neighbours per item"))
    cknna_items: int = field(
        default=1024, metadata=doc("items per modality CKNNA is computed on (evenly spread)")
    )
    batch_size: int = field(default=1024, metadata=doc("embeddings per SAE batch"))

    def __post_init__(self) -> None:
        for name in ("cknna_k", "cknna_items", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "templates", tuple(self.templates))
        object.__setattr__(self, "ks", tuple(self.ks))


class Evaluation(NamedTuple):
    n_latents: int
    cuts: list[str]  # cut names, in order
    reconstruction: list[ReconstructionRow]
    fidelity: list[FidelityRow]
    per_class: list[ClassFidelityRow]
    fidelity_note: str  # why there is no fidelity ("" when there is)

    def corpus_rows(self) -> list[ReconstructionRow]:
        """Reconstruction rows of the whole corpus: modality ``all``, or its one modality."""
        present = {row.modality for row in self.reconstruction}
        whole = "all" if "all" in present else next(iter(present))
        return [row for row in self.reconstruction if row.modality == whole]


# --------------------------------------------------------------------------- labels
def label_tasks(items: pd.DataFrame, labels: Sequence[str] = ()) -> list[str]:
    """The label columns to classify: ``labels`` (``color`` names ``attr_color``), else every
    ground-truth attribute column with values, else ``label`` when it has values; ``ValueError``
    naming the columns there are when one asked for is missing."""
    available = [c for c in items.columns if c == "label" or c.startswith(ATTRIBUTE_PREFIX)]
    if labels:
        tasks = []
        for name in labels:
            column = name if name in items.columns else ATTRIBUTE_PREFIX + name
            if column not in available:
                raise ValueError(f"no label column {name!r}; the items have {available or 'none'}")
            tasks.append(column)
        return tasks
    attributes = [c for c in available if c != "label" and items[c].notna().any()]
    if attributes:
        return attributes
    return ["label"] if "label" in items.columns and items["label"].notna().any() else []


def no_labels_note(items: pd.DataFrame) -> str:
    return (
        f"No zero-shot fidelity: none of the {len(items)} items has a label (no label column, no "
        f"class sub-folders, no ground-truth attributes). Index a labelled corpus, e.g. an image "
        f"folder whose sub-folders are classes."
    )


def prompts_for_items(
    items: pd.DataFrame,
    tasks: Sequence[str],
    clip_id: str,
    encode_texts: Callable[[list[str]], Tensor],
    logit_scale: float,
    templates: Sequence[str] = (),
) -> list[ClassPrompts]:
    """Class prompts of each task, its classes being the distinct labels of the items."""
    out = []
    for task in tasks:
        classes = sorted(str(v) for v in items[task].dropna().unique())
        task_templates = templates_for(task, clip_id, templates)
        out.append(class_prompts(task, classes, task_templates, encode_texts, logit_scale))
    return out


# --------------------------------------------------------------------------- the pass
def evaluate(
    saes: ModalitySAEs,
    x_nd: np.ndarray,
    items: pd.DataFrame,
    prompts: Sequence[ClassPrompts] = (),
    cfg: EvaluationConfig = EvaluationConfig(),
    progress: Progress | None = None,
) -> Evaluation:
    """Evaluate the SAE on embeddings ``x_nd`` [n, d] (an index's, memory-mapped) whose rows
    ``items`` describe (a ``modality`` column, and the label columns ``prompts`` classify)."""
    if len(items) != len(x_nd) or len(x_nd) == 0:
        raise ValueError(f"{len(items)} items for {len(x_nd)} embeddings: need one each, >= 1")
    report = progress or (lambda frac, msg: None)
    modality_n = items["modality"].to_numpy()
    rows_of = {m: np.flatnonzero(modality_n == m) for m in MODALITIES}
    batches_of = {m: _batches(len(rows), cfg) for m, rows in rows_of.items() if len(rows)}
    n_batches = sum(len(batches) for batches in batches_of.values())
    out = ModalityResults([], [], [], {})
    offset = 0  # batches of the modalities before this one
    for modality, batches in batches_of.items():

        def batch_done(i: int, modality: str = modality, offset: int = offset) -> None:
            report((offset + i) / n_batches, f"{modality}s: batch {offset + i} of {n_batches}")

        sae, rows = saes.of(modality), rows_of[modality]
        _evaluate_modality(sae, x_nd, items, rows, batches, prompts, cfg, batch_done, out)
        offset += len(batches)
    recon = out.reconstruction
    if len(out.sums) > 1:
        recon = recon + _whole_corpus_rows(out.sums)
    report(1.0, "evaluation done")
    note = "" if out.fidelity else _fidelity_note(items, prompts)
    names = [cut.name for cut in cuts_of(saes.image, cfg.ks)]
    return Evaluation(saes.image.n_latents, names, recon, out.fidelity, out.per_class, note)


class ModalityResults(NamedTuple):
    """What each modality adds (lists and dict grown in place)."""

    reconstruction: list[ReconstructionRow]
    fidelity: list[FidelityRow]
    per_class: list[ClassFidelityRow]
    sums: dict[str, dict[Cut, ReconstructionSums]]


def _batches(n: int, cfg: EvaluationConfig) -> list[np.ndarray]:
    """Positions of each batch among a modality's n rows: first the CKNNA sample (evenly
    spread), as one batch, so CKNNA reads the pass's own outputs; then the rest in order."""
    sample = spread_indices(n, cfg.cknna_items)
    rest = np.setdiff1d(np.arange(n), sample)
    return [sample] + [rest[i : i + cfg.batch_size] for i in range(0, len(rest), cfg.batch_size)]


def _evaluate_modality(
    sae,
    x_nd: np.ndarray,
    items: pd.DataFrame,
    rows: np.ndarray,
    batches: list[np.ndarray],
    prompts: Sequence[ClassPrompts],
    cfg: EvaluationConfig,
    batch_done: Callable[[int], None],
    out: ModalityResults,
) -> None:
    """One modality's rows, batch by batch; its rows and sums are added to ``out``."""
    modality = str(items["modality"].iloc[rows[0]])
    cuts = cuts_of(sae, cfg.ks)
    labels = {p.task: _class_indices(items[p.task].to_numpy()[rows], p) for p in prompts}
    sums = {cut: ReconstructionSums(sae.n_latents, sae.n_inputs) for cut in cuts}
    fid = {(p.task, cut): FidelitySums(len(p.classes)) for p in prompts for cut in cuts}
    scores: dict[Cut, tuple[float | None, float | None]] = {}
    for i, positions in enumerate(batches):
        x_bd = torch.from_numpy(np.asarray(x_nd[rows[positions]], dtype=np.float32))
        batch = run_cuts(sae, x_bd, cuts)
        inputs = input_sums(batch.x_bd, batch.xm_bd)
        for cut_out in batch.outputs:
            sums[cut_out.cut].add(inputs, cut_out)
        if prompts:
            batch_labels = [torch.from_numpy(labels[p.task][positions]) for p in prompts]
            _add_fidelity(fid, prompts, batch, batch_labels)
        if i == 0:  # the CKNNA sample
            scores = _cknna_scores(batch, cfg.cknna_k)
        batch_done(i + 1)
    for cut in cuts:
        out.reconstruction.append(sums[cut].row(modality, cut.name, cut.k, *scores[cut]))
        for p in prompts:
            task_sums = fid[(p.task, cut)]
            if task_sums.n_c.sum() > 0:
                out.fidelity.append(task_sums.row(p.task, modality, cut.name, cut.k))
                out.per_class.extend(task_sums.class_rows(p.task, modality, cut.name, p.classes))
    out.sums[modality] = sums


def _class_indices(values_n: np.ndarray, prompts: ClassPrompts) -> np.ndarray:
    """int64 class index of each item, -1 for items without a label."""
    index = {name: i for i, name in enumerate(prompts.classes)}
    return np.array([index.get(str(v), -1) if v is not None else -1 for v in values_n], np.int64)


def _add_fidelity(
    fid: dict, prompts: Sequence[ClassPrompts], batch: BatchCuts, labels: list[Tensor]
) -> None:
    """Add one batch to every (task, cut): all tasks' classes scored in one product per cut."""
    logp_original = log_probs(batch.x_bd, prompts)
    for out in batch.outputs:
        logp_recon = log_probs(out.recon_bd, prompts)
        logp_error = log_probs(out.recon_bd + (batch.x_bd - out.recon_bd), prompts)
        for p, label_b, original, recon, error in zip(
            prompts, labels, logp_original, logp_recon, logp_error
        ):
            mask_b = label_b >= 0
            if bool(mask_b.any()):
                fid[(p.task, out.cut)].add(
                    original[mask_b], recon[mask_b], error[mask_b], label_b[mask_b]
                )


def _cknna_scores(batch: BatchCuts, k: int) -> dict[Cut, tuple[float | None, float | None]]:
    """CKNNA(x, codes) and CKNNA(x, x_hat) of each cut over the items of ``batch`` (the evenly
    spread sample), x in the SAE's input space; None when there are too few items."""
    if batch.x_bd.shape[0] <= max(k, 3):
        return {out.cut: (None, None) for out in batch.outputs}
    xm_bd = batch.xm_bd.float()
    kernel_x = xm_bd @ xm_bd.T
    scores = {}
    for out in batch.outputs:
        recon_bd = out.recon_model_bd.float()
        scores[out.cut] = (
            cknna_of_kernels(kernel_x, out.codes.kernel(), k),
            cknna_of_kernels(kernel_x, recon_bd @ recon_bd.T, k),
        )
    return scores


def _whole_corpus_rows(
    sums_by_modality: dict[str, dict[Cut, ReconstructionSums]],
) -> list[ReconstructionRow]:
    """Rows of the whole corpus (modality ``all``): every modality's sums merged; no CKNNA (its
    neighbours would mostly be the item's own modality)."""
    image, text = sums_by_modality["image"], sums_by_modality["text"]
    return [image[cut].merged(text[cut]).row("all", cut.name, cut.k) for cut in image]


def _fidelity_note(items: pd.DataFrame, prompts: Sequence[ClassPrompts]) -> str:
    if not prompts:
        return no_labels_note(items)
    tasks = ", ".join(p.task for p in prompts)
    return f"No zero-shot fidelity: no item has a label among the classes of {tasks}."
