"""Precompute: encode a corpus with CLIP and an SAE once, and keep an activation index.

The work goes in chunks of items. For each chunk, images are decoded and preprocessed by a pool
of threads while the main thread runs CLIP on the previous batch; texts go through the text
tower; the SAE's full activations of every batch are merged into a :class:`LatentAccumulator`
and cut down to each item's top-K codes. A finished chunk is written to disk together with the
accumulator's state, so an interrupted run continues from the last finished chunk.

The index lives in ``<cache_root>/index/<key>`` where the key hashes the encoder id, the SAE's
content hash, the corpus manifest and the settings that change results. A folder whose manifest
does not check out (unfinished, other schema, missing or resized files) is rebuilt, never used.

CLI: ``python -m sae_explorer precompute --clip builtin:shapes --sae builtin:shapes
--corpus builtin:shapes``; ``--help`` lists every option.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from sae_explorer.atomic import (
    atomic_save_npy,
    atomic_save_npz,
    atomic_write_bytes,
    atomic_write_json,
)
from sae_explorer.corpus import Corpus, CorpusItem, default_cache_dpath, load_item_image
from sae_explorer.index import (
    CODES_NAMES,
    EMBEDDINGS_NAME,
    ITEMS_NAME,
    MANIFEST_NAME,
    SCHEMA,
    ActivationIndex,
    ArrayWriter,
    CorruptIndexError,
    LatentAccumulator,
    active_entries,
    index_files,
    read_manifest,
    top_codes,
    write_latent_arrays,
)
from sae_explorer.progress import Progress

if TYPE_CHECKING:
    from sae_explorer.encoder import ClipEncoder
    from sae_explorer.sae import SAE

log = logging.getLogger(__name__)

PROGRESS_NAME = "progress.json"
STATE_NAME = "state.npz"
CHUNKS_DNAME = "chunks"
N_SKIPPED_LISTED = 20


@dataclass(frozen=True)
class PrecomputeConfig:
    """Settings of one precompute run. Fields marked (result) are part of the cache key."""

    top_k: int = 128
    """(result) Latents kept per item for item views, the largest by value."""
    top_m: int = 32
    """(result) Max-activating items kept per latent."""
    n_samples: int = 64
    """(result) Random active items kept per latent for the quantile views."""
    seed: int = 0
    """(result) Seed of the per-item sampling keys."""
    chunk_size: int = 4096
    """Items per resumable chunk."""
    batch_size: int = 64
    """Images per CLIP batch (texts use 4x this)."""
    sae_batch_size: int = 512
    """Embeddings per SAE batch (512: as fast as larger batches, with smaller temporaries)."""
    n_workers: int = 4
    """Threads decoding and preprocessing images while CLIP runs."""
    names: bool = True
    """Name latents from a vocabulary after indexing."""
    vocabulary: str | None = None
    """A vocabulary file (one word or phrase per line); None: frequent English words."""
    n_words: int = 3000
    """Size of the default vocabulary."""

    RESULT_FIELDS = ("top_k", "top_m", "n_samples", "seed")

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{f.name} must be an int, got {value!r}")
        for name in ("top_k", "top_m", "n_samples", "chunk_size", "batch_size", "sae_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_workers < 0 or self.n_words < 0:
            raise ValueError("n_workers and n_words must be >= 0")


def cache_key(encoder_id: str, sae_hash: str, corpus_hash: str, cfg: PrecomputeConfig) -> str:
    """Hash naming an index folder: same inputs and result settings, same folder."""
    payload = {
        "schema": SCHEMA,
        "encoder": encoder_id,
        "sae": sae_hash,
        "corpus": corpus_hash,
        "config": {name: getattr(cfg, name) for name in cfg.RESULT_FIELDS},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def index_dpath(cache_root: str | Path, key: str) -> Path:
    return Path(cache_root) / "index" / key[:20]


# --------------------------------------------------------------------------- entry point
def precompute(
    encoder: ClipEncoder,
    sae: SAE,
    corpus: Corpus,
    cache_root: str | Path | None = None,
    cfg: PrecomputeConfig = PrecomputeConfig(),
    progress: Progress | None = None,
    stop_after_chunks: int | None = None,
) -> ActivationIndex:
    """Build (or reuse, or resume) the activation index of ``corpus`` under ``cache_root``.

    ``progress(frac, message)`` is called as work advances. ``stop_after_chunks`` ends the run
    early after that many new chunks (leaving a resumable folder) and raises ``InterruptedError``;
    tests use it to simulate an interruption.
    """
    _check_inputs(encoder, sae, corpus)
    cache_root = Path(cache_root) if cache_root is not None else default_cache_dpath()
    key = cache_key(encoder.cache_id, sae.content_hash, corpus.manifest_hash, cfg)
    dpath = index_dpath(cache_root, key)
    report = progress or (lambda frac, msg: None)
    if (dpath / MANIFEST_NAME).exists():
        try:
            manifest = read_manifest(dpath)
            if manifest.get("key") != key:
                raise CorruptIndexError(f"{dpath} holds an index for another key")
            index = ActivationIndex.load(dpath)
        except CorruptIndexError as e:
            log.warning("rebuilding the index at %s: %s", dpath, e)
            shutil.rmtree(dpath)
        else:
            report(1.0, f"index found: {index.n_items} items")
            _ensure_names(index, encoder, sae, corpus, cfg, report, cache_root)
            return index
    dpath.mkdir(parents=True, exist_ok=True)
    timer = _Timer()
    embedder = _CorpusEmbedder(encoder, corpus, cfg, timer)
    meta = {
        "encoder": {"model_id": encoder.model_id, "embed_dim": encoder.embed_dim},
        "corpus": {
            "source": corpus.source,
            "manifest_hash": corpus.manifest_hash,
            "n_items": len(corpus),
        },
    }
    try:
        builder = _Builder(sae, corpus.items, embedder, cfg, dpath, key, report, meta, timer)
        builder.run(stop_after_chunks)
    finally:
        embedder.close()
    index = ActivationIndex.load(dpath)
    _ensure_names(index, encoder, sae, corpus, cfg, report, cache_root)
    return index


def index_embeddings(
    sae: SAE,
    x_nd: np.ndarray,
    dpath: str | Path,
    cfg: PrecomputeConfig = PrecomputeConfig(),
    items: Sequence[CorpusItem] | None = None,
    progress: Progress | None = None,
    stop_after_chunks: int | None = None,
) -> ActivationIndex:
    """Index precomputed CLIP embeddings ``x_nd`` [n, d] (e.g. MSAE's saved embeddings, or
    synthetic ones in benchmarks) into ``dpath``; ``items`` default to texts named ``item<i>``.

    Same format, resumability and validation as :func:`precompute`, without the encoder; no
    names (they need the text encoder).
    """
    if x_nd.ndim != 2 or x_nd.shape[1] != sae.n_inputs:
        raise ValueError(f"embeddings must be [n, {sae.n_inputs}], got shape {x_nd.shape}")
    if len(x_nd) == 0:
        raise ValueError("no embeddings to index")
    if items is None:
        items = [CorpusItem(f"item{i}", "text", "") for i in range(len(x_nd))]
    if len(items) != len(x_nd):
        raise ValueError(f"{len(items)} items for {len(x_nd)} embeddings")
    dpath = Path(dpath)
    digest = hashlib.sha256()  # every row: a cache must never outlive a change to its input
    for start in range(0, len(x_nd), 65_536):
        digest.update(np.ascontiguousarray(x_nd[start : start + 65_536]).tobytes())
    key = cache_key(f"embeddings:{x_nd.shape}:{digest.hexdigest()}", sae.content_hash, "", cfg)
    if (dpath / MANIFEST_NAME).exists():
        try:
            if read_manifest(dpath).get("key") == key:
                return ActivationIndex.load(dpath)
        except CorruptIndexError as e:
            log.warning("rebuilding the index at %s: %s", dpath, e)
        shutil.rmtree(dpath)
    dpath.mkdir(parents=True, exist_ok=True)

    def embed(positions: range) -> ChunkEmbeddings:
        rows = np.asarray(x_nd[positions.start : positions.stop], dtype=np.float32)
        return ChunkEmbeddings(
            np.arange(positions.start, positions.stop), torch.from_numpy(rows), []
        )

    meta = {"encoder": {"model_id": "precomputed", "embed_dim": sae.n_inputs}}
    report = progress or (lambda frac, msg: None)
    builder = _Builder(sae, items, embed, cfg, dpath, key, report, meta, _Timer())
    builder.run(stop_after_chunks)
    return ActivationIndex.load(dpath)


def _check_inputs(encoder: ClipEncoder, sae: SAE, corpus: Corpus) -> None:
    if len(corpus) == 0:
        raise ValueError("the corpus is empty: nothing to precompute")
    encoder.check_sae(sae)
    needs = {"image": "encode_pixels", "text": "encode_texts"}
    for modality, method in needs.items():
        has_items = any(item.modality == modality for item in corpus.items)
        if has_items and not callable(getattr(encoder, method, None)):
            raise ValueError(
                f"the corpus has {modality} items but the encoder {encoder.model_id!r} cannot "
                f"encode {modality}s; use a corpus of "
                f"{'texts' if modality == 'image' else 'images'} only"
            )
    bad = sorted({item.modality for item in corpus.items} - {"image", "text"})
    if bad:
        raise ValueError(f"unknown item modalities {bad}; allowed: image, text")


def _ensure_names(
    index, encoder, sae, corpus, cfg: PrecomputeConfig, report: Progress, cache_root: Path
) -> None:
    """Compute and store vocabulary names unless the index has them for this vocabulary.

    The vocabulary's text embeddings depend only on the CLIP model, so they are cached under
    ``<cache_root>/vocab`` and shared by every SAE and corpus (on a CPU, embedding thousands
    of words with a full-size text tower takes minutes).
    """
    if not cfg.names:
        return
    from sae_explorer import naming

    words, source = vocabulary_for(encoder, corpus, cfg)
    existing = index.names
    if existing is not None and existing.key == naming.vocabulary_hash(words):
        return
    t0 = time.perf_counter()
    vocab_key = hashlib.sha256(f"{encoder.cache_id}\n{naming.vocabulary_hash(words)}".encode())
    vocab_fpath = Path(cache_root) / "vocab" / f"{vocab_key.hexdigest()[:20]}.npy"
    embeddings_vd = None
    if vocab_fpath.is_file():
        try:
            cached = np.load(vocab_fpath, allow_pickle=False)
            if cached.shape == (len(words), encoder.embed_dim):
                embeddings_vd = torch.from_numpy(cached)
        except (OSError, ValueError) as e:
            log.warning("ignoring the unreadable vocabulary cache %s: %s", vocab_fpath, e)
    if embeddings_vd is None:
        embeddings_vd = naming.embed_words(
            encoder, words, progress=lambda f, m: report(0.95 + 0.04 * f, m)
        )
        vocab_fpath.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_npy(vocab_fpath, embeddings_vd.numpy())
    names = naming.name_latents(encoder, sae, words, embeddings_vd=embeddings_vd, source=source)
    names.save(index.dpath)
    index.__dict__.pop("names", None)  # drop the cached (older) names
    timings = dict(index.manifest.get("timings", {}), naming_s=round(time.perf_counter() - t0, 3))
    index.manifest["timings"] = timings
    report(1.0, f"named {sae.n_latents} latents from {len(words)} words")


def vocabulary_for(encoder, corpus: Corpus, cfg: PrecomputeConfig) -> tuple[list[str], str]:
    """The vocabulary this run names latents with, and a description of where it came from."""
    from sae_explorer import naming

    if cfg.vocabulary is not None:
        return naming.load_vocabulary(cfg.vocabulary), str(cfg.vocabulary)
    is_shapes = encoder.model_id == "builtin:shapes" or "builtin:shapes" in corpus.source
    world = "shapes" if is_shapes else None
    source = f"wordfreq:en:{cfg.n_words}" + ("+shapes" if world else "")
    return naming.default_vocabulary(world, cfg.n_words), source


# --------------------------------------------------------------------------- the build
class ChunkEmbeddings(NamedTuple):
    """What an embedder returns for one chunk of item positions."""

    ok_pos: np.ndarray  # int64 [n_ok]: positions that were encoded, in order
    x_nd: torch.Tensor  # float32 [n_ok, d]
    skipped: list[dict]  # {"item_id", "source", "error"} per unreadable item


class _Timer:
    def __init__(self, totals: dict[str, float] | None = None) -> None:
        self.totals: dict[str, float] = dict(totals or {})

    def add(self, name: str, seconds: float) -> None:
        self.totals[name] = self.totals.get(name, 0.0) + seconds


class _CorpusEmbedder:
    """CLIP embeddings of corpus items; images decoded by a thread pool ahead of the model."""

    def __init__(self, encoder: ClipEncoder, corpus: Corpus, cfg: PrecomputeConfig, timer: _Timer):
        self.encoder, self.corpus, self.cfg, self.timer = encoder, corpus, cfg, timer
        self.pool = ThreadPoolExecutor(max(cfg.n_workers, 1), "decode")

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def __call__(self, positions: range) -> ChunkEmbeddings:
        items = self.corpus.items
        image_pos = [p for p in positions if items[p].modality == "image"]
        text_pos = [p for p in positions if items[p].modality == "text"]
        embedded: dict[int, torch.Tensor] = {}
        skipped: list[dict] = []
        for pos_b, x_bd, errors in self._image_batches(image_pos):
            embedded.update(zip(pos_b, x_bd))
            skipped.extend(errors)
        if text_pos:
            t0 = time.perf_counter()
            texts = [items[p].source for p in text_pos]
            x_nd = self.encoder.encode_texts(texts, batch_size=4 * self.cfg.batch_size)
            embedded.update(zip(text_pos, x_nd))
            self.timer.add("clip_text_s", time.perf_counter() - t0)
        ok_pos = np.array([p for p in positions if p in embedded], dtype=np.int64)
        if len(ok_pos) == 0:
            return ChunkEmbeddings(ok_pos, torch.zeros(0, self.encoder.embed_dim), skipped)
        return ChunkEmbeddings(ok_pos, torch.stack([embedded[p] for p in ok_pos]).float(), skipped)

    def _image_batches(
        self, positions: list[int]
    ) -> Iterator[tuple[list[int], torch.Tensor, list]]:
        """Encoded image batches; the next batches are decoded in the pool meanwhile."""
        bs = self.cfg.batch_size
        batches = [positions[s : s + bs] for s in range(0, len(positions), bs)]
        lookahead = max(self.cfg.n_workers, 1) + 1
        pending: deque[Future] = deque()
        submitted = 0
        while submitted < len(batches) or pending:
            while submitted < len(batches) and len(pending) < lookahead:
                batch = batches[submitted]
                items = [self.corpus.items[p] for p in batch]
                pending.append(
                    self.pool.submit(_decode_batch, items, batch, self.encoder.preprocess)
                )
                submitted += 1
            t0 = time.perf_counter()
            ok_pos, pixels, errors = pending.popleft().result()
            self.timer.add("decode_wait_s", time.perf_counter() - t0)
            if not ok_pos:
                yield [], torch.zeros(0, self.encoder.embed_dim), errors
                continue
            t0 = time.perf_counter()
            x_bd = self.encoder.encode_pixels(pixels)
            self.timer.add("clip_image_s", time.perf_counter() - t0)
            yield ok_pos, x_bd, errors


class _Builder:
    """Chunked, resumable pass: embeddings -> SAE -> accumulator + codes -> index files."""

    def __init__(
        self,
        sae: SAE,
        items: Sequence[CorpusItem],
        embed: Callable[[range], ChunkEmbeddings],
        cfg: PrecomputeConfig,
        dpath: Path,
        key: str,
        report: Progress,
        meta: dict,
        timer: _Timer,
    ) -> None:
        self.sae, self.items, self.embed, self.cfg = sae, items, embed, cfg
        self.dpath, self.key, self.report, self.meta = dpath, key, report, meta
        self.chunks_dpath = dpath / CHUNKS_DNAME
        self.n_chunks = -(-len(items) // cfg.chunk_size)
        self.n_levels = len(sae.nesting_list) if sae.nesting_list else 0
        self.timer = timer

    # ------------------------------------------------------------------ resume
    def _resume(self) -> tuple[LatentAccumulator, int, list[dict]]:
        progress_fpath = self.dpath / PROGRESS_NAME
        if progress_fpath.is_file():
            try:
                state = json.loads(progress_fpath.read_text())
                if state["key"] != self.key or state["chunk_size"] != self.cfg.chunk_size:
                    raise ValueError("written with other settings")
                n_done = int(state["n_chunks_done"])
                for c in range(n_done):
                    if not (self.chunks_dpath / f"{c:06d}.npz").is_file():
                        raise ValueError(f"chunk {c} is missing")
                with np.load(self.dpath / STATE_NAME, allow_pickle=False) as arrays:
                    acc = LatentAccumulator.from_state(dict(arrays))
                if acc.n_items != state["n_ok"]:
                    raise ValueError("accumulator and progress disagree")
                for name, seconds in state.get("timings", {}).items():
                    self.timer.add(name, seconds)
                log.info("resuming %s after chunk %d/%d", self.dpath, n_done, self.n_chunks)
                return acc, n_done, state["skipped"]
            except (ValueError, KeyError, OSError, AssertionError, json.JSONDecodeError) as e:
                log.warning("cannot resume %s (%s); starting over", self.dpath, e)
        for path in self.dpath.iterdir():  # start clean
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        acc = LatentAccumulator(
            self.sae.n_latents, self.cfg.top_m, self.cfg.n_samples, self.n_levels, self.cfg.seed
        )
        return acc, 0, []

    def run(self, stop_after_chunks: int | None = None) -> None:
        t_start = time.perf_counter()
        acc, n_done, skipped = self._resume()
        self.chunks_dpath.mkdir(exist_ok=True)
        n_items = len(self.items)
        for n_new, c in enumerate(range(n_done, self.n_chunks)):
            if stop_after_chunks is not None and n_new >= stop_after_chunks:
                raise InterruptedError(f"stopped after {n_new} chunks (resumable)")
            lo = c * self.cfg.chunk_size
            chunk = self.embed(range(lo, min(lo + self.cfg.chunk_size, n_items)))
            arrays = self._encode_latents(chunk, acc)
            t0 = time.perf_counter()
            atomic_save_npz(self.chunks_dpath / f"{c:06d}.npz", arrays)
            skipped.extend(chunk.skipped)
            # State after the chunk: a crash between the writes only redoes that chunk.
            atomic_save_npz(self.dpath / STATE_NAME, acc.state())
            self.timer.add("write_s", time.perf_counter() - t0)
            progress_state = {
                "key": self.key,
                "chunk_size": self.cfg.chunk_size,
                "n_chunks_done": c + 1,
                "n_ok": acc.n_items,
                "skipped": skipped,
                "timings": self.timer.totals,
            }
            atomic_write_json(self.dpath / PROGRESS_NAME, progress_state)
            done = min(lo + self.cfg.chunk_size, n_items)
            self.report(0.9 * done / n_items, f"encoded {done}/{n_items} items")
        self.report(0.9, "writing the index")
        self._finish(acc, skipped, time.perf_counter() - t_start)

    def _encode_latents(
        self, chunk: ChunkEmbeddings, acc: LatentAccumulator
    ) -> dict[str, np.ndarray]:
        """SAE pass over one chunk: merge into ``acc``; return the chunk's arrays to save."""
        is_image_n = torch.tensor(
            [self.items[p].modality == "image" for p in chunk.ok_pos], dtype=torch.bool
        )
        counts, ids, values, n_active = [], [], [], []
        first_idx = acc.n_items
        with torch.inference_mode():
            for s in range(0, len(chunk.ok_pos), self.cfg.sae_batch_size):
                t0 = time.perf_counter()
                x_bd = chunk.x_nd[s : s + self.cfg.sae_batch_size]
                z_bl = self.sae.encode(x_bd)
                levels_bl = self.sae.latent_levels(z_bl) if self.n_levels else None
                t1 = time.perf_counter()
                item_idx_b = torch.arange(first_idx + s, first_idx + s + len(x_bd))
                entries = active_entries(z_bl)
                acc.update(entries, item_idx_b, is_image_n[s : s + len(x_bd)], levels_bl)
                codes = top_codes(entries, self.cfg.top_k)
                counts.append(codes.counts_b)
                ids.append(codes.ids)
                values.append(codes.values)
                n_active.append(entries.count_b)
                self.timer.add("sae_s", t1 - t0)
                self.timer.add("index_s", time.perf_counter() - t1)

        def cat(parts: list[np.ndarray], dtype) -> np.ndarray:
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

        return {
            "corpus_idx": chunk.ok_pos.astype(np.int64),
            "embeddings_nd": chunk.x_nd.numpy().astype(np.float16),
            "n_active_n": cat(n_active, np.int32),
            "codes_counts": cat(counts, np.int64),
            "codes_ids": cat(ids, np.int32),
            "codes_values": cat(values, np.float16),
        }

    # ------------------------------------------------------------------ assembly
    def _finish(self, acc: LatentAccumulator, skipped: list[dict], run_s: float) -> None:
        t0 = time.perf_counter()
        release_free_heap()  # the batch loop's freed temporaries, before the assembly's own
        chunk_fpaths = [self.chunks_dpath / f"{c:06d}.npz" for c in range(self.n_chunks)]
        n_items, nnz = 0, 0
        for fpath in chunk_fpaths:
            with np.load(fpath) as z:
                n_items += len(z["corpus_idx"])
                nnz += len(z["codes_ids"])
        assert n_items == acc.n_items, (n_items, acc.n_items)
        if n_items == 0:
            shutil.rmtree(self.dpath)
            raise ValueError(
                f"none of the {len(self.items)} corpus items could be read; first problems: "
                f"{[s['error'] for s in skipped[:3]]}"
            )
        d = self.sae.n_inputs
        emb = ArrayWriter(self.dpath / EMBEDDINGS_NAME, (n_items, d), np.float16)
        indptr = ArrayWriter(self.dpath / CODES_NAMES[0], (n_items + 1,), np.int64)
        code_ids = ArrayWriter(self.dpath / CODES_NAMES[1], (nnz,), np.int32)
        code_vals = ArrayWriter(self.dpath / CODES_NAMES[2], (nnz,), np.float16)
        indptr.append(np.zeros(1, dtype=np.int64))
        corpus_idx, n_active, offset = [], [], 0
        for fpath in chunk_fpaths:
            with np.load(fpath) as z:
                emb.append(z["embeddings_nd"])
                indptr.append(offset + np.cumsum(z["codes_counts"]))
                offset += int(z["codes_counts"].sum())
                code_ids.append(z["codes_ids"])
                code_vals.append(z["codes_values"])
                corpus_idx.append(z["corpus_idx"])
                n_active.append(z["n_active_n"])
        for writer in (emb, indptr, code_ids, code_vals):
            writer.close()
        write_latent_arrays(self.dpath, acc.finish())
        items_df = items_frame(self.items, np.concatenate(corpus_idx), np.concatenate(n_active))
        atomic_write_bytes(self.dpath / ITEMS_NAME, _parquet_bytes(items_df))
        self.timer.add("assemble_s", time.perf_counter() - t0)
        timings = {k: round(v, 3) for k, v in self.timer.totals.items()}
        timings["build_s"] = round(run_s + time.perf_counter() - t0, 3)
        n_images = int((items_df["modality"] == "image").sum())
        manifest = {
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
            "counts": {
                "n_items": n_items,
                "n_images": n_images,
                "n_texts": n_items - n_images,
                "n_latents": self.sae.n_latents,
                "embed_dim": d,
                "codes_nnz": nnz,
                "n_skipped": len(skipped),
            },
            "skipped": skipped[:N_SKIPPED_LISTED],
            "timings": timings,
            "files": index_files(self.dpath),
        }
        atomic_write_json(self.dpath / MANIFEST_NAME, manifest)  # last: marks the index complete
        shutil.rmtree(self.chunks_dpath)
        for name in (STATE_NAME, PROGRESS_NAME):
            (self.dpath / name).unlink(missing_ok=True)


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


