"""An SAE's *cuts*: the ways a report reads it. Each Matryoshka level (that level's TopK codes
decoded, as in training), a given k (the k largest of the inference latents), and the inference
encode itself when no level gives it. One batch through all of them is what the reconstruction
metrics, CKNNA, the spliced fidelity and the explorer's per-level diagnostics read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from sae_explorer.sae import SAE

CutKind = Literal["level", "topk", "inference"]
CUT_KINDS: tuple[CutKind, ...] = ("level", "topk", "inference")
SPARSE_DECODE_FRACTION = 8
"""Levels keeping at most n_latents / 8 latents are decoded from their indices."""


class Cut(NamedTuple):
    kind: CutKind
    k: int
    """Latents the cut keeps at most: the level's k (its width for width nesting), the given k,
    or the SAE's own (n_latents for full inference latents)."""
    width_nested: bool = False

    @property
    def name(self) -> str:
        if self.kind == "level":
            return f"{'width' if self.width_nested else 'k'}={self.k}"
        if self.kind == "topk":
            return f"top-{self.k}"
        assert self.kind == "inference", f"unknown cut kind {self.kind!r}; allowed {CUT_KINDS}"
        return "inference"


class Codes(NamedTuple):
    """One cut's codes for a batch: dense [b, n_latents], or compact (the top values and indices
    of a TopK level) so that no [b, n_latents] tensor is made per level."""

    n_latents: int
    dense_bl: Tensor | None = None
    values_bk: Tensor | None = None
    indices_bk: Tensor | None = None

    def l0_b(self) -> Tensor:
        """Non-zero latents of each item."""
        if self.dense_bl is not None:
            return (self.dense_bl != 0).sum(-1)
        return (self.values_bk != 0).sum(-1)

    def active_l(self) -> Tensor:
        """bool [n_latents]: latents non-zero on at least one item of the batch."""
        if self.dense_bl is not None:
            return (self.dense_bl != 0).any(0)
        active = torch.zeros(self.n_latents, dtype=torch.bool, device=self.values_bk.device)
        active[self.indices_bk[self.values_bk != 0]] = True
        return active

    def kernel(self) -> Tensor:
        """The linear kernel [b, b] of the codes (codes @ codes^T): a sparse product for compact
        codes of a small level, a dense one otherwise."""
        if self.dense_bl is not None or self.values_bk.shape[1] * 8 > self.n_latents:
            codes_bl = self.dense().float()
            return codes_bl @ codes_bl.T
        import scipy.sparse

        b, k = self.values_bk.shape
        codes = scipy.sparse.csr_matrix(
            (
                self.values_bk.float().reshape(-1).cpu().numpy(),
                self.indices_bk.reshape(-1).cpu().numpy(),
                np.arange(0, b * k + 1, k),
            ),
            shape=(b, self.n_latents),
        )
        return torch.from_numpy((codes @ codes.T).toarray().astype(np.float32))

    def dense(self) -> Tensor:
        if self.dense_bl is not None:
            return self.dense_bl
        zeros_bl = self.values_bk.new_zeros(self.values_bk.shape[0], self.n_latents)
        return zeros_bl.scatter(-1, self.indices_bk, self.values_bk)


class CutOutput(NamedTuple):
    cut: Cut
    recon_model_bd: Tensor  # the reconstruction in the SAE's input space (after preprocessing)
    recon_bd: Tensor  # the reconstruction in CLIP space
    codes: Codes


class BatchCuts(NamedTuple):
    x_bd: Tensor  # CLIP-space inputs
    xm_bd: Tensor  # the same after the SAE's preprocessing, ``(x - mean) * scaling_factor``
    outputs: list[CutOutput]


def cuts_of(sae: SAE, ks: Sequence[int] = ()) -> list[Cut]:
    """Every Matryoshka level (one for a plain SAE), then ``ks``, then the inference encode when
    the last level is not it. ``ValueError`` for a k outside 1..n_latents."""
    width = sae.cfg.nesting_by == "width" and sae.cfg.nesting_list is not None
    cuts = [Cut("level", int(k), width) for k in sae.cfg.levels]
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= sae.n_latents:
            raise ValueError(f"k must be a whole number in 1..{sae.n_latents}, got {k!r}")
        cuts.append(Cut("topk", k))
    if not sae.inference_is_last_level():
        k = sae.n_latents if sae.cfg.inference == "full" else int(sae.cfg.k or sae.n_latents)
        cuts.append(Cut("inference", k))
    return cuts


@torch.inference_mode()
def run_cuts(sae: SAE, x_bd: Tensor, cuts: Sequence[Cut]) -> BatchCuts:
    """One batch of CLIP embeddings [b, n_inputs] through every cut (one encode for all levels)."""
    x_bd = x_bd.to(sae.dtype)
    xm_bd = sae.preprocess(x_bd)
    outputs: list[CutOutput] = []
    levels = [c for c in cuts if c.kind == "level"]
    if levels:
        # levels up to n_latents / 8 decoded from their top-k indices: the same numbers as the
        # dense decode, cheaper for a batch than a [b, n_latents] matmul per level
        out = sae.level_forward(xm_bd, sparse_decode_max_k=sae.n_latents // SPARSE_DECODE_FRACTION)
        assert len(out.recons) == len(levels) == len(sae.cfg.levels), "one level per nesting k"
        level_codes = _level_codes(sae, out)
        for cut, recon_m, codes in zip(levels, out.recons, level_codes):
            outputs.append(CutOutput(cut, recon_m, sae.postprocess(recon_m), codes))
    for cut in cuts:
        if cut.kind == "level":
            continue
        topk = cut.k if cut.kind == "topk" else None
        forward = sae.forward(x_bd, topk=topk)
        codes = Codes(sae.n_latents, dense_bl=forward.z_bl)
        outputs.append(CutOutput(cut, sae.preprocess(forward.x_hat_bd), forward.x_hat_bd, codes))
    order = {cut: i for i, cut in enumerate(cuts)}
    outputs.sort(key=lambda o: order[o.cut])
    return BatchCuts(x_bd, xm_bd, outputs)


def _level_codes(sae: SAE, out) -> list[Codes]:
    """Each level's codes from a :meth:`SAE.level_forward` output, compact where it kept them."""
    n = sae.n_latents
    if out.top_values_bk is None and out.full_bl is None:  # width nesting: dense prefixes
        return [Codes(n, dense_bl=z_bl) for z_bl in sae.level_codes(out.pre_bl)]
    codes = []
    for k in sae.cfg.levels:
        if out.top_values_bk is not None and k < n:
            codes.append(Codes(n, None, out.top_values_bk[:, :k], out.top_indices_bk[:, :k]))
        else:
            assert out.full_bl is not None, "a level keeping every latent has full latents"
            codes.append(Codes(n, dense_bl=out.full_bl))
    return codes
