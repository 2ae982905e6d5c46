"""Precompute: encode a corpus with CLIP and an SAE once, and keep an activation index.

The work goes in chunks of items. For each chunk, images are decoded and preprocessed by a pool
of threads while the main thread runs CLIP on the previous batch; texts go through the text
tower. SAE workers encode batches side by side; the full activations of every batch are merged
into a :class:`LatentAccumulator` in batch order and cut down to each item's top-K codes.
Embeddings and codes are appended to the index files as chunks finish, and the accumulator's
state is checkpointed with their row counts, so an interrupted run continues from its last
checkpoint (at most ``CHECKPOINT_EVERY_S`` of work is redone). One build per folder at a time:
a second process waits for the first and then reuses its index.

The index lives in ``<cache_root>/index/<key>`` where the key hashes the encoder id, the SAE's
content hash, the corpus manifest and the settings that change results. A folder whose manifest
does not check out (unfinished, other schema, missing or resized files) is rebuilt, never used.

CLI: ``python -m sae_explorer precompute --clip builtin:shapes --sae builtin:shapes
--corpus builtin:shapes``; ``--help`` lists every option.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import logging
import os
import shutil
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from sae_explorer.atomic import atomic_path, atomic_save_npy, atomic_save_npz, atomic_write_json
from sae_explorer.cli import add_dataclass_args, dataclass_from_args, doc
from sae_explorer.corpus import (
    MODALITIES,
    Corpus,
    CorpusItem,
    default_cache_dpath,
    load_item_image,
)
from sae_explorer.index import (
    CODES_NAMES,
    EMBEDDINGS_NAME,
    ITEMS_NAME,
    MANIFEST_NAME,
    OPTIONAL_NAMES,
    SCHEMA,
    ActivationIndex,
    ActiveEntries,
    CorruptIndexError,
    LatentAccumulator,
    NpyAppender,
    SparseCodes,
    active_entries,
    index_file_names,
    index_files,
    read_manifest,
    top_codes,
    write_latent_arrays,
)
from sae_explorer.index.files import BUILD_ONLY_NAMES, PROGRESS_NAME, STATE_NAME
from sae_explorer.modality_stats import (
    CHECKPOINT,
    ModalitySAEs,
    ModalityStats,
    StatsPlan,
    corpus_stats,
    embeddings_stats,
    plan_stats,
)
from sae_explorer.progress import Progress

if TYPE_CHECKING:
    from sae_explorer.encoder import ClipEncoder
    from sae_explorer.sae import SAE

log = logging.getLogger(__name__)

N_SKIPPED_LISTED = 20


@dataclass(frozen=True)
class PrecomputeConfig:
    """Settings of one precompute run. Fields marked (result) are part of the cache key."""

    top_k: int = field(default=128, metadata=doc("(result) latents kept per item, largest first"))
    top_m: int = field(default=32, metadata=doc("(result) max-activating items kept per latent"))
    n_samples: int = field(
        default=64, metadata=doc("(result) random active items kept per latent (quantile views)")
    )
    seed: int = field(default=0, metadata=doc("(result) seed of the per-item sampling keys"))
    chunk_size: int = field(
        default=4096, metadata=doc("items per chunk (checkpoints fall between chunks)")
    )
    batch_size: int = field(default=64, metadata=doc("images per CLIP batch (texts: 4x)"))
    sae_batch_size: int = field(
        default=512, metadata=doc("embeddings per SAE batch (larger is no faster, only bigger)")
    )
    sae_workers: int = field(
        default=2, metadata=doc("threads running SAE batches side by side, merged in order")
    )
    n_workers: int = field(
        default=8,
        metadata=doc("processes decoding images ahead of CLIP, at most one per core (0: none)"),
    )
    names: bool = field(default=True, metadata=doc("name latents from a vocabulary"))
    vocabulary: str | None = field(
        default=None, metadata=doc("vocabulary file, one word or phrase per line (None: wordfreq)")
    )
    n_words: int = field(default=3000, metadata=doc("size of the default vocabulary"))

    RESULT_FIELDS = ("top_k", "top_m", "n_samples", "seed")

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{f.name} must be an int, got {value!r}")
        positive = ("top_k", "top_m", "n_samples", "chunk_size", "batch_size", "sae_batch_size")
        for name in (*positive, "sae_workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_workers < 0 or self.n_words < 0:
            raise ValueError("n_workers and n_words must be >= 0")


def cache_key(
    encoder_id: str,
    sae_hash: str,
    corpus_hash: str,
    cfg: PrecomputeConfig,
    input_stats: dict | None = None,
) -> str:
    """Hash naming an index folder: same inputs and result settings, same folder.
    ``input_stats`` (:meth:`StatsPlan.key_payload`) where a modality gets its own statistics."""
    payload = {
        "schema": SCHEMA,
        "encoder": encoder_id,
        "sae": sae_hash,
        "corpus": corpus_hash,
        "config": {name: getattr(cfg, name) for name in cfg.RESULT_FIELDS},
    }
    if input_stats is not None:
        payload["input_stats"] = input_stats
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def index_dpath(cache_root: str | Path, key: str) -> Path:
    return Path(cache_root) / "index" / key[:20]


class StatsSource(NamedTuple):
    """How a build gets the statistics each modality is encoded with: the plan (part of the
    key) and what computes them, called once when a build starts afresh."""

    plan: StatsPlan
    compute: Callable[[], ModalityStats]


class KeyedPlan(NamedTuple):
    key: str
    plan: StatsPlan


def corpus_key(encoder: ClipEncoder, sae: SAE, corpus: Corpus, cfg: PrecomputeConfig) -> KeyedPlan:
    """The index key of ``corpus`` and the statistics plan that is part of it."""
    modalities = {item.modality for item in corpus.items}
    plan = plan_stats(sae, modalities, lambda: vocabulary_for(encoder, corpus, cfg)[0])
    key = cache_key(
        encoder.cache_id, sae.content_hash, corpus.manifest_hash, cfg, plan.key_payload()
    )
    return KeyedPlan(key, plan)


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
    key, plan = corpus_key(encoder, sae, corpus, cfg)
    dpath = index_dpath(cache_root, key)
    report = progress or (lambda frac, msg: None)
    with build_lock(dpath, report):
        index = _reuse(dpath, key)
        if index is not None:
            report(1.0, f"index found: {index.n_items} items")
        else:
            stats = _corpus_stats_source(encoder, sae, corpus, cfg, plan, cache_root, report)
            _build_from_corpus(
                encoder, sae, corpus, dpath, key, cfg, report, stop_after_chunks, stats
            )
            index = ActivationIndex.load(dpath)
        _ensure_names(index, encoder, sae, corpus, cfg, report, cache_root)
    return index


def _corpus_stats_source(
    encoder, sae, corpus, cfg: PrecomputeConfig, plan: StatsPlan, cache_root: Path, report
) -> StatsSource:
    """The corpus build's statistics: corpus items of a modality the SAE was not trained on,
    or the vocabulary's text embeddings (cached with the names' ones)."""

    def vocabulary_embeddings() -> torch.Tensor:
        words = vocabulary_for(encoder, corpus, cfg)[0]
        return _vocabulary_embeddings(encoder, words, cache_root, lambda f, m: report(0, m))

    return StatsSource(
        plan, lambda: corpus_stats(encoder, sae, corpus.items, plan, vocabulary_embeddings, report)
    )


def _reuse(dpath: Path, key: str) -> ActivationIndex | None:
    """The finished index in ``dpath`` if it is sound and for ``key``; otherwise clear it."""
    if not (dpath / MANIFEST_NAME).exists():
        return None
    try:
        if read_manifest(dpath).get("key") != key:
            raise CorruptIndexError(f"{dpath} holds an index for another key")
        return ActivationIndex.load(dpath)
    except CorruptIndexError as e:
        log.warning("rebuilding the index at %s: %s", dpath, e)
        clear_index_dpath(dpath)
        return None


def clear_index_dpath(dpath: Path, keep: bool = False) -> None:
    """Delete an index folder (``keep``: only its contents), after checking that everything in
    it is an index's or a build's file: a folder passed by mistake (``index_embeddings(...,
    "~/photos")``) raises ``ValueError`` instead of being wiped."""
    from sae_explorer.naming import NAMES_FILE, NAMES_META

    ours = {
        MANIFEST_NAME, *index_file_names(), *OPTIONAL_NAMES, NAMES_FILE, NAMES_META,
        PROGRESS_NAME, STATE_NAME, *BUILD_ONLY_NAMES.values(),
    }  # fmt: skip
    paths = list(dpath.iterdir())
    for path in paths:
        name = path.name
        if name.startswith("."):  # .<name>.partial (appenders), .<name>.<random>.tmp (atomic)
            name = name[1:].removesuffix(".partial")
            name = name.rsplit(".", 2)[0] if name.endswith(".tmp") else name
        if not path.is_file() or name not in ours:
            raise ValueError(
                f"{dpath} holds {path.name!r}, which is not part of an activation index; "
                "refusing to delete it (pass an empty or new folder)"
            )
    if not keep:
        shutil.rmtree(dpath)
        return
    for path in paths:
        path.unlink()


def _build_from_corpus(
    encoder, sae, corpus, dpath, key, cfg, report, stop_after_chunks, stats: StatsSource
) -> None:
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
        builder = _Builder(sae, corpus.items, embedder, cfg, dpath, key, report, meta, timer, stats)
        builder.run(stop_after_chunks)
    finally:
        embedder.close()


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
    names (they need the text encoder). Per-modality statistics come from the rows of
    ``items`` of that modality; without ``items`` the modality of the rows is unknown and
    every row goes through the checkpoint's statistics.
    """
    if x_nd.ndim != 2 or x_nd.shape[1] != sae.n_inputs:
        raise ValueError(f"embeddings must be [n, {sae.n_inputs}], got shape {x_nd.shape}")
    if len(x_nd) == 0:
        raise ValueError("no embeddings to index")
    if items is None:
        items, plan = _NumberedTexts(len(x_nd)), StatsPlan(CHECKPOINT, CHECKPOINT)
    else:
        plan = plan_stats(sae, {item.modality for item in items})
    if len(items) != len(x_nd):
        raise ValueError(f"{len(items)} items for {len(x_nd)} embeddings")
    dpath = Path(dpath)
    digest = hashlib.sha256()  # every row: a cache must never outlive a change to its input
    for start in range(0, len(x_nd), 4096):  # small blocks: no big transient copies
        digest.update(np.ascontiguousarray(x_nd[start : start + 4096]).reshape(-1).view(np.uint8))
    payload = plan.key_payload()
    if payload is not None:  # which rows are texts decides the statistics
        is_text = bytes(item.modality == "text" for item in items)
        payload["modalities"] = hashlib.sha256(is_text).hexdigest()
    key = cache_key(
        f"embeddings:{x_nd.shape}:{digest.hexdigest()}", sae.content_hash, "", cfg, payload
    )
    stats = StatsSource(plan, lambda: embeddings_stats(sae, x_nd, items, plan))
    with build_lock(dpath, progress):
        index = _reuse(dpath, key)
        if index is None:
            _build_from_embeddings(
                sae, x_nd, items, dpath, key, cfg, progress, stop_after_chunks, stats
            )
            index = ActivationIndex.load(dpath)
    return index


