"""A corpus split into shards of consecutive positions, built apart and merged into one index.

Each shard is built by :func:`build_shard` into its own folder under ``<index>/shards/``: its
rows' embeddings and codes, their corpus positions and active counts, and its accumulator's
state, written into a hidden temporary folder and renamed into place with its ``shard.json``
last, so a shard folder is either whole or absent (a worker killed mid-shard leaves only a
temporary folder, which the next attempt ignores). :func:`merge_shards` then appends the shards'
rows in order into the index's files and merges their accumulators exactly
(:meth:`LatentAccumulator.absorb`): the index is the one a single-process build writes (the same
top-M, samples, codes, counts and histograms; sums up to float rounding order), because shards
start on chunk boundaries and items are keyed by corpus position.

Every shard records the identity of its build (:class:`ShardIdentity`: the index key, encoder,
SAE, corpus, result settings, chunking and input statistics); a shard whose identity differs
from the build's is refused with a message naming the difference, never merged.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from sae_explorer.atomic import atomic_save_npz, atomic_write_json
from sae_explorer.index.accumulator import LatentAccumulator
from sae_explorer.index.checkpoint import BuildFiles
from sae_explorer.index.files import (
    BUILD_ONLY_NAMES,
    CODES_NAMES,
    EMBEDDINGS_NAME,
    INPUT_STATS_NAME,
    STATE_NAME,
    first_difference,
)

if TYPE_CHECKING:
    from sae_explorer.corpus import CorpusItem
    from sae_explorer.index.build import IndexBuilder

SHARDS_DNAME = "shards"
SHARD_META_NAME = "shard.json"
ROWS_PER_COPY = 65536
"""Rows appended at a time when shards are merged (bounded memory whatever their size)."""


class ShardIdentity(NamedTuple):
    """What every shard of one index must have been built with."""

    schema: int
    key: str  # the index's cache key (hashes the encoder, SAE, corpus and result settings)
    encoder: str
    sae: str  # content hash
    corpus: str  # manifest hash
    top_k: int
    top_m: int
    n_samples: int
    seed: int
    chunk_size: int
    shard_size: int
    input_stats: str  # sha256 of input_stats.npz, or "checkpoint"


def input_stats_digest(dpath: Path) -> str:
    fpath = Path(dpath) / INPUT_STATS_NAME
    return hashlib.sha256(fpath.read_bytes()).hexdigest() if fpath.is_file() else "checkpoint"


def identity_difference(expected: ShardIdentity, found: object) -> str | None:
    """What differs between a shard's recorded identity and the build's; None if nothing."""
    if not isinstance(found, dict):
        return f"it records no build identity (found {type(found).__name__})"
    diff = first_difference(expected, found)
    if diff is None:
        return None
    return (
        f"it was built with {diff.name}={diff.recorded!r}, this build has "
        f"{diff.name}={diff.expected!r}"
    )


class ShardMeta(NamedTuple):
    """The contents of a shard's ``shard.json``."""

    identity: dict
    shard: int
    start: int  # corpus positions [start, stop)
    stop: int
    n_ok: int  # items encoded (unreadable ones skipped)
    nnz: int  # codes stored
    skipped: list[dict]  # {"item_id", "source", "error"} per unreadable item
    timings: dict[str, float]


def shard_ranges(n_items: int, shard_size: int) -> list[range]:
    """Consecutive position ranges of ``shard_size`` items (the last one shorter)."""
    return [range(lo, min(lo + shard_size, n_items)) for lo in range(0, n_items, shard_size)]


def shard_dpath(index_dpath: Path, shard: int) -> Path:
    return Path(index_dpath) / SHARDS_DNAME / f"{shard:05d}"


class OffsetItems(Sequence):
    """The items at corpus positions ``[start, start + len(items))``, addressed by position
    (what a shard worker is sent instead of the whole corpus)."""

    def __init__(self, items: Sequence[CorpusItem], start: int) -> None:
        self.items, self.start = list(items), start

    def __len__(self) -> int:
        return self.start + len(self.items)  # positions end there; those before are not held

    def __getitem__(self, pos):
        if isinstance(pos, slice):
            return [self[p] for p in range(*pos.indices(len(self)))]
        if not self.start <= pos < len(self):
            raise IndexError(f"position {pos} is outside this shard [{self.start}, {len(self)})")
        return self.items[pos - self.start]


