"""Reconstruction quality at each Matryoshka level of one input or batch (Inspect's diagnostics).
The levels are read through :mod:`sae_explorer.evaluation.cuts`, the one per-level pass behind
the Overview's whole-corpus numbers and ``python -m sae_explorer evaluate`` too."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from sae_explorer.corpus import Modality
from sae_explorer.evaluation.cuts import cuts_of, run_cuts

if TYPE_CHECKING:
    from sae_explorer.explorer.state import Explorer


class LevelMetrics(NamedTuple):
    cosine_vb: np.ndarray  # [n_levels, b] cosine of x with its level reconstruction
    sq_err_vb: np.ndarray  # [n_levels, b] squared error of the level reconstruction


@torch.inference_mode()
def level_metrics(
    explorer: Explorer, x_bd: torch.Tensor, modality: Modality | None = None
) -> LevelMetrics:
    """Per-sample reconstruction quality (CLIP space) at each Matryoshka level (one level for
    plain SAEs). Inputs of ``modality`` go through its statistics (None: the checkpoint's)."""
    sae = explorer.sae_of(modality)
    levels = [cut for cut in cuts_of(sae) if cut.kind == "level"]
    batch = run_cuts(sae, x_bd, levels)
    recons = [out.recon_bd for out in batch.outputs]
    cos = [torch.nn.functional.cosine_similarity(batch.x_bd, r, dim=-1) for r in recons]
    sq_err = [((batch.x_bd - r) ** 2).sum(-1) for r in recons]
    return LevelMetrics(torch.stack(cos).double().numpy(), torch.stack(sq_err).double().numpy())