def _build_from_embeddings(
    sae, x_nd, items, dpath, key, cfg, progress, stop_after_chunks, stats: StatsSource
) -> None:
    dpath.mkdir(parents=True, exist_ok=True)

    def embed(positions: range) -> ChunkEmbeddings:
        rows = np.asarray(x_nd[positions.start : positions.stop], dtype=np.float32)
        return ChunkEmbeddings(
            np.arange(positions.start, positions.stop), torch.from_numpy(rows), []
        )

    meta = {"encoder": {"model_id": "precomputed", "embed_dim": sae.n_inputs}}
    report = progress or (lambda frac, msg: None)
    builder = _Builder(sae, items, embed, cfg, dpath, key, report, meta, _Timer(), stats)
    builder.run(stop_after_chunks)


class _NumberedTexts(Sequence):
    """Placeholder items ``item<i>`` for bare embeddings, made on demand (no list of 1M)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        if not -self.n <= i < self.n:
            raise IndexError(i)
        return CorpusItem(f"item{i % self.n}", "text", "")


@contextlib.contextmanager
def build_lock(dpath: Path, progress: Progress | None = None) -> Iterator[None]:
    """Hold an exclusive lock on building ``dpath`` (a ``.<name>.lock`` file beside it).

    A second process that asks for the same index waits here, then finds it finished instead
    of writing into the same folder. POSIX ``flock``; no lock where that does not exist.
    """
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    dpath.parent.mkdir(parents=True, exist_ok=True)
    with open(dpath.parent / f".{dpath.name}.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another process is building %s; waiting for it", dpath)
            if progress is not None:
                progress(0.0, "another process is building this index; waiting for it")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


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

    Words are texts: they go through the SAE as the index's texts did (with text statistics
    for an image-trained SAE).
    """
    if not cfg.names:
        return
    from sae_explorer import naming

    words, source = vocabulary_for(encoder, corpus, cfg)
    existing = index.names
    if existing is not None and existing.key == naming.vocabulary_hash(words):
        return
    t0 = time.perf_counter()
    embeddings_vd = _vocabulary_embeddings(
        encoder, words, cache_root, lambda f, m: report(0.95 + 0.04 * f, m)
    )
    text_sae = index.input_stats.saes(sae).text
    names = naming.name_latents(
        encoder, text_sae, words, embeddings_vd=embeddings_vd, source=source
    )
    names.save(index.dpath)
    index.__dict__.pop("names", None)  # drop the cached (older) names
    timings = dict(index.manifest.get("timings", {}), naming_s=round(time.perf_counter() - t0, 3))
    index.manifest["timings"] = timings
    report(1.0, f"named {sae.n_latents} latents from {len(words)} words")


