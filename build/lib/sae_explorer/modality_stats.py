"""Input statistics per modality: an SAE trained on one CLIP modality encodes the other one with
that modality's own mean and scaling factor.

CLIP's image and text embeddings sit far apart (the modality gap). An SAE preprocesses its inputs
as ``(x - mean) * scaling_factor`` with the statistics of its training data; the released MSAE
checkpoints were trained on image embeddings only, so a text centred on the image mean keeps the
whole gap as one large offset the SAE never saw. MSAE's own extraction recomputes the mean and
the scaling factor on the text side before encoding texts, and so does the explorer: when the
checkpoint says it was trained on one modality (``sae.training_modality``), inputs of the other
modality go through statistics computed from the corpus's items of that modality (at most
``MAX_STATS_ITEMS``, spread evenly) or, for texts when the corpus has none, from the naming
vocabulary's text embeddings. The mean stays zero for an SAE that is not mean-centred, and the
scaling factor is MSAE's (mean norm of the centred data = ``sqrt(n_inputs)``) only when the
checkpoint's is not 1. An SAE trained on both modalities, or one that does not say, keeps its own
statistics for everything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from sae_explorer import naming
from sae_explorer.atomic import atomic_save_npz
from sae_explorer.corpus import MODALITIES, CorpusItem, Modality, load_item_image, spread_indices
from sae_explorer.index import INPUT_STATS_NAME
from sae_explorer.progress import Progress
from sae_explorer.sae import SAE, InputStats
from sae_explorer.train import msae_input_stats

if TYPE_CHECKING:
    from sae_explorer.encoder import ClipEncoder

log = logging.getLogger(__name__)

MAX_STATS_ITEMS = 10_000
"""Items of one modality its statistics are computed from, spread evenly over the corpus."""
CHECKPOINT = "checkpoint"
StatsOrigin = Literal["checkpoint", "corpus", "vocabulary"]


def needs_own_stats(sae: SAE, modality: Modality) -> bool:
    """Whether inputs of ``modality`` need statistics of their own: the checkpoint says the SAE
    was trained on the other modality only."""
    trained = sae.training_modality
    return trained in MODALITIES and trained != modality


# --------------------------------------------------------------------------- plan
class StatsPlan(NamedTuple):
    """Where each modality's statistics come from. Known before anything is embedded, so it can
    be part of an index's cache key."""

    image: StatsOrigin
    text: StatsOrigin
    vocabulary_hash: str | None = None
    """Hash of the vocabulary the text statistics come from (``text == "vocabulary"``)."""

    def origin(self, modality: Modality) -> StatsOrigin:
        return self.image if _check_modality(modality) == "image" else self.text

    @property
    def checkpoint_only(self) -> bool:
        return self.image == self.text == CHECKPOINT

    def key_payload(self) -> dict | None:
        """What an index's cache key adds for these statistics; None when every modality uses
        the checkpoint's (those keys stay what they were before per-modality statistics)."""
        if self.checkpoint_only:
            return None
        return {**self._asdict(), "max_items": MAX_STATS_ITEMS}


def plan_stats(
    sae: SAE,
    corpus_modalities: Collection[str],
    vocabulary: Callable[[], Sequence[str]] | None = None,
) -> StatsPlan:
    """Each modality's origin: the checkpoint when the SAE needs nothing else, else the corpus's
    items of that modality, else (texts) ``vocabulary()``, else the checkpoint with a warning."""
    origins: dict[str, StatsOrigin] = {}
    vocabulary_hash = None
    for modality in MODALITIES:
        if not needs_own_stats(sae, modality):
            origins[modality] = CHECKPOINT
        elif modality in corpus_modalities:
            origins[modality] = "corpus"
        elif modality == "text" and vocabulary is not None and (words := list(vocabulary())):
            origins[modality] = "vocabulary"
            vocabulary_hash = naming.vocabulary_hash(words)
        else:
            log.info(
                "the SAE was trained on %ss but nothing gives %s statistics (no corpus %ss%s); "
                "%ss are encoded with the checkpoint's statistics",
                sae.training_modality, modality, modality,
                ", no vocabulary" if modality == "text" else "", modality,
            )  # fmt: skip
            origins[modality] = CHECKPOINT
    return StatsPlan(origins["image"], origins["text"], vocabulary_hash)


# --------------------------------------------------------------------------- statistics
class OwnStats(NamedTuple):
    """Statistics computed for a modality the SAE was not trained on, and where they came from."""

    stats: InputStats
    source: str
    """e.g. ``corpus texts (n=5,000)`` or ``vocabulary (n=3,000)``."""


