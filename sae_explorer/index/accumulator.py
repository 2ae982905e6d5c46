"""Per-latent statistics of the full activations, merged batch by batch in fixed-size state."""

from __future__ import annotations

import numpy as np
import torch

from sae_explorer.index.sparse import HIST_N_BINS, ActiveEntries


def item_keys(item_idx_b: torch.Tensor | np.ndarray, seed: int) -> np.ndarray:
    """A fixed pseudo-random 63-bit key per item (splitmix64 of index and seed).

    Each latent keeps the active items with the smallest keys: a uniform sample of them that
    does not depend on batch or chunk boundaries, so resumed runs sample the same items.
    """
    with np.errstate(over="ignore"):
        x = _np(item_idx_b, np.int64).astype(np.uint64) + np.uint64(seed) * np.uint64(
            0x9E3779B97F4A7C15
        )
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

    def absorb(self, other: LatentAccumulator) -> None:
        """Merge in an accumulator built over other items (a shard of the corpus): counts,
        sums and histograms add up; the top-M items and the sample are merged exactly, so the
        result is the one a single pass over both would give (sums up to rounding order)."""
        settings = ("n_latents", "top_m", "n_samples", "n_levels", "seed")
        mine, theirs = ([getattr(a, name) for name in settings] for a in (self, other))
        assert mine == theirs, (settings, mine, theirs)
        other._merge_pending()
        self.n_items += other.n_items
        for name in ("count_image_l", "sum_l", "hist_hl", "level_count_ln"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        row, slot = np.nonzero(other.top_idx_lm >= 0)
        self._pending_top.append((row, other.top_val_lm[row, slot], other.top_idx_lm[row, slot]))
        row, slot = np.nonzero(other.sample_idx_ls >= 0)
        self._pending_sample.append(
            (row, *(a[row, slot] for a in (other.sample_key_ls, other.sample_idx_ls)),
             other.sample_val_ls[row, slot])
        )  # fmt: skip
        self._merge_pending()

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