def _vocabulary_embeddings(
    encoder, words: list[str], cache_root: Path, progress: Progress
) -> torch.Tensor:
    """Raw text embeddings [n_words, d] of a vocabulary.

    They depend only on the CLIP model, so they are cached under ``<cache_root>/vocab`` and
    shared by every SAE and corpus (on a CPU, embedding thousands of words with a full-size
    text tower takes minutes).
    """
    from sae_explorer import naming

    vocab_key = hashlib.sha256(f"{encoder.cache_id}\n{naming.vocabulary_hash(words)}".encode())
    vocab_fpath = Path(cache_root) / "vocab" / f"{vocab_key.hexdigest()[:20]}.npy"
    if vocab_fpath.is_file():
        try:
            cached = np.load(vocab_fpath, allow_pickle=False)
            if cached.shape == (len(words), encoder.embed_dim):
                return torch.from_numpy(cached)
        except (OSError, ValueError) as e:
            log.warning("ignoring the unreadable vocabulary cache %s: %s", vocab_fpath, e)
    embeddings_vd = naming.embed_words(encoder, words, progress=progress)
    vocab_fpath.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_npy(vocab_fpath, embeddings_vd.numpy())
    return embeddings_vd


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
    """CLIP embeddings of corpus items, chunk by chunk.

    Images are decoded by DataLoader worker *processes* that run ahead across chunks: threads
    could not keep a GPU fed (on an H100, 4-16 decoding threads gave ViT-B-32 9-19% of its bare
    speed). Workers run only the PIL steps of preprocessing; the main process finishes whole
    batches on the model's device (``preprocess.finish``).
    """

    def __init__(self, encoder: ClipEncoder, corpus: Corpus, cfg: PrecomputeConfig, timer: _Timer):
        self.encoder, self.corpus, self.cfg, self.timer = encoder, corpus, cfg, timer
        self._stream: Iterator = iter(())
        self._planned: deque[tuple[int, int, int]] = deque()  # (start, stop, n_batches)

    def close(self) -> None:
        self._stream = iter(())  # the DataLoader iterator shuts its workers down when dropped

    def __call__(self, positions: range) -> ChunkEmbeddings:
        items = self.corpus.items
        text_pos = [p for p in positions if items[p].modality == "text"]
        embedded: dict[int, torch.Tensor] = {}
        skipped: list[dict] = []
        for pos_b, x_bd, errors in self._image_batches(positions):
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

    def _open_stream(self, positions: range) -> None:
        """Decode every image from ``positions`` to the end of the corpus, in chunks of
        ``positions``' length and then ``chunk_size``, batch by batch in order."""
        items, bs = self.corpus.items, self.cfg.batch_size
        bounds = [positions.start, positions.stop]
        bounds += range(positions.stop + self.cfg.chunk_size, len(items), self.cfg.chunk_size)
        bounds = sorted({min(b, len(items)) for b in bounds} | {len(items)})
        batches, self._planned = [], deque()
        for lo, hi in itertools.pairwise(bounds):
            image_pos = [p for p in range(lo, hi) if items[p].modality == "image"]
            chunk_batches = [image_pos[s : s + bs] for s in range(0, len(image_pos), bs)]
            batches += chunk_batches
            self._planned.append((lo, hi, len(chunk_batches)))
        self._stream = iter(())
        if batches:
            from torch.utils.data import DataLoader

            workers = min(self.cfg.n_workers, os.cpu_count() or 1)  # more only thrash
            loader = DataLoader(
                _ImageDecoder(items, self.encoder.preprocess),
                batch_sampler=batches,
                num_workers=workers,
                collate_fn=_collate_images,
                prefetch_factor=4 if workers else None,
                pin_memory=torch.device(self.encoder.device).type == "cuda",
            )
            self._stream = iter(loader)

    def _image_batches(self, positions: range) -> Iterator[tuple[list[int], torch.Tensor, list]]:
        """Encoded image batches of the chunk ``positions``; the workers decode ahead."""
        if not self._planned or self._planned[0][:2] != (positions.start, positions.stop):
            self._open_stream(positions)  # first call, or not the chunk planned next
        for _ in range(self._planned.popleft()[2]):
            t0 = time.perf_counter()
            ok_pos, pixels, errors = next(self._stream)
            self.timer.add("decode_wait_s", time.perf_counter() - t0)
            if not ok_pos:
                yield [], torch.zeros(0, self.encoder.embed_dim), errors
                continue
            t0 = time.perf_counter()
            if pixels.dtype == torch.uint8:  # [n, H, W, 3] from the PIL steps
                pixels = self.encoder.preprocess.finish(pixels, self.encoder.device)
            x_bd = self.encoder.encode_pixels(pixels)
            self.timer.add("clip_image_s", time.perf_counter() - t0)
            yield ok_pos, x_bd, errors


