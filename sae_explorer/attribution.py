"""Where in an image a latent fires: heatmaps through CLIP's vision tower.

The SAEs here read the pooled CLIP embedding of the whole image, so a latent has no location of
its own; a heatmap attributes its activation to the pixels the tower saw (the resized, cropped
input, ``Heatmaps.image_hw3``) with one of two methods:

- ``occlusion``: a square of ``patch`` pixels (default: the tower's own patch size) set to the
  preprocessing's mean colour (0 after normalisation), slid with ``stride``; a pixel's heat is
  the mean drop of the latent's activation over the windows covering it (rises count as 0).
  ``n_windows`` forward passes, batched.
- ``gradient``: integrated gradients (Sundararajan et al., 2017) from the same mean-colour
  baseline in ``n_steps`` batched steps, summed over colour channels; positive attributions only,
  averaged over ``patch``-sized neighbourhoods (pixel-level gradients of a ViT are patchy noise).

Both give ``[m, H, W]`` maps of non-negative heat, one per latent, computed for ``m`` latents at
once. The world's truth checks them: ``benchmarks/heatmap_validity.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sae_explorer.progress import Progress

Method = Literal["occlusion", "gradient"]
METHODS: tuple[Method, ...] = ("occlusion", "gradient")
MAX_LATENTS = 16
"""Latents mapped in one call (each costs the gradient method one backward pass per step)."""

Score = Callable[[torch.Tensor], torch.Tensor]
"""Preprocessed pixels ``[b, 3, H, W]`` -> the chosen latents' activations ``[b, m]``."""


class Heatmaps(NamedTuple):
    latent_ids: list[int]
    activations_m: np.ndarray  # float32 [m]: each latent's activation on the whole image
    maps_mhw: np.ndarray  # float32 [m, H, W], >= 0: where each latent's activation comes from
    image_hw3: np.ndarray  # uint8 [H, W, 3]: the image as the tower saw it (resized, cropped)
    method: Method


