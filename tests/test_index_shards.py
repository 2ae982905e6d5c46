"""Shards built apart and merged, in this process (what Ray actors run): the merged index equals
the single-process one; a shard of another build is refused naming the difference; a damaged
shard is rebuilt."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from _precompute_helpers import assert_same_arrays, build_sae

from sae_explorer.index import LatentAccumulator
from sae_explorer.index.build import IndexBuilder, StatsSource, Timer
from sae_explorer.index.embed import ArrayEmbedder
from sae_explorer.index.files import CODES_NAMES, SCHEMA
from sae_explorer.index.shards import (
    ShardIdentity,
    build_shard,
    merge_shards,
    read_shard,
    shard_dpath,
    shard_ranges,
)
from sae_explorer.modality_stats import CHECKPOINT, ModalityStats, StatsPlan
from sae_explorer.precompute import NumberedTexts, PrecomputeConfig, index_embeddings

N, SHARD = 300, 100
CFG = PrecomputeConfig(top_k=8, top_m=6, n_samples=10, chunk_size=50, sae_batch_size=20)


@pytest.fixture(scope="module")
def sae():
    return build_sae(n_inputs=16, n_latents=64, seed=7, matryoshka=4)


@pytest.fixture(scope="module")
def x_nd():
    return np.random.default_rng(3).standard_normal((N, 16)).astype(np.float32)


def identity(sae, cfg: PrecomputeConfig, key: str = "k") -> ShardIdentity:
    return ShardIdentity(
        SCHEMA, key, "precomputed", sae.content_hash, "corpus", cfg.top_k, cfg.top_m,
        cfg.n_samples, cfg.seed, cfg.chunk_size, SHARD, "checkpoint",
    )  # fmt: skip


def builder_for(sae, x_nd, cfg, dpath, key="k") -> IndexBuilder:
    stats = StatsSource(StatsPlan(CHECKPOINT, CHECKPOINT), ModalityStats)
    meta = {"encoder": {"model_id": "precomputed", "embed_dim": sae.n_inputs}}
    dpath.mkdir(parents=True, exist_ok=True)
    return IndexBuilder(
        sae, NumberedTexts(N), ArrayEmbedder(x_nd), cfg, dpath, key, lambda f, m: None, meta,
        Timer(), stats,
    )  # fmt: skip


def build_all(builder, ident, order) -> dict:
    ranges = shard_ranges(N, SHARD)
    return {s: build_shard(builder, s, ranges[s], ident) for s in order}


@pytest.mark.parametrize("index_on", ["host", "device"])
def test_merged_shards_equal_a_single_process_build(sae, x_nd, tmp_path, index_on):
    cfg = PrecomputeConfig(**{**CFG.__dict__, "index_on": index_on})
    reference = index_embeddings(sae, x_nd, tmp_path / "one", cfg)
    builder = builder_for(sae, x_nd, cfg, tmp_path / "sharded", reference.manifest["key"])
    metas = build_all(builder, identity(sae, cfg), order=[2, 0, 1])  # any order
    merge_shards(builder, [metas[s] for s in range(3)], run_s=0.0)
    assert_same_arrays(reference.dpath, builder.dpath, reference.manifest["files"], 1e-12)
    assert not (builder.dpath / "shards").exists()


def test_absorb_is_a_single_pass():
    rng = np.random.default_rng(0)
    z = np.where(rng.random((200, 12)) < 0.4, rng.random((200, 12)), 0).astype(np.float32)
    from sae_explorer.index import active_entries

    whole, parts = LatentAccumulator(12, 4, 5), [LatentAccumulator(12, 4, 5) for _ in range(2)]
    for s in range(0, 200, 25):
        args = (np.arange(s, s + 25), np.ones(25, bool))
        whole.update(active_entries(z[s : s + 25]), *args)
        parts[s >= 100].update(active_entries(z[s : s + 25]), *args)
    parts[1].absorb(parts[0])  # the later shard first: order does not matter
    a, b = whole.finish(), parts[1].finish()
    for name in a:
        if name == "latent_sum":
            np.testing.assert_allclose(b[name], a[name], rtol=1e-12)
        else:
            assert np.array_equal(a[name], b[name]), name


def test_a_shard_of_another_build_is_refused_naming_the_difference(sae, x_nd, tmp_path):
    ranges = shard_ranges(N, SHARD)
    mine = builder_for(sae, x_nd, CFG, tmp_path / "mine")
    other_cfg = PrecomputeConfig(**{**CFG.__dict__, "seed": 1})
    other = builder_for(sae, x_nd, other_cfg, tmp_path / "other")
    build_shard(other, 0, ranges[0], identity(sae, other_cfg))
    shutil.copytree(shard_dpath(other.dpath, 0), shard_dpath(mine.dpath, 0))
    with pytest.raises(ValueError, match=r"it was built with seed=1, this build has seed=0"):
        read_shard(shard_dpath(mine.dpath, 0), identity(sae, CFG), ranges[0])
    other_sae = build_sae(n_inputs=16, n_latents=64, seed=8, matryoshka=4)
    with pytest.raises(ValueError, match=r"sae="):
        read_shard(shard_dpath(mine.dpath, 0), identity(other_sae, CFG), ranges[0])


def test_a_damaged_or_unfinished_shard_reads_as_missing(sae, x_nd, tmp_path):
    ranges = shard_ranges(N, SHARD)
    builder = builder_for(sae, x_nd, CFG, tmp_path / "b")
    ident = identity(sae, CFG)
    build_shard(builder, 1, ranges[1], ident)
    dpath = shard_dpath(builder.dpath, 1)
    assert read_shard(dpath, ident, ranges[1]) is not None
    codes = dpath / CODES_NAMES[1]
    codes.write_bytes(codes.read_bytes()[:-8])  # cut short
    assert read_shard(dpath, ident, ranges[1]) is None
    assert read_shard(shard_dpath(builder.dpath, 2), ident, ranges[2]) is None  # never built
    build_shard(builder, 1, ranges[1], ident)  # rebuilt in place
    assert read_shard(dpath, ident, ranges[1]) is not None