class _ImageDecoder(torch.utils.data.Dataset):
    """Corpus position -> (position, pixels or None, error or None); runs in worker processes."""

    def __init__(self, items: Sequence[CorpusItem], preprocess) -> None:
        self.items, self.preprocess = items, preprocess

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, pos: int) -> tuple[int, np.ndarray | torch.Tensor | None, dict | None]:
        item = self.items[pos]
        prepare = self.preprocess.to_array if self.preprocess.splits else self.preprocess
        try:
            return pos, prepare(load_item_image(item)), None
        except (ValueError, OSError) as e:
            return pos, None, {"item_id": item.item_id, "source": item.source, "error": str(e)}


def _collate_images(samples: list[tuple]) -> tuple[list[int], torch.Tensor | None, list[dict]]:
    """One batch: the positions that decoded, their pixels stacked (uint8 ``[n, H, W, 3]`` from
    the PIL steps, or finished float ``[n, 3, H, W]``; tensors travel in shared memory), and
    the errors of the others."""
    ok = [pos for pos, pixels, _ in samples if pixels is not None]
    pixels = [pixels for _, pixels, _ in samples if pixels is not None]
    errors = [error for _, _, error in samples if error is not None]
    if not pixels:
        return ok, None, errors
    if isinstance(pixels[0], np.ndarray):
        return ok, torch.from_numpy(np.stack(pixels)), errors
    return ok, torch.stack(pixels), errors


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


