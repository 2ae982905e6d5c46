"""Indexing on the SAE's device (torch) against the host path (numpy): same statistics, top-M,
samples and codes, batch by batch and through whole builds (here on the CPU device)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _precompute_helpers import assert_same_index, build_sae

from sae_explorer.index import LatentAccumulator, active_entries, top_codes
from sae_explorer.index.device import DeviceAccumulator, device_codes
from sae_explorer.precompute import PrecomputeConfig, index_embeddings

EXACT = ("latent_count", "latent_count_image", "latent_max", "latent_level", "latent_hist")
EXACT += ("latent_top_idx", "latent_top_val", "latent_sample_idx", "latent_sample_val")


def assert_same_arrays(host: dict, device: dict) -> None:
    assert set(host) == set(device)
    for name in EXACT:
        assert host[name].dtype == device[name].dtype, name
        assert np.array_equal(host[name], device[name]), name
    np.testing.assert_allclose(device["latent_sum"], host["latent_sum"], rtol=1e-12)


def batches(z_nl: torch.Tensor, batch: int):
    for s in range(0, len(z_nl), batch):
        yield s, z_nl[s : s + batch]


def with_ties(n: int, n_latents: int, seed: int) -> torch.Tensor:
    """Activations on a coarse grid (many exact ties), some negative, one dead latent."""
    g = torch.Generator().manual_seed(seed)
    z = (torch.randint(-3, 6, (n, n_latents), generator=g) * 0.25).float()
    z[:, 5] = 0
    return z


@pytest.mark.parametrize("batch", [1, 37, 128])
def test_device_accumulator_equals_the_host_one(batch):
    z = with_ties(400, 48, seed=batch)
    is_image = np.arange(400) % 3 == 0
    levels = torch.randint(-1, 3, z.shape, generator=torch.Generator().manual_seed(2))
    item_idx = np.arange(400, dtype=np.int64) * 7 + 11  # positions, not rows: any increasing ids
    host = LatentAccumulator(48, top_m=6, n_samples=9, n_levels=3, seed=4)
    host.merge_every = 100
    dev = DeviceAccumulator(48, top_m=6, n_samples=9, n_levels=3, seed=4)
    for s, z_bl in batches(z, batch):
        sl = slice(s, s + len(z_bl))
        host.update(active_entries(z_bl), item_idx[sl], is_image[sl], levels[sl])
        dev.update(z_bl, item_idx[sl], is_image[sl], levels[sl])
    assert_same_arrays(host.finish(), dev.finish())
    state_host, state_dev = host.state(), dev.state()
    for name in state_host:
        np.testing.assert_allclose(state_dev[name], state_host[name], rtol=1e-12, err_msg=name)


def test_device_state_round_trip_continues_identically():
    z = with_ties(300, 32, seed=9)
    is_image = np.ones(300, bool)
    idx = np.arange(300, dtype=np.int64)
    whole = DeviceAccumulator(32, top_m=5, n_samples=7)
    for s, z_bl in batches(z, 50):
        whole.update(z_bl, idx[s : s + 50], is_image[s : s + 50])
    first = DeviceAccumulator(32, top_m=5, n_samples=7)
    for s, z_bl in batches(z[:150], 50):
        first.update(z_bl, idx[s : s + 50], is_image[s : s + 50])
    # resumed from the host format, as a checkpoint hands it over
    resumed = DeviceAccumulator.from_state(
        LatentAccumulator.from_state(first.state()).state(), "cpu"
    )
    for s, z_bl in batches(z[150:], 50):
        resumed.update(z_bl, idx[150 + s : 200 + s], is_image[s : s + 50])
    a, b = whole.finish(), resumed.finish()
    for name in a:
        assert np.array_equal(a[name], b[name]), name


@pytest.mark.parametrize("k", [1, 4, 40])
def test_device_codes_equal_the_host_codes(k):
    z = with_ties(90, 33, seed=k)
    host = top_codes(active_entries(z), k)
    dev = device_codes(z, k)
    assert np.array_equal(dev.codes.counts_b, host.counts_b)
    assert np.array_equal(dev.codes.ids, host.ids)
    assert np.array_equal(dev.codes.values, host.values)
    assert np.array_equal(dev.n_active_b, (z > 0).sum(1).numpy())


def assert_same_sums(host, dev) -> None:
    a, b = (np.load(index.dpath / "latent_sum.npy") for index in (host, dev))
    np.testing.assert_allclose(b, a, rtol=1e-12)
    assert np.any(a > 0)


def random_embeddings(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


@pytest.mark.parametrize("matryoshka", [None, 4])
def test_a_device_build_equals_a_host_build(tmp_path, matryoshka):
    """Whole builds, random SAE (ReLU, and Matryoshka TopK for the levels)."""
    kwargs = {"matryoshka": matryoshka} if matryoshka else {}
    sae = build_sae(n_inputs=16, n_latents=64, seed=3, **kwargs)
    x = random_embeddings(500, 16, seed=1)
    base = {"top_k": 8, "top_m": 6, "n_samples": 10, "chunk_size": 128, "sae_batch_size": 48}
    host = index_embeddings(sae, x, tmp_path / "host", PrecomputeConfig(**base, index_on="host"))
    dev = index_embeddings(sae, x, tmp_path / "dev", PrecomputeConfig(**base, index_on="device"))
    for name in host.manifest["files"]:
        if name.endswith(".npy") and name != "latent_sum.npy":
            assert np.array_equal(np.load(host.dpath / name), np.load(dev.dpath / name)), name
    assert_same_sums(host, dev)
    assert dev.items.equals(host.items)


def test_a_device_build_of_the_builtin_world_equals_a_host_build(tmp_path):
    from sae_explorer.checkpoints import load_sae
    from sae_explorer.corpus import load_corpus
    from sae_explorer.encoder import load_encoder
    from sae_explorer.precompute import precompute

    encoder, sae = load_encoder("builtin:shapes", device="cpu"), load_sae("builtin:shapes")
    corpus = load_corpus("builtin:shapes?n=80")
    base = {"top_k": 16, "chunk_size": 96, "sae_batch_size": 40, "n_workers": 0, "names": False}
    host = precompute(encoder, sae, corpus, tmp_path / "h", PrecomputeConfig(**base))
    dev = precompute(
        encoder, sae, corpus, tmp_path / "d", PrecomputeConfig(**base, index_on="device")
    )
    assert host.manifest["config"]["index_on"] == "auto"
    for name in host.manifest["files"]:
        if name.endswith(".npy") and name != "latent_sum.npy":
            assert np.array_equal(np.load(host.dpath / name), np.load(dev.dpath / name)), name
    assert_same_sums(host, dev)


def test_a_resumed_device_build_is_identical(tmp_path):
    sae = build_sae(n_inputs=16, n_latents=64, seed=5)
    x = random_embeddings(400, 16, seed=2)
    cfg = PrecomputeConfig(top_k=8, top_m=6, n_samples=10, chunk_size=100, index_on="device")
    whole = index_embeddings(sae, x, tmp_path / "whole", cfg)
    with pytest.raises(InterruptedError):
        index_embeddings(sae, x, tmp_path / "resumed", cfg, stop_after_chunks=2)
    assert_same_index(whole, index_embeddings(sae, x, tmp_path / "resumed", cfg))
