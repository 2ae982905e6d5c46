"""The activation index: what one pass of a corpus through CLIP and an SAE leaves on disk.

An index folder holds, besides ``manifest.json`` (schema, counts, hashes, file sizes, timings):

- ``items.parquet``: one row per indexed item (id, modality, source, label, ground truth);
- ``embeddings.npy``: raw CLIP embeddings, fp16 ``[n_items, d]``, for neighbour search;
- ``codes_indptr.npy`` / ``codes_ids.npy`` / ``codes_values.npy``: each item's non-zero latents,
  capped at its top-K by value, in CSR form (int64 indptr, int32 ids, fp16 values);
- ``latent_*.npy``: per-latent statistics of the *full* activations, gathered while streaming:
  frequency, mean and max, image/text counts, Matryoshka level, the top-M items, a uniform
  random sample of active items (for quantile views) and a histogram of non-zero values;
- ``input_stats.npz``, only when a modality was encoded with statistics of its own instead of
  the checkpoint's (an SAE trained on one modality, see :mod:`sae_explorer.modality_stats`).

Nothing ``[n_items, n_latents]``-sized exists at any point: :class:`LatentAccumulator` merges
each batch into fixed-size per-latent state. Arrays are opened memory-mapped, so loading an index
costs milliseconds whatever its size; every file is written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from sae_explorer.atomic import atomic_save_npy

if TYPE_CHECKING:
    import pandas as pd

    from sae_explorer.modality_stats import ModalityStats
    from sae_explorer.naming import LatentNames

SCHEMA = 1
MANIFEST_NAME = "manifest.json"
ITEMS_NAME = "items.parquet"
EMBEDDINGS_NAME = "embeddings.npy"
CODES_NAMES = ("codes_indptr.npy", "codes_ids.npy", "codes_values.npy")
INPUT_STATS_NAME = "input_stats.npz"
OPTIONAL_NAMES = (INPUT_STATS_NAME,)
"""Files an index has only in some cases; the manifest lists them when they are there."""
LATENT_ARRAYS = (
    "latent_count",
    "latent_count_image",
    "latent_sum",
    "latent_max",
    "latent_level",
    "latent_top_idx",
    "latent_top_val",
    "latent_sample_idx",
    "latent_sample_val",
    "latent_hist",
)

# Histogram bins come straight from the float32 bit pattern: exponent plus the top three mantissa
# bits, i.e. eight bins per octave (~9% wide), from 2^-12 to 2^12. One shift, no log, no search.
HIST_SHIFT = 20
_HIST_LO = 2.0**-12
_HIST_HI = 2.0**12
HIST_CODE_LO = int(np.float32(_HIST_LO).view(np.int32)) >> HIST_SHIFT
HIST_N_BINS = (int(np.float32(_HIST_HI).view(np.int32)) >> HIST_SHIFT) - HIST_CODE_LO


def hist_bin_edges() -> np.ndarray:
    """Edges [HIST_N_BINS + 1] of the histogram bins; bin 0 also holds values below 2^-12."""
    codes = (np.arange(HIST_N_BINS + 1, dtype=np.int64) + HIST_CODE_LO) << HIST_SHIFT
    edges = codes.astype(np.int32).view(np.float32).astype(np.float64)
    edges[0] = 0.0
    return edges


class CorruptIndexError(ValueError):
    """An index folder that is incomplete, from another schema, or damaged."""


class Histogram(NamedTuple):
    counts: np.ndarray  # int64 [n_bins]
    edges: np.ndarray  # float64 [n_bins + 1], bins are 1/8 octave wide


class ItemCodes(NamedTuple):
    ids: np.ndarray  # int32 [n], latent ids, largest value first
    values: np.ndarray  # float32 [n]


class SparseCodes(NamedTuple):
    """One batch's per-item top-K codes, row-major (items in order, values descending)."""

    counts_b: np.ndarray  # int64 [b]
    ids: np.ndarray  # int32 [nnz]
    values: np.ndarray  # float16 [nnz]


