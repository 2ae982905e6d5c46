"""The index at scale: neighbours through an ANN index (faiss) above a size threshold and exact
below, an ANN file that does not match its index refused and rebuilt, and the items table read
lazily by row group giving the eager table's rows."""

from __future__ import annotations

import errno
import logging
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from _precompute_helpers import build_sae

from sae_explorer.index import ActivationIndex
from sae_explorer.index import ann as ann_module
from sae_explorer.index import items as items_module
from sae_explorer.index.ann import AnnConfig, PageCacheWarmer, prefetch_rows
from sae_explorer.index.files import ANN_META_NAME, ANN_NAME
from sae_explorer.precompute import PrecomputeConfig, index_embeddings, precompute

pytest.importorskip("faiss", reason="faiss is not installed (pip install faiss-cpu)")

D = 32
CFG = PrecomputeConfig(top_k=8, top_m=6, n_samples=8, chunk_size=2048, names=False)
ANN = AnnConfig(min_items=1000, pq_bytes=8, n_probe=8, train_rows=4096)
EXACT = AnnConfig(min_items=10**9)


def clustered(n: int, seed: int, n_clusters: int = 50) -> np.ndarray:
    """fp16 embeddings around ``n_clusters`` random centres (neighbours are meaningful)."""
    rng = np.random.default_rng(seed)
    centres_cd = rng.standard_normal((n_clusters, D)).astype(np.float32)
    noise_nd = 0.35 * rng.standard_normal((n, D)).astype(np.float32)
    return (centres_cd[rng.integers(0, n_clusters, n)] + noise_nd).astype(np.float16)


def built(tmp_path, name: str, x_nd: np.ndarray, ann_cfg: AnnConfig) -> ActivationIndex:
    """An index of ``x_nd`` searched with ``ann_cfg`` (the build prepares its ANN index)."""
    previous = ActivationIndex.ann_cfg
    ActivationIndex.ann_cfg = ann_cfg
    try:
        index = index_embeddings(build_sae(D, 48, seed=1), x_nd, tmp_path / name, CFG)
    finally:
        ActivationIndex.ann_cfg = previous
    index.ann_cfg = ann_cfg
    return index


def with_cfg(index: ActivationIndex, ann_cfg: AnnConfig) -> ActivationIndex:
    reopened = ActivationIndex.load(index.dpath)
    reopened.ann_cfg = ann_cfg
    return reopened


def queries(x_nd: np.ndarray, n: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    picks = rng.choice(len(x_nd), n, replace=False)
    return x_nd[picks].astype(np.float32) + 0.2 * rng.standard_normal((n, D)).astype(np.float32)


@pytest.fixture(scope="module")
def ann_index(tmp_path_factory):
    x_nd = clustered(6000, seed=0)
    return built(tmp_path_factory.mktemp("ann"), "index", x_nd, ANN), x_nd


def test_ann_recall_against_exact_and_exact_similarities(ann_index):
    index, x_nd = ann_index
    assert index.searches_approximately and (index.dpath / ANN_NAME).is_file()
    exact = with_cfg(index, EXACT)
    recalls = []
    for q_d in queries(x_nd, 40):
        got, want = index.nearest(q_d, 10), exact.nearest(q_d, 10)
        recalls.append(len(set(got["item_idx"]) & set(want["item_idx"])) / 10)
        shared = got.merge(want, on="item_idx", suffixes=("_ann", "_exact"))
        # candidates are re-ranked by their exact cosine: shared items have the exact value
        np.testing.assert_allclose(shared["similarity_ann"], shared["similarity_exact"], atol=1e-5)
        assert (np.diff(got["similarity"]) <= 0).all()
    assert np.mean(recalls) >= 0.95


def test_the_rerank_rows_are_prefetched_from_their_own_bytes(ann_index, monkeypatch):
    """The re-rank asks the kernel for exactly its candidates' bytes of the embeddings file
    (a hint before the gather), and nothing for an array that is not a whole file's map."""
    index, x_nd = ann_index
    advised = []
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, *a: advised.append(a), raising=False)
    got = index.nearest(queries(x_nd, 1)[0], 10)
    embeddings = index.embeddings
    assert len(advised) >= 10 and {a[2] for a in advised} == {os.POSIX_FADV_WILLNEED}
    with open(embeddings.filename, "rb") as fh:
        read = []
        for offset, length, _ in advised:
            fh.seek(offset)
            read.append(np.frombuffer(fh.read(length), dtype=embeddings.dtype))
    rows = [np.flatnonzero((embeddings == r).all(axis=1))[0] for r in read]
    assert set(got["item_idx"]) <= set(rows)  # every neighbour's row was prefetched
    advised.clear()
    prefetch_rows(embeddings[1:], np.array([0, 5]))  # a view: offsets unknown, no hint
    prefetch_rows(np.asarray(embeddings), np.array([0, 5]))  # in memory: nothing to read
    assert advised == []


