"""A finished index, opened memory-mapped: what the explorer reads."""

from __future__ import annotations

import logging
import os
import zipfile
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from sae_explorer.index.ann import AnnConfig, AnnSearcher, faiss_available, open_ann
from sae_explorer.index.files import (
    CHECKSUM,
    CODES_NAMES,
    EMBEDDINGS_NAME,
    INPUT_STATS_NAME,
    ITEMS_NAME,
    LATENT_ARRAYS,
    CorruptIndexError,
    read_manifest,
)
from sae_explorer.index.items import ItemTable, open_item_table, with_modality_dtype
from sae_explorer.index.sparse import hist_bin_edges

if TYPE_CHECKING:
    import pandas as pd

    from sae_explorer.modality_stats import ModalityStats
    from sae_explorer.naming import LatentNames
    from sae_explorer.progress import Progress


log = logging.getLogger(__name__)


class Histogram(NamedTuple):
    counts: np.ndarray  # int64 [n_bins]
    edges: np.ndarray  # float64 [n_bins + 1], bins are 1/8 octave wide


class ItemCodes(NamedTuple):
    ids: np.ndarray  # int32 [n], latent ids, largest value first
    values: np.ndarray  # float32 [n]


class LatentSummary(NamedTuple):
    frequency: float  # fraction of items with a non-zero activation
    mean_act: float  # mean activation over the items where it is non-zero
    max_act: float
    n_active: int
    image_fraction: float  # share of its active items that are images (NaN if never active)
    level: int  # Matryoshka level (median first keeping level), -1 if none