class LatentSummary(NamedTuple):
    frequency: float  # fraction of items with a non-zero activation
    mean_act: float  # mean activation over the items where it is non-zero
    max_act: float
    n_active: int
    image_fraction: float  # share of its active items that are images (NaN if never active)
    level: int  # Matryoshka level (median first keeping level), -1 if none


# --------------------------------------------------------------------------- streaming pass
class ActiveEntries(NamedTuple):
    """A batch of activations as its list of positive entries, in row-major order."""

    n_latents: int
    n_items: int
    count_b: np.ndarray  # int64 [b], positive entries per item
    item: np.ndarray  # int64 [nnz], position in the batch, non-decreasing
    latent: np.ndarray  # int64 [nnz]
    value: np.ndarray  # float32 [nnz], > 0
    bin: np.ndarray  # int32 [nnz], histogram bin of each value


def active_entries(z_bl: torch.Tensor | np.ndarray) -> ActiveEntries:
    """List the positive entries of full activations ``z_bl`` [b, n_latents].

    Every per-batch statistic works on this list (a fifth of the matrix for a ReLU SAE at
    MSAE's ~80% sparsity), so the dense matrix is read only here: one comparison, one scan.
    """
    if isinstance(z_bl, torch.Tensor):
        z_bl = z_bl.detach().cpu().numpy()
    z_bl = np.ascontiguousarray(z_bl, dtype=np.float32)
    b, n = z_bl.shape
    pos_bl = z_bl > 0
    count_b = np.count_nonzero(pos_bl, axis=1).astype(np.int64)
    flat = np.flatnonzero(pos_bl)
    del pos_bl
    value = z_bl.reshape(-1)[flat]
    # Row-major order: the item of each entry is a run-length expansion, no division needed.
    flat -= np.repeat(np.arange(0, b * n, n, dtype=np.int64), count_b)
    item = np.repeat(np.arange(b, dtype=np.int64), count_b)
    bins = value.view(np.int32) >> HIST_SHIFT
    bins -= HIST_CODE_LO
    np.clip(bins, 0, HIST_N_BINS - 1, out=bins)
    return ActiveEntries(n, b, count_b, item, flat, value, bins)


def _bits_for(n: int) -> int:
    return max(int(n - 1).bit_length(), 1)


def top_codes(entries: ActiveEntries, k: int) -> SparseCodes:
    """Each item's ``k`` largest entries, largest first (same result as a dense ``topk`` per row).

    A per-item histogram over the value bins gives the bin holding each item's k-th largest
    value; only entries from that bin up are sorted, with one plain sort of packed integer keys
    (item, then value descending, then latent: positive float32 bit patterns order like the
    values).
    """
    b, n, n_bins = entries.n_items, entries.n_latents, HIST_N_BINS
    hist_bh = np.bincount(entries.item * n_bins + entries.bin, minlength=b * n_bins)
    above_bh = np.cumsum(hist_bh.reshape(b, n_bins)[:, ::-1], axis=1)[:, ::-1]
    threshold_b = np.maximum((above_bh >= k).sum(1) - 1, 0)  # highest bin with >= k above
    cand = np.flatnonzero(entries.bin >= threshold_b[entries.item])
    item, value, latent = entries.item[cand], entries.value[cand], entries.latent[cand]
    neg_bits = 0x7FFFFFFF - value.view(np.int32).astype(np.int64)
    l_bits = _bits_for(n)
    if _bits_for(b) + 31 + l_bits <= 63:
        key = np.sort((item << (31 + l_bits)) | (neg_bits << l_bits) | latent)
        item = key >> (31 + l_bits)
        value = (0x7FFFFFFF - ((key >> l_bits) & 0x7FFFFFFF)).astype(np.int32).view(np.float32)
        latent = key & ((1 << l_bits) - 1)
    else:  # too many items or latents to pack: sort an index instead
        order = np.lexsort((latent, neg_bits, item))
        item, value, latent = item[order], value[order], latent[order]
    counts_b = np.bincount(item, minlength=b)
    rank = np.arange(len(item)) - np.repeat(np.cumsum(counts_b) - counts_b, counts_b)
    keep = rank < k
    return SparseCodes(
        counts_b=np.minimum(counts_b, k).astype(np.int64),
        ids=latent[keep].astype(np.int32),
        values=value[keep].astype(np.float16),
    )