def test_an_opened_ann_file_is_read_once_in_the_background(tmp_path, monkeypatch):
    """The first queries after an open would fault the visited inverted lists in from the disk
    one run of pages at a time; the open has the file read into the page cache meanwhile."""
    index = built(tmp_path, "a", clustered(3000, seed=2), ANN)
    started: list[PageCacheWarmer] = []
    monkeypatch.setattr(PageCacheWarmer, "start", lambda self: started.append(self))
    with_cfg(index, ANN).prepare_serving()
    assert [w.fpath for w in started] == [index.dpath / ANN_NAME]
    started[0].block = 1000  # several blocks and a short last one
    started[0].run()
    assert started[0].n_bytes == (index.dpath / ANN_NAME).stat().st_size
    monkeypatch.setattr(ann_module, "physical_memory", lambda: 3 * started[0].n_bytes)
    too_big = PageCacheWarmer(index.dpath / ANN_NAME)  # over a quarter of the memory: left
    too_big.run()
    assert too_big.n_bytes == 0
    missing = PageCacheWarmer(tmp_path / "gone.faiss")  # a hint: nothing raised
    missing.run()
    assert missing.n_bytes == 0


def test_ann_modality_filter_keeps_only_that_modality(tmp_path):
    from sae_explorer.corpus import CorpusItem

    x_nd = clustered(3000, seed=3)
    items = [CorpusItem(f"i{i}", "image" if i % 3 else "text", f"t{i}") for i in range(3000)]
    previous, ActivationIndex.ann_cfg = ActivationIndex.ann_cfg, ANN
    try:
        index = index_embeddings(build_sae(D, 48, seed=1), x_nd, tmp_path / "i", CFG, items)
    finally:
        ActivationIndex.ann_cfg = previous
    index.ann_cfg = ANN
    exact = with_cfg(index, EXACT)
    for q_d in queries(x_nd, 10):
        got = index.nearest(q_d, 10, "text")
        assert (got["modality"] == "text").all() and len(got) == 10
        want = exact.nearest(q_d, 10, "text")
        assert len(set(got["item_idx"]) & set(want["item_idx"])) >= 8


def test_threshold_switches_between_exact_and_ann(tmp_path):
    x_nd = clustered(1500, seed=2)
    small = built(tmp_path, "small", x_nd, AnnConfig(min_items=1501))
    assert not small.searches_approximately
    assert not (small.dpath / ANN_NAME).exists()  # below the threshold: nothing built
    q_d = queries(x_nd, 1)[0]
    exact_rows = small.nearest(q_d, 5)
    # the same index at a threshold it reaches: the ANN index is built on first use
    at_threshold = with_cfg(small, AnnConfig(min_items=1500, pq_bytes=8, n_probe=64))
    assert at_threshold.searches_approximately
    assert at_threshold.nearest(q_d, 5)["item_idx"].tolist() == exact_rows["item_idx"].tolist()
    assert (small.dpath / ANN_NAME).is_file() and (small.dpath / ANN_META_NAME).is_file()


def test_an_ann_file_of_other_embeddings_is_refused_and_rebuilt(ann_index, tmp_path, caplog):
    index, x_nd = ann_index
    other = built(tmp_path, "other", clustered(5000, seed=9), ANN)  # 5,000 items, not 6,000
    q_d = queries(x_nd, 1)[0]
    want = index.nearest(q_d, 10)["item_idx"].tolist()
    copy = tmp_path / "copy"
    shutil.copytree(index.dpath, copy)

    shutil.copyfile(other.dpath / ANN_NAME, copy / ANN_NAME)  # the faiss file alone swapped
    reopened = ActivationIndex.load(copy)
    reopened.ann_cfg = ANN
    with caplog.at_level(logging.WARNING, logger="sae_explorer.index.ann"):
        got = reopened.nearest(q_d, 10)["item_idx"].tolist()
    assert "holds 5000 vectors of 32 dims, the index has 6000 embeddings of 32 dims" in caplog.text
    assert got == want  # served from the rebuilt index, never the foreign one
    assert with_cfg(reopened, ANN).ann_searcher.ann.ntotal == 6000  # saved, opened as it is

    caplog.clear()
    for name in (ANN_NAME, ANN_META_NAME):  # both files of the other index
        shutil.copyfile(other.dpath / name, copy / name)
    reopened = ActivationIndex.load(copy)
    reopened.ann_cfg = ANN
    with caplog.at_level(logging.WARNING, logger="sae_explorer.index.ann"):
        assert reopened.nearest(q_d, 10)["item_idx"].tolist() == want
    assert "was built with n_items=5000, the index needs n_items=6000" in caplog.text


