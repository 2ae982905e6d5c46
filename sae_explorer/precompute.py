"""Precompute: encode a corpus with CLIP and an SAE once, and keep an activation index.

:func:`precompute` builds (or reuses, or resumes) the index of a corpus under a cache root;
:func:`index_embeddings` does the same for CLIP embeddings computed elsewhere. Both hold the
folder's build lock from the moment they look at it until the index is finished, so a second
process waits for the first and then reuses its index. How the pieces work is in
:mod:`sae_explorer.index` (format and reader), :mod:`~sae_explorer.index.build` (the chunked,
resumable pass), :mod:`~sae_explorer.index.embed` (CLIP over corpus items),
:mod:`~sae_explorer.index.cache` (keys, lock, clearing) and :mod:`~sae_explorer.index.names`.

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
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from sae_explorer.cli import add_dataclass_args, add_source_args, dataclass_from_args, doc
from sae_explorer.corpus import Corpus, CorpusItem, default_cache_dpath
from sae_explorer.index import ActivationIndex, IndexCounts
from sae_explorer.index.build import (
    INDEX_ON,
    ChunkEmbeddings,
    IndexBuilder,
    InOrder,
    StatsSource,
    Timer,
    release_free_heap,
)
from sae_explorer.index.cache import (
    CacheError,
    build_lock,
    cache_key,
    clear_index_dpath,
    held_for_building,
    index_dpath,
    read_finished,
    reuse_index,
)
from sae_explorer.index.embed import OVERLAPS, ArrayEmbedder, CorpusEmbedder, Overlap
from sae_explorer.index.items import items_table
from sae_explorer.index.names import (
    Vocabulary,
    ensure_names,
    vocabulary_embeddings,
    vocabulary_for,
)
from sae_explorer.modality_stats import (
    CHECKPOINT,
    StatsPlan,
    corpus_stats,
    embeddings_stats,
    plan_stats,
)
from sae_explorer.pixels import DECODERS, PRECISIONS, Decoder, Precision
from sae_explorer.progress import Progress

if TYPE_CHECKING:
    import torch

    from sae_explorer.encoder import ClipEncoder
    from sae_explorer.sae import SAE

__all__ = [  # what this module offers, including names whose home is now sae_explorer.index
    "ChunkEmbeddings",
    "InOrder",
    "KeyedPlan",
    "PrecomputeConfig",
    "StatsSource",
    "Vocabulary",
    "build_lock",
    "build_parser",
    "cache_key",
    "clear_index_dpath",
    "corpus_key",
    "index_dpath",
    "index_embeddings",
    "items_table",
    "main",
    "precompute",
    "release_free_heap",
    "vocabulary_for",
]


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
    batch_size: int = field(
        default=0,
        metadata=doc(
            "images per CLIP batch, texts 4x (0: sized to the device: 256 on a GPU, 64 on a CPU)"
        ),
    )
    precision: Precision = field(
        default="auto",
        metadata=doc(
            "the CLIP towers' float type: fp32, fp16, bf16, or auto (fp16 on a GPU, fp32 on a "
            "CPU); refused where the device's torch cannot run it"
        ),
    )
    decode: Decoder = field(
        default="auto",
        metadata=doc(
            "who decodes JPEGs: torch (torchvision, on the model's device: nvJPEG on a GPU; "
            "resize and crop there too), pil (worker processes), auto (torch on CUDA, pil on a "
            "CPU, where PIL is the faster); other formats always go through PIL"
        ),
    )
    overlap: Overlap = field(
        default="auto",
        metadata=doc(
            "embed the next chunk in a thread while the SAE indexes this one: on, off, auto (on "
            "with an accelerator; off on a CPU, where both stages share the cores)"
        ),
    )
    sae_batch_size: int = field(
        default=512, metadata=doc("embeddings per SAE batch (larger is no faster, only bigger)")
    )
    sae_workers: int = field(
        default=2, metadata=doc("threads running SAE batches side by side, merged in order")
    )
    index_on: str = field(
        default="auto",
        metadata=doc(
            "where the top-k codes and per-latent statistics are computed: device (torch, where "
            "the SAE runs), host (numpy), auto (device on an accelerator, host on a CPU)"
        ),
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
        positive = ("top_k", "top_m", "n_samples", "chunk_size", "sae_batch_size")
        for name in (*positive, "sae_workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_workers < 0 or self.n_words < 0 or self.batch_size < 0:
            raise ValueError("n_workers, n_words and batch_size must be >= 0")
        choices = {
            "index_on": INDEX_ON,
            "precision": PRECISIONS,
            "decode": DECODERS,
            "overlap": OVERLAPS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")

    def encoder_id(self, encoder: ClipEncoder) -> str:
        """What the cache key names the encoder by: its ``cache_id``, with the precision the
        towers will run in unless that is fp32 (so fp32 builds keep the keys of indexes built
        before the setting, and an fp16 build on a GPU never shares a key with an fp32 one)."""
        resolved = encoder.precision if self.precision == "auto" else self.precision
        return encoder.cache_id if resolved == "fp32" else f"{encoder.cache_id}@{resolved}"


class KeyedPlan(NamedTuple):
    key: str
    plan: StatsPlan


def corpus_key(encoder: ClipEncoder, sae: SAE, corpus: Corpus, cfg: PrecomputeConfig) -> KeyedPlan:
    """The index key of ``corpus`` and the statistics plan that is part of it."""
    modalities = {item.modality for item in corpus.items}
    plan = plan_stats(sae, modalities, lambda: vocabulary_for(encoder, corpus, cfg).words)
    key = cache_key(
        cfg.encoder_id(encoder), sae.content_hash, corpus.manifest_hash, cfg, plan.key_payload()
    )
    return KeyedPlan(key, plan)


# --------------------------------------------------------------------------- entry points
def precompute(
    encoder: ClipEncoder,
    sae: SAE,
    corpus: Corpus,
    cache_root: str | Path | None = None,
    cfg: PrecomputeConfig = PrecomputeConfig(),
    progress: Progress | None = None,
    stop_after_chunks: int | None = None,
    force: bool = False,
) -> ActivationIndex:
    """Build (or reuse, or resume) the activation index of ``corpus`` under ``cache_root``.

    ``progress(frac, message)`` is called as work advances. ``force`` rebuilds from scratch,
    deleting a finished or unfinished index of the same key under the build lock (never while
    another process builds it or checks it for reuse). ``stop_after_chunks`` ends the run early
    after that many new chunks (leaving a resumable folder) and raises ``InterruptedError``;
    tests use it to simulate an interruption. A read-only cache serves its finished index
    (``CacheError`` when it has none); a full disk removes the unfinished index and raises
    ``CacheError``.
    """
    check_inputs(encoder, sae, corpus)
    cache_root = Path(cache_root) if cache_root is not None else default_cache_dpath()
    key, plan = corpus_key(encoder, sae, corpus, cfg)
    dpath = index_dpath(cache_root, key)
    report = progress or (lambda frac, msg: None)
    with held_for_building(dpath, report) as unwritable:
        if unwritable is not None:  # a read-only cache: its finished index is all it can give
            index = read_finished(dpath, key, unwritable)
        else:
            if force and dpath.exists():
                clear_index_dpath(dpath)
            index = reuse_index(dpath, key)
        if index is not None:
            report(1.0, f"index found: {index.n_items} items")
        else:
            stats = corpus_stats_source(encoder, sae, corpus, cfg, plan, cache_root, report)
            _build_from_corpus(
                encoder, sae, corpus, dpath, key, cfg, report, stop_after_chunks, stats
            )
            index = ActivationIndex.load(dpath)
        ensure_names(index, encoder, sae, corpus, cfg, report, cache_root)
        index.prepare_serving(report)
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
    names (they need the text encoder). Per-modality statistics come from the rows of
    ``items`` of that modality; without ``items`` the modality of the rows is unknown and
    every row goes through the checkpoint's statistics.
    """
    if x_nd.ndim != 2 or x_nd.shape[1] != sae.n_inputs:
        raise ValueError(f"embeddings must be [n, {sae.n_inputs}], got shape {x_nd.shape}")
    if len(x_nd) == 0:
        raise ValueError("no embeddings to index")
    if items is None:
        items, plan = NumberedTexts(len(x_nd)), StatsPlan(CHECKPOINT, CHECKPOINT)
    else:
        plan = plan_stats(sae, {item.modality for item in items})
    if len(items) != len(x_nd):
        raise ValueError(f"{len(items)} items for {len(x_nd)} embeddings")
    dpath = Path(dpath)
    key = _embeddings_key(sae, x_nd, items, plan, cfg)
    stats = StatsSource(plan, lambda: embeddings_stats(sae, x_nd, items, plan))
    with held_for_building(dpath, progress) as unwritable:
        if unwritable is not None:
            return read_finished(dpath, key, unwritable)
        index = reuse_index(dpath, key)
        if index is None:
            dpath.mkdir(parents=True, exist_ok=True)
            meta = {"encoder": {"model_id": "precomputed", "embed_dim": sae.n_inputs}}
            report = progress or (lambda frac, msg: None)
            embed = ArrayEmbedder(x_nd)
            builder = IndexBuilder(sae, items, embed, cfg, dpath, key, report, meta, Timer(), stats)
            builder.run(stop_after_chunks)
            index = ActivationIndex.load(dpath)
        index.prepare_serving(progress)
    return index