def item_keys(item_idx_b: torch.Tensor | np.ndarray, seed: int) -> np.ndarray:
    """A fixed pseudo-random 63-bit key per item (splitmix64 of index and seed).

    Each latent keeps the active items with the smallest keys: a uniform sample of them that
    does not depend on batch or chunk boundaries, so resumed runs sample the same items.
    """
    x = _np(item_idx_b, np.int64).astype(np.uint64) + np.uint64(seed) * np.uint64(
        0x9E3779B97F4A7C15
    )
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(1)).astype(np.int64)


class LatentAccumulator:
    """Per-latent statistics, top-M items and a random sample, merged batch by batch.

    State is ``O(n_latents * (top_m + n_samples + n_bins))`` whatever the corpus size. Only
    positive activations count as "active". Each batch is reduced to its list of active
    (latent, item) entries once; the histogram and the sums read every entry, the count and
    the maximum follow from the histogram and the top-M, and only entries that beat a latent's
    current threshold reach a merge.
    """

    STATE_FIELDS = (
        "count_image_l", "sum_l", "top_val_lm", "top_idx_lm",
        "sample_key_ls", "sample_idx_ls", "sample_val_ls", "hist_hl", "level_count_ln",
    )  # fmt: skip

    def __init__(
        self, n_latents: int, top_m: int = 32, n_samples: int = 64, n_levels: int = 0, seed: int = 0
    ) -> None:
        if top_m < 1 or n_samples < 1:
            raise ValueError(f"top_m and n_samples must be >= 1, got {top_m}, {n_samples}")
        n = n_latents
        self.n_latents, self.top_m, self.n_samples = n, top_m, n_samples
        self.n_levels, self.seed = n_levels, seed
        self.n_items = 0
        self.count_image_l = np.zeros(n, dtype=np.int64)
        self.sum_l = np.zeros(n, dtype=np.float64)
        self.top_val_lm = np.full((n, top_m), -np.inf, dtype=np.float32)
        self.top_idx_lm = np.full((n, top_m), -1, dtype=np.int64)
        self.sample_key_ls = np.full((n, n_samples), NO_KEY, dtype=np.int64)
        self.sample_idx_ls = np.full((n, n_samples), -1, dtype=np.int64)
        self.sample_val_ls = np.zeros((n, n_samples), dtype=np.float32)
        self.hist_hl = np.zeros((HIST_N_BINS, n), dtype=np.int64)  # bin-major: cheaper scatter
        self.level_count_ln = np.zeros((n, max(n_levels, 1)), dtype=np.int64)
        self.merge_every = max(1 << 18, 16 * n)
        """Merge buffered candidates once this many have piled up."""
        self._pending_top: list[tuple[np.ndarray, ...]] = []
        self._pending_sample: list[tuple[np.ndarray, ...]] = []
        self._n_pending = 0

    @property
    def count_l(self) -> np.ndarray:
        """int64 [n_latents]: positive entries seen (every one lands in a histogram bin)."""
        return self.hist_hl.sum(0)

    def _merge_pending(self) -> None:
        if self._pending_top:
            row, val, idx = (np.concatenate(parts) for parts in zip(*self._pending_top))
            if len(row):
                _merge_into(
                    self.top_val_lm, self.top_idx_lm, None, row, val, idx, None, _top_priority
                )
        if self._pending_sample:
            row, key, idx, val = (np.concatenate(parts) for parts in zip(*self._pending_sample))
            if len(row):
                _merge_into(
                    self.sample_key_ls, self.sample_idx_ls, self.sample_val_ls,
                    row, key, idx, val, _sample_priority,
                )  # fmt: skip
        self._pending_top, self._pending_sample, self._n_pending = [], [], 0

    def update(
        self,
        entries: ActiveEntries,
        item_idx_b: torch.Tensor | np.ndarray,
        is_image_b: torch.Tensor | np.ndarray,
        levels_bl: torch.Tensor | np.ndarray | None = None,
    ) -> None:
        """Merge one batch, given as :func:`active_entries` of its full activations, for items
        ``item_idx_b`` (int64 [b], global); ``levels_bl`` from ``SAE.latent_levels`` when the
        SAE is Matryoshka."""
        item_idx_b, is_image_b = _np(item_idx_b, np.int64), _np(is_image_b, bool)
        n, b = entries.n_latents, entries.n_items
        assert n == self.n_latents and item_idx_b.shape == (b,) and is_image_b.shape == (b,)
        row, col, val = entries.latent, entries.item, entries.value
        self.n_items += b
        if is_image_b.all():
            self.count_image_l += np.bincount(row, minlength=n)
        elif is_image_b.any():
            self.count_image_l += np.bincount(row[is_image_b[col]], minlength=n)
        self.sum_l += np.bincount(row, weights=val, minlength=n)
        flat = entries.bin * np.int64(n) + row
        self.hist_hl += np.bincount(flat, minlength=HIST_N_BINS * n).reshape(HIST_N_BINS, n)
        del flat

        # Candidates: entries that beat the latent's current M-th best value (top-M) or whose
        # item key is below its current n-th smallest (sample). Thresholds only rise between
        # merges, so buffering candidates and merging every few batches loses nothing.
        # While thresholds are still low (the first batches), most entries qualify; each
        # latent's candidates are then first cut to about its best M in this batch.
        sel = np.flatnonzero(val > self.top_val_lm[:, -1].copy()[row])
        if len(sel) > 2 * self.top_m * n:
            sel = sel[_batch_cut(row[sel], entries.bin[sel], n, HIST_N_BINS, self.top_m)]
        self._pending_top.append((row[sel], val[sel], item_idx_b[col[sel]]))
        key_b = item_keys(item_idx_b, self.seed)
        sel = np.flatnonzero(key_b[col] < self.sample_key_ls[:, -1].copy()[row])
        if len(sel) > 2 * self.n_samples * n:
            rank_b = np.empty(b, dtype=np.int64)
            rank_b[np.argsort(key_b)] = np.arange(b)
            code_b = (_CUT_BINS - 1) - rank_b * _CUT_BINS // b  # smaller key, higher code
            sel = sel[_batch_cut(row[sel], code_b[col[sel]], n, _CUT_BINS, self.n_samples)]
        col_s = col[sel]
        self._pending_sample.append((row[sel], key_b[col_s], item_idx_b[col_s], val[sel]))
        self._n_pending += sum(len(p[0]) for p in (self._pending_top[-1], self._pending_sample[-1]))
        if self._n_pending >= self.merge_every:
            self._merge_pending()
        if levels_bl is not None and self.n_levels > 0:
            levels_lb = _np(levels_bl, np.int64).T
            kept = levels_lb >= 0
            row, _ = np.nonzero(kept)
            flat = row * self.n_levels + levels_lb[kept]
            counts = np.bincount(flat, minlength=n * self.n_levels)
            self.level_count_ln += counts.reshape(n, self.n_levels)

    def state(self) -> dict[str, np.ndarray]:
        """Everything needed to continue later (saved after each chunk, so kept small: counts
        and item indices as int32, sample keys recomputed from the sampled items)."""
        self._merge_pending()
        assert self.n_items < 2**31, "int32 state needs fewer than 2^31 items"
        out = {name: getattr(self, name) for name in self.STATE_FIELDS if name != "sample_key_ls"}
        for name in ("top_idx_lm", "sample_idx_ls", "hist_hl"):
            out[name] = out[name].astype(np.int32)
        out["scalars"] = np.array(
            [self.n_latents, self.top_m, self.n_samples, self.n_levels, self.seed, self.n_items],
            dtype=np.int64,
        )
        return out

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> LatentAccumulator:
        n_latents, top_m, n_samples, n_levels, seed, n_items = (int(v) for v in state["scalars"])
        acc = cls(n_latents, top_m, n_samples, n_levels, seed)
        for name in cls.STATE_FIELDS:
            if name == "sample_key_ls":
                continue
            value = np.array(state[name])
            expected = getattr(acc, name)
            assert value.shape == expected.shape, name
            assert value.dtype == expected.dtype or value.dtype == np.int32, name
            setattr(acc, name, value.astype(expected.dtype))
        sampled = acc.sample_idx_ls >= 0
        keys = item_keys(np.where(sampled, acc.sample_idx_ls, 0), seed)
        acc.sample_key_ls = np.where(sampled, keys, NO_KEY)
        acc.n_items = n_items
        return acc

    def finish(self) -> dict[str, np.ndarray]:
        """The per-latent arrays of the index (names as in ``LATENT_ARRAYS``)."""
        self._merge_pending()
        top_idx = np.where(self.top_val_lm > 0, self.top_idx_lm, -1).astype(np.int32)
        top_val = np.where(top_idx >= 0, self.top_val_lm, 0).astype(np.float32)
        # Samples sorted by value (descending) so quantile bins are contiguous slices.
        valid = self.sample_idx_ls >= 0
        sample_idx = np.where(valid, self.sample_idx_ls, -1)
        sample_val = np.where(valid, self.sample_val_ls, -np.inf)
        order = np.argsort(-sample_val, axis=1, kind="stable")
        sample_idx = np.take_along_axis(sample_idx, order, 1).astype(np.int32)
        sample_val = np.take_along_axis(sample_val, order, 1)
        sample_val = np.where(sample_idx >= 0, sample_val, 0).astype(np.float32)
        return {
            "latent_count": self.count_l,
            "latent_count_image": self.count_image_l.copy(),
            "latent_sum": self.sum_l.copy(),
            "latent_max": top_val[:, 0].copy(),  # the largest positive value; 0 if never active
            "latent_level": median_levels(self.level_count_ln, self.n_levels),
            "latent_top_idx": top_idx,
            "latent_top_val": top_val,
            "latent_sample_idx": sample_idx,
            "latent_sample_val": sample_val,
            "latent_hist": np.ascontiguousarray(self.hist_hl.T, dtype=np.int32),
        }


