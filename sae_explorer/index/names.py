"""Vocabulary names of an index's latents: which vocabulary, its cached embeddings, and naming
once per vocabulary (the names are kept in the index folder, see :mod:`sae_explorer.naming`),
each name scored against the indexed items (:mod:`sae_explorer.name_scores`)."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from sae_explorer import builtin
from sae_explorer.atomic import atomic_save_npy
from sae_explorer.corpus import SOURCE_SEPARATOR

if TYPE_CHECKING:
    from sae_explorer.corpus import Corpus
    from sae_explorer.encoder import ClipEncoder
    from sae_explorer.index.reader import ActivationIndex
    from sae_explorer.precompute import PrecomputeConfig
    from sae_explorer.progress import Progress
    from sae_explorer.sae import SAE

log = logging.getLogger(__name__)


class Vocabulary(NamedTuple):
    words: list[str]
    source: str  # where the words came from, e.g. "wordfreq:en:3000+shapes"


def vocabulary_for(encoder: ClipEncoder, corpus: Corpus, cfg: PrecomputeConfig) -> Vocabulary:
    """The vocabulary this run names latents with, and a description of where it came from."""
    from sae_explorer import naming

    if cfg.vocabulary is not None:
        return Vocabulary(naming.load_vocabulary(cfg.vocabulary), str(cfg.vocabulary))
    world = builtin.world_of(encoder.model_id, *corpus.source.split(SOURCE_SEPARATOR))
    source = f"wordfreq:en:{cfg.n_words}" + (f"+{world.name}" if world else "")
    return Vocabulary(naming.default_vocabulary(world and world.name, cfg.n_words), source)


def vocabulary_embeddings(
    encoder: ClipEncoder, words: list[str], cache_root: Path, progress: Progress
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
    try:
        vocab_fpath.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_npy(vocab_fpath, embeddings_vd.numpy())
    except OSError as e:  # a full or read-only cache: only the next run pays for it
        log.warning("could not cache the vocabulary embeddings at %s: %s", vocab_fpath, e)
    return embeddings_vd


def ensure_names(
    index: ActivationIndex,
    encoder: ClipEncoder,
    sae: SAE,
    corpus: Corpus,
    cfg: PrecomputeConfig,
    report: Progress,
    cache_root: Path,
) -> None:
    """Compute and store vocabulary names, scored against the index's items, unless the index
    has them for this vocabulary (names stored before scores existed are scored and kept).

    Words are texts: they go through the SAE as the index's texts did (with text statistics
    for an image-trained SAE). Damaged names count as none (they are computed again); names
    that cannot be saved (a full or read-only cache) are kept for this run.
    """
    if not cfg.names:
        return
    from sae_explorer import naming
    from sae_explorer.name_scores import score_candidates

    words, source = vocabulary_for(encoder, corpus, cfg)
    existing = index.names
    same_words = existing is not None and existing.key == naming.vocabulary_hash(words)
    if same_words and existing.scored:
        return
    t0 = time.perf_counter()
    embeddings_vd = vocabulary_embeddings(
        encoder, words, cache_root, lambda f, m: report(0.95 + 0.02 * f, m)
    )
    if same_words:
        names = existing
    else:
        text_sae = index.input_stats.saes(sae).text
        names = naming.name_latents(
            encoder, text_sae, words, embeddings_vd=embeddings_vd, source=source
        )
    scores = score_candidates(
        index, embeddings_vd.numpy(), names.word_ids_ln, lambda f, m: report(0.97 + 0.02 * f, m)
    )
    names = names.with_scores(scores)
    try:
        names.save(index.dpath)
    except OSError as e:  # a full or read-only cache: the names serve this run only
        log.warning(
            "could not save the latent names in %s (%s); naming again next run", index.dpath, e
        )
    index.__dict__["names"] = names  # replaces the cached (older or damaged) names
    timings = dict(index.manifest.get("timings", {}), naming_s=round(time.perf_counter() - t0, 3))
    index.manifest["timings"] = timings
    n_named = int(names.named_l.sum())
    report(1.0, f"named {n_named} of {sae.n_latents} latents from {len(words)} words")