# --------------------------------------------------------------------------- the steps
def check_inputs(encoder: ClipEncoder, sae: SAE, corpus: Corpus) -> None:
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


def corpus_stats_source(
    encoder, sae, corpus, cfg: PrecomputeConfig, plan: StatsPlan, cache_root: Path, report
) -> StatsSource:
    """The corpus build's statistics: corpus items of a modality the SAE was not trained on,
    or the vocabulary's text embeddings (cached with the names' ones)."""

    def words_embeddings() -> torch.Tensor:
        words = vocabulary_for(encoder, corpus, cfg).words
        return vocabulary_embeddings(encoder, words, cache_root, lambda f, m: report(0, m))

    return StatsSource(
        plan, lambda: corpus_stats(encoder, sae, corpus.items, plan, words_embeddings, report)
    )


def _build_from_corpus(
    encoder, sae, corpus, dpath, key, cfg, report, stop_after_chunks, stats: StatsSource
) -> None:
    dpath.mkdir(parents=True, exist_ok=True)
    timer = Timer()
    embedder = CorpusEmbedder(encoder, corpus, cfg, timer)
    meta = build_meta(encoder, corpus)
    try:
        builder = IndexBuilder(
            sae, corpus.items, embedder, cfg, dpath, key, report, meta, timer, stats
        )
        builder.run(stop_after_chunks)
    finally:
        embedder.close()