def _np(x: torch.Tensor | np.ndarray, dtype) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _batch_cut(row: np.ndarray, code: np.ndarray, n_rows: int, n_codes: int, keep: int):
    """Mask of the candidates that can be among their row's ``keep`` best, judged by an
    integer ``code`` in ``[0, n_codes)`` that orders like the priority (higher is better):
    per row, drop codes below the highest code that has at least ``keep`` candidates at or
    above it. Ties inside the cut code are kept, so nothing that could win is lost."""
    counts_rc = np.bincount(row * n_codes + code, minlength=n_rows * n_codes)
    above_rc = np.cumsum(counts_rc.reshape(n_rows, n_codes)[:, ::-1], axis=1)[:, ::-1]
    threshold_r = np.maximum((above_rc >= keep).sum(1) - 1, 0)
    return code >= threshold_r[row]


_CUT_BINS = 256
NO_KEY = np.iinfo(np.int64).max
_WORST = np.iinfo(np.int64).min


def _top_priority(val: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """int64, larger is better: the value, then the lower item index (values are > 0, so
    their float32 bit patterns order like the values)."""
    bits = val.astype(np.float32).view(np.int32).astype(np.int64)
    return np.where(idx >= 0, (bits << 32) | (0xFFFFFFFF - idx), _WORST)


def _sample_priority(key: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """int64, larger is better: the smaller item key."""
    return np.where(idx >= 0, -key, _WORST)


def _merge_into(
    keep_key_lm: np.ndarray,
    keep_idx_lm: np.ndarray,
    keep_val_lm: np.ndarray | None,
    row: np.ndarray,
    key: np.ndarray,
    idx: np.ndarray,
    val: np.ndarray | None,
    priority,
) -> None:
    """In place, per row: keep the ``m`` entries of highest ``priority(key, idx)`` among the
    kept ones and the candidates (flat lists in any order; ``val`` is a payload).

    The candidates are first cut to each row's best ``m`` (one sort of the candidates only),
    then each touched row merges at most ``2m`` entries with one ``topk``.
    """
    m = keep_key_lm.shape[1]
    prio = priority(key, idx)
    order = np.lexsort((-prio, row))  # by row, best first
    row, prio = row[order], prio[order]
    rows, start, counts = np.unique(row, return_index=True, return_counts=True)
    rank = np.arange(len(row)) - np.repeat(start, counts)
    best = rank < m
    pick = order[best]
    slot, rank = np.repeat(np.arange(len(rows)), counts)[best], rank[best]
    width = min(int(counts.max()), m)
    block = np.full((len(rows), m + width), _WORST, dtype=np.int64)
    block[:, :m] = priority(keep_key_lm[rows], keep_idx_lm[rows])
    block[slot, m + rank] = prio[best]
    pos = torch.from_numpy(block).topk(m, dim=1).indices.numpy()  # sorted, best first

    def merged(kept: np.ndarray, new: np.ndarray, empty) -> np.ndarray:
        both = np.full((len(rows), m + width), empty, dtype=kept.dtype)
        both[:, :m] = kept[rows]
        both[slot, m + rank] = new[pick]
        return np.take_along_axis(both, pos, 1)

    # Padding picked only by rows with fewer than m entries in all: it must read as empty.
    empty_key = -np.inf if keep_key_lm.dtype.kind == "f" else NO_KEY
    new_key, new_idx = merged(keep_key_lm, key, empty_key), merged(keep_idx_lm, idx, -1)
    if keep_val_lm is not None:
        keep_val_lm[rows] = merged(keep_val_lm, val, 0)
    keep_key_lm[rows], keep_idx_lm[rows] = new_key, new_idx


def median_levels(level_count_ln: np.ndarray, n_levels: int) -> np.ndarray:
    """Per latent, the (lower) median level over the items where a level kept it; -1 if none."""
    n = level_count_ln.shape[0]
    if n_levels == 0:
        return np.full(n, -1, dtype=np.int8)
    total_l = level_count_ln.sum(1)
    cum_ln = np.cumsum(level_count_ln, axis=1)
    median_l = (cum_ln * 2 < total_l[:, None]).sum(1)  # first level where cum >= total / 2
    return np.where(total_l > 0, median_l, -1).astype(np.int8)


# --------------------------------------------------------------------------- files
class NpyAppender:
    """Grow a ``.npy`` file by appending rows; ``close()`` writes the final shape and renames it.

    The rows go to ``.<name>.partial`` beside the target with plain appends (pages already
    written do not stay in the process's memory, unlike a memory map). The header has a fixed
    size, so it is rewritten in place for the final row count: no copy at the end. A run that
    stops can reopen the partial file at a known row count (``resume_rows``); rows written
    after that point are cut off.
    """

    HEADER_BYTES = 128  # magic + version + length + dict padded with spaces; a multiple of 64

    def __init__(
        self, fpath: Path, dtype, row_shape: tuple[int, ...] = (), resume_rows: int = 0
    ) -> None:
        self.fpath = Path(fpath)
        self.tmp = self.fpath.with_name(f".{self.fpath.name}.partial")
        self.dtype, self.row_shape = np.dtype(dtype), tuple(row_shape)
        self.row_bytes = self.dtype.itemsize * int(np.prod(self.row_shape, dtype=np.int64))
        if resume_rows:
            size = self.HEADER_BYTES + resume_rows * self.row_bytes
            if not self.tmp.is_file() or self.tmp.stat().st_size < size:
                raise ValueError(f"{self.tmp.name} holds fewer than {resume_rows} rows")
            self.file = open(self.tmp, "r+b")  # noqa: SIM115 (closed in close())
            self.file.truncate(size)
            self.file.seek(size)
        else:
            self.file = open(self.tmp, "wb")  # noqa: SIM115 (closed in close())
            self.file.write(self._header(0))
        self.n_rows = resume_rows

    def _header(self, n_rows: int) -> bytes:
        shape = (n_rows, *self.row_shape)
        descr = np.lib.format.dtype_to_descr(self.dtype)
        text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {shape!r}, }}"
        body = text.ljust(self.HEADER_BYTES - 10 - 1) + "\n"
        assert len(body) == self.HEADER_BYTES - 10, text
        return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body.encode("latin1")

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        assert rows.shape[1:] == self.row_shape, (rows.shape, self.row_shape)
        self.file.write(rows.reshape(-1).view(np.uint8))
        self.n_rows += len(rows)

    def flush(self) -> None:
        """Hand the rows written so far to the OS (before recording ``n_rows`` as resumable)."""
        self.file.flush()

    def close(self) -> Path:
        self.file.seek(0)
        self.file.write(self._header(self.n_rows))
        self.file.close()
        os.replace(self.tmp, self.fpath)
        return self.fpath


