"""The build: a chunked, resumable pass from CLIP embeddings to the files of an index.

For each chunk of items, an embedder (:mod:`sae_explorer.index.embed`) returns their CLIP
embeddings; SAE workers encode batches side by side, and each batch's full activations are merged
into a :class:`LatentAccumulator` and cut to per-item top-K codes *in batch order*
(:class:`InOrder`), so the result does not depend on which worker finishes first. Embeddings and
codes are appended to the index's own files as chunks finish; a checkpoint
(:mod:`sae_explorer.index.checkpoint`) after a chunk at most every ``CHECKPOINT_EVERY_S``, and
when a run is stopped, lets an interrupted build go on from there and end bit-identical to an
uninterrupted one. The manifest is written last. The caller holds the folder's build lock.
"""

from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np
import torch

from sae_explorer.corpus import MODALITIES
from sae_explorer.index.accumulator import LatentAccumulator
from sae_explorer.index.cache import clear_index_dpath, is_full_disk
from sae_explorer.index.checkpoint import BuildFiles, Checkpoint, load_checkpoint, save_checkpoint
from sae_explorer.index.device import DeviceAccumulator, device_codes
from sae_explorer.index.files import (
    PROGRESS_NAME,
    SCHEMA,
    STATE_NAME,
    IndexCounts,
    file_records,
    write_latent_arrays,
    write_manifest,
)
from sae_explorer.index.items import write_items
from sae_explorer.index.sparse import ActiveEntries, SparseCodes, active_entries, top_codes
from sae_explorer.modality_stats import CHECKPOINT, ModalitySAEs, ModalityStats, StatsPlan

if TYPE_CHECKING:
    from sae_explorer.corpus import CorpusItem
    from sae_explorer.precompute import PrecomputeConfig
    from sae_explorer.progress import Progress
    from sae_explorer.sae import SAE

log = logging.getLogger(__name__)

N_SKIPPED_LISTED = 20
"""Unreadable items the manifest lists (it counts all of them)."""

IndexOn = Literal["auto", "device", "host"]
INDEX_ON: tuple[str, ...] = ("auto", "device", "host")
"""Where a batch's codes and statistics are computed (``PrecomputeConfig.index_on``): in torch
on the SAE's device (:mod:`~sae_explorer.index.device`), or in numpy on the host
(:mod:`~sae_explorer.index.sparse`, :mod:`~sae_explorer.index.accumulator`); ``auto`` picks
the device on an accelerator and the host on a CPU, where the numpy path is the faster
(``benchmarks/bench_index_device.py``)."""

Accumulator = LatentAccumulator | DeviceAccumulator


def resolve_index_on(index_on: str, device: torch.device) -> str:
    """``device`` or ``host`` for a setting of :data:`INDEX_ON` and the SAE's device."""
    if index_on == "auto":
        return "host" if device.type == "cpu" else "device"
    if index_on not in ("device", "host"):
        raise ValueError(f"index_on must be one of {INDEX_ON}, got {index_on!r}")
    return index_on


def rows_of_positions(arrays: dict[str, np.ndarray], corpus_idx_n: np.ndarray) -> None:
    """In place: the accumulator's item ids are corpus positions (a shard knows those, not the
    rows that items skipped before it leave); the index stores rows."""
    for name in ("latent_top_idx", "latent_sample_idx"):
        pos = arrays[name]
        rows = np.searchsorted(corpus_idx_n, np.maximum(pos, 0))
        arrays[name] = np.where(pos >= 0, rows, -1).astype(pos.dtype)


class ChunkEmbeddings(NamedTuple):
    """What an embedder returns for one chunk of item positions."""

    ok_pos: np.ndarray  # int64 [n_ok]: positions that were encoded, in order
    x_nd: torch.Tensor  # float32 [n_ok, d]
    skipped: list[dict]  # {"item_id", "source", "error"} per unreadable item


