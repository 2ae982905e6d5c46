"""RISE heatmaps (Petsiuk et al., 2018): the ``rise`` method of :mod:`sae_explorer.attribution`.

The image is seen through ``n_masks`` random masks: a coarse grid of cells, each kept with
probability ``keep``, upsampled bilinearly to soft edges and shifted by a random sub-cell offset
(so the masks' edges fall everywhere, not only on the tower's patch grid); what a mask hides is
set to the preprocessing's mean colour. A pixel's heat is the mean activation of the masked
images that showed it, weighted by how much they showed it, minus the mean over all masks
(positive part): how much more the latent fires when that pixel is in view. Batched; the masks
come from a seeded generator, so a map is the same on every call.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from sae_explorer.progress import Progress


def random_masks(
    n: int, h: int, w: int, cell: int, keep: float, generator: torch.Generator
) -> torch.Tensor:
    """float ``[n, 1, h, w]`` in [0, 1]: coarse random grids, upsampled and randomly shifted."""
    gh, gw = -(-h // cell) + 1, -(-w // cell) + 1  # one extra cell for the shift
    grid = (torch.rand(n, 1, gh, gw, generator=generator) < keep).float()
    up = F.interpolate(grid, size=(gh * cell, gw * cell), mode="bilinear", align_corners=False)
    dy = torch.randint(0, cell, (n,), generator=generator)
    dx = torch.randint(0, cell, (n,), generator=generator)
    return torch.stack([up[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


def rise_maps(
    score: Callable[[torch.Tensor], torch.Tensor],
    pixels_13hw: torch.Tensor,
    cell: int,
    n_masks: int,
    batch_size: int,
    keep: float = 0.5,
    seed: int = 0,
    progress: Progress | None = None,
) -> torch.Tensor:
    """``[m, H, W]``: the activation's mean rise when each pixel is shown (see the module
    docstring); ``score`` maps preprocessed pixels ``[b, 3, H, W]`` to activations ``[b, m]``."""
    _, _, h, w = pixels_13hw.shape
    if not 0 < cell <= min(h, w) or n_masks < 2 or not 0 < keep < 1:
        raise ValueError(
            f"RISE needs a cell within the {h}x{w} image (got {cell}), at least 2 masks "
            f"(got {n_masks}) and a keep probability in (0, 1) (got {keep})"
        )
    generator = torch.Generator().manual_seed(seed)
    weighted_mhw = shown_hw = scores_sum = None
    with torch.no_grad():
        for start in range(0, n_masks, batch_size):
            masks_b1hw = random_masks(min(batch_size, n_masks - start), h, w, cell, keep, generator)
            masks_b1hw = masks_b1hw.to(pixels_13hw.device)
            scores_bm = score(pixels_13hw * masks_b1hw).float()  # hidden: 0, the mean colour
            part_mhw = torch.einsum("bm,bhw->mhw", scores_bm, masks_b1hw[:, 0])
            weighted_mhw = part_mhw if weighted_mhw is None else weighted_mhw + part_mhw
            shown = masks_b1hw[:, 0].sum(0)
            shown_hw = shown if shown_hw is None else shown_hw + shown
            total = scores_bm.sum(0)
            scores_sum = total if scores_sum is None else scores_sum + total
            if progress is not None:
                done = start + len(masks_b1hw)
                progress(done / n_masks, f"RISE: {done}/{n_masks} masked images")
    mean_m = scores_sum / n_masks
    return (weighted_mhw / shown_hw.clamp_min(1e-6) - mean_m[:, None, None]).clamp_min(0)