class _Appenders(NamedTuple):
    """The growing files of a build, appended chunk by chunk (``.npy`` once closed)."""

    embeddings: NpyAppender  # float16 [n_ok, d]
    indptr: NpyAppender  # int64 [n_ok + 1]
    ids: NpyAppender  # int32 [nnz]
    values: NpyAppender  # float16 [nnz]
    corpus_idx: NpyAppender  # int64 [n_ok], build-only (goes into items.parquet)
    n_active: NpyAppender  # int32 [n_ok], build-only

    @classmethod
    def open(cls, dpath: Path, d: int, rows: dict[str, int] | None) -> _Appenders:
        rows = rows or {}
        specs = {
            "embeddings": (dpath / EMBEDDINGS_NAME, np.float16, (d,)),
            "indptr": (dpath / CODES_NAMES[0], np.int64, ()),
            "ids": (dpath / CODES_NAMES[1], np.int32, ()),
            "values": (dpath / CODES_NAMES[2], np.float16, ()),
            "corpus_idx": (dpath / BUILD_ONLY_NAMES["corpus_idx"], np.int64, ()),
            "n_active": (dpath / BUILD_ONLY_NAMES["n_active"], np.int32, ()),
        }
        out = cls(
            **{k: NpyAppender(*spec, resume_rows=rows.get(k, 0)) for k, spec in specs.items()}
        )
        if not rows:
            out.indptr.append(np.zeros(1, dtype=np.int64))
        return out

    def rows(self) -> dict[str, int]:
        return {name: appender.n_rows for name, appender in self._asdict().items()}

    def flush(self) -> None:
        for appender in self:
            appender.flush()