def _decode_batch(
    items: Sequence[CorpusItem], positions: Sequence[int], preprocess
) -> tuple[list[int], torch.Tensor | None, list[dict]]:
    """Decode + preprocess images (runs in a worker thread); unreadable ones become errors."""
    ok, tensors, errors = [], [], []
    for item, pos in zip(items, positions):
        try:
            tensors.append(preprocess(load_item_image(item)))
            ok.append(pos)
        except (ValueError, OSError) as e:
            errors.append({"item_id": item.item_id, "source": item.source, "error": str(e)})
    return ok, (torch.stack(tensors) if tensors else None), errors


def items_frame(items: Sequence[CorpusItem], corpus_idx_n: np.ndarray, n_active_n: np.ndarray):
    """The items table of an index: corpus columns, ``n_active``, ground truth as ``attr_*``."""
    import pandas as pd

    chosen = [items[int(i)] for i in corpus_idx_n]
    df = pd.DataFrame(
        {
            "item_id": [it.item_id for it in chosen],
            "modality": pd.Categorical(
                [it.modality for it in chosen], categories=["image", "text"]
            ),
            "source": [it.source for it in chosen],
            "label": [it.label for it in chosen],
            "corpus_idx": corpus_idx_n.astype(np.int64),
            "n_active": n_active_n.astype(np.int32),
        }
    )
    names: dict[str, None] = {}
    for it in chosen:
        names.update(dict.fromkeys(it.attributes or ()))
    for name in names:
        df[f"attr_{name}"] = [(it.attributes or {}).get(name) for it in chosen]
    return df


