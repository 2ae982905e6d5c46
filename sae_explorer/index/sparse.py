"""From one batch of dense SAE activations to what the index keeps of it.

:func:`active_entries` lists a batch's positive entries once (with the histogram bin of each
value); every per-batch statistic reads that list, and :func:`top_codes` cuts it to each item's
top-K codes. Histogram bins come from the float32 bit pattern (:func:`hist_bin_edges`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

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


class SparseCodes(NamedTuple):
    """One batch's per-item top-K codes, row-major (items in order, values descending)."""

    counts_b: np.ndarray  # int64 [b]
    ids: np.ndarray  # int32 [nnz]
    values: np.ndarray  # float16 [nnz]


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
