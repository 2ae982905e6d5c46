"""Shared builders for the corpus / index / precompute / naming tests: tiny models, tiny files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sae_explorer.sae import SAE, SAEConfig


def build_sae(n_inputs: int = 64, n_latents: int = 96, seed: int = 0, **overrides) -> SAE:
    """A random SAE; ``matryoshka=k`` gives MSAE's doubling nesting list from k."""
    k = overrides.pop("matryoshka", None)
    if k is not None:
        cfg = SAEConfig.matryoshka(n_inputs, n_latents, k=k, **overrides)
    else:
        cfg = SAEConfig(n_inputs, n_latents, **{"activation": "ReLU", **overrides})
    return SAE(cfg, generator=torch.Generator().manual_seed(seed)).eval()


def write_image(
    fpath: Path, seed: int, size: tuple[int, int] = (24, 20), fmt: str | None = None
) -> Path:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    fpath.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(fpath, format=fmt)
    return fpath


def write_truncated_jpeg(fpath: Path) -> Path:
    """A JPEG cut in half: PIL opens the header, then fails while decoding."""
    write_image(fpath, seed=99, size=(64, 64), fmt="JPEG")
    data = fpath.read_bytes()
    fpath.write_bytes(data[: len(data) // 2])
    return fpath


def assert_same_arrays(reference_dpath: Path, other_dpath: Path, names, sum_rtol: float) -> None:
    """Every ``.npy`` of ``names`` equal in both index folders; ``latent_sum.npy`` (sums merged
    in another order) within ``sum_rtol``."""
    for name in names:
        if not name.endswith(".npy"):
            continue
        a, b = np.load(reference_dpath / name), np.load(other_dpath / name)
        if name == "latent_sum.npy":
            np.testing.assert_allclose(b, a, rtol=sum_rtol)
        else:
            assert np.array_equal(a, b), name


def assert_same_index(reference, other) -> None:
    """Two ActivationIndexes hold the same files, every array equal and the same items."""
    assert other.manifest["files"] == reference.manifest["files"]
    for name in reference.manifest["files"]:
        if name.endswith(".npy"):
            a, b = np.load(reference.dpath / name), np.load(other.dpath / name)
            assert np.array_equal(a, b, equal_nan=True), name
    assert other.items.equals(reference.items)