class _Builder:
    """Chunked, resumable pass: embeddings -> SAE -> accumulator + codes -> index files.

    Embeddings and codes are appended to the index's own files as chunks finish; the
    accumulator's state is saved with the row counts of those files (a checkpoint) after a
    chunk at most every ``CHECKPOINT_EVERY_S``, and when a run is stopped. A resumed run cuts
    the files back to the checkpoint and goes on from the chunk after it.
    """

    CHECKPOINT_EVERY_S = 10.0

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

    def _use_stats(self, stats: ModalityStats) -> None:
        self.stats, self.saes = stats, stats.saes(self.sae)

    def _saved_stats(self) -> ModalityStats:
        """The statistics a resumed build started with; ValueError if they are not the plan's."""
        stats = ModalityStats.load(self.dpath)
        planned = {m: self.stats_source.plan.origin(m) != CHECKPOINT for m in MODALITIES}
        if {m: stats.own(m) is not None for m in MODALITIES} != planned:
            raise ValueError("its input statistics are missing or not the planned ones")
        return stats

    # ------------------------------------------------------------------ resume
    def _resume(self) -> tuple[LatentAccumulator, int, list[dict], _Appenders]:
        progress_fpath = self.dpath / PROGRESS_NAME
        if progress_fpath.is_file():
            try:
                state = json.loads(progress_fpath.read_text())
                if state["key"] != self.key or state["chunk_size"] != self.cfg.chunk_size:
                    raise ValueError("written with other settings")
                stats = self._saved_stats()
                with np.load(self.dpath / STATE_NAME, allow_pickle=False) as arrays:
                    acc = LatentAccumulator.from_state(dict(arrays))
                if acc.n_items != state["n_ok"] or state["rows"]["embeddings"] != acc.n_items:
                    raise ValueError("accumulator and progress disagree")
                files = _Appenders.open(self.dpath, self.sae.n_inputs, state["rows"])
                for name, seconds in state.get("timings", {}).items():
                    self.timer.add(name, seconds)
                n_done = int(state["n_chunks_done"])
                log.info("resuming %s after chunk %d/%d", self.dpath, n_done, self.n_chunks)
                self._use_stats(stats)
                return acc, n_done, state["skipped"], files
            except (ValueError, KeyError, TypeError, OSError, AssertionError) as e:
                log.warning("cannot resume %s (%s); starting over", self.dpath, e)
        clear_index_dpath(self.dpath, keep=True)  # start clean
        t0 = time.perf_counter()
        self._use_stats(self.stats_source.compute())
        self.stats.save(self.dpath)
        if not self.stats_source.plan.checkpoint_only:
            self.timer.add("input_stats_s", time.perf_counter() - t0)
        acc = LatentAccumulator(
            self.sae.n_latents, self.cfg.top_m, self.cfg.n_samples, self.n_levels, self.cfg.seed
        )
        return acc, 0, [], _Appenders.open(self.dpath, self.sae.n_inputs, None)

    def _checkpoint(
        self, acc: LatentAccumulator, files: _Appenders, n_chunks_done: int, skipped: list[dict]
    ) -> None:
        """Files first, then the state that counts their rows: a crash in between only
        redoes the chunks since the previous checkpoint."""
        files.flush()
        atomic_save_npz(self.dpath / STATE_NAME, acc.state())
        progress_state = {
            "key": self.key,
            "chunk_size": self.cfg.chunk_size,
            "n_chunks_done": n_chunks_done,
            "n_ok": acc.n_items,
            "rows": files.rows(),
            "skipped": skipped,
            "timings": self.timer.totals,
        }
        atomic_write_json(self.dpath / PROGRESS_NAME, progress_state)

    def run(self, stop_after_chunks: int | None = None) -> None:
        t_start = time.perf_counter()
        acc, n_done, skipped, files = self._resume()
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
                lo = c * self.cfg.chunk_size
                chunk = self.embed(range(lo, min(lo + self.cfg.chunk_size, n_items)))
                t0 = time.perf_counter()
                files.embeddings.append(chunk.x_nd.numpy())
                files.corpus_idx.append(chunk.ok_pos)
                self._encode_latents(chunk, acc, files, pool, threads)
                self.timer.add("sae_index_s", time.perf_counter() - t0)
                skipped.extend(chunk.skipped)
                done = min(lo + self.cfg.chunk_size, n_items)
                is_last = c == self.n_chunks - 1
                if not is_last and time.perf_counter() - last_checkpoint >= self.CHECKPOINT_EVERY_S:
                    t0 = time.perf_counter()
                    self._checkpoint(acc, files, c + 1, skipped)
                    last_checkpoint = time.perf_counter()
                    self.timer.add("checkpoint_s", last_checkpoint - t0)
                self.report(0.9 * done / n_items, f"encoded {done}/{n_items} items")
        self.report(0.9, "writing the index")
        self._finish(acc, skipped, files, time.perf_counter() - t_start)

    def _sae_batch(
        self, x_bd: torch.Tensor, is_image_b: np.ndarray, threads: int
    ) -> tuple[ActiveEntries, SparseCodes, torch.Tensor | None]:
        """Everything per batch that does not touch shared state (runs in the worker pool).

        A fresh thread runs torch ops with OpenMP's default thread count until it sets its
        own, and the count changes float results in the last bits: set it every time, so a
        resumed run reproduces an uninterrupted one exactly."""
        torch.set_num_threads(threads)
        with torch.inference_mode():
            z_bl = self.saes.encode(x_bd.to(self.sae.latent_bias.device), is_image_b)
            levels_bl = self.sae.latent_levels(z_bl).cpu() if self.n_levels else None
        entries = active_entries(z_bl)
        return entries, top_codes(entries, self.cfg.top_k), levels_bl

    def _encode_latents(
        self,
        chunk: ChunkEmbeddings,
        acc: LatentAccumulator,
        files: _Appenders,
        pool: ThreadPoolExecutor,
        threads: int,
    ) -> None:
        """SAE pass over one chunk. Each worker encodes and cuts a batch; the merges into
        ``acc`` and the code files happen in batch order (:class:`InOrder`), and no thread
        beyond the workers competes for the cores."""
        is_image_n = np.array([self.items[p].modality == "image" for p in chunk.ok_pos], bool)
        first_idx, bs = acc.n_items, self.cfg.sae_batch_size

        def merge(s: int, result: tuple[ActiveEntries, SparseCodes, torch.Tensor | None]) -> None:
            entries, codes, levels_bl = result
            b = entries.n_items
            item_idx_b = np.arange(first_idx + s, first_idx + s + b)
            acc.update(entries, item_idx_b, is_image_n[s : s + b], levels_bl)
            files.indptr.append(files.values.n_rows + np.cumsum(codes.counts_b))
            files.ids.append(codes.ids)
            files.values.append(codes.values)
            files.n_active.append(entries.count_b)

        in_order = InOrder(merge)

        def work(i: int, s: int) -> None:
            result = self._sae_batch(chunk.x_nd[s : s + bs], is_image_n[s : s + bs], threads)
            in_order.deliver(i, s, result)

        starts = range(0, len(chunk.ok_pos), bs)
        for future in [pool.submit(work, i, s) for i, s in enumerate(starts)]:
            future.result()

    # ------------------------------------------------------------------ assembly
    def _finish(
        self, acc: LatentAccumulator, skipped: list[dict], files: _Appenders, run_s: float
    ) -> None:
        t0 = time.perf_counter()
        release_free_heap()  # the batch loop's freed temporaries, before the assembly's own
        n_items, nnz = files.embeddings.n_rows, files.ids.n_rows
        assert n_items == acc.n_items, (n_items, acc.n_items)
        if n_items == 0:
            shutil.rmtree(self.dpath)
            raise ValueError(
                f"none of the {len(self.items)} corpus items could be read; first problems: "
                f"{[s['error'] for s in skipped[:3]]}"
            )
        for appender in files:
            appender.close()
        corpus_idx = np.load(files.corpus_idx.fpath)
        n_active = np.load(files.n_active.fpath)
        write_latent_arrays(self.dpath, acc.finish())
        import pyarrow.parquet as pq

        with atomic_path(self.dpath / ITEMS_NAME) as tmp:
            pq.write_table(items_table(self.items, corpus_idx, n_active), tmp)
        self.timer.add("finish_s", time.perf_counter() - t0)
        timings = {k: round(v, 3) for k, v in self.timer.totals.items()}
        timings["build_s"] = round(run_s + time.perf_counter() - t0, 3)
        n_images = int(
            np.count_nonzero([self.items[int(i)].modality == "image" for i in corpus_idx])
        )
        d = self.sae.n_inputs
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
            "input_stats": self.stats.manifest(),
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
        for fpath in (files.corpus_idx.fpath, files.n_active.fpath):
            fpath.unlink()
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