def test_ann_config_is_checked():
    with pytest.raises(ValueError, match="n_probe must be >= 1"):
        AnnConfig(n_probe=0)
    with pytest.raises(ValueError, match="n_lists must be >= 0"):
        AnnConfig(n_lists=-1)


# --------------------------------------------------------------------------- the items table
@pytest.fixture(scope="module")
def world_index(tmp_path_factory):
    """An index of images and captions with labels and ground truth, its items table written
    in row groups of 7 rows."""
    from sae_explorer.checkpoints import load_sae
    from sae_explorer.corpus import load_corpus
    from sae_explorer.encoder import load_encoder

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(items_module, "ROWS_PER_GROUP", 7)
        encoder = load_encoder("builtin:shapes", device="cpu")
        cfg = PrecomputeConfig(top_k=8, chunk_size=32, n_workers=0, names=False)
        corpus = load_corpus("builtin:shapes?n=30")
        return precompute(
            encoder, load_sae("builtin:shapes"), corpus, tmp_path_factory.mktemp("w"), cfg
        )


@pytest.mark.parametrize("through", ["row groups", "items.arrow"])
def test_items_read_lazily_equal_the_eager_table(world_index, through, monkeypatch):
    import pyarrow.parquet as pq

    index = ActivationIndex.load(world_index.dpath)
    assert pq.ParquetFile(index.dpath / "items.parquet").metadata.num_row_groups == 9  # 60 / 7
    monkeypatch.setattr(items_module, "GROUPS_CACHED", 2)  # groups dropped and read again
    monkeypatch.setattr(items_module, "ARROW_MIN_ITEMS", 60 if through == "items.arrow" else 61)
    monkeypatch.setattr(items_module, "ARROW_BATCH_ROWS", 16)  # groups of 7 gathered, split
    lazy, eager = index.item_table, index.items
    assert (lazy.arrow is not None) == (through == "items.arrow")
    if lazy.arrow is not None:
        assert [len(b) for b in lazy.arrow.to_batches()] == [16, 16, 16, 12]
    assert len(lazy) == len(eager) == 60
    assert list(lazy.columns) == list(eager.columns)
    assert {"label", "attr_shape"} <= set(lazy.columns)
    rng = np.random.default_rng(0)
    one_group, empty = np.array([8, 13, 8]), np.array([], dtype=np.int64)
    for rows_n in (
        rng.integers(0, 60, 25),
        np.array([59, 0, 59, 7, 6]),
        np.arange(60)[::-1],
        one_group,
        empty,
    ):
        pd.testing.assert_frame_equal(lazy.iloc[rows_n], eager.iloc[rows_n].reset_index(drop=True))
    pd.testing.assert_series_equal(lazy.iloc[13], eager.iloc[13])
    for column in eager.columns:
        pd.testing.assert_series_equal(lazy[column], eager[column])
    assert np.array_equal(index.is_image, (eager["modality"] == "image").to_numpy())
    with pytest.raises(IndexError, match=r"item rows must be in \[0, 60\)"):
        lazy.iloc[np.array([60])]


def test_an_items_arrow_of_other_items_is_refused_and_rewritten(
    world_index, tmp_path, monkeypatch, caplog
):
    monkeypatch.setattr(items_module, "ARROW_MIN_ITEMS", 1)
    copy = tmp_path / "copy"
    shutil.copytree(world_index.dpath, copy)
    other = built(tmp_path, "other", clustered(300, seed=5), EXACT)
    other.item_table  # noqa: B018 (writes its items.arrow)
    shutil.copyfile(other.dpath / "items.arrow", copy / "items.arrow")
    index = ActivationIndex.load(copy)
    with caplog.at_level(logging.WARNING, logger="sae_explorer.index.items"):
        rows = index.item_table.iloc[np.arange(60)]
    assert "items.arrow holds 300 rows copied from items with checksum" in caplog.text
    assert "the index has 60 rows" in caplog.text
    pd.testing.assert_frame_equal(rows, index.items)
    assert len(ActivationIndex.load(copy).item_table.arrow) == 60  # rewritten


