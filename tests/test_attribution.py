"""Heatmaps (``sae_explorer.attribution``): each method against a score whose answer is known,
then on the built-in world, whose shapes are drawn where the truth says."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sae_explorer import attribution, attribution_rise, attribution_tokens
from sae_explorer.attribution import gradient_maps, occlusion_maps, window_starts
from sae_explorer.worlds import heatmap_truth, quality, shapes

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


@pytest.mark.parametrize("method", ["occlusion", "gradient", "rise"])
def test_each_method_finds_the_quadrant_a_latent_reads(pixels, method):
    if method == "occlusion":
        maps = occlusion_maps(quadrant_score, pixels, patch=4, stride=4, batch_size=16)
    elif method == "rise":
        maps = attribution_rise.rise_maps(quadrant_score, pixels, 4, 512, 64)
    else:
        maps = gradient_maps(quadrant_score, pixels, patch=1, n_steps=4, batch_size=4)
    assert maps.shape == (2, H, W) and (maps >= 0).all()
    top_left, bottom_right = maps[0], maps[1]
    floor = 0.75 if method == "rise" else 0.95  # RISE's soft masks blur the edge by a cell
    assert top_left[: H // 2, : W // 2].sum() / top_left.sum() > floor
    assert bottom_right[H // 2 :, W // 2 :].sum() / bottom_right.sum() > floor
    tl_peak, br_peak = int(top_left.argmax()), int(bottom_right.argmax())
    assert tl_peak // W < H // 2 and tl_peak % W < W // 2
    assert br_peak // W >= H // 2 and br_peak % W >= W // 2


def test_integrated_gradients_of_a_linear_score_are_exact(pixels):
    """For a linear score, integrated gradients from a zero baseline are ``x * w``: complete."""
    maps = gradient_maps(quadrant_score, pixels, patch=1, n_steps=3, batch_size=2)
    total = float(maps[1].sum())
    assert total == pytest.approx(float(quadrant_score(pixels)[0, 1]), rel=1e-5)


def test_integrated_gradients_from_another_baseline_explain_the_difference(pixels):
    """From a baseline ``b`` a linear score's integrated gradients sum to ``f(x) - f(b)``."""
    baselines = torch.full((2, 3, H, W), -1.0)
    maps = gradient_maps(quadrant_score, pixels, 1, 3, 2, baselines_m3hw=baselines)
    explained = quadrant_score(pixels) - quadrant_score(baselines[:1])
    assert float(maps[1].sum()) == pytest.approx(float(explained[0, 1]), rel=1e-5)
    assert float(maps[1].sum()) > float(quadrant_score(pixels)[0, 1])  # more than from 0


def test_each_latent_starts_from_the_plain_image_it_fires_least_on():
    """A latent that reads brightness starts from black; one that reads darkness from white."""
    plain_k3hw = torch.stack([torch.full((3, 4, 4), v) for v in (-2.0, 0.0, 2.0)])

    def bright_and_dark(pixels_b3hw):
        mean_b = pixels_b3hw.mean((1, 2, 3))
        return torch.stack([mean_b, -mean_b, -mean_b.abs()], 1)

    chosen_m3hw = attribution.quietest_baselines(bright_and_dark, plain_k3hw)
    assert chosen_m3hw[:, 0, 0, 0].tolist() == [-2.0, 2.0, -2.0]


def test_bad_settings_are_refused(pixels):
    with pytest.raises(ValueError, match="unknown gradient baseline 'noise'"):
        attribution.HeatmapConfig(baseline="noise")
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


# The tokens method, on a tower whose tokens are known: each token is its patch's mean
# brightness, and the "latent" reads their mean (the image's mean brightness) linearly.
P = 4  # patch size of the known tower


def patch_tokens(pixels_b3hw: torch.Tensor) -> torch.Tensor:
    """``[b, n, 2]``: each patch's mean brightness, and a constant (a position-like share)."""
    means_bgg = F.avg_pool2d(pixels_b3hw.mean(1, keepdim=True), P)[:, 0]
    brightness_bn = means_bgg.flatten(1)
    return torch.stack([brightness_bn, torch.ones_like(brightness_bn)], -1)


def brightness_pre(pooled_bd: torch.Tensor) -> torch.Tensor:
    return torch.stack([3 * pooled_bd[:, 0] + pooled_bd[:, 1] - 0.5], 1)


def blob_image() -> tuple[torch.Tensor, np.ndarray]:
    """A dark 16x16 image with a bright 5x5 square off the patch grid, and the square's mask."""
    mask_hw = np.zeros((16, 16), bool)
    mask_hw[5:10, 9:14] = True
    pixels = torch.zeros(1, 3, 16, 16)
    pixels[:, :, torch.as_tensor(mask_hw)] = 1.0
    return pixels, mask_hw


