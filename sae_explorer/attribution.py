"""Where in an image a latent fires: heatmaps through CLIP's vision tower.

The SAEs here read the pooled CLIP embedding of the whole image, so a latent has no location of
its own; a heatmap attributes its activation to the pixels the tower saw (the resized, cropped
input, ``Heatmaps.image_hw3``) with one of the methods of ``METHOD_FNS``:

- ``rise``: random soft masks over cells of half a patch; a pixel's heat is how much more the
  latent fires when it is shown (:mod:`sae_explorer.attribution_rise`). ``n_masks`` passes.
- ``occlusion``: a square of ``patch`` pixels (default: the tower's own patch size) set to the
  preprocessing's mean colour (0 after normalisation), slid with ``stride``; a pixel's heat is
  the mean drop of the latent's activation over the windows covering it (rises count as 0).
  ``n_windows`` forward passes, batched.
- ``gradient``: integrated gradients (Sundararajan et al., 2017) in ``n_steps`` batched steps
  from, per latent, whichever plain image (black, mean colour, white) it fires least on, summed over colour channels; positive attributions only,
  averaged over ``patch``-sized neighbourhoods (pixel-level gradients of a ViT are patchy noise).

All give ``[m, H, W]`` maps of non-negative heat, one per latent, computed for ``m`` latents at
once. The world's truth checks them: ``benchmarks/heatmap_validity.py``. It also checks
:func:`token_heatmaps`, the exact split of a latent over the tower's last-layer patch tokens
(:mod:`sae_explorer.attribution_tokens`), which is not offered as a method: on the built-in
world's tower the last layer spreads colour over every token, and the split points at the
background (README, "Where in the image").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, get_args

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sae_explorer.attribution_rise import rise_maps
from sae_explorer.attribution_tokens import token_maps, vit_tokens
from sae_explorer.progress import Progress

Method = Literal["gradient", "rise", "occlusion"]
METHODS: tuple[Method, ...] = get_args(Method)
METHOD_HELP: dict[Method, str] = {
    "gradient": "integrated gradients from the plain black, grey or white image the latent "
    "fires least on (16 steps; the best pointer here)",
    "rise": "how much more the latent fires when a pixel is shown, over 512 random masks",
    "occlusion": "how much the latent drops when a patch is greyed out (one pass per window)",
}
Baseline = Literal["quietest", "mean"]
"""Integrated gradients' start: ``mean``, the mean-colour image; ``quietest``, whichever of a
black, mean-colour or white image the latent fires least on (:func:`quietest_baselines`)."""
MAX_LATENTS = 16
"""Latents mapped in one call (each costs the gradient method one backward pass per step)."""

Score = Callable[[torch.Tensor], torch.Tensor]
"""Preprocessed pixels ``[b, 3, H, W]`` -> the chosen latents' activations ``[b, m]``."""


@dataclass(frozen=True)
class HeatmapConfig:
    """Each method's settings; ``None`` sizes follow the tower's patch size."""

    patch: int | None = (
        None  # occlusion window, gradient smoothing, token grid: default the tower's
    )
    stride: int | None = None  # occlusion: default half a patch
    n_steps: int = 16  # gradient: integration steps
    baseline: Baseline = "quietest"  # gradient: where the integration starts
    shift: int | None = None  # token_heatmaps: default a quarter patch (16 alignments)
    n_masks: int = 512  # rise
    cell: int | None = None  # rise: mask cell, default half a patch
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.baseline not in get_args(Baseline):
            raise ValueError(
                f"unknown gradient baseline {self.baseline!r}; choose one of {get_args(Baseline)}"
            )


class Tower(NamedTuple):
    """What a method reads: the tower, the SAE's chosen latents, the image and its activations."""

    encoder: object  # a ClipEncoder
    sae: object  # an SAE (its view for images)
    latent_ids: list[int]
    pixels_13hw: torch.Tensor
    patch: int
    base_m: torch.Tensor
    score: Score


