"""The committed built-in world (checkpoints/builtin-shapes) loads offline and keeps its quality.

Thresholds sit a little below the figures in checkpoints/builtin-shapes/README.md, measured here
on a fresh held-out sample (a seed used neither in training nor in the README's report).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from sae_explorer import builtin, load_sae
from sae_explorer.encoder import load_encoder
from sae_explorer.worlds import quality

FRESH_SEED = 20_261_122
N_ITEMS = 800


@pytest.fixture(scope="module")
def world():
    enc = load_encoder("builtin:shapes", device="cpu")
    sae = load_sae("builtin:shapes")
    return enc, sae


@pytest.fixture(scope="module")
def report(world) -> quality.WorldReport:
    enc, sae = world
    return quality.world_report(enc, sae, n_items=N_ITEMS, seed=FRESH_SEED)


def test_files_are_self_describing_and_small() -> None:
    dpath = builtin.DEFAULT.dpath
    total = sum(f.stat().st_size for f in dpath.rglob("*") if f.is_file())
    assert total <= 25 * 2**20
    config = json.loads((dpath / "clip" / "open_clip_config.json").read_text())
    assert set(config["model_cfg"]) >= {"embed_dim", "vision_cfg", "text_cfg"}
    weights = load_file(dpath / "clip" / "open_clip_model.safetensors")
    assert {w.dtype for w in weights.values()} == {torch.float16}
    assert (dpath / "sae" / "config.json").is_file()
    assert (dpath / "README.md").is_file()


def test_world_models_fit_together(world) -> None:
    enc, sae = world
    assert enc.model_id == "builtin:shapes"
    enc.check_sae(sae)
    assert sae.nesting_list is not None  # a Matryoshka SAE
    assert sae.provenance["clip_model"] == "builtin:shapes"


def test_zero_shot_accuracy_per_attribute(report) -> None:
    for name, accuracy in report.zero_shot.items():
        assert accuracy >= 0.9, f"{name}: {accuracy:.3f}"


def test_attribute_values_have_detecting_latents(report) -> None:
    assert report.n_detected >= MIN_DETECTED
    by_attribute = {m.attribute: m for m in report.matches if m.f1 >= 0.9}
    assert {"color", "background"} <= set(by_attribute)
    n_levels = len(load_sae(builtin.DEFAULT.source).nesting_list)
    for m in report.matches:
        assert 0 <= m.latent < 256 and -1 <= m.level < n_levels
    assert all(m.level >= 0 for m in by_attribute.values())  # detectors are kept by a level


def test_reconstruction_of_held_out_embeddings(report) -> None:
    assert report.image_reconstruction.cosine >= MIN_IMAGE_COSINE
    assert report.text_reconstruction.cosine >= MIN_TEXT_COSINE
    assert report.image_reconstruction.fvu <= MAX_IMAGE_FVU


# README figures (2000 held-out items): 8/16 values detected at F1 >= 0.9, image cosine 0.991,
# text cosine 0.997, image FVU 0.020
MIN_DETECTED = 6
MIN_IMAGE_COSINE = 0.97
MIN_TEXT_COSINE = 0.98
MAX_IMAGE_FVU = 0.05