def test_token_contributions_split_an_affine_latent_exactly():
    pixels, _ = blob_image()
    parts_bmn = attribution_tokens.token_contributions(patch_tokens, brightness_pre, pixels)
    pooled_bd = patch_tokens(pixels).mean(1)
    exact = brightness_pre(pooled_bd) - brightness_pre(torch.zeros_like(pooled_bd))
    assert parts_bmn.shape == (1, 1, 16)
    assert float(parts_bmn.sum()) == pytest.approx(float(exact[0, 0]), rel=1e-6)
    hot = int(parts_bmn[0, 0].argmax())  # the patch holding most of the square: row 1, col 2
    assert (hot // 4, hot % 4) == (1, 2)


@pytest.mark.parametrize("shift", [1, 2, P])
def test_the_tokens_method_points_at_the_bright_square(shift):
    pixels, mask_hw = blob_image()
    maps = attribution_tokens.token_maps(patch_tokens, brightness_pre, pixels, P, shift, 8)
    map_hw = maps[0].numpy()
    assert maps.shape == (1, 16, 16) and (map_hw >= 0).all()
    score = heatmap_truth.score_map(map_hw, mask_hw)
    assert score.pointing == (1.0 if shift < P else 9 / 16)
    assert map_hw[mask_hw].mean() > 3 * map_hw[~mask_hw].mean()


def test_shifted_views_refine_the_token_grid():
    """On the patch grid alone the hottest patch holds 9 of the square's 25 pixels (pointing
    9/16); read at every alignment the peak is the square's centre."""
    pixels, mask_hw = blob_image()
    maps = [
        attribution_tokens.token_maps(patch_tokens, brightness_pre, pixels, P, s, 8)[0].numpy()
        for s in (P, 1)
    ]
    coarse, fine = (heatmap_truth.score_map(m, mask_hw).pointing for m in maps)
    assert coarse == pytest.approx(9 / 16) and fine == 1.0
    assert np.unravel_index(maps[1].argmax(), maps[1].shape) == (7, 11)
    assert attribution_tokens.shifted_views(P, P) == [(0, 0)]


def test_translation_and_its_inverse_round_trip():
    pixels = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    for dy, dx in [(2, -3), (-1, 0), (0, 3)]:
        moved = attribution_tokens.translate(pixels, dy, dx)
        assert torch.equal(moved[0, :, 4, 4], pixels[0, :, 4 - dy, 4 - dx])
        back, seen = attribution_tokens.untranslate(moved[0], dy, dx)
        assert torch.equal(back[:, seen.bool()], pixels[0][:, seen.bool()])
        assert int(seen.sum()) == (8 - abs(dy)) * (8 - abs(dx))


def test_a_tower_that_does_not_average_its_tokens_is_refused():
    tower = SimpleNamespace(visual=SimpleNamespace(pool_type="tok", attn_pool=None))
    with pytest.raises(ValueError, match="pools with 'tok': use occlusion, rise or gradient"):
        attribution_tokens.vit_tokens(tower, torch.float32)
    with pytest.raises(ValueError, match="token shift 5 must be between 1 and the patch size 4"):
        attribution_tokens.shifted_views(4, 5)


def test_the_world_towers_tokens_average_to_its_embedding(world):
    encoder, _ = world
    pixels = encoder.preprocess.finish(
        np.stack([np.asarray(shapes.make_item(i, seed=3).image) for i in range(3)])
    )
    tokens_bnd = attribution_tokens.vit_tokens(encoder.model, torch.float32)(pixels)
    with torch.no_grad():
        pooled_bd = encoder.model.encode_image(pixels)
    assert tokens_bnd.shape[1] == 16  # the 4x4 patch grid
    torch.testing.assert_close(tokens_bnd.mean(1), pooled_bd, rtol=1e-4, atol=1e-5)


def test_rise_masks_are_soft_shifted_grids():
    masks = attribution_rise.random_masks(64, 16, 16, 4, 0.5, torch.Generator().manual_seed(0))
    assert masks.shape == (64, 1, 16, 16)
    assert float(masks.min()) >= 0 and float(masks.max()) <= 1
    assert 0.4 < float(masks.mean()) < 0.6
    with pytest.raises(ValueError, match="at least 2 masks"):
        attribution_rise.rise_maps(quadrant_score, torch.ones(1, 3, 8, 8), 4, 1, 4)


@pytest.fixture(scope="module")
def world():
    from sae_explorer.checkpoints import load_sae
    from sae_explorer.encoder import load_encoder

    return load_encoder("builtin:shapes", device="cpu"), load_sae("builtin:shapes")


def test_on_the_world_the_red_latents_gradient_map_points_at_the_shape(world):
    """The best "red" latent (chosen on training images, as the validity benchmark chooses)
    mapped over held-out red shapes: the hottest pixel is on the drawn shape for all of them."""
    encoder, sae = world
    calibration = shapes.make_items(300, shapes.TRAIN_SEED)
    with torch.no_grad():
        z_nl = sae.encode(encoder.encode_images([it.image for it in calibration]))
    attrs = [it.attributes for it in calibration]
    matches = quality.best_latents(z_nl, attrs, z_nl, sae.latent_levels(z_nl), attrs)
    latent = next(m.latent for m in matches if m.value == "red")
    examples = heatmap_truth.examples_per_value([("color", "red")], 5)[("color", "red")]
    pointing = []
    for index in examples:
        image = shapes.make_item(index, heatmap_truth.VALIDITY_SEED).image
        maps = attribution.latent_heatmaps(encoder, sae, image, [latent], "gradient")
        truth_hw = heatmap_truth.truth_mask(index, "color")
        pointing.append(heatmap_truth.score_map(maps.maps_mhw[0], truth_hw).pointing)
    assert np.mean(pointing) == 1.0


def test_pointing_shares_ties_and_the_oracle_is_exact_per_patch():
    truth_hw = np.zeros((8, 8), bool)
    truth_hw[:4, :2] = True  # half of the top-left 4x4 patch
    flat = heatmap_truth.score_map(np.ones((8, 8)), truth_hw)
    assert flat.pointing == pytest.approx(truth_hw.mean())  # chance, not the first pixel
    oracle = heatmap_truth.oracle_map(truth_hw, 4)
    assert oracle[0, 0] == 0.5 and oracle[5, 5] == 0
    assert heatmap_truth.score_map(oracle, truth_hw) == (0.5, 0.5)
    assert heatmap_truth.score_map(np.zeros((8, 8)), truth_hw) == (0.0, 0.0)