MethodFn = Callable[[Tower, HeatmapConfig, Progress | None], torch.Tensor]


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
    method: Method = "gradient",
    config: HeatmapConfig | None = None,
    progress: Progress | None = None,
) -> Heatmaps:
    """Heatmaps of ``latent_ids`` of ``sae`` (its view for images) over ``image``, as encoded by
    ``encoder`` (a ``ClipEncoder``), by ``method`` with ``config``. ``ValueError`` for an unknown
    method, no latents or too many, ids out of range, sizes that do not fit the image, or a
    method the tower does not allow."""
    ids = check_latents(latent_ids, sae.n_latents)
    if method not in METHOD_FNS:
        raise ValueError(f"unknown heatmap method {method!r}; choose one of {list(METHODS)}")
    if not encoder.preprocess.splits:
        raise ValueError(f"{encoder.model_id}'s preprocessing cannot be split; no heatmaps for it")
    config = config or HeatmapConfig()
    image_hw3 = encoder.preprocess.to_array(image)
    pixels_13hw = encoder.preprocess.finish(image_hw3[None], encoder.device)
    patch = config.patch or tower_patch_size(encoder.model, pixels_13hw.shape[-1])
    score = latent_score(encoder, sae, ids)
    with torch.no_grad():
        base_m = score(pixels_13hw)[0]
    tower = Tower(encoder, sae, ids, pixels_13hw, patch, base_m, score)
    maps = METHOD_FNS[method](tower, config, progress)
    activations_m = base_m.float().cpu().numpy()
    return Heatmaps(ids, activations_m, maps.float().cpu().numpy(), image_hw3, method)