Embedder = Callable[[range], ChunkEmbeddings]
"""Item positions -> their embeddings; called with consecutive chunks, in order."""


class StatsSource(NamedTuple):
    """How a build gets the statistics each modality is encoded with: the plan (part of the
    key) and what computes them, called once when a build starts afresh."""

    plan: StatsPlan
    compute: Callable[[], ModalityStats]


class Timer:
    """Seconds spent per build step, summed (the manifest's ``timings``)."""

    def __init__(self, totals: dict[str, float] | None = None) -> None:
        self.totals: dict[str, float] = dict(totals or {})

    def add(self, name: str, seconds: float) -> None:
        self.totals[name] = self.totals.get(name, 0.0) + seconds


class InOrder:
    """Call ``merge(key, result)`` for results numbered 0, 1, 2, ... strictly in that order,
    whichever worker thread delivers them and whenever.

    No worker waits for its turn: a result that arrives early is parked, and the worker that
    holds the merge role goes on merging every consecutive parked result before it returns.
    After a failed merge, later results are dropped (the caller sees the error).
    """

    def __init__(self, merge: Callable) -> None:
        self.merge = merge
        self.lock = threading.Lock()
        self.parked: dict[int, tuple] = {}
        self.next = 0
        self.busy = self.failed = False

    def deliver(self, i: int, key, result) -> None:
        with self.lock:
            self.parked[i] = (key, result)
            if self.busy or self.failed:
                return
            self.busy = True
        while True:
            with self.lock:
                if self.next not in self.parked:
                    self.busy = False
                    return
                key, result = self.parked.pop(self.next)
                self.next += 1
            try:
                self.merge(key, result)
            except BaseException:
                with self.lock:
                    self.failed, self.busy = True, False
                    self.parked.clear()
                raise


class BuildStart(NamedTuple):
    """Where a run begins: afresh, or from the last checkpoint."""

    acc: Accumulator
    n_chunks_done: int
    skipped: list[dict]
    files: BuildFiles


class BatchResult(NamedTuple):
    """One SAE batch, computed by a worker and merged in order."""

    entries: ActiveEntries
    codes: SparseCodes
    levels_bl: torch.Tensor | None  # int [b, n_latents] for a Matryoshka SAE


