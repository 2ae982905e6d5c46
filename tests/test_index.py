"""The streaming accumulator and the index format, checked against brute force on dense data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _precompute_helpers import assert_same_index, build_sae
from hypothesis import given, settings
from hypothesis import strategies as st

from sae_explorer.index import (
    MANIFEST_NAME,
    ActivationIndex,
    CorruptIndexError,
    LatentAccumulator,
    SparseCodes,
    active_entries,
    hist_bin_edges,
    item_keys,
    median_levels,
    read_manifest,
    top_codes,
)
from sae_explorer.precompute import PrecomputeConfig, index_embeddings


def sparse_topk(z_bl: torch.Tensor, k: int) -> SparseCodes:
    """Reference for :func:`top_codes`: each item's ``k`` largest positive activations via a dense
    ``topk`` (what the library did before the entry-list version)."""
    k = min(k, z_bl.shape[1])
    values_bk, ids_bk = z_bl.topk(k, dim=1, sorted=False)
    values_bk, order_bk = values_bk.sort(dim=1, descending=True)
    ids_bk = ids_bk.gather(1, order_bk)
    keep_bk = values_bk > 0
    return SparseCodes(
        counts_b=keep_bk.sum(1).numpy().astype(np.int64),
        ids=ids_bk[keep_bk].numpy().astype(np.int32),
        values=values_bk[keep_bk].numpy().astype(np.float16),
    )


def sparse_latents(n: int, n_latents: int, seed: int, density: float = 0.3) -> torch.Tensor:
    """Continuous positive values (no ties) on a random sparsity pattern, one dead latent."""
    g = torch.Generator().manual_seed(seed)
    z = torch.rand(n, n_latents, generator=g) * 3
    z[torch.rand(n, n_latents, generator=g) > density] = 0
    z[:, 3] = 0
    return z


def accumulate(z: torch.Tensor, batch: int, merge_every: int, is_image=None, **kwargs):
    acc = LatentAccumulator(z.shape[1], **kwargs)
    acc.merge_every = merge_every
    is_image = torch.zeros(len(z), dtype=torch.bool) if is_image is None else is_image
    for s in range(0, len(z), batch):
        idx = torch.arange(s, min(s + batch, len(z)))
        acc.update(active_entries(z[idx]), idx, is_image[idx])
    return acc.finish()


def test_accumulator_matches_brute_force():
    z = sparse_latents(700, 40, seed=1)
    is_image = torch.arange(700) % 3 == 0
    out = accumulate(z, batch=64, merge_every=50, is_image=is_image, top_m=8, n_samples=16)
    zn = z.numpy()
    active = zn > 0
    # top-M: the dense argsort, restricted to positive values
    order = np.argsort(-zn, axis=0, kind="stable")[:8].T
    expected = np.where(np.take_along_axis(zn.T, order, 1) > 0, order, -1)
    assert np.array_equal(out["latent_top_idx"], expected)
    assert np.allclose(
        out["latent_top_val"], np.where(expected >= 0, np.take_along_axis(zn.T, order, 1), 0)
    )
    assert np.array_equal(out["latent_count"], active.sum(0))
    assert np.array_equal(out["latent_count_image"], active[is_image.numpy()].sum(0))
    assert np.allclose(out["latent_sum"], zn.sum(0), rtol=1e-6)
    assert np.array_equal(out["latent_max"], zn.max(0))
    edges = hist_bin_edges()
    for latent in range(40):
        counts, _ = np.histogram(zn[active[:, latent], latent], edges)
        assert np.array_equal(out["latent_hist"][latent], counts)
    # sample: exactly the active items with the smallest keys, sorted by value
    keys = item_keys(np.arange(700), seed=0)
    for latent in range(40):
        items = np.flatnonzero(active[:, latent])
        want = items[np.argsort(keys[items], kind="stable")[:16]]
        got = out["latent_sample_idx"][latent]
        assert set(got[got >= 0]) == set(want)
        vals = out["latent_sample_val"][latent][got >= 0]
        assert np.allclose(vals, zn[got[got >= 0], latent]) and np.all(np.diff(vals) <= 0)
    assert (out["latent_top_idx"][3] == -1).all() and out["latent_count"][3] == 0


@settings(max_examples=15, deadline=None)
@given(
    batch=st.integers(1, 300),
    merge_every=st.sampled_from([1, 37, 10**9]),
    seed=st.integers(0, 3),
)
def test_result_does_not_depend_on_batching_or_merge_schedule(batch, merge_every, seed):
    z = sparse_latents(300, 12, seed=seed)
    reference = accumulate(z, batch=300, merge_every=10**9, top_m=5, n_samples=7)
    out = accumulate(z, batch=batch, merge_every=merge_every, top_m=5, n_samples=7)
    for name, value in reference.items():
        assert np.array_equal(out[name], value), name


def test_ties_keep_the_earliest_items():
    z = torch.ones(50, 4)
    out = accumulate(z, batch=7, merge_every=3, top_m=5, n_samples=5)
    assert (out["latent_top_idx"] == np.arange(5)).all()


def test_state_round_trip_continues_identically():
    z = sparse_latents(400, 20, seed=2)
    full = accumulate(z, batch=50, merge_every=10**9, top_m=6, n_samples=9)
    acc = LatentAccumulator(20, top_m=6, n_samples=9)
    for s in range(0, 200, 50):
        acc.update(
            active_entries(z[s : s + 50]), torch.arange(s, s + 50), torch.zeros(50, dtype=bool)
        )
    resumed = LatentAccumulator.from_state({k: v.copy() for k, v in acc.state().items()})
    for s in range(200, 400, 50):
        resumed.update(
            active_entries(z[s : s + 50]), torch.arange(s, s + 50), torch.zeros(50, dtype=bool)
        )
    for name, value in resumed.finish().items():
        assert np.array_equal(value, full[name]), name


@pytest.mark.parametrize("k", [1, 7, 30, 200])
def test_top_codes_equal_dense_topk(k):
    z = sparse_latents(120, 60, seed=3, density=0.6)
    reference, fast = sparse_topk(z, k), top_codes(active_entries(z), k)
    assert np.array_equal(fast.counts_b, reference.counts_b)
    assert np.array_equal(fast.ids, reference.ids)
    assert np.array_equal(fast.values, reference.values)
    assert fast.counts_b.max() == min(k, int((z > 0).sum(1).max()))


def test_top_codes_without_packed_keys_agree():
    """Too many latents to pack (item, value, latent) into one int64: the lexsort path."""
    z = sparse_latents(90, 50, seed=4, density=0.7)
    entries = active_entries(z)
    packed, unpacked = top_codes(entries, 9), top_codes(entries._replace(n_latents=2**40), 9)
    for a, b in zip(packed, unpacked):
        assert np.array_equal(a, b)
    assert np.array_equal(packed.ids, sparse_topk(z, 9).ids)


def test_median_levels():
    counts = np.array([[0, 0, 0], [5, 0, 0], [1, 1, 1], [1, 0, 4], [2, 2, 0]])
    assert median_levels(counts, 3).tolist() == [-1, 0, 1, 2, 0]
    assert median_levels(np.zeros((4, 1), dtype=np.int64), 0).tolist() == [-1, -1, -1, -1]


def test_levels_follow_the_contract():
    """Median of sae.latent_levels over the items where the latent is kept (brute force)."""
    sae = build_sae(16, 32, matryoshka=2)
    x = torch.randn(200, 16, generator=torch.Generator().manual_seed(0))
    z = sae.encode(x).detach()
    levels = sae.latent_levels(z)
    acc = LatentAccumulator(32, n_levels=len(sae.nesting_list))
    acc.update(active_entries(z), torch.arange(200), torch.zeros(200, dtype=bool), levels)
    got = acc.finish()["latent_level"]
    for latent in range(32):
        kept = levels[:, latent][levels[:, latent] >= 0].numpy()
        want = -1 if len(kept) == 0 else int(np.sort(kept)[(len(kept) - 1) // 2])
        assert got[latent] == want


# --------------------------------------------------------------------------- the folder format
@pytest.fixture(scope="module")
def small_index(tmp_path_factory):
    sae = build_sae(32, 48, seed=4)
    x = np.random.default_rng(0).standard_normal((300, 32)).astype(np.float32)
    cfg = PrecomputeConfig(top_k=10, top_m=6, n_samples=20, chunk_size=128, sae_batch_size=50)
    index = index_embeddings(sae, x, tmp_path_factory.mktemp("idx") / "index", cfg)
    return index, sae, x


def test_index_round_trip(small_index):
    index, sae, x = small_index
    z = sae.encode(torch.from_numpy(x)).detach().numpy()
    reopened = ActivationIndex.load(index.dpath)
    assert (reopened.n_items, reopened.n_latents, reopened.embed_dim) == (300, 48, 32)
    assert np.array_equal(np.asarray(reopened.embeddings), x.astype(np.float16))
    # CSR codes: each item's 10 largest, largest first
    for i in (0, 17, 299):
        ids, values = reopened.item_codes(i)
        want = np.argsort(-z[i], kind="stable")[:10]
        want = want[z[i, want] > 0]
        assert ids.tolist() == want.tolist()
        assert np.allclose(values, z[i, want], rtol=1e-3)
    assert np.allclose(reopened.frequency, (z > 0).mean(0))
    active = np.maximum((z > 0).sum(0), 1)
    assert np.allclose(reopened.mean_act, np.where(z > 0, z, 0).sum(0) / active, rtol=1e-5)
    assert np.allclose(reopened.max_act, z.max(0).clip(min=0))
    latent = int(np.argmax((z > 0).sum(0)))
    top = reopened.top_examples(latent)
    assert top["item_idx"].tolist() == np.argsort(-z[:, latent], kind="stable")[:6].tolist()
    assert list(top.columns[:2]) == ["item_idx", "value"] and "item_id" in top
    assert len(reopened.top_examples(latent, m=2)) == 2
    summary = reopened.latent_summary(latent)
    assert summary.n_active == int((z[:, latent] > 0).sum()) and summary.level == -1
    hist = reopened.histogram(latent)
    assert hist.counts.sum() == summary.n_active and len(hist.edges) == len(hist.counts) + 1
    samples = reopened.quantile_samples(latent, n_bins=4, per_bin=2)
    assert len(samples) == 8 and samples["bin"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert samples["value"].is_monotonic_increasing
    assert np.allclose(samples["value"], z[samples["item_idx"], latent])
    assert reopened.names is None
    with pytest.raises(ValueError, match="latent_id must be in"):
        reopened.top_examples(48)


def test_nearest_is_cosine_over_embeddings(small_index):
    index, _, x = small_index
    q = x[5] + 0.01
    found = index.nearest(q, k=4)
    xf = x.astype(np.float16).astype(np.float32)
    sims = xf @ q / np.linalg.norm(xf, axis=1) / np.linalg.norm(q)
    assert found["item_idx"].tolist() == np.argsort(-sims)[:4].tolist()
    assert np.allclose(found["similarity"], np.sort(sims)[::-1][:4], atol=1e-5)
    assert index.nearest(q, k=3, modality="image").empty  # every item is a text here
    with pytest.raises(ValueError, match="expected one 32-d"):
        index.nearest(np.zeros(5), k=3)


def test_damaged_index_is_refused(small_index, tmp_path):
    index, _, _ = small_index
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(index.dpath, copy)
    ActivationIndex.load(copy)
    codes = copy / "codes_values.npy"
    codes.write_bytes(codes.read_bytes()[:-10])
    with pytest.raises(CorruptIndexError, match=r"codes_values\.npy has"):
        ActivationIndex.load(copy)
    (copy / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(CorruptIndexError, match="not valid JSON"):
        read_manifest(copy)
    (copy / MANIFEST_NAME).write_text(json.dumps({"schema": 999}))
    with pytest.raises(ValueError, match="schema 999"):
        ActivationIndex.load(copy)


def test_index_embeddings_rebuilds_when_any_row_changes(tmp_path):
    """The cache key covers every row, not a prefix: editing the last row rebuilds the index."""
    sae = build_sae(32, 48, seed=4)
    x = np.random.default_rng(1).standard_normal((5000, 32)).astype(np.float32)
    cfg = PrecomputeConfig(top_k=10, top_m=6, n_samples=20, chunk_size=1024, sae_batch_size=512)
    first = index_embeddings(sae, x, tmp_path / "index", cfg)
    np.testing.assert_allclose(np.asarray(first.embeddings[-1], np.float32), x[-1], atol=1e-2)
    x[-1] *= -5.0
    second = index_embeddings(sae, x, tmp_path / "index", cfg)
    np.testing.assert_allclose(np.asarray(second.embeddings[-1], np.float32), x[-1], atol=5e-2)


def test_a_second_build_of_the_same_folder_waits_for_the_first(tmp_path):
    """Two builds of one folder (two app workers, two CLI runs) never write into it together:
    the second waits for the lock, says so, and then reuses or builds the index."""
    import threading

    from sae_explorer.precompute import build_lock

    sae = build_sae(32, 48, seed=4)
    x = np.random.default_rng(1).standard_normal((3000, 32)).astype(np.float32)
    cfg = PrecomputeConfig(top_k=10, top_m=6, n_samples=20, chunk_size=1024, names=False)
    dpath = tmp_path / "index"
    messages: list[str] = []
    result: list[ActivationIndex] = []
    with build_lock(dpath):  # "the other process" holds the folder
        waiter = threading.Thread(
            target=lambda: result.append(
                index_embeddings(sae, x, dpath, cfg, progress=lambda f, m: messages.append(m))
            )
        )
        waiter.start()
        for _ in range(200):
            if messages:
                break
            threading.Event().wait(0.05)
        assert messages == ["another process is building this index; waiting for it"]
        assert not dpath.exists()  # it waited instead of writing
        first = index_embeddings(sae, x, tmp_path / "elsewhere", cfg)
    waiter.join(timeout=60)
    assert len(result) == 1 and result[0].n_items == 3000
    assert np.array_equal(np.asarray(result[0]._top_idx), np.asarray(first._top_idx))


def test_npy_appender_resumes_at_a_row_count_and_cuts_the_rest(tmp_path):
    from sae_explorer.index import NpyAppender

    fpath = tmp_path / "x.npy"
    a = NpyAppender(fpath, np.float16, (3,))
    a.append(np.ones((4, 3)))
    a.flush()  # a crash here leaves 4 rows; the checkpoint said 2
    b = NpyAppender(fpath, np.float16, (3,), resume_rows=2)
    b.append(np.full((1, 3), 7))
    assert b.close() == fpath and not b.tmp.exists()
    np.testing.assert_array_equal(np.load(fpath), [[1, 1, 1], [1, 1, 1], [7, 7, 7]])
    assert np.load(fpath, mmap_mode="r").shape == (3, 3)
    with pytest.raises(ValueError, match="fewer than 9 rows"):
        NpyAppender(tmp_path / "y.npy", np.int32, resume_rows=9)


def test_a_crash_after_the_last_checkpoint_resumes_identically(tmp_path, monkeypatch, caplog):
    """Killed mid-run, the files hold rows the checkpoint does not count: the next run cuts them
    off, redoes those chunks, and ends with the same index as an uninterrupted run."""
    from sae_explorer.index import NpyAppender
    from sae_explorer.index.build import IndexBuilder

    sae = build_sae(32, 48, seed=4)
    x = np.random.default_rng(2).standard_normal((5000, 32)).astype(np.float32)
    cfg = PrecomputeConfig(top_k=10, top_m=6, n_samples=20, chunk_size=1024, sae_batch_size=256)
    reference = index_embeddings(sae, x, tmp_path / "ref", cfg)
    dpath = tmp_path / "crashed"
    with pytest.raises(InterruptedError):
        index_embeddings(sae, x, dpath, cfg, stop_after_chunks=1)  # checkpoint after chunk 0
    monkeypatch.setattr(IndexBuilder, "CHECKPOINT_EVERY_S", 1e9)  # none after that
    encode_latents, calls = IndexBuilder._encode_latents, []

    def killed_in_chunk_2(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return encode_latents(self, *args)

    monkeypatch.setattr(IndexBuilder, "_encode_latents", killed_in_chunk_2)
    with pytest.raises(RuntimeError, match="killed"):
        index_embeddings(sae, x, dpath, cfg)
    checkpoint = json.loads((dpath / "progress.json").read_text())
    assert checkpoint["n_chunks_done"] == 1
    rows_on_disk = (
        (dpath / ".codes_ids.npy.partial").stat().st_size - NpyAppender.HEADER_BYTES
    ) // 4
    assert rows_on_disk > checkpoint["rows"]["ids"] > 0  # chunk 1 was written after it
    monkeypatch.undo()
    with caplog.at_level("INFO", logger="sae_explorer.index.build"):
        resumed = index_embeddings(sae, x, dpath, cfg)
    assert "after chunk 1/5" in caplog.text and "starting over" not in caplog.text
    assert_same_index(reference, resumed)


def test_a_folder_that_is_not_an_index_is_never_wiped(tmp_path):
    """index_embeddings(..., folder) clears a stale or unfinished index before building, but a
    folder holding anything else is refused, not deleted."""
    sae = build_sae(32, 48, seed=4)
    x = np.random.default_rng(1).standard_normal((300, 32)).astype(np.float32)
    cfg = PrecomputeConfig(top_k=10, top_m=6, n_samples=20, chunk_size=128, names=False)
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(
        ValueError, match=r"'holiday\.jpg', which is not part of an activation index"
    ):
        index_embeddings(sae, x, photos, cfg)
    assert (photos / "holiday.jpg").read_bytes() == b"precious"
    dpath = tmp_path / "index"
    with pytest.raises(InterruptedError):
        index_embeddings(sae, x, dpath, cfg, stop_after_chunks=1)
    (dpath / "progress.json").write_text("{}")  # unresumable: cleared, then built afresh
    (dpath / ".manifest.json.x1y2.tmp").write_text("")  # a temp file left by a crash
    assert index_embeddings(sae, x, dpath, cfg).n_items == 300
    (dpath / MANIFEST_NAME).write_text("{}")  # a damaged finished index is rebuilt too
    assert index_embeddings(sae, x, dpath, cfg).n_items == 300