def _occlusion(tower: Tower, config: HeatmapConfig, progress: Progress | None) -> torch.Tensor:
    stride = config.stride or max(1, tower.patch // 2)
    return occlusion_maps(
        tower.score,
        tower.pixels_13hw,
        tower.patch,
        stride,
        config.batch_size,
        progress,
        tower.base_m,
    )


def _gradient(tower: Tower, config: HeatmapConfig, progress: Progress | None) -> torch.Tensor:
    candidates_k3hw = plain_images(tower.encoder, tower.pixels_13hw)
    if config.baseline == "mean":
        candidates_k3hw = candidates_k3hw[1:2]
    return gradient_maps(
        tower.score,
        tower.pixels_13hw,
        tower.patch,
        config.n_steps,
        config.batch_size,
        progress,
        tower.base_m,
        quietest_baselines(tower.score, candidates_k3hw),
    )


def token_heatmaps(
    encoder, sae, image: Image.Image, latent_ids: Sequence[int], config: HeatmapConfig | None = None
) -> np.ndarray:
    """``[m, H, W]``: ``latent_ids`` split over the last-layer patch tokens of an
    average-pooling ViT, read at shifted alignments (:mod:`sae_explorer.attribution_tokens`; a
    diagnostic, see the module docstring). ``ValueError`` for any other tower."""
    ids = check_latents(latent_ids, sae.n_latents)
    config = config or HeatmapConfig()
    pixels_13hw = encoder.preprocess.finish(
        encoder.preprocess.to_array(image)[None], encoder.device
    )
    patch = config.patch or tower_patch_size(encoder.model, pixels_13hw.shape[-1])
    tokens = vit_tokens(encoder.model, encoder.input_dtype)
    shift = config.shift or max(1, patch // 4)
    pre = pre_activation(sae, ids)
    return token_maps(tokens, pre, pixels_13hw, patch, shift, config.batch_size).cpu().numpy()


def _rise(tower: Tower, config: HeatmapConfig, progress: Progress | None) -> torch.Tensor:
    cell = config.cell or max(1, tower.patch // 2)
    return rise_maps(
        tower.score, tower.pixels_13hw, cell, config.n_masks, config.batch_size, progress=progress
    )


METHOD_FNS: dict[Method, MethodFn] = {
    "gradient": _gradient,
    "rise": _rise,
    "occlusion": _occlusion,
}


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


def pre_activation(sae, latent_ids: list[int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Pooled CLIP embeddings ``[b, d]`` -> the latents' pre-activations ``[b, m]``
    (``to_model_space(x) @ encoder + bias``: before the activation function), differentiable."""
    ids = torch.as_tensor(latent_ids, dtype=torch.long, device=sae.device)

    def pre(x_bd: torch.Tensor) -> torch.Tensor:
        return sae.to_model_space(x_bd.to(sae.device)) @ sae.encoder[:, ids] + sae.latent_bias[ids]

    return pre


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
    baselines_m3hw: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[m, H, W]``: integrated gradients of each latent from its baseline (``baselines_m3hw``;
    default the mean colour, 0), positive part, averaged over ``patch``-sized neighbourhoods
    (``base_m``: the image's activations, when the caller has them already; only their number
    is read)."""
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    alphas = (torch.arange(n_steps, dtype=torch.float32) + 0.5) / n_steps  # midpoint rule
    if base_m is None:
        with torch.no_grad():
            base_m = score(pixels_13hw)[0]
    n_latents = len(base_m)
    if baselines_m3hw is None:
        baselines_m3hw = torch.zeros(n_latents, *pixels_13hw.shape[1:], device=pixels_13hw.device)
    attribution_mhw = torch.zeros(n_latents, *pixels_13hw.shape[2:], device=pixels_13hw.device)
    for m in range(n_latents):
        start_13hw = baselines_m3hw[m : m + 1]
        step_13hw = pixels_13hw - start_13hw
        grad_3hw = torch.zeros_like(pixels_13hw[0])
        for start in range(0, n_steps, batch_size):
            a_b = alphas[start : start + batch_size].to(pixels_13hw.device)
            path_b3hw = (start_13hw + a_b[:, None, None, None] * step_13hw).requires_grad_(True)
            with torch.enable_grad():
                (grad_b3hw,) = torch.autograd.grad(score(path_b3hw)[:, m].sum(), path_b3hw)
            grad_3hw += grad_b3hw.sum(0).float()
        attribution_mhw[m] = (grad_3hw / n_steps * step_13hw[0]).sum(0).clamp_min(0)
        if progress is not None:
            progress((m + 1) / n_latents, f"integrated gradients of {m + 1}/{n_latents} latents")
    k = patch if patch % 2 else patch + 1  # odd, so the average stays centred
    return F.avg_pool2d(attribution_mhw[:, None], k, stride=1, padding=k // 2)[:, 0]


def plain_images(encoder, like_13hw: torch.Tensor) -> torch.Tensor:
    """``[3, 3, H, W]``: plain black, mean-colour and white images, preprocessed like the input
    (candidate baselines: the world's backgrounds, and most photos' extremes)."""
    _, _, h, w = like_13hw.shape
    levels = np.array([0, 0, 255], np.uint8)[:, None, None, None]
    arrays_khw3 = np.broadcast_to(levels, (3, h, w, 3)).copy()
    plain_k3hw = encoder.preprocess.finish(arrays_khw3, like_13hw.device)
    plain_k3hw[1] = 0.0  # the preprocessing's mean colour
    return plain_k3hw


def quietest_baselines(score: Score, candidates_k3hw: torch.Tensor) -> torch.Tensor:
    """``[m, 3, H, W]``: for each latent the candidate it fires least on. Integrated gradients
    explain ``f(image) - f(baseline)``, so a baseline that already shows the latent's concept
    (a grey image for a grey-background latent) leaves that concept nothing to explain."""
    with torch.no_grad():
        quietest_m = score(candidates_k3hw).argmin(0)
    return candidates_k3hw[quietest_m]


def overlay(image_hw3: np.ndarray, map_hw: np.ndarray, alpha: float = 0.55) -> Image.Image:
    """The heat over the image: the image dimmed to grey, heat in red-yellow, scaled to the map's
    own maximum (an all-zero map leaves the grey image)."""
    grey_hw = image_hw3.astype(np.float32).mean(-1, keepdims=True) * 0.6 + 40
    peak = float(map_hw.max())
    heat_hw = np.clip(map_hw / peak, 0, 1)[..., None] if peak > 0 else np.zeros_like(grey_hw)
    colour_hw3 = np.concatenate([255 * np.minimum(1, 2 * heat_hw), 255 * heat_hw, 0 * heat_hw], -1)
    mixed = grey_hw * (1 - alpha * heat_hw) + colour_hw3 * alpha * heat_hw
    return Image.fromarray(np.clip(mixed, 0, 255).astype(np.uint8))