def items_table(items: Sequence[CorpusItem], corpus_idx_n: np.ndarray, n_active_n: np.ndarray):
    """The items table of an index (Arrow): corpus columns, ``n_active``, ground truth as
    ``attr_*``. Built with pyarrow alone: pandas would add its import and a copy of every
    string to the build's peak memory."""
    import pyarrow as pa

    chosen = [items[int(i)] for i in corpus_idx_n]
    modalities = ["image", "text"]
    modality_n = np.array([it.modality == "text" for it in chosen], dtype=np.int8)
    columns = {
        "item_id": pa.array([it.item_id for it in chosen], pa.string()),
        "modality": pa.DictionaryArray.from_arrays(modality_n, pa.array(modalities)),
        "source": pa.array([it.source for it in chosen], pa.string()),
        "label": pa.array([it.label for it in chosen]),
        "corpus_idx": pa.array(corpus_idx_n.astype(np.int64)),
        "n_active": pa.array(n_active_n.astype(np.int32)),
    }
    names: dict[str, None] = {}
    for it in chosen:
        names.update(dict.fromkeys(it.attributes or ()))
    for name in names:
        columns[f"attr_{name}"] = pa.array([(it.attributes or {}).get(name) for it in chosen])
    return pa.table(columns)


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
    add_dataclass_args(parser, PrecomputeConfig)
    parser.add_argument(
        "--force", action="store_true", help="rebuild even if a finished index exists"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from tqdm import tqdm

    from sae_explorer.checkpoints import load_sae
    from sae_explorer.corpus import load_corpus
    from sae_explorer.encoder import load_encoder

    try:
        cfg = dataclass_from_args(PrecomputeConfig, args)
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
            key = corpus_key(encoder, sae, corpus, cfg).key
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
        f"\n  input statistics: {json.dumps(index.manifest.get('input_stats'))}"
        f"\n  timings: {json.dumps(index.manifest['timings'])}  (this call {total:.1f}s)"
    )
    return 0
