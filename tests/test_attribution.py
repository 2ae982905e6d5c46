"""Heatmaps (``sae_explorer.attribution``): each method against a score whose answer is known,
then on the built-in world, whose shapes are drawn where the truth says."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sae_explorer import attribution
from sae_explorer.attribution import gradient_maps, occlusion_maps, window_starts
from sae_explorer.worlds import shapes

H = W = 32


def quadrant_score(pixels_b3hw: torch.Tensor) -> torch.Tensor:
    """Two "latents": the first reads the top-left quadrant's pixels, the second the
    bottom-right quadrant's, each linearly with positive weights."""
    top_left = pixels_b3hw[:, :, : H // 2, : W // 2].mean((1, 2, 3))
    bottom_right = 2 * pixels_b3hw[:, :, H // 2 :, W // 2 :].mean((1, 2, 3))
    return torch.stack([top_left, bottom_right], 1)


@pytest.fixture
def pixels():
    return torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(0)) + 0.5


def test_windows_cover_every_pixel():
    assert window_starts(10, 4, 3) == [0, 3, 6]
    assert window_starts(10, 4, 4) == [0, 4, 6]  # the last one flush with the edge
    assert window_starts(8, 8, 4) == [0]


@pytest.mark.parametrize("method", ["occlusion", "gradient"])
def test_each_method_finds_the_quadrant_a_latent_reads(pixels, method):
    if method == "occlusion":
        maps = occlusion_maps(quadrant_score, pixels, patch=4, stride=4, batch_size=16)
    else:
        maps = gradient_maps(quadrant_score, pixels, patch=1, n_steps=4, batch_size=4)
    assert maps.shape == (2, H, W) and (maps >= 0).all()
    top_left, bottom_right = maps[0], maps[1]
    assert top_left[: H // 2, : W // 2].sum() / top_left.sum() > 0.95
    assert bottom_right[H // 2 :, W // 2 :].sum() / bottom_right.sum() > 0.95


def test_integrated_gradients_of_a_linear_score_are_exact(pixels):
    """For a linear score, integrated gradients from a zero baseline are ``x * w``: complete."""
    maps = gradient_maps(quadrant_score, pixels, patch=1, n_steps=3, batch_size=2)
    total = float(maps[1].sum())
    assert total == pytest.approx(float(quadrant_score(pixels)[0, 1]), rel=1e-5)


def test_bad_settings_are_refused(pixels):
    with pytest.raises(ValueError, match="patch 64 / stride 2 must fit the 32x32 image"):
        occlusion_maps(quadrant_score, pixels, patch=64, stride=2, batch_size=4)
    with pytest.raises(ValueError, match="choose at least one latent"):
        attribution.check_latents([], 10)
    with pytest.raises(ValueError, match="latent 10 does not exist"):
        attribution.check_latents([3, 10], 10)


def test_an_empty_map_leaves_the_image_grey():
    image_hw3 = np.full((8, 8, 3), 200, np.uint8)
    shown = np.asarray(attribution.overlay(image_hw3, np.zeros((8, 8))))
    assert (shown[..., 0] == shown[..., 2]).all()
    hot = np.asarray(attribution.overlay(image_hw3, np.eye(8)))
    assert hot[0, 0, 0] > hot[0, 0, 2] and hot[0, 1, 0] == hot[0, 1, 2]


def test_the_world_masks_match_its_images():
    for index in range(5):
        item = shapes.make_item(index, seed=3)
        mask_hw = shapes.shape_mask(index, seed=3)
        pixels_hw3 = np.asarray(item.image).astype(int)
        off_background = np.abs(pixels_hw3 - pixels_hw3[0, 0]).sum(-1) > 60
        assert (mask_hw == off_background).mean() > 0.97  # all but the anti-aliased rim