def write_latent_arrays(dpath: Path, arrays: dict[str, np.ndarray]) -> None:
    assert set(arrays) == set(LATENT_ARRAYS), sorted(arrays)
    for name, array in arrays.items():
        atomic_save_npy(dpath / f"{name}.npy", array)


def index_file_names() -> list[str]:
    """The files a complete index must have (``manifest.json`` aside)."""
    return [ITEMS_NAME, EMBEDDINGS_NAME, *CODES_NAMES, *(f"{n}.npy" for n in LATENT_ARRAYS)]


def index_files(dpath: Path) -> dict[str, int]:
    """Name -> size in bytes of the files a complete index must have, and of the optional ones
    it has (for the manifest)."""
    names = [*index_file_names(), *(n for n in OPTIONAL_NAMES if (dpath / n).is_file())]
    return {name: (dpath / name).stat().st_size for name in names}


def read_manifest(dpath: Path) -> dict:
    """The manifest of a finished index; ``CorruptIndexError`` saying what is wrong otherwise."""
    fpath = Path(dpath) / MANIFEST_NAME
    if not fpath.is_file():
        raise CorruptIndexError(f"{dpath} has no {MANIFEST_NAME} (not an index, or unfinished)")
    try:
        manifest = json.loads(fpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptIndexError(f"{fpath} is not valid JSON: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        found = manifest.get("schema") if isinstance(manifest, dict) else None
        raise CorruptIndexError(f"{fpath} has schema {found!r}; this version reads schema {SCHEMA}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise CorruptIndexError(f"{fpath} lists no files")
    for name, size in files.items():
        fpath_i = Path(dpath) / name
        if not fpath_i.is_file():
            raise CorruptIndexError(f"index file {name} is missing from {dpath}")
        if fpath_i.stat().st_size != size:
            raise CorruptIndexError(
                f"index file {name} has {fpath_i.stat().st_size} bytes, the manifest says {size}"
            )
    return manifest


# --------------------------------------------------------------------------- reading
class ActivationIndex:
    """A finished index, memory-mapped. Item indices are row numbers of :attr:`items`."""

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
        """One row per item: item_id, modality, source, label (+ corpus_idx, n_active, attr_*)."""
        import pyarrow.parquet as pq

        # One chunk per column: row lookups (iloc) on chunked Arrow strings cost O(chunks).
        return pq.read_table(self.dpath / ITEMS_NAME).combine_chunks().to_pandas()

    @cached_property
    def _is_image(self) -> np.ndarray:
        return (self.items["modality"] == "image").to_numpy()

    def _item_rows(self, item_idx: np.ndarray, **columns: np.ndarray) -> pd.DataFrame:
        rows = self.items.iloc[item_idx].reset_index(drop=True)
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
        row = self.items.iloc[int(item_idx)]
        return load_item_image(CorpusItem(row["item_id"], row["modality"], row["source"]))

    def item_codes(self, item_idx: int) -> ItemCodes:
        """Stored non-zero latents of one item (its top-K), largest first."""
        if not 0 <= item_idx < self.n_items:
            raise ValueError(f"item_idx must be in [0, {self.n_items}), got {item_idx}")
        lo, hi = int(self.codes_indptr[item_idx]), int(self.codes_indptr[item_idx + 1])
        return ItemCodes(
            np.asarray(self.codes_ids[lo:hi]),
            np.asarray(self.codes_values[lo:hi], dtype=np.float32),
        )

    def nearest(
        self, x_d: np.ndarray | torch.Tensor, k: int = 10, modality: str | None = None
    ) -> pd.DataFrame:
        """Items whose embeddings are most cosine-similar to ``x_d`` (a CLIP embedding)."""
        if modality not in (None, "image", "text"):
            raise ValueError(f"modality must be None, 'image' or 'text', got {modality!r}")
        q = np.asarray(x_d.detach().cpu() if isinstance(x_d, torch.Tensor) else x_d, np.float32)
        if q.shape != (self.embed_dim,):
            raise ValueError(f"expected one {self.embed_dim}-d embedding, got shape {q.shape}")
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        sims = np.empty(self.n_items, dtype=np.float32)
        step = 65536
        for lo in range(0, self.n_items, step):
            block = np.asarray(self.embeddings[lo : lo + step], dtype=np.float32)
            norms = np.linalg.norm(block, axis=1).clip(min=1e-12)
            sims[lo : lo + step] = block @ q / norms
        if modality is not None:
            sims[self._is_image != (modality == "image")] = -np.inf
        k = min(k, int(np.isfinite(sims).sum()))
        top = np.argpartition(-sims, k - 1)[:k] if k > 0 else np.zeros(0, dtype=np.int64)
        top = top[np.argsort(-sims[top], kind="stable")]
        return self._item_rows(top, similarity=sims[top])

    @cached_property
    def input_stats(self) -> ModalityStats:
        """The statistics each modality was encoded with (the checkpoint's unless the index
        holds others); queries of that modality must go through the same."""
        from sae_explorer.modality_stats import ModalityStats

        try:
            return ModalityStats.load(self.dpath)
        except (OSError, ValueError, KeyError) as e:
            raise CorruptIndexError(f"cannot read {INPUT_STATS_NAME} in {self.dpath}: {e}") from e

    # ------------------------------------------------------------------ names
    @cached_property
    def names(self) -> LatentNames | None:
        """Vocabulary names of the latents (top 5 each), or None if none were computed."""
        from sae_explorer.naming import LatentNames

        return LatentNames.load(self.dpath) if LatentNames.exists(self.dpath) else None

    def _check_latent(self, latent_id: int) -> int:
        i = int(latent_id)
        if not 0 <= i < self.n_latents:
            raise ValueError(f"latent_id must be in [0, {self.n_latents}), got {latent_id}")
        return i