class ActivationIndex:
    """A finished index, memory-mapped. Item indices are row numbers of :attr:`items`."""

    ann_cfg: AnnConfig = AnnConfig()
    """When :meth:`nearest` searches approximately (set per index before the first search)."""

    def __init__(self, dpath: Path, manifest: dict) -> None:
        self.dpath = Path(dpath)
        self.manifest = manifest
        counts = manifest["counts"]
        self.n_items: int = int(counts["n_items"])
        self.n_latents: int = int(counts["n_latents"])
        self.embed_dim: int = int(counts["embed_dim"])
        self.embeddings = self._array(EMBEDDINGS_NAME, (self.n_items, self.embed_dim))
        self.codes_indptr = self._array(CODES_NAMES[0], (self.n_items + 1,))
        self.codes_ids = self._array(CODES_NAMES[1], None)
        self.codes_values = self._array(CODES_NAMES[2], None)
        arrays = {name: self._array(f"{name}.npy", None) for name in LATENT_ARRAYS}
        for name, array in arrays.items():
            if len(array) != self.n_latents:
                raise CorruptIndexError(
                    f"{name}.npy has {len(array)} rows, expected {self.n_latents}"
                )
        check_values(arrays, self.codes_indptr, len(self.codes_ids), self.n_items)
        self._count_l = arrays["latent_count"]
        self._count_image_l = arrays["latent_count_image"]
        self._sum_l = arrays["latent_sum"]
        self.max_act: np.ndarray = np.asarray(arrays["latent_max"])
        self.levels: np.ndarray = np.asarray(arrays["latent_level"]).astype(np.int64)
        self._top_idx = arrays["latent_top_idx"]
        self._top_val = arrays["latent_top_val"]
        self._sample_idx = arrays["latent_sample_idx"]
        self._sample_val = arrays["latent_sample_val"]
        self._hist = arrays["latent_hist"]

    @classmethod
    def load(cls, dpath: str | os.PathLike) -> ActivationIndex:
        """Open a finished index (memory-mapped); ``CorruptIndexError`` (a ValueError) if not."""
        dpath = Path(dpath)
        return cls(dpath, read_manifest(dpath))

    def _array(self, name: str, shape: tuple[int, ...] | None) -> np.ndarray:
        try:
            array = np.load(self.dpath / name, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise CorruptIndexError(f"cannot read {name} in {self.dpath}: {e}") from e
        if shape is not None and array.shape != shape:
            raise CorruptIndexError(f"{name} has shape {array.shape}, expected {shape}")
        return array

    def __repr__(self) -> str:
        return f"ActivationIndex({str(self.dpath)!r}, n_items={self.n_items}, n_latents={self.n_latents})"

    # ------------------------------------------------------------------ per-latent arrays
    @property
    def n_active(self) -> np.ndarray:
        """int64 [n_latents]: items where the latent is non-zero."""
        return np.asarray(self._count_l)

    @property
    def frequency(self) -> np.ndarray:
        """float64 [n_latents]: fraction of items where the latent is non-zero."""
        return self.n_active / max(self.n_items, 1)

    @property
    def mean_act(self) -> np.ndarray:
        """float64 [n_latents]: mean activation over the items where the latent is non-zero."""
        return np.asarray(self._sum_l) / np.maximum(self.n_active, 1)

    @property
    def image_fraction(self) -> np.ndarray:
        """float64 [n_latents]: share of the latent's active items that are images; NaN if dead."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(
                self.n_active > 0, np.asarray(self._count_image_l) / self.n_active, np.nan
            )

    def latent_summary(self, latent_id: int) -> LatentSummary:
        i = self._check_latent(latent_id)
        n_active = int(self._count_l[i])
        return LatentSummary(
            frequency=n_active / max(self.n_items, 1),
            mean_act=float(self._sum_l[i]) / max(n_active, 1),
            max_act=float(self.max_act[i]),
            n_active=n_active,
            image_fraction=float(self._count_image_l[i]) / n_active if n_active else float("nan"),
            level=int(self.levels[i]),
        )

    # ------------------------------------------------------------------ items
    @cached_property
    def items(self) -> pd.DataFrame:
        """One row per item: item_id, modality, source, label (+ corpus_idx, n_active, attr_*),
        the whole table in memory (exports, tests, small indexes); pages read
        :attr:`item_table`."""
        import pyarrow.parquet as pq

        # One chunk per column: row lookups (iloc) on chunked Arrow strings cost O(chunks).
        try:
            table = pq.read_table(self.dpath / ITEMS_NAME).combine_chunks()
            items = with_modality_dtype(table.to_pandas())
        except Exception as e:  # pyarrow raises its own kinds for a damaged file
            raise CorruptIndexError(f"cannot read {ITEMS_NAME} in {self.dpath}: {e}") from e
        if len(items) != self.n_items or not {"item_id", "modality", "source"} <= set(items):
            raise CorruptIndexError(
                f"{ITEMS_NAME} in {self.dpath} has {len(items)} rows and columns "
                f"{list(items.columns)}; expected {self.n_items} rows of items"
            )
        return items

    @cached_property
    def item_table(self) -> ItemTable:
        """The items table read lazily, the same rows and columns as :attr:`items`: through a
        memory-mapped Arrow copy for a large index, else by Parquet row group (:mod:`.items`)."""
        sha256 = str(self.manifest[CHECKSUM][ITEMS_NAME])
        return open_item_table(self.dpath, self.n_items, sha256)

    @cached_property
    def is_image(self) -> np.ndarray:
        """bool [n_items]: which items are images."""
        return (self.item_table["modality"] == "image").to_numpy()

    def _item_rows(self, item_idx: np.ndarray, **columns: np.ndarray) -> pd.DataFrame:
        rows = self.item_table.rows(item_idx)
        rows.insert(0, "item_idx", item_idx.astype(np.int64))
        for pos, (name, values) in enumerate(columns.items(), start=1):
            rows.insert(pos, name, values)
        return rows

    def top_examples(self, latent_id: int, m: int | None = None) -> pd.DataFrame:
        """The latent's most activating items, largest first: item_idx, value, then item columns."""
        i = self._check_latent(latent_id)
        idx, val = np.asarray(self._top_idx[i]), np.asarray(self._top_val[i])
        keep = idx >= 0
        idx, val = idx[keep][:m], val[keep][:m]
        return self._item_rows(idx, value=val.astype(np.float32))

    def quantile_samples(self, latent_id: int, n_bins: int = 5, per_bin: int = 2) -> pd.DataFrame:
        """Items from ``n_bins`` equal-count activation bins (bin 0 = weakest), ``per_bin`` each,
        drawn from a uniform random sample of the latent's active items: what a typical
        activation looks like, not only the top."""
        if n_bins < 1 or per_bin < 1:
            raise ValueError(f"n_bins and per_bin must be >= 1, got {n_bins}, {per_bin}")
        i = self._check_latent(latent_id)
        idx, val = np.asarray(self._sample_idx[i]), np.asarray(self._sample_val[i])
        keep = idx >= 0
        idx, val = idx[keep][::-1], val[keep][::-1]  # ascending by value
        picks, bins = [], []
        for b, part in enumerate(np.array_split(np.arange(len(idx)), n_bins)):
            if len(part) == 0:
                continue
            chosen = part[np.unique(np.linspace(0, len(part) - 1, per_bin).round().astype(int))]
            picks.extend(chosen)
            bins.extend([b] * len(chosen))
        picks = np.asarray(picks, dtype=np.int64)
        return self._item_rows(
            idx[picks], bin=np.asarray(bins, dtype=np.int64), value=val[picks].astype(np.float32)
        )

    @property
    def top_idx_lm(self) -> np.ndarray:
        """int [n_latents, top_m]: every latent's top items (index rows, strongest first; -1
        fills the slots of a latent active on fewer items)."""
        return self._top_idx

    def sample_bins(self, latent_id: int, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
        """The latent's whole random active sample (index rows, weakest first) and the
        equal-count activation bin of each (0 = weakest), binned as :meth:`quantile_samples`."""
        i = self._check_latent(latent_id)
        idx = np.asarray(self._sample_idx[i])
        idx = idx[idx >= 0][::-1]
        parts = np.array_split(np.arange(len(idx)), n_bins)
        bins = np.concatenate(
            [np.full(len(part), b, dtype=np.int64) for b, part in enumerate(parts)]
        )
        return idx.astype(np.int64), bins

    def histogram(self, latent_id: int) -> Histogram:
        """Counts of the latent's non-zero activations in 1/8-octave bins, trimmed to the
        occupied range (empty arrays for a dead latent)."""
        i = self._check_latent(latent_id)
        counts = np.asarray(self._hist[i]).astype(np.int64)
        nz = np.flatnonzero(counts)
        if len(nz) == 0:
            return Histogram(np.zeros(0, dtype=np.int64), np.zeros(0))
        lo, hi = nz[0], nz[-1] + 1
        edges = hist_bin_edges()[lo : hi + 1].copy()
        edges[-1] = max(edges[-1], float(self.max_act[i]))
        return Histogram(counts[lo:hi], edges)

    def load_image(self, item_idx: int):
        """The image of an image item, read from its stored source (no corpus object needed;
        item indices skip unreadable files, so they differ from corpus positions)."""
        from sae_explorer.corpus import CorpusItem, load_item_image

        if not 0 <= item_idx < self.n_items:
            raise ValueError(f"item_idx must be in [0, {self.n_items}), got {item_idx}")
        row = self.item_table.iloc[int(item_idx)]
        return load_item_image(CorpusItem(row["item_id"], row["modality"], row["source"]))

    def item_codes(self, item_idx: int) -> ItemCodes:
        """Stored non-zero latents of one item (its top-K), largest first."""
        if not 0 <= item_idx < self.n_items:
            raise ValueError(f"item_idx must be in [0, {self.n_items}), got {item_idx}")
        lo, hi = int(self.codes_indptr[item_idx]), int(self.codes_indptr[item_idx + 1])
        if not 0 <= lo <= hi <= len(self.codes_ids):
            raise bad_pointers(self.dpath, f"item {item_idx}'s codes run from {lo} to {hi}")
        ids = np.asarray(self.codes_ids[lo:hi])
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_latents):
            raise CorruptIndexError(
                f"{CODES_NAMES[1]} in {self.dpath} holds latent ids outside [0, "
                f"{self.n_latents}) for item {item_idx}; the index is damaged (rebuild it)"
            )
        return ItemCodes(ids, np.asarray(self.codes_values[lo:hi], dtype=np.float32))

    def whole_codes_indptr(self) -> np.ndarray:
        """int64 [n_items + 1]: every item's codes pointers, checked to run up from 0 to the
        last code (O(items): an open checks the ends alone, an item's read its own two)."""
        indptr = np.asarray(self.codes_indptr, dtype=np.int64)
        if (np.diff(indptr) < 0).any():
            raise bad_pointers(self.dpath, "they go down")
        return indptr

    def check_codes(self, block: int = 1 << 24) -> None:
        """Every stored code's latent id in range (a full pass over ``codes_ids``, in blocks)
        and the pointers to them in order; an item's own codes are checked whenever they are
        read."""
        self.whole_codes_indptr()
        for lo in range(0, len(self.codes_ids), block):
            ids = np.asarray(self.codes_ids[lo : lo + block])
            if ids.min() < 0 or ids.max() >= self.n_latents:
                raise CorruptIndexError(
                    f"{CODES_NAMES[1]} in {self.dpath} holds latent ids outside "
                    f"[0, {self.n_latents}); the index is damaged (rebuild it)"
                )

    def nearest(
        self, x_d: np.ndarray | torch.Tensor, k: int = 10, modality: str | None = None
    ) -> pd.DataFrame:
        """Items whose embeddings are most cosine-similar to ``x_d`` (a CLIP embedding), most
        similar first: an exact pass over the embeddings below ``ann_cfg.min_items`` items,
        else the ANN index's candidates re-ranked by their exact cosine (:mod:`.ann`)."""
        if modality not in (None, "image", "text"):
            raise ValueError(f"modality must be None, 'image' or 'text', got {modality!r}")
        q = np.asarray(x_d.detach().cpu() if isinstance(x_d, torch.Tensor) else x_d, np.float32)
        if q.shape != (self.embed_dim,):
            raise ValueError(f"expected one {self.embed_dim}-d embedding, got shape {q.shape}")
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        if self.searches_approximately:
            top, sims = self.ann_searcher.search(q, k, modality)
            return self._item_rows(top, similarity=sims)
        sims = np.empty(self.n_items, dtype=np.float32)
        step = 65536
        for lo in range(0, self.n_items, step):
            block = np.asarray(self.embeddings[lo : lo + step], dtype=np.float32)
            norms = np.linalg.norm(block, axis=1).clip(min=1e-12)
            sims[lo : lo + step] = block @ q / norms
        if modality is not None:
            sims[self.is_image != (modality == "image")] = -np.inf
        k = min(k, int(np.isfinite(sims).sum()))
        top = np.argpartition(-sims, k - 1)[:k] if k > 0 else np.zeros(0, dtype=np.int64)
        top = top[np.argsort(-sims[top], kind="stable")]
        return self._item_rows(top, similarity=sims[top])

    @property
    def searches_approximately(self) -> bool:
        """Whether :meth:`nearest` goes through the ANN index (``ann_cfg.min_items`` items or
        more, and faiss installed) rather than an exact pass."""
        return self.n_items >= self.ann_cfg.min_items and faiss_available()

    def prepare_serving(self, progress: Progress | None = None) -> None:
        """Write, once, what a large index is served from (its memory-mapped items table and
        its ANN index, when it is searched approximately), so that the app's first page and
        first query do not wait for them; builds call this."""
        self.item_table  # noqa: B018 (writes items.arrow from ARROW_MIN_ITEMS items)
        if self.searches_approximately and "ann_searcher" not in self.__dict__:
            self.__dict__["ann_searcher"] = self._open_searcher(progress)

    @cached_property
    def ann_searcher(self) -> AnnSearcher:
        """Neighbour search through the index's ANN index (``ann.faiss``, opened memory-mapped;
        built first if it is missing or does not match these embeddings)."""
        return self._open_searcher(None)

    def _open_searcher(self, progress: Progress | None) -> AnnSearcher:
        ann = open_ann(self, self.ann_cfg, progress)
        return AnnSearcher(ann, self.embeddings, self.is_image, self.ann_cfg)

    @cached_property
    def input_stats(self) -> ModalityStats:
        """The statistics each modality was encoded with (the checkpoint's unless the index
        holds others); queries of that modality must go through the same."""
        from sae_explorer.modality_stats import ModalityStats

        try:
            return ModalityStats.load(self.dpath)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise CorruptIndexError(f"cannot read {INPUT_STATS_NAME} in {self.dpath}: {e}") from e

    # ------------------------------------------------------------------ names
    @cached_property
    def names(self) -> LatentNames | None:
        """Vocabulary names of the latents (top 5 each), or None if none were computed or
        they are damaged (logged; a precompute names the latents again)."""
        from sae_explorer.naming import LatentNames

        if not LatentNames.exists(self.dpath):
            return None
        try:
            names = LatentNames.load(self.dpath)
        except ValueError as e:
            log.warning("ignoring damaged latent names: %s", e)
            return None
        if names.n_latents != self.n_latents:
            log.warning("ignoring latent names of %d latents in %s", names.n_latents, self.dpath)
            return None
        return names

    def _check_latent(self, latent_id: int) -> int:
        i = int(latent_id)
        if not 0 <= i < self.n_latents:
            raise ValueError(f"latent_id must be in [0, {self.n_latents}), got {latent_id}")
        return i


def check_values(
    arrays: dict[str, np.ndarray], indptr: np.ndarray, n_codes: int, n_items: int
) -> None:
    """Cheap checks of what the index serves, O(latents), so that a 10M-item index opens in
    well under a second: ``CorruptIndexError`` for item rows out of range, NaN or negative
    maxima and counts, codes pointers whose ends do not add up (a damaged file the checksums
    did not get to see, or a broken build). An item's pointers and latent ids are checked when
    its codes are read, all of them by whatever reads them whole."""

    def bad(name: str, why: str) -> CorruptIndexError:
        return CorruptIndexError(f"{name}.npy {why}; the index is damaged")

    for name in ("latent_top_idx", "latent_sample_idx"):
        idx = np.asarray(arrays[name])
        if idx.size and (idx.min() < -1 or idx.max() >= n_items):
            raise bad(name, f"holds item rows outside [-1, {n_items})")
        val = np.asarray(arrays[name.replace("_idx", "_val")])
        if not np.isfinite(val[idx >= 0]).all():
            raise bad(name.replace("_idx", "_val"), "holds values that are not finite")
    max_l, count_l = np.asarray(arrays["latent_max"]), np.asarray(arrays["latent_count"])
    if not (np.isfinite(max_l).all() and (max_l >= 0).all()):
        raise bad("latent_max", "holds NaN, infinite or negative maxima")
    if count_l.size and (count_l.min() < 0 or count_l.max() > n_items):
        raise bad("latent_count", f"holds counts outside [0, {n_items}]")
    if not np.isfinite(np.asarray(arrays["latent_sum"])).all():
        raise bad("latent_sum", "holds sums that are not finite")
    if indptr[0] != 0 or indptr[-1] != n_codes:  # the order between: when read
        raise bad(CODES_NAMES[0].removesuffix(".npy"), f"does not run from 0 up to {n_codes}")


def bad_pointers(dpath: Path, why: str) -> CorruptIndexError:
    """A ``codes_indptr.npy`` whose pointers are out of order."""
    return CorruptIndexError(
        f"{CODES_NAMES[0]} in {dpath} is out of order: {why}; the index is damaged (rebuild it)"
    )