def build_meta(encoder: ClipEncoder, corpus: Corpus) -> dict:
    """What a corpus build's manifest says its embeddings came from (shard files of the corpus
    that could not be read are listed there too)."""
    return {
        "encoder": {
            "model_id": encoder.model_id,
            "cache_id": encoder.cache_id,  # with a fingerprint of local weights
            "embed_dim": encoder.embed_dim,
        },
        "corpus": {
            "source": corpus.source,
            "manifest_hash": corpus.manifest_hash,
            "n_items": len(corpus),
            "unreadable_sources": [u._asdict() for u in corpus.unreadable],
        },
    }


def _embeddings_key(
    sae: SAE, x_nd: np.ndarray, items: Sequence[CorpusItem], plan: StatsPlan, cfg
) -> str:
    """The cache key of :func:`index_embeddings`: a hash of every row (a cache must never
    outlive a change to its input) and, where the plan needs it, of which rows are texts."""
    digest = hashlib.sha256()
    for start in range(0, len(x_nd), 4096):  # small blocks: no big transient copies
        digest.update(np.ascontiguousarray(x_nd[start : start + 4096]).reshape(-1).view(np.uint8))
    payload = plan.key_payload()
    if payload is not None:  # which rows are texts decides the statistics
        is_text = bytes(item.modality == "text" for item in items)
        payload["modalities"] = hashlib.sha256(is_text).hexdigest()
    return cache_key(
        f"embeddings:{x_nd.shape}:{digest.hexdigest()}", sae.content_hash, "", cfg, payload
    )


