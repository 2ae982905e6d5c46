"""Indexing where the SAE runs: one batch of full activations -> statistics and codes, in torch.

:class:`DeviceAccumulator` keeps the same per-latent state as
:class:`~sae_explorer.index.accumulator.LatentAccumulator` (counts, sums, histograms, level
counts, top-M items, a random sample) as tensors on the activations' device and merges each
dense batch there; :func:`device_codes` cuts a batch to per-item top-K codes. Only the sparse
codes leave the device per batch; the per-latent state leaves it at checkpoints and at the end,
in ``LatentAccumulator``'s state format (so checkpoints, resumes and the finished arrays are
shared with the host path, and the results are the same: identical top-M, samples, counts,
histograms and codes, sums equal up to float64 rounding order).

Ties are broken as the host path breaks them, by packing each candidate into one int64
priority (:func:`~sae_explorer.index.accumulator._top_priority`): the float32 bit pattern of
the value (positive floats order like their bits) above the complement of the item or latent
index, so one ``topk`` over integers orders by value, then by the lower index.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from sae_explorer.index.accumulator import LatentAccumulator, item_keys
from sae_explorer.index.sparse import HIST_CODE_LO, HIST_N_BINS, HIST_SHIFT, SparseCodes

WORST = torch.iinfo(torch.int64).min
"""Priority of an empty slot or an inactive entry: below every real one."""
_LOW32 = 0xFFFFFFFF


class DeviceCodes(NamedTuple):
    """One batch's per-item top-K codes as they leave the device, and its active counts."""

    codes: SparseCodes
    n_active_b: np.ndarray  # int64 [b]: positive entries per item


def _ones_as(index_bl: torch.Tensor) -> torch.Tensor:
    """Ones of ``index_bl``'s shape without allocating them (a broadcast scalar)."""
    return torch.ones((), dtype=index_bl.dtype, device=index_bl.device).expand_as(index_bl)