def test_an_items_arrow_in_batches_of_another_size_is_rewritten(
    world_index, tmp_path, monkeypatch, caplog
):
    """An ``items.arrow`` from before the batch size (one batch per row group): its ~1,200
    batch headers made a cold open at 10M items slow, so it is written again in the size read,
    and served as it is (the same rows) where it cannot be."""
    monkeypatch.setattr(items_module, "ARROW_MIN_ITEMS", 1)
    copy = tmp_path / "copy"
    shutil.copytree(world_index.dpath, copy)
    monkeypatch.setattr(items_module, "ARROW_BATCH_ROWS", 7)
    assert len(ActivationIndex.load(copy).item_table.arrow.to_batches()) == 9
    monkeypatch.setattr(items_module, "ARROW_BATCH_ROWS", 32)

    def read_only(*args):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    with monkeypatch.context() as mp, caplog.at_level(logging.WARNING):
        mp.setattr(items_module, "write_items_arrow", read_only)
        as_it_is = ActivationIndex.load(copy)
        assert len(as_it_is.item_table.arrow.to_batches()) == 9
    assert "items.arrow is in batches of 7 rows, not 32" in caplog.text
    assert "serving items.arrow in" in caplog.text and "as it is" in caplog.text
    pd.testing.assert_frame_equal(as_it_is.item_table.iloc[np.arange(60)], as_it_is.items)
    again = ActivationIndex.load(copy).item_table
    assert [len(b) for b in again.arrow.to_batches()] == [32, 28]
    pd.testing.assert_frame_equal(again.iloc[np.arange(60)], ActivationIndex.load(copy).items)


def test_top_items_above_the_scan_limit_come_from_the_top_list(world_index, monkeypatch):
    from sae_explorer.checkpoints import load_sae
    from sae_explorer.encoder import load_encoder
    from sae_explorer.explorer import Explorer, examples

    encoder = load_encoder("builtin:shapes", device="cpu")
    explorer = Explorer(
        encoder, load_sae("builtin:shapes"), ActivationIndex.load(world_index.dpath)
    )
    latent = int(np.argmax(explorer.index.n_active))
    scanned = examples.top_items(explorer, latent, 4, "image")
    monkeypatch.setattr(examples, "SCAN_MAX_ROWS", 10)  # 30 images: above it
    listed = examples.top_items(explorer, latent, 4, "image")
    top = explorer.index.top_examples(latent)
    want = top[top["modality"] == "image"].head(4)
    assert listed["item"].tolist() == want["item_idx"].tolist()
    assert (listed["modality"] == "image").all() and list(listed.columns) == list(scanned.columns)
    # the top list holds the strongest items: where both have them, the same items
    n = min(len(listed), len(scanned))
    assert listed["item"].tolist()[:n] == scanned["item"].tolist()[:n]


def test_index_embeddings_command(tmp_path, capsys):
    from sae_explorer.checkpoints import load_sae
    from sae_explorer.checkpoints.project import save_sae
    from sae_explorer.ray_embeddings import main

    save_sae(build_sae(D, 48, seed=1), tmp_path / "sae")
    x_nd = clustered(300, seed=4)
    np.save(tmp_path / "x.npy", x_nd)
    argv = ["--sae", str(tmp_path / "sae"), "--out", str(tmp_path / "i"), "--chunk-size", "128"]
    assert main([*argv, "--embeddings", str(tmp_path / "x.npy"), "--no-names"]) == 0
    assert "300 items, 48 latents" in capsys.readouterr().out
    cfg = PrecomputeConfig(chunk_size=128, names=False)
    reference = index_embeddings(load_sae(tmp_path / "sae"), x_nd, tmp_path / "ref", cfg)
    built_index = ActivationIndex.load(tmp_path / "i")
    assert built_index.manifest["key"] == reference.manifest["key"]
    assert np.array_equal(
        np.load(tmp_path / "i" / "codes_ids.npy"), np.load(reference.dpath / "codes_ids.npy")
    )

    np.save(tmp_path / "cube.npy", np.zeros((3, 4, 5), np.float16))
    assert main([*argv, "--embeddings", str(tmp_path / "cube.npy")]) == 2
    assert (
        "embeddings must be a non-empty [n, d] array of float16 or float32"
        in capsys.readouterr().err
    )
    assert main([*argv, "--embeddings", str(tmp_path / "x.npy"), "--ray-shard-size", "256"]) == 2
    assert "--ray-shard-size apply only with --engine ray" in capsys.readouterr().err