class ModalitySAEs(NamedTuple):
    """The SAE as each modality's inputs see it: weights shared, preprocessing per modality (the
    very same object for both when both use the checkpoint's statistics)."""

    image: SAE
    text: SAE

    def of(self, modality: Modality) -> SAE:
        return self.image if _check_modality(modality) == "image" else self.text

    @property
    def shared(self) -> bool:
        return self.image is self.text

    def encode(self, x_bd: Tensor, is_image_b: np.ndarray) -> Tensor:
        """Full latents [b, n_latents] of a batch mixing modalities, each row through its own
        modality's statistics; one call on the whole batch when both modalities share them."""
        if self.shared or is_image_b.all():
            return self.image.encode(x_bd)
        if not is_image_b.any():
            return self.text.encode(x_bd)
        mask_b = torch.as_tensor(is_image_b, dtype=torch.bool, device=x_bd.device)
        z_bl = x_bd.new_empty(x_bd.shape[0], self.image.n_latents)
        z_bl[mask_b] = self.image.encode(x_bd[mask_b])
        z_bl[~mask_b] = self.text.encode(x_bd[~mask_b])
        return z_bl


@dataclass(frozen=True)
class ModalityStats:
    """The statistics each modality's inputs are encoded with: their own where given, the
    checkpoint's where None (``ModalityStats()``: the checkpoint's for both)."""

    image: OwnStats | None = None
    text: OwnStats | None = None

    def own(self, modality: Modality) -> OwnStats | None:
        return self.image if _check_modality(modality) == "image" else self.text

    def source(self, modality: Modality) -> str:
        own = self.own(modality)
        return CHECKPOINT if own is None else own.source

    def describe(self, modality: Modality, training_modality: str | None) -> str:
        """One line saying which statistics an input went through, e.g. ``text statistics:
        corpus texts (n=5,000)`` or ``checkpoint (image) statistics``."""
        own = self.own(modality)
        if own is not None:
            return f"{modality} statistics: {own.source}"
        trained = {None: "", "both": " (image and text)"}.get(
            training_modality, f" ({training_modality})"
        )
        return f"checkpoint{trained} statistics"

    def manifest(self) -> dict[str, str]:
        """Source per modality, as the index manifest records it."""
        return {modality: self.source(modality) for modality in MODALITIES}

    def saes(self, sae: SAE) -> ModalitySAEs:
        views = {
            modality: sae if own is None else sae.with_input_stats(own.stats)
            for modality in MODALITIES
            for own in [self.own(modality)]
        }
        return ModalitySAEs(**views)

    def save(self, dpath: str | Path) -> None:
        """Write ``input_stats.npz`` into an index folder (nothing when all are the checkpoint's)."""
        arrays: dict[str, np.ndarray] = {}
        for modality in MODALITIES:
            own = self.own(modality)
            if own is not None:
                arrays[f"{modality}_mean_d"] = own.stats.mean_d.detach().cpu().float().numpy()
                arrays[f"{modality}_scaling_factor"] = np.float64(own.stats.scaling_factor)
                arrays[f"{modality}_source"] = np.str_(own.source)
        if arrays:
            atomic_save_npz(Path(dpath) / INPUT_STATS_NAME, arrays)

    @classmethod
    def load(cls, dpath: str | Path) -> ModalityStats:
        """The statistics saved in an index folder; the checkpoint's for both without a file."""
        fpath = Path(dpath) / INPUT_STATS_NAME
        if not fpath.is_file():
            return cls()
        own: dict[str, OwnStats] = {}
        with np.load(fpath, allow_pickle=False) as arrays:
            for modality in MODALITIES:
                if f"{modality}_mean_d" in arrays:
                    stats = InputStats(
                        torch.from_numpy(arrays[f"{modality}_mean_d"].astype(np.float32)),
                        float(arrays[f"{modality}_scaling_factor"]),
                    )
                    own[modality] = OwnStats(stats, str(arrays[f"{modality}_source"]))
        return cls(**own)