def _value_priority(z_bl: torch.Tensor, pos_bl: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """int64 priority of every entry: its value's bits, then the lower ``low`` index (an item
    index per row ``[b, 1]`` or a latent index per column ``[1, l]``); WORST where inactive."""
    bits = z_bl.view(torch.int32).to(torch.int64)
    return torch.where(pos_bl, (bits << 32) | (_LOW32 - low), WORST)


def device_codes(z_bl: torch.Tensor, k: int) -> DeviceCodes:
    """Each item's ``k`` largest positive entries, largest first and ties to the lower latent
    (what :func:`~sae_explorer.index.sparse.top_codes` gives), cut on ``z_bl``'s device."""
    z_bl = z_bl.float()
    n = z_bl.shape[1]
    pos_bl = z_bl > 0
    latent_1l = torch.arange(n, device=z_bl.device).unsqueeze(0)
    prio_bk = _value_priority(z_bl, pos_bl, latent_1l).topk(min(k, n), dim=1).values
    kept_bk = prio_bk != WORST
    latent_bk = _LOW32 - (prio_bk & _LOW32)
    value_bk = (prio_bk >> 32).to(torch.int32).view(torch.float32)
    codes = SparseCodes(
        counts_b=kept_bk.sum(1).cpu().numpy().astype(np.int64),
        ids=latent_bk[kept_bk].to(torch.int32).cpu().numpy(),
        values=value_bk[kept_bk].to(torch.float16).cpu().numpy(),
    )
    return DeviceCodes(codes, pos_bl.sum(1).cpu().numpy().astype(np.int64))


class DeviceAccumulator:
    """:class:`LatentAccumulator`'s statistics, merged from dense batches in torch on ``device``.

    The top-M items are kept as int64 priorities alone (the value's bits and the item index
    are both in them); the sample as item-key priorities with the item index and value beside.
    Histograms and level counts carry one extra row that inactive entries are scattered into,
    so a batch is merged without compacting it to its active entries.
    """

    def __init__(
        self,
        n_latents: int,
        top_m: int = 32,
        n_samples: int = 64,
        n_levels: int = 0,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        if top_m < 1 or n_samples < 1:
            raise ValueError(f"top_m and n_samples must be >= 1, got {top_m}, {n_samples}")
        n, dev = n_latents, torch.device(device)
        self.n_latents, self.top_m, self.n_samples = n, top_m, n_samples
        self.n_levels, self.seed, self.device = n_levels, seed, dev
        self.n_items = 0
        self.count_image_l = torch.zeros(n, dtype=torch.int64, device=dev)
        self.sum_l = torch.zeros(n, dtype=torch.float64, device=dev)
        self.top_prio_lm = torch.full((n, top_m), WORST, dtype=torch.int64, device=dev)
        self.sample_prio_ls = torch.full((n, n_samples), WORST, dtype=torch.int64, device=dev)
        self.sample_idx_ls = torch.full((n, n_samples), -1, dtype=torch.int64, device=dev)
        self.sample_val_ls = torch.zeros((n, n_samples), dtype=torch.float32, device=dev)
        self.hist_hl = torch.zeros((HIST_N_BINS + 1, n), dtype=torch.int64, device=dev)
        self.level_count_nl = torch.zeros((n_levels + 1, n), dtype=torch.int64, device=dev)

    def update(
        self,
        z_bl: torch.Tensor,
        item_idx_b: np.ndarray,
        is_image_b: np.ndarray,
        levels_bl: torch.Tensor | None = None,
    ) -> None:
        """Merge one batch of full activations ``z_bl`` [b, n_latents] (on this device) for
        items ``item_idx_b`` (int64 [b], global); ``levels_bl`` from ``SAE.latent_levels``."""
        z_bl = z_bl.float()
        b, n = z_bl.shape
        assert n == self.n_latents and item_idx_b.shape == (b,) and is_image_b.shape == (b,)
        dev = self.device
        pos_bl = z_bl > 0
        self.n_items += b
        if is_image_b.all():
            self.count_image_l += pos_bl.sum(0)
        elif is_image_b.any():
            self.count_image_l += pos_bl[torch.from_numpy(is_image_b).to(dev)].sum(0)
        self.sum_l += torch.where(pos_bl, z_bl, 0).sum(0, dtype=torch.float64)
        bin_bl = ((z_bl.view(torch.int32) >> HIST_SHIFT) - HIST_CODE_LO).clamp_(0, HIST_N_BINS - 1)
        bin_bl = torch.where(pos_bl, bin_bl, HIST_N_BINS).to(torch.int64)
        self.hist_hl.scatter_add_(0, bin_bl, _ones_as(bin_bl))
        del bin_bl
        if levels_bl is not None and self.n_levels > 0:
            levels_bl = levels_bl.to(dev, torch.int64)
            level_bl = torch.where(levels_bl >= 0, levels_bl, self.n_levels)
            self.level_count_nl.scatter_add_(0, level_bl, _ones_as(level_bl))
        idx_b = torch.from_numpy(np.ascontiguousarray(item_idx_b, dtype=np.int64)).to(dev)
        self._merge_top(_value_priority(z_bl, pos_bl, idx_b.unsqueeze(1)))
        key_b = torch.from_numpy(item_keys(item_idx_b, self.seed)).to(dev)
        self._merge_sample(torch.where(pos_bl, -key_b.unsqueeze(1), WORST), idx_b, z_bl)

    def _merge_top(self, prio_bl: torch.Tensor) -> None:
        best_ml = prio_bl.topk(min(self.top_m, prio_bl.shape[0]), dim=0).values
        both_lm = torch.cat([self.top_prio_lm, best_ml.T], dim=1)
        self.top_prio_lm = both_lm.topk(self.top_m, dim=1).values

    def _merge_sample(self, prio_bl: torch.Tensor, idx_b: torch.Tensor, z_bl: torch.Tensor):
        best_sl, row_sl = prio_bl.topk(min(self.n_samples, prio_bl.shape[0]), dim=0)
        prio_ls = torch.cat([self.sample_prio_ls, best_sl.T], dim=1)
        idx_ls = torch.cat([self.sample_idx_ls, idx_b[row_sl].T], dim=1)
        val_ls = torch.cat([self.sample_val_ls, z_bl.gather(0, row_sl).T], dim=1)
        self.sample_prio_ls, pick_ls = prio_ls.topk(self.n_samples, dim=1)
        self.sample_idx_ls = idx_ls.gather(1, pick_ls)
        self.sample_val_ls = val_ls.gather(1, pick_ls)

    # ------------------------------------------------------------------ state, as the host's
    def state(self) -> dict[str, np.ndarray]:
        """The state in :meth:`LatentAccumulator.state`'s format (what a checkpoint saves)."""
        top = self.top_prio_lm.cpu().numpy()
        empty = top == np.iinfo(np.int64).min
        top_val = np.where(empty, -np.inf, (top >> 32).astype(np.int32).view(np.float32))
        top_idx = np.where(empty, -1, _LOW32 - (top & _LOW32))
        sampled = self.sample_prio_ls.cpu().numpy() != np.iinfo(np.int64).min
        level_count_ln = self.level_count_nl[: max(self.n_levels, 1)].T.cpu().numpy()
        if self.n_levels == 0:
            level_count_ln = np.zeros_like(level_count_ln)
        host = LatentAccumulator(
            self.n_latents, self.top_m, self.n_samples, self.n_levels, self.seed
        )
        host.n_items = self.n_items
        host.count_image_l = self.count_image_l.cpu().numpy()
        host.sum_l = self.sum_l.cpu().numpy()
        host.top_val_lm, host.top_idx_lm = top_val.astype(np.float32), top_idx
        host.sample_idx_ls = np.where(sampled, self.sample_idx_ls.cpu().numpy(), -1)
        host.sample_val_ls = np.where(sampled, self.sample_val_ls.cpu().numpy(), 0)
        host.hist_hl = self.hist_hl[:HIST_N_BINS].cpu().numpy()
        host.level_count_ln = np.ascontiguousarray(level_count_ln)
        return host.state()

    @classmethod
    def from_state(
        cls, state: dict[str, np.ndarray], device: torch.device | str
    ) -> DeviceAccumulator:
        """Continue from a saved state (either path's) on ``device``."""
        host = LatentAccumulator.from_state(state)
        acc = cls(host.n_latents, host.top_m, host.n_samples, host.n_levels, host.seed, device)
        dev = acc.device
        acc.n_items = host.n_items
        acc.count_image_l = torch.from_numpy(host.count_image_l).to(dev)
        acc.sum_l = torch.from_numpy(host.sum_l).to(dev)
        top_idx = host.top_idx_lm
        bits = host.top_val_lm.view(np.int32).astype(np.int64)
        top = np.where(top_idx >= 0, (bits << 32) | (_LOW32 - top_idx), np.iinfo(np.int64).min)
        acc.top_prio_lm = torch.from_numpy(top).to(dev)
        sampled = host.sample_idx_ls >= 0
        acc.sample_prio_ls = torch.from_numpy(
            np.where(sampled, -host.sample_key_ls, np.iinfo(np.int64).min)
        ).to(dev)
        acc.sample_idx_ls = torch.from_numpy(host.sample_idx_ls).to(dev)
        acc.sample_val_ls = torch.from_numpy(host.sample_val_ls).to(dev)
        acc.hist_hl[:HIST_N_BINS] = torch.from_numpy(host.hist_hl).to(dev)
        if host.n_levels:
            acc.level_count_nl[: host.n_levels] = torch.from_numpy(host.level_count_ln.T).to(dev)
        return acc

    def finish(self) -> dict[str, np.ndarray]:
        """The per-latent arrays of the index, as :meth:`LatentAccumulator.finish` gives them."""
        return LatentAccumulator.from_state(self.state()).finish()
