"""The ``Explorer``: the loaded models and activation index, and what is derived from them once
(per-latent corpus statistics, the rows of each modality, the decoder directions).

Models and index are loaded once and only read afterwards, so one ``Explorer`` serves every
session of the web app; anything a user changes (the current input, steering edits) is passed in
by the caller and never stored here. Each user action is a function of the explorer in the module
of its job; the class binds them as methods, so ``explorer.inspect(query)`` is
``inspect.inspect(explorer, query)``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from sae_explorer import builtin
from sae_explorer.coactivation import Coactivations
from sae_explorer.corpus import Corpus, Modality
from sae_explorer.explorer import agreement, examples, export, names, quality, queries, thumbnails
from sae_explorer.explorer import compare as compare_job
from sae_explorer.explorer import decoder_map as decoder_map_job
from sae_explorer.explorer import heatmaps as heatmaps_job
from sae_explorer.explorer import hierarchy as hierarchy_job
from sae_explorer.explorer import inspect as inspect_job
from sae_explorer.explorer import label_mix as label_mix_job
from sae_explorer.explorer import latent_page as latent_page_job
from sae_explorer.explorer import latent_table as latent_table_job
from sae_explorer.explorer import steer as steer_job
from sae_explorer.explorer.batches import Batchers
from sae_explorer.explorer.overview import Overview, compute_overview
from sae_explorer.explorer.queries import Query
from sae_explorer.modality_stats import ModalitySAEs, ModalityStats
from sae_explorer.release_names import ReleaseNames
from sae_explorer.sae import SAE

if TYPE_CHECKING:
    from sae_explorer.encoder import ClipEncoder
    from sae_explorer.index import ActivationIndex
    from sae_explorer.index.items import ItemTable
    from sae_explorer.naming import LatentNames
    from sae_explorer.progress import Progress


@dataclass(frozen=True)
class Sources:
    """What was loaded, for the banner, the overview and export stamps."""

    clip: str
    sae: str
    corpus: str
    note: str = ""
    """Why these sources (e.g. the Hub was unreachable, so the built-in world was loaded)."""
    details: dict[str, str] = field(default_factory=dict)
    """Notes on how the sources were found (cache folder, chosen checkpoint file, Hub status)."""


class Explorer:
    """Encoder + SAE + activation index, read-only after construction."""

    def __init__(
        self,
        encoder: ClipEncoder,
        sae: SAE,
        index: ActivationIndex,
        corpus: Corpus | None = None,
        sources: Sources | None = None,
        thumbs_dpath: str | Path | None = None,
        release_names: ReleaseNames | None = None,
    ) -> None:
        """``thumbs_dpath``: where gallery thumbnails are written (default: one folder per index
        beside the cache's indexes, reused across starts and bounded; see ``thumbnails``).
        ``release_names``: the SAE release's own names, shown beside ours when given."""
        encoder.check_sae(sae)
        assert index.embeddings.shape[1] == sae.n_inputs, "index built for another CLIP width"
        if release_names is not None and release_names.n_latents != sae.n_latents:
            raise ValueError(
                f"release names are for {release_names.n_latents} latents, the SAE has "
                f"{sae.n_latents}; load the names that ship with this checkpoint"
            )
        self.encoder = encoder
        self.sae = sae.eval()
        self.index = index
        self.corpus = corpus
        self.names: LatentNames | None = index.names
        self.release_names = release_names
        self.input_stats: ModalityStats = index.input_stats
        """The statistics each modality went through in the index; queries go through them too."""
        self.saes: ModalitySAEs = self.input_stats.saes(self.sae)
        self.sae_hash = sae.content_hash  # hashing the weights is not free: do it once
        self.index_key = str(index.manifest["key"])
        """The index's content key: a hash of the CLIP model, the SAE, the corpus (or, for
        precomputed embeddings, every embedding row) and the build settings."""
        self.corpus_hash = _indexed_corpus_hash(index, corpus)
        """The hash of the corpus the index was built from; None when it was built from
        precomputed embeddings (then :attr:`index_key` is what names the data)."""
        self.sources = sources or Sources(
            encoder.model_id, self.sae_hash[:12], _indexed_corpus_source(index, corpus)
        )
        self.n_latents = int(sae.n_latents)
        self.frequency_l = np.asarray(index.frequency, dtype=np.float64)
        self.max_act_l = np.asarray(index.max_act, dtype=np.float64)
        self.mean_act_l = np.asarray(index.mean_act, dtype=np.float64)
        self.levels_l = np.asarray(index.levels, dtype=np.int64)
        self.items: ItemTable = index.item_table
        """The items table, read lazily (the row groups of the rows a page shows)."""
        is_image_n = index.is_image
        self.modality_rows: dict[Modality, np.ndarray] = {
            "image": np.flatnonzero(is_image_n),
            "text": np.flatnonzero(~is_image_n),
        }
        """Index rows of each modality."""
        with torch.inference_mode():
            self.dictionary_ld = self.sae.get_dictionary().float().cpu()
        if thumbs_dpath is None:
            thumbs_dpath = thumbnails.usable_thumbs_dpath(index.dpath)
        self.thumbs_dpath = Path(thumbs_dpath)
        self.logit_scale = steer_job.clip_logit_scale(encoder)
        self._overview: Overview | None = None
        self.batchers = Batchers(self)
        """The model steps of requests, batched across concurrent callers."""

    @classmethod
    def from_sources(
        cls,
        clip: str,
        pretrained: str | None,
        sae: str | Path,
        corpus: str,
        cache_dir: str | Path,
        device: str | None = None,
        progress: Progress | None = None,
        max_items: int | None = None,
        note: str = "",
        encoder: ClipEncoder | None = None,
        sae_model: SAE | None = None,
        release_names: ReleaseNames | None = None,
    ) -> Explorer:
        """Load models and corpus and build (or load the cached) activation index.

        ``encoder`` and ``sae_model`` skip loading CLIP or the SAE again when the caller already
        has them; ``release_names`` are shown beside the explorer's own names."""
        from sae_explorer.checkpoints import load_sae
        from sae_explorer.corpus import load_corpus
        from sae_explorer.encoder import load_encoder
        from sae_explorer.precompute import PrecomputeConfig, precompute

        _report(progress, 0.0, f"loading CLIP {clip}")
        encoder = encoder or load_encoder(clip, pretrained, device)
        _report(progress, 0.05, f"loading SAE {sae}")
        sae_model = sae_model or load_sae(sae)
        encoder.check_sae(sae_model)
        _report(progress, 0.1, f"loading corpus {corpus}")
        corpus_obj = load_corpus(corpus, max_items=max_items, cache_dpath=cache_dir)

        def sub(fraction: float, message: str) -> None:
            _report(progress, 0.1 + 0.9 * fraction, message)

        # A built-in world's tiny CLIP knows only its own caption words; other English words
        # land anywhere in its space and would crowd out the real names of its latents.
        world = builtin.world_of(encoder.model_id)
        names_cfg = PrecomputeConfig() if world is None else PrecomputeConfig(n_words=world.n_words)
        index = precompute(encoder, sae_model, corpus_obj, Path(cache_dir), names_cfg, sub)
        sources = Sources(
            clip=encoder.model_id,
            sae=str(sae),
            corpus=corpus,
            note=note,
            details={"cache_dir": str(cache_dir)},
        )
        return cls(encoder, sae_model, index, corpus_obj, sources, release_names=release_names)

    # ------------------------------------------------------------------ SAE views, caches
    def sae_for(self, query: Query) -> SAE:
        """The SAE as this input's modality sees it (with that modality's statistics)."""
        return self.saes.of(queries.query_modality(self, query))

    def sae_of(self, modality: Modality | None) -> SAE:
        """The SAE as inputs of ``modality`` see it (None: the checkpoint's statistics)."""
        return self.sae if modality is None else self.saes.of(modality)

    @functools.lru_cache(maxsize=256)  # noqa: B019 (label lists repeat across requests)
    def label_embeddings(self, labels: tuple[str, ...]) -> torch.Tensor:
        return self.encoder.encode_texts(list(labels))

    @functools.lru_cache(maxsize=4096)  # noqa: B019 (every Inspect shows its latents' images)
    def latent_thumbs(self, latent_id: int, n: int) -> tuple[thumbnails.Thumb, ...]:
        """Thumbnails of the ``n`` corpus images where the latent is strongest (computed once
        per latent and ``n``)."""
        return tuple(thumbnails.latent_thumbs(self, latent_id, n))

    @functools.cached_property
    def coactivations(self) -> Coactivations:
        """Which latents are active on which items (the index's codes), for the hierarchy."""
        return Coactivations.from_index(self.index)

    @functools.cached_property
    def label_codes(self) -> label_mix_job.LabelCodes:
        """Every item's corpus label as a code (computed once)."""
        return label_mix_job.label_codes(self)

    @functools.cached_property
    def latent_table(self) -> latent_table_job.LatentTable:
        """Every latent in one table, the latent browser's (computed once)."""
        return latent_table_job.latent_table(self)

    def overview(self, batch_size: int = 512) -> Overview:
        """Models, corpus and whole-corpus SAE quality (computed once, then cached)."""
        if self._overview is None:
            self._overview = compute_overview(self, batch_size)
        return self._overview

    # ------------------------------------------------------------------ actions, by job
    # queries.py: inputs and latents by id or name
    image_query = queries.image_query
    text_query = queries.text_query
    item_query = queries.item_query
    query_modality = queries.query_modality
    check_item = queries.check_item
    check_latent = queries.check_latent
    resolve_latent = queries.resolve_latent
    search_latents = queries.search_latents
    # names.py: our names and the release's
    names_of = names.names_of
    names_text = names.names_text
    names_table = names.names_table
    with_release_names = names.with_release_names
    # inspect.py, quality.py: one input
    inspect = inspect_job.inspect
    level_metrics = quality.level_metrics
    # heatmaps.py: where in the image
    heatmaps = heatmaps_job.heatmaps
    # examples.py, thumbnails.py: corpus items shown
    top_items = examples.top_items
    latent_activations = examples.latent_activations
    neighbours = examples.neighbours
    thumbnail = thumbnails.thumbnail
    thumbnail_fpath = thumbnails.thumbnail_fpath
    # latent_page.py: one latent
    latent_page = latent_page_job.latent_page
    similar_latents = latent_page_job.similar_latents
    # hierarchy.py: Matryoshka parents and children; compare.py: a second SAE
    family_table = hierarchy_job.family_table
    descendant_tree = hierarchy_job.descendant_tree
    compare_sae = compare_job.compare_sae
    # latent_table.py, decoder_map.py, label_mix.py, agreement.py: browsing, labels, modalities
    browse_latents = latent_table_job.browse
    decoder_map = decoder_map_job.decoder_map
    map_figure = decoder_map_job.map_figure
    label_mix = label_mix_job.label_mix
    cross_modal_agreement = agreement.cross_modal_agreement
    # steer.py: edits, steering, sweeps
    top_latents = steer_job.top_latents
    slider_max = steer_job.slider_max
    relative_edit = steer_job.relative_edit
    steer = steer_job.steer
    sweep = steer_job.sweep
    similar_frequency_latent = steer_job.similar_frequency_latent
    # export.py: files stamped with their provenance
    stamp = export.stamp
    export_latent = export.export_latent
    export_inspect = export.export_inspect


def _indexed_corpus_hash(index: ActivationIndex, corpus: Corpus | None) -> str | None:
    """The corpus hash the index recorded when it was built from a corpus (``corpus`` must be
    that corpus when given); None for an index of precomputed embeddings."""
    recorded = (index.manifest.get("corpus") or {}).get("manifest_hash")
    if corpus is None:
        return recorded
    given = corpus.manifest_hash
    if recorded is not None and given != recorded:
        raise ValueError(
            f"the corpus {corpus.source!r} (hash {given[:12]}) is not the corpus this index was "
            f"built from (hash {recorded[:12]}); pass that corpus, or none"
        )
    return given


def _indexed_corpus_source(index: ActivationIndex, corpus: Corpus | None) -> str:
    """Where the indexed items came from, for sources not given explicitly."""
    if corpus is not None:
        return corpus.source
    return (index.manifest.get("corpus") or {}).get("source", "precomputed embeddings")


def _report(progress: Progress | None, fraction: float, message: str) -> None:
    if progress is not None:
        progress(fraction, message)