def _parquet_bytes(df) -> bytes:
    import io

    buffer = io.BytesIO()
    df.to_parquet(buffer, index=False)
    return buffer.getvalue()


# --------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sae_explorer precompute",
        description="Encode a corpus with CLIP and an SAE and build the latent activation index.",
    )
    parser.add_argument(
        "--clip",
        required=True,
        help="CLIP model: builtin:shapes, ViT-B-32, hf-hub:org/repo, local-dir:/path",
    )
    parser.add_argument(
        "--pretrained",
        default=None,
        help="open_clip pretrained tag or weights file (none: random init)",
    )
    parser.add_argument(
        "--sae", required=True, help="SAE: builtin:shapes, a folder, a file or a hub id"
    )
    parser.add_argument(
        "--corpus", required=True, action="append", help="corpus source; repeat to combine several"
    )
    parser.add_argument("--max-items", type=int, default=None, help="cap per corpus source")
    parser.add_argument(
        "--cache-dir", default=None, help=f"cache root (default {default_cache_dpath()})"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    defaults = PrecomputeConfig()
    for f in fields(PrecomputeConfig):
        if f.name in {"names", "vocabulary"}:
            continue
        parser.add_argument(
            f"--{f.name.replace('_', '-')}", type=int, default=getattr(defaults, f.name)
        )
    parser.add_argument(
        "--vocabulary", default=None, help="vocabulary file for naming latents (one word per line)"
    )
    parser.add_argument("--no-names", action="store_true", help="skip naming latents")
    parser.add_argument(
        "--force", action="store_true", help="rebuild even if a finished index exists"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from tqdm import tqdm

    from sae_explorer.checkpoint import load_sae
    from sae_explorer.corpus import load_corpus
    from sae_explorer.encoder import load_encoder

    cfg_values = {
        f.name: getattr(args, f.name) for f in fields(PrecomputeConfig) if hasattr(args, f.name)
    }
    try:
        cfg = PrecomputeConfig(**cfg_values, names=not args.no_names)
        t0 = time.perf_counter()
        encoder = load_encoder(args.clip, args.pretrained, args.device)
        sae = load_sae(args.sae)
        t_models = time.perf_counter() - t0
        t0 = time.perf_counter()
        corpus = load_corpus(args.corpus, args.max_items, args.cache_dir)
        t_corpus = time.perf_counter() - t0
        print(
            f"models loaded in {t_models:.1f}s; corpus {corpus.source}: {len(corpus)} items "
            f"({corpus.n_images} images, {corpus.n_texts} texts) listed in {t_corpus:.1f}s",
            flush=True,
        )
        if args.force:
            cache_root = Path(args.cache_dir) if args.cache_dir else default_cache_dpath()
            key = cache_key(encoder.cache_id, sae.content_hash, corpus.manifest_hash, cfg)
            shutil.rmtree(index_dpath(cache_root, key), ignore_errors=True)
        with tqdm(total=1000, unit="‰", file=sys.stderr, dynamic_ncols=True) as bar:

            def progress(frac: float, msg: str) -> None:
                bar.n = int(1000 * frac)
                bar.set_description(msg, refresh=False)
                bar.refresh()

            t0 = time.perf_counter()
            index = precompute(encoder, sae, corpus, args.cache_dir, cfg, progress)
            total = time.perf_counter() - t0
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    counts = index.manifest["counts"]
    print(
        f"index: {index.dpath}\n  {counts['n_items']} items ({counts['n_images']} images, "
        f"{counts['n_texts']} texts), {counts['n_skipped']} skipped, {counts['n_latents']} latents"
        f"\n  timings: {json.dumps(index.manifest['timings'])}  (this call {total:.1f}s)"
    )
    return 0
