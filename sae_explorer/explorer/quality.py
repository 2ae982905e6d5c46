"""Reconstruction quality at each Matryoshka level: the one definition behind the Inspect
diagnostics of one input and the Overview's numbers for the whole corpus."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from sae_explorer.corpus import Modality

if TYPE_CHECKING:
    from sae_explorer.explorer.state import Explorer


class LevelMetrics(NamedTuple):
    cosine_vb: np.ndarray  # [n_levels, b] cosine of x with its level reconstruction
    sq_err_vb: np.ndarray  # [n_levels, b] squared error of the level reconstruction


@torch.inference_mode()
def level_metrics(
    explorer: Explorer, x_bd: torch.Tensor, modality: Modality | None = None
) -> LevelMetrics:
    """Per-sample reconstruction quality at each Matryoshka level (one level for plain SAEs).
    Inputs of ``modality`` go through its statistics (None: the checkpoint's)."""
    sae = explorer.sae_of(modality)
    level_out = sae.level_forward(sae.preprocess(x_bd))
    recons = [sae.postprocess(r) for r in level_out.recons]
    cos = [torch.nn.functional.cosine_similarity(x_bd, r, dim=-1) for r in recons]
    sq_err = [((x_bd - r) ** 2).sum(-1) for r in recons]
    return LevelMetrics(torch.stack(cos).double().numpy(), torch.stack(sq_err).double().numpy())
