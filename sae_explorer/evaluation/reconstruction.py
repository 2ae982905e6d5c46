"""Reconstruction metrics per cut, defined as MSAE's evaluation defines them (its ``metrics.py``
and the evaluation loop of its ``train.py``), on the SAE's input space (after its preprocessing
``(x - mean) * scaling_factor``, which is what MSAE's evaluation feeds its model):

- **FVU** (MSAE's ``explained_variance``, which despite its name returns the unexplained part):
  per item ``var(x - x_hat) / var(x)`` over the embedding's features, averaged over items;
- **cosine**: per item ``cos(x, x_hat)``, averaged;
- **L0**: non-zero latents per item (a count), averaged;
- **sparsity**: the fraction of zero latents per item, averaged (what MSAE logs as "sparsity" and
  its paper reports as "L0"); ``1 - L0 / n_latents``;
- **dead latents**: latents that are zero on every item of the corpus at that cut.

Beside them, in CLIP space, the two numbers the explorer's Overview always showed: ``fvu_clip``,
``sum |x - x_hat|^2 / sum |x - mean(x)|^2`` over the items, and ``cosine_clip``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from sae_explorer.evaluation.cuts import CutOutput


class ReconstructionRow(NamedTuple):
    modality: str  # image, text, or all (the whole corpus, when it has both)
    cut: str  # k=64, top-32, inference
    k: int
    n_items: int
    fvu: float  # MSAE: mean over items of var(x - x_hat) / var(x), SAE input space
    cosine: float  # MSAE: mean cosine(x, x_hat), SAE input space
    l0: float  # mean non-zero latents per item
    sparsity: float  # MSAE's "L0": mean fraction of zero latents per item
    dead_latents: int  # zero on every item at this cut
    fvu_clip: float  # sum |x - x_hat|^2 / sum |x - mean|^2, CLIP space (the Overview's FVU)
    cosine_clip: float  # mean cosine(x, x_hat), CLIP space
    cknna_codes: float | None  # CKNNA(x, codes), k = 10 neighbours (None: not computed)
    cknna_recon: float | None  # CKNNA(x, x_hat), as MSAE's train.py computes it


class InputSums(NamedTuple):
    """What every cut of a batch needs of its inputs, computed once per batch."""

    x_bd: torch.Tensor  # CLIP space
    xm_bd: torch.Tensor  # SAE input space
    x_norm_b: torch.Tensor
    xm_norm_b: torch.Tensor
    xm_var_b: torch.Tensor  # variance over features
    sq_norm: float  # sum |x|^2
    sum_d: np.ndarray  # sum x


@torch.inference_mode()
def input_sums(x_bd: torch.Tensor, xm_bd: torch.Tensor) -> InputSums:
    x_bd, xm_bd = x_bd.float(), xm_bd.float()
    return InputSums(
        x_bd,
        xm_bd,
        x_bd.norm(dim=-1),
        xm_bd.norm(dim=-1),
        xm_bd.var(-1),
        float((x_bd.double() ** 2).sum()),
        x_bd.double().sum(0).cpu().numpy(),
    )


def _cosine_b(a_bd: torch.Tensor, a_norm_b: torch.Tensor, b_bd: torch.Tensor) -> torch.Tensor:
    """Per-row cosine (eps as ``torch.cosine_similarity``'s), with a's norms given."""
    return (a_bd * b_bd).sum(-1) / (a_norm_b * b_bd.norm(dim=-1)).clamp_min(1e-8)


class ReconstructionSums:
    """Running sums of one cut over one group of items, merged batch by batch (and group by
    group for the whole corpus)."""

    def __init__(self, n_latents: int, n_inputs: int) -> None:
        self.n = 0
        self.n_latents = n_latents
        self.fvu = self.cosine = self.l0 = self.sq_err = self.cosine_clip = 0.0
        self.sq_norm = 0.0  # sum |x|^2 (CLIP space)
        self.sum_d = np.zeros(n_inputs)  # sum x (CLIP space)
        self.active_l = np.zeros(n_latents, dtype=bool)

    @torch.inference_mode()
    def add(self, inputs: InputSums, out: CutOutput) -> None:
        recon_m_bd, recon_bd = out.recon_model_bd.float(), out.recon_bd.float()
        self.n += int(inputs.x_bd.shape[0])
        fvu_b = (inputs.xm_bd - recon_m_bd).var(-1) / inputs.xm_var_b
        self.fvu += float(fvu_b.double().sum())
        self.cosine += float(_cosine_b(inputs.xm_bd, inputs.xm_norm_b, recon_m_bd).double().sum())
        self.l0 += float(out.codes.l0_b().double().sum())
        self.active_l |= out.codes.active_l().cpu().numpy()
        self.sq_err += float(((inputs.x_bd - recon_bd) ** 2).sum(-1).double().sum())
        self.cosine_clip += float(_cosine_b(inputs.x_bd, inputs.x_norm_b, recon_bd).double().sum())
        self.sq_norm += inputs.sq_norm
        self.sum_d += inputs.sum_d

    def merged(self, other: ReconstructionSums) -> ReconstructionSums:
        out = ReconstructionSums(self.n_latents, len(self.sum_d))
        for name in ("n", "fvu", "cosine", "l0", "sq_err", "cosine_clip", "sq_norm"):
            setattr(out, name, getattr(self, name) + getattr(other, name))
        out.sum_d = self.sum_d + other.sum_d
        out.active_l = self.active_l | other.active_l
        return out

    def row(
        self,
        modality: str,
        cut: str,
        k: int,
        cknna_codes: float | None = None,
        cknna_recon: float | None = None,
    ) -> ReconstructionRow:
        assert self.n > 0, "no items summed"
        total_var = self.sq_norm - float(self.sum_d @ self.sum_d) / self.n
        l0 = self.l0 / self.n
        return ReconstructionRow(
            modality=modality,
            cut=cut,
            k=k,
            n_items=self.n,
            fvu=self.fvu / self.n,
            cosine=self.cosine / self.n,
            l0=l0,
            sparsity=1.0 - l0 / self.n_latents,
            dead_latents=int((~self.active_l).sum()),
            fvu_clip=self.sq_err / max(total_var, 1e-12),
            cosine_clip=self.cosine_clip / self.n,
            cknna_codes=cknna_codes,
            cknna_recon=cknna_recon,
        )