# --------------------------------------------------------------------------- one shard
def build_shard(
    builder: IndexBuilder, shard: int, positions: range, identity: ShardIdentity
) -> ShardMeta:
    """Build shard ``shard`` (corpus ``positions``, starting on a chunk boundary) with
    ``builder`` (its items, embedder, SAE and input statistics) into its folder under
    ``builder.dpath``, atomically: a temporary folder renamed into place when complete."""
    cs = builder.cfg.chunk_size
    assert positions.start % cs == 0 and positions.stop <= len(builder.items), positions
    final = shard_dpath(builder.dpath, shard)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.partial")
    tmp.mkdir(parents=True)
    t0 = time.perf_counter()
    files = BuildFiles.open(tmp, builder.sae.n_inputs, None)
    acc = builder.new_accumulator()
    skipped: list[dict] = []
    try:
        with ThreadPoolExecutor(builder.cfg.sae_workers, "sae") as pool:
            for c in range(positions.start // cs, -(-positions.stop // cs)):
                skipped += builder.encode_chunk(c, acc, files, pool, torch.get_num_threads())
        for appender in files:
            appender.close()
        atomic_save_npz(tmp / STATE_NAME, acc.state())
    except BaseException:
        for appender in files:
            appender.file.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    builder.timer.add("shard_s", time.perf_counter() - t0)
    meta = ShardMeta(
        identity=identity._asdict(),
        shard=shard,
        start=positions.start,
        stop=positions.stop,
        n_ok=acc.n_items,
        nnz=files.ids.n_rows,
        skipped=skipped,
        timings=builder.timer.totals,
    )
    atomic_write_json(tmp / SHARD_META_NAME, meta._asdict())
    if final.exists():  # a damaged earlier result of the same shard
        shutil.rmtree(final)
    tmp.rename(final)
    return meta


def remove_partial_shards(index_dpath: Path) -> int:
    """Delete what workers that died mid-shard left (their temporary folders); only while no
    worker builds into this index. Returns how many there were."""
    dpath = Path(index_dpath) / SHARDS_DNAME
    partial = [p for p in dpath.glob(".*.partial") if p.is_dir()] if dpath.is_dir() else []
    for path in partial:
        shutil.rmtree(path, ignore_errors=True)
    return len(partial)


def _shard_arrays(dpath: Path) -> dict[str, Path]:
    return {
        "embeddings": dpath / EMBEDDINGS_NAME,
        "indptr": dpath / CODES_NAMES[0],
        "ids": dpath / CODES_NAMES[1],
        "values": dpath / CODES_NAMES[2],
        "corpus_idx": dpath / BUILD_ONLY_NAMES["corpus_idx"],
        "n_active": dpath / BUILD_ONLY_NAMES["n_active"],
    }


def read_shard(dpath: Path, identity: ShardIdentity, positions: range) -> ShardMeta | None:
    """A finished shard's record; None if the folder is absent or damaged (to be rebuilt);
    ``ValueError`` naming the difference if it was built for another build."""
    meta_fpath = Path(dpath) / SHARD_META_NAME
    if not meta_fpath.is_file():
        return None
    try:
        meta = ShardMeta(**json.loads(meta_fpath.read_text()))
    except (ValueError, TypeError, UnicodeDecodeError):
        return None
    difference = identity_difference(identity, meta.identity)
    if difference is not None:
        raise ValueError(
            f"the shard {dpath} does not belong to this build: {difference}. Delete it, or "
            "rebuild with --force"
        )
    if (meta.start, meta.stop) != (positions.start, positions.stop):
        return None
    expected = {"embeddings": meta.n_ok, "corpus_idx": meta.n_ok, "n_active": meta.n_ok}
    expected |= {"indptr": meta.n_ok + 1, "ids": meta.nnz, "values": meta.nnz}
    try:
        for name, fpath in _shard_arrays(dpath).items():
            if len(np.load(fpath, mmap_mode="r")) != expected[name]:
                return None
        with np.load(Path(dpath) / STATE_NAME, allow_pickle=False) as state:
            if int(state["scalars"][-1]) != meta.n_ok:
                return None
    except (OSError, ValueError, KeyError, EOFError):
        return None
    return meta


# --------------------------------------------------------------------------- the merge
def _append_rows(appender, array: np.ndarray, offset: int = 0) -> None:
    for s in range(0, len(array), ROWS_PER_COPY):
        appender.append(np.asarray(array[s : s + ROWS_PER_COPY]) + offset)


def merge_shards(builder: IndexBuilder, metas: Sequence[ShardMeta], run_s: float) -> None:
    """Write the index into ``builder.dpath`` from its finished shards (all of them, in
    position order): rows appended shard after shard, accumulators merged, then the builder's
    own assembly (per-latent arrays, items table, manifest)."""
    assert [m.shard for m in metas] == list(range(len(metas))), [m.shard for m in metas]
    files = BuildFiles.open(builder.dpath, builder.sae.n_inputs, None)
    acc: LatentAccumulator | None = None
    skipped: list[dict] = []
    for meta in metas:
        dpath = shard_dpath(builder.dpath, meta.shard)
        arrays = {k: np.load(f, mmap_mode="r") for k, f in _shard_arrays(dpath).items()}
        _append_rows(files.indptr, arrays["indptr"][1:], files.values.n_rows)
        for name in ("embeddings", "ids", "values", "corpus_idx", "n_active"):
            _append_rows(getattr(files, name), arrays[name])
        del arrays
        with np.load(dpath / STATE_NAME, allow_pickle=False) as state:
            shard_acc = LatentAccumulator.from_state(dict(state))
        if acc is None:
            acc = shard_acc
        else:
            acc.absorb(shard_acc)
        skipped += meta.skipped
        for name, seconds in meta.timings.items():
            builder.timer.add(name, seconds)
    assert acc is not None, "no shards to merge"
    builder.finish(acc, skipped, files, run_s)
    shutil.rmtree(Path(builder.dpath) / SHARDS_DNAME, ignore_errors=True)