class IndexBuilder:
    """Chunked, resumable pass: embeddings -> SAE -> accumulator + codes -> index files.

    ``meta`` goes into the manifest as it is (what the embeddings came from).
    """

    CHECKPOINT_EVERY_S = 10.0

    def __init__(
        self,
        sae: SAE,
        items: Sequence[CorpusItem],
        embed: Embedder,
        cfg: PrecomputeConfig,
        dpath: Path,
        key: str,
        report: Progress,
        meta: dict,
        timer: Timer,
        stats_source: StatsSource,
    ) -> None:
        self.sae, self.items, self.embed, self.cfg = sae, items, embed, cfg
        self.dpath, self.key, self.report, self.meta = dpath, key, report, meta
        self.n_chunks = -(-len(items) // cfg.chunk_size)
        self.n_levels = len(sae.nesting_list) if sae.nesting_list else 0
        self.timer = timer
        self.stats_source = stats_source
        self.stats = ModalityStats()
        self.saes: ModalitySAEs = self.stats.saes(sae)
        self.device = sae.latent_bias.device
        self.index_on = resolve_index_on(cfg.index_on, self.device)

    def use_stats(self, stats: ModalityStats) -> None:
        """Encode with these input statistics (a shard worker's: the driver computed them)."""
        self.stats, self.saes = stats, stats.saes(self.sae)

    # ------------------------------------------------------------------ start or resume
    def _start(self) -> BuildStart:
        try:
            resumed = self._resume()
        except (ValueError, KeyError, TypeError, AssertionError, OSError) as e:
            if is_full_disk(e):  # no reason to start over: that needs more space still
                raise
            log.warning("cannot resume %s (%s); starting over", self.dpath, e)
            resumed = None
        return resumed or self._start_over()

    def _resume(self) -> BuildStart | None:
        """The build as the last checkpoint left it; None without one."""
        saved = load_checkpoint(self.dpath, self.key, self.cfg.chunk_size)
        if saved is None:
            return None
        stats = self._saved_stats()
        checkpoint = saved.checkpoint
        files = BuildFiles.open(self.dpath, self.sae.n_inputs, checkpoint.rows)
        for name, seconds in checkpoint.timings.items():
            self.timer.add(name, seconds)
        n_done = int(checkpoint.n_chunks_done)
        log.info("resuming %s after chunk %d/%d", self.dpath, n_done, self.n_chunks)
        self.use_stats(stats)
        acc = saved.acc
        if self.index_on == "device":
            acc = DeviceAccumulator.from_state(acc.state(), self.device)
        return BuildStart(acc, n_done, checkpoint.skipped, files)

    def _saved_stats(self) -> ModalityStats:
        """The statistics a resumed build started with; ValueError if they are not the plan's."""
        stats = ModalityStats.load(self.dpath)
        planned = {m: self.stats_source.plan.origin(m) != CHECKPOINT for m in MODALITIES}
        if {m: stats.own(m) is not None for m in MODALITIES} != planned:
            raise ValueError("its input statistics are missing or not the planned ones")
        return stats

    def _start_over(self) -> BuildStart:
        clear_index_dpath(self.dpath, keep=True)  # start clean
        t0 = time.perf_counter()
        self.use_stats(self.stats_source.compute())
        self.stats.save(self.dpath)
        if not self.stats_source.plan.checkpoint_only:
            self.timer.add("input_stats_s", time.perf_counter() - t0)
        return BuildStart(
            self.new_accumulator(), 0, [], BuildFiles.open(self.dpath, self.sae.n_inputs, None)
        )

    def new_accumulator(self) -> Accumulator:
        """An empty accumulator of this build's kind (:data:`INDEX_ON`)."""
        args = (self.sae.n_latents, self.cfg.top_m, self.cfg.n_samples, self.n_levels)
        if self.index_on == "device":
            return DeviceAccumulator(*args, self.cfg.seed, self.device)
        return LatentAccumulator(*args, self.cfg.seed)

    def _checkpoint(
        self, acc: Accumulator, files: BuildFiles, n_chunks_done: int, skipped: list[dict]
    ) -> None:
        checkpoint = Checkpoint(
            key=self.key,
            chunk_size=self.cfg.chunk_size,
            n_chunks_done=n_chunks_done,
            n_ok=acc.n_items,
            rows=files.rows(),
            skipped=skipped,
            timings=self.timer.totals,
        )
        save_checkpoint(self.dpath, acc, files, checkpoint)

    # ------------------------------------------------------------------ the pass
    def run(self, stop_after_chunks: int | None = None) -> None:
        """Build the index, from the last checkpoint if there is one. ``stop_after_chunks``
        ends the run after that many new chunks with a checkpoint and ``InterruptedError``."""
        t_start = time.perf_counter()
        acc, n_done, skipped, files = self._start()
        n_items = len(self.items)
        last_checkpoint = time.perf_counter()
        # Each worker runs torch with the caller's thread count: measured on 2 cores, two
        # 2-thread workers beat two 1-thread ones (1.25x vs 0.95x one worker), as the numpy
        # half of a batch is single-threaded and overlaps the other worker's matmul.
        threads = torch.get_num_threads()
        with ThreadPoolExecutor(self.cfg.sae_workers, "sae") as pool:
            for n_new, c in enumerate(range(n_done, self.n_chunks)):
                if stop_after_chunks is not None and n_new >= stop_after_chunks:
                    self._checkpoint(acc, files, c, skipped)
                    raise InterruptedError(f"stopped after {n_new} chunks (resumable)")
                skipped.extend(self.encode_chunk(c, acc, files, pool, threads))
                done = min((c + 1) * self.cfg.chunk_size, n_items)
                is_last = c == self.n_chunks - 1
                if not is_last and time.perf_counter() - last_checkpoint >= self.CHECKPOINT_EVERY_S:
                    t0 = time.perf_counter()
                    self._checkpoint(acc, files, c + 1, skipped)
                    last_checkpoint = time.perf_counter()
                    self.timer.add("checkpoint_s", last_checkpoint - t0)
                self.report(0.9 * done / n_items, f"encoded {done}/{n_items} items")
        self.report(0.9, "writing the index")
        self.finish(acc, skipped, files, time.perf_counter() - t_start)

    def encode_chunk(
        self,
        c: int,
        acc: Accumulator,
        files: BuildFiles,
        pool: ThreadPoolExecutor,
        threads: int,
    ) -> list[dict]:
        """Embed chunk ``c``, append its rows to ``files`` and merge it into ``acc``; returns
        its unreadable items."""
        lo = c * self.cfg.chunk_size
        chunk = self.embed(range(lo, min(lo + self.cfg.chunk_size, len(self.items))))
        t0 = time.perf_counter()
        files.embeddings.append(chunk.x_nd.numpy())
        files.corpus_idx.append(chunk.ok_pos)
        if isinstance(acc, DeviceAccumulator):
            self._encode_on_device(chunk, acc, files)
        else:
            self._encode_latents(chunk, acc, files, pool, threads)
        self.timer.add("sae_index_s", time.perf_counter() - t0)
        return chunk.skipped

    def _encode_on_device(
        self, chunk: ChunkEmbeddings, acc: DeviceAccumulator, files: BuildFiles
    ) -> None:
        """SAE pass over one chunk with codes and statistics computed where the SAE runs, batch
        after batch (the device orders its own work; only the codes come back)."""
        is_image_n = np.array([self.items[p].modality == "image" for p in chunk.ok_pos], bool)
        bs = self.cfg.sae_batch_size
        with torch.inference_mode():
            for s in range(0, len(chunk.ok_pos), bs):
                x_bd = chunk.x_nd[s : s + bs].to(self.device, non_blocking=True)
                z_bl = self.saes.encode(x_bd, is_image_n[s : s + bs])
                levels_bl = self.sae.latent_levels(z_bl) if self.n_levels else None
                acc.update(z_bl, chunk.ok_pos[s : s + bs], is_image_n[s : s + bs], levels_bl)
                codes, n_active_b = device_codes(z_bl, self.cfg.top_k)
                self._append_codes(files, codes, n_active_b)

    @staticmethod
    def _append_codes(files: BuildFiles, codes: SparseCodes, n_active_b: np.ndarray) -> None:
        files.indptr.append(files.values.n_rows + np.cumsum(codes.counts_b))
        files.ids.append(codes.ids)
        files.values.append(codes.values)
        files.n_active.append(n_active_b)

    def _sae_batch(self, x_bd: torch.Tensor, is_image_b: np.ndarray, threads: int) -> BatchResult:
        """Everything per batch that does not touch shared state (runs in the worker pool).

        A fresh thread runs torch ops with OpenMP's default thread count until it sets its
        own, and the count changes float results in the last bits: set it every time, so a
        resumed run reproduces an uninterrupted one exactly."""
        torch.set_num_threads(threads)
        with torch.inference_mode():
            z_bl = self.saes.encode(x_bd.to(self.sae.latent_bias.device), is_image_b)
            levels_bl = self.sae.latent_levels(z_bl).cpu() if self.n_levels else None
        entries = active_entries(z_bl)
        return BatchResult(entries, top_codes(entries, self.cfg.top_k), levels_bl)

    def _encode_latents(
        self,
        chunk: ChunkEmbeddings,
        acc: LatentAccumulator,
        files: BuildFiles,
        pool: ThreadPoolExecutor,
        threads: int,
    ) -> None:
        """SAE pass over one chunk. Each worker encodes and cuts a batch; the merges into
        ``acc`` and the code files happen in batch order (:class:`InOrder`), and no thread
        beyond the workers competes for the cores."""
        is_image_n = np.array([self.items[p].modality == "image" for p in chunk.ok_pos], bool)
        bs = self.cfg.sae_batch_size

        def merge(s: int, result: BatchResult) -> None:
            entries, codes, levels_bl = result
            b = entries.n_items
            acc.update(entries, chunk.ok_pos[s : s + b], is_image_n[s : s + b], levels_bl)
            self._append_codes(files, codes, entries.count_b)

        in_order = InOrder(merge)

        def work(i: int, s: int) -> None:
            result = self._sae_batch(chunk.x_nd[s : s + bs], is_image_n[s : s + bs], threads)
            in_order.deliver(i, s, result)

        starts = range(0, len(chunk.ok_pos), bs)
        for future in [pool.submit(work, i, s) for i, s in enumerate(starts)]:
            future.result()

    # ------------------------------------------------------------------ assembly
    def finish(
        self, acc: Accumulator, skipped: list[dict], files: BuildFiles, run_s: float
    ) -> None:
        """Close the files, write the per-latent arrays, the items table and, last, the
        manifest; then delete what only the build needed."""
        t0 = time.perf_counter()
        release_free_heap()  # the batch loop's freed temporaries, before the assembly's own
        assert files.embeddings.n_rows == acc.n_items, (files.embeddings.n_rows, acc.n_items)
        if acc.n_items == 0:
            shutil.rmtree(self.dpath)
            raise ValueError(
                f"none of the {len(self.items)} corpus items could be read; first problems: "
                f"{[s['error'] for s in skipped[:3]]}"
            )
        for appender in files:
            appender.close()
        corpus_idx = np.load(files.corpus_idx.fpath)
        n_active = np.load(files.n_active.fpath)
        arrays = acc.finish()
        rows_of_positions(arrays, corpus_idx)
        write_latent_arrays(self.dpath, arrays)
        write_items(self.dpath, self.items, corpus_idx, n_active)
        self.timer.add("finish_s", time.perf_counter() - t0)
        timings = {k: round(v, 3) for k, v in self.timer.totals.items()}
        timings["build_s"] = round(run_s + time.perf_counter() - t0, 3)
        n_images = int(
            np.count_nonzero([self.items[int(i)].modality == "image" for i in corpus_idx])
        )
        counts = IndexCounts(
            n_items=acc.n_items,
            n_images=n_images,
            n_texts=acc.n_items - n_images,
            n_latents=self.sae.n_latents,
            embed_dim=self.sae.n_inputs,
            codes_nnz=files.ids.n_rows,
            n_skipped=len(skipped),
        )
        write_manifest(self.dpath, self._manifest(counts, skipped, timings))
        for fpath in (files.corpus_idx.fpath, files.n_active.fpath):
            fpath.unlink()
        for name in (STATE_NAME, PROGRESS_NAME):
            (self.dpath / name).unlink(missing_ok=True)

    def _manifest(self, counts: IndexCounts, skipped: list[dict], timings: dict) -> dict:
        return {
            "schema": SCHEMA,
            "key": self.key,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **self.meta,
            "sae": {
                "content_hash": self.sae.content_hash,
                "n_latents": self.sae.n_latents,
                "nesting_list": list(self.sae.nesting_list or []),
                "config": self.sae.cfg.to_dict(),
            },
            "config": asdict(self.cfg),
            "input_stats": self.stats.manifest(),
            "counts": counts._asdict(),
            "skipped": skipped[:N_SKIPPED_LISTED],
            "timings": timings,
            **file_records(self.dpath),
        }


def release_free_heap() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    The batch loop frees tens of MB of temporaries per batch; glibc keeps such memory mapped
    for reuse, so without this the assembly's allocations (pandas, Parquet) would stack on top
    of it in the process's peak resident memory.
    """
    if sys.platform != "linux":
        return
    import contextlib
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