def stats_from_embeddings(sae: SAE, x_nd: np.ndarray | Tensor) -> InputStats:
    """MSAE's statistics of ``x_nd`` [n, n_inputs], preprocessing as this SAE does: the mean only
    when the SAE is mean-centred (its mean is not all zeros), MSAE's scaling factor only when the
    SAE's own is not 1."""
    if isinstance(x_nd, Tensor):
        x_nd = x_nd.detach().cpu().numpy()
    x_nd = np.asarray(x_nd, dtype=np.float32)
    if x_nd.ndim != 2 or x_nd.shape[1] != sae.n_inputs or len(x_nd) == 0:
        raise ValueError(
            f"input statistics need embeddings [n >= 1, {sae.n_inputs}], got shape {x_nd.shape}"
        )
    mean_center = bool((sae.mean != 0).any())
    scale_norm = sae.cfg.scaling_factor != 1.0
    return msae_input_stats(x_nd, np.arange(len(x_nd)), mean_center, scale_norm)


# --------------------------------------------------------------------------- sources
class StatsSample(NamedTuple):
    """Which items of one modality statistics are computed from."""

    positions: np.ndarray  # int64 [n_sample], positions in the item list
    n_total: int  # items of that modality in the list

    def source(self, modality: Modality) -> str:
        return corpus_source(modality, len(self.positions), self.n_total)


def corpus_source(modality: Modality, n: int, n_total: int) -> str:
    """``corpus texts (n=5,000)``, or ``(n=10,000 of 52,000)`` for a sample."""
    of = f" of {n_total:,}" if n_total > n else ""
    return f"corpus {modality}s (n={n:,}{of})"


def sample_items(items: Sequence[CorpusItem], modality: Modality) -> StatsSample:
    """At most ``MAX_STATS_ITEMS`` items of ``modality``, spread evenly over the list."""
    positions = np.array([i for i, item in enumerate(items) if item.modality == modality], np.int64)
    return StatsSample(positions[spread_indices(len(positions), MAX_STATS_ITEMS)], len(positions))


def embed_items(
    encoder: ClipEncoder, items: Sequence[CorpusItem], batch_size: int = 64
) -> torch.Tensor:
    """Raw CLIP embeddings [n, d] of items of one modality; unreadable images are left out
    (the index build lists them as skipped)."""
    if all(item.modality == "text" for item in items):
        return encoder.encode_texts([item.source for item in items], batch_size=4 * batch_size)
    parts = []
    for lo in range(0, len(items), batch_size):
        images = []
        for item in items[lo : lo + batch_size]:
            try:
                images.append(load_item_image(item))
            except ValueError as e:
                log.info("left out of the image statistics: %s", e)
        if images:
            parts.append(encoder.encode_images(images, batch_size=batch_size))
    return torch.cat(parts) if parts else torch.zeros(0, encoder.embed_dim)


def corpus_stats(
    encoder: ClipEncoder,
    sae: SAE,
    items: Sequence[CorpusItem],
    plan: StatsPlan,
    vocabulary_embeddings: Callable[[], Tensor],
    progress: Progress | None = None,
) -> ModalityStats:
    """The statistics ``plan`` asks for, embedding corpus items (or the vocabulary) with CLIP."""
    own: dict[str, OwnStats] = {}
    for modality in MODALITIES:
        origin = plan.origin(modality)
        if origin == "corpus":
            sample = sample_items(items, modality)
            if progress is not None:
                progress(0.0, f"{modality} statistics from {sample.source(modality)}")
            x_nd = embed_items(encoder, [items[int(p)] for p in sample.positions])
            if len(x_nd) == 0:
                raise ValueError(f"no corpus {modality} could be read to compute its statistics")
            source = corpus_source(modality, len(x_nd), sample.n_total)
        elif origin == "vocabulary":
            x_nd = vocabulary_embeddings()
            source = f"vocabulary (n={len(x_nd):,})"
        else:
            continue
        own[modality] = OwnStats(stats_from_embeddings(sae, x_nd), source)
    return ModalityStats(**own)


def embeddings_stats(
    sae: SAE, x_nd: np.ndarray, items: Sequence[CorpusItem], plan: StatsPlan
) -> ModalityStats:
    """The statistics ``plan`` asks for, from precomputed embeddings ``x_nd`` of ``items``."""
    own: dict[str, OwnStats] = {}
    for modality in MODALITIES:
        if plan.origin(modality) == "corpus":
            sample = sample_items(items, modality)
            x_sd = np.asarray(x_nd[sample.positions], dtype=np.float32)
            own[modality] = OwnStats(stats_from_embeddings(sae, x_sd), sample.source(modality))
        else:
            assert plan.origin(modality) == CHECKPOINT, "no vocabulary without an encoder"
    return ModalityStats(**own)


def _check_modality(modality: str) -> str:
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; choose one of {MODALITIES}")
    return modality