def latent_heatmaps(
    encoder,
    sae,
    image: Image.Image,
    latent_ids: Sequence[int],
    method: Method = "occlusion",
    patch: int | None = None,
    stride: int | None = None,
    n_steps: int = 16,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> Heatmaps:
    """Heatmaps of ``latent_ids`` of ``sae`` (its view for images) over ``image``, as encoded by
    ``encoder`` (a ``ClipEncoder``). ``patch``/``stride`` default to the tower's patch size
    (occlusion stride: half a patch). ``ValueError`` for an unknown method, no latents or too
    many, ids out of range, or sizes that do not fit the image."""
    ids = check_latents(latent_ids, sae.n_latents)
    if method not in METHODS:
        raise ValueError(f"unknown heatmap method {method!r}; choose one of {list(METHODS)}")
    if not encoder.preprocess.splits:
        raise ValueError(f"{encoder.model_id}'s preprocessing cannot be split; no heatmaps for it")
    image_hw3 = encoder.preprocess.to_array(image)
    pixels_13hw = encoder.preprocess.finish(image_hw3[None], encoder.device)
    patch = patch or tower_patch_size(encoder.model, pixels_13hw.shape[-1])
    score = latent_score(encoder, sae, ids)
    with torch.no_grad():
        base_m = score(pixels_13hw)[0]
    if method == "occlusion":
        stride = stride or max(1, patch // 2)
        maps = occlusion_maps(score, pixels_13hw, patch, stride, batch_size, progress, base_m)
    else:
        maps = gradient_maps(score, pixels_13hw, patch, n_steps, batch_size, progress, base_m)
    activations_m = base_m.float().cpu().numpy()
    return Heatmaps(ids, activations_m, maps.cpu().numpy(), image_hw3, method)


def check_latents(latent_ids: Sequence[int], n_latents: int) -> list[int]:
    ids = [int(i) for i in latent_ids]
    if not ids:
        raise ValueError("choose at least one latent to map")
    if len(ids) > MAX_LATENTS:
        raise ValueError(f"at most {MAX_LATENTS} latents are mapped at once, got {len(ids)}")
    bad = [i for i in ids if not 0 <= i < n_latents]
    if bad:
        raise ValueError(f"latent {bad[0]} does not exist (the SAE has {n_latents} latents)")
    return ids


def tower_patch_size(model: torch.nn.Module, image_size: int) -> int:
    """The vision tower's patch size (open_clip ViTs: ``visual.patch_size``); a sixteenth of the
    image for towers without patches (ResNets)."""
    size = getattr(getattr(model, "visual", None), "patch_size", None)
    if isinstance(size, tuple | list):
        size = size[0]
    return int(size) if size else max(1, image_size // 16)


def latent_score(encoder, sae, latent_ids: list[int]) -> Score:
    """Pixels -> the latents' activations, differentiable (the tower in its own dtype)."""
    ids = torch.as_tensor(latent_ids, dtype=torch.long)

    def score(pixels_b3hw: torch.Tensor) -> torch.Tensor:
        x_bd = encoder.model.encode_image(pixels_b3hw.to(encoder.input_dtype)).float()
        return sae.latent_activations(x_bd.to(sae.device), ids)

    return score


def occlusion_maps(
    score: Score,
    pixels_13hw: torch.Tensor,
    patch: int,
    stride: int,
    batch_size: int,
    progress: Progress | None = None,
    base_m: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[m, H, W]``: mean activation drop over the occluding windows covering each pixel
    (``base_m``: the unoccluded activations, when the caller has them already)."""
    _, _, h, w = pixels_13hw.shape
    if not 0 < patch <= min(h, w) or stride < 1:
        raise ValueError(f"occlusion patch {patch} / stride {stride} must fit the {h}x{w} image")
    tops = window_starts(h, patch, stride)
    lefts = window_starts(w, patch, stride)
    windows = [(t, left) for t in tops for left in lefts]
    with torch.no_grad():
        base_m = score(pixels_13hw)[0] if base_m is None else base_m
        heat_mhw = torch.zeros(len(base_m), h, w, device=pixels_13hw.device)
        count_hw = torch.zeros(h, w, device=pixels_13hw.device)
        for start in range(0, len(windows), batch_size):
            chunk = windows[start : start + batch_size]
            batch = pixels_13hw.repeat(len(chunk), 1, 1, 1)
            for b, (t, left) in enumerate(chunk):
                batch[b, :, t : t + patch, left : left + patch] = 0.0  # the mean colour
            drop_bm = (base_m[None] - score(batch)).clamp_min(0)
            for b, (t, left) in enumerate(chunk):
                heat_mhw[:, t : t + patch, left : left + patch] += drop_bm[b, :, None, None]
                count_hw[t : t + patch, left : left + patch] += 1
            if progress is not None:
                done = start + len(chunk)
                progress(done / len(windows), f"occluded {done}/{len(windows)} windows")
    return (heat_mhw / count_hw.clamp_min(1)).float()


def window_starts(size: int, patch: int, stride: int) -> list[int]:
    """Window offsets along one side, the last flush with the edge so every pixel is covered."""
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def gradient_maps(
    score: Score,
    pixels_13hw: torch.Tensor,
    patch: int,
    n_steps: int,
    batch_size: int,
    progress: Progress | None = None,
    base_m: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[m, H, W]``: integrated gradients from the mean-colour baseline, positive part,
    averaged over ``patch``-sized neighbourhoods (``base_m``: the image's activations, when the
    caller has them already; only their number is read)."""
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    alphas = (torch.arange(n_steps, dtype=torch.float32) + 0.5) / n_steps  # midpoint rule
    if base_m is None:
        with torch.no_grad():
            base_m = score(pixels_13hw)[0]
    n_latents = len(base_m)
    grads_m3hw = torch.zeros(n_latents, *pixels_13hw.shape[1:], device=pixels_13hw.device)
    for m in range(n_latents):
        for start in range(0, n_steps, batch_size):
            a_b = alphas[start : start + batch_size].to(pixels_13hw.device)
            path_b3hw = (a_b[:, None, None, None] * pixels_13hw).requires_grad_(True)
            with torch.enable_grad():
                (grad_b3hw,) = torch.autograd.grad(score(path_b3hw)[:, m].sum(), path_b3hw)
            grads_m3hw[m] += grad_b3hw.sum(0).float()
        if progress is not None:
            progress((m + 1) / n_latents, f"integrated gradients of {m + 1}/{n_latents} latents")
    attribution_mhw = (grads_m3hw / n_steps * pixels_13hw[0]).sum(1).clamp_min(0)
    k = patch if patch % 2 else patch + 1  # odd, so the average stays centred
    return F.avg_pool2d(attribution_mhw[:, None], k, stride=1, padding=k // 2)[:, 0]


def overlay(image_hw3: np.ndarray, map_hw: np.ndarray, alpha: float = 0.55) -> Image.Image:
    """The heat over the image: the image dimmed to grey, heat in red-yellow, scaled to the map's
    own maximum (an all-zero map leaves the grey image)."""
    grey_hw = image_hw3.astype(np.float32).mean(-1, keepdims=True) * 0.6 + 40
    peak = float(map_hw.max())
    heat_hw = np.clip(map_hw / peak, 0, 1)[..., None] if peak > 0 else np.zeros_like(grey_hw)
    colour_hw3 = np.concatenate([255 * np.minimum(1, 2 * heat_hw), 255 * heat_hw, 0 * heat_hw], -1)
    mixed = grey_hw * (1 - alpha * heat_hw) + colour_hw3 * alpha * heat_hw
    return Image.fromarray(np.clip(mixed, 0, 255).astype(np.uint8))