class NumberedTexts(Sequence):
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


# --------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sae_explorer precompute",
        description="Encode a corpus with CLIP and an SAE and build the latent activation index.",
    )
    add_source_args(parser)
    add_dataclass_args(parser, PrecomputeConfig)
    parser.add_argument(
        "--force", action="store_true", help="rebuild even if a finished index exists"
    )
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help="local: this process; ray: shards built by Ray actors across a cluster, then "
        "merged (the same index; the --ray-* options) (default: local)",
    )
    from sae_explorer.ray_engine import RayConfig

    add_dataclass_args(parser, RayConfig, "ray")
    return parser


ENGINES = ("local", "ray")
"""Where ``python -m sae_explorer precompute`` builds (``--engine``)."""


def _build_on_ray(args: argparse.Namespace, cfg: PrecomputeConfig, corpus: Corpus, progress):
    from sae_explorer.ray_engine import ModelSpec, RayConfig, precompute_on_ray

    ray_cfg = dataclass_from_args(RayConfig, args, "ray")
    models = ModelSpec(args.clip, args.sae, args.pretrained, args.device)
    build = precompute_on_ray(models, corpus, args.cache_dir, cfg, ray_cfg, progress, args.force)
    print(
        f"ray: {len(build.computed)} shards built, {len(build.reused)} found built"
        + (f", {build.retried} retried" if build.retried else ""),
        flush=True,
    )
    return build.index


def _check_engine(args: argparse.Namespace) -> None:
    """``--ray-*`` options only with ``--engine ray``: never silently ignored."""
    from sae_explorer.ray_engine import RayConfig

    if args.engine == "ray":
        return
    given = [f.name for f in fields(RayConfig) if getattr(args, f"ray_{f.name}") != f.default]
    if given:
        flags = ", ".join("--ray-" + name.replace("_", "-") for name in given)
        raise ValueError(f"{flags} apply only with --engine ray")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from tqdm import tqdm

    from sae_explorer.checkpoints import load_sae
    from sae_explorer.corpus import load_corpus
    from sae_explorer.encoder import load_encoder

    try:
        cfg = dataclass_from_args(PrecomputeConfig, args)
        _check_engine(args)
        t0 = time.perf_counter()
        if args.engine == "local":
            encoder = load_encoder(args.clip, args.pretrained, args.device, cfg.precision)
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
        for source in corpus.unreadable:
            print(f"skipped unreadable {source.source}: {source.error}", file=sys.stderr)
        with tqdm(total=1000, unit="‰", file=sys.stderr, dynamic_ncols=True) as bar:

            def progress(frac: float, msg: str) -> None:
                bar.n = int(1000 * frac)
                bar.set_description(msg, refresh=False)
                bar.refresh()

            t0 = time.perf_counter()
            if args.engine == "ray":
                index = _build_on_ray(args, cfg, corpus, progress)
            else:
                index = precompute(
                    encoder, sae, corpus, args.cache_dir, cfg, progress, force=args.force
                )
            total = time.perf_counter() - t0
    except (ValueError, CacheError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    counts = IndexCounts.from_manifest(index.manifest)
    print(
        f"index: {index.dpath}\n  {counts.n_items} items ({counts.n_images} images, "
        f"{counts.n_texts} texts), {counts.n_skipped} skipped, {counts.n_latents} latents"
        f"\n  input statistics: {json.dumps(index.manifest.get('input_stats'))}"
        f"\n  timings: {json.dumps(index.manifest['timings'])}  (this call {total:.1f}s)"
    )
    return 0
