"""Two SAEs of the same CLIP compared: latents matched one-to-one by decoder direction, and how
alike each matched pair fires over a set of embeddings.

Matching is the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) on the cosine of
the unit-norm decoder directions, maximising the summed cosine. Dictionaries of different widths
are matched rectangularly: every latent of the narrower one gets a partner and the wider one
keeps ``|n_a - n_b|`` latents unmatched. Decoder directions live in each SAE's model space,
``(x - mean) * scaling_factor``: a mean shift and one scalar factor leave directions unchanged,
so cosines between two SAEs' directions compare CLIP-space directions.

Memory and time: the assignment needs the whole ``n_a x n_b`` cost matrix in float64 (scipy
works in doubles), filled here from float32 blocks of ``BLOCK_ROWS`` rows so no float32 copy of
the whole matrix exists beside it. Above ``max_cells`` cells (default ``MAX_MATCH_CELLS``,
8,192 x 8,192 = 67M cells, 512 MiB) matching is refused with a message naming the limit: two
24,576-latent dictionaries would need 4.5 GiB and the Hungarian algorithm's time grows as
``n^3``. Raise ``CompareConfig.max_cells`` on a machine that has the memory, or compare pruned
SAEs (``SAE.prune_latents``).

Activation correlation: the Pearson correlation over the given embeddings between each matched
pair's activations, each SAE encoding as its own library does (``sae.encode``) and each modality
through the statistics it needs (``modality_saes``). It is accumulated batch by batch in float64
sums, so memory is ``batch_size x (n_a + n_b)`` whatever the number of embeddings; by default
over at most ``MAX_CORRELATION_ITEMS`` of them, spread evenly (``CompareConfig.max_items``). A
latent that never varies over them (dead on them) has no correlation: NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from scipy.optimize import linear_sum_assignment

from sae_explorer.cli import doc
from sae_explorer.corpus import spread_indices
from sae_explorer.modality_stats import (
    MAX_STATS_ITEMS,
    ModalitySAEs,
    ModalityStats,
    OwnStats,
    corpus_source,
    needs_own_stats,
    stats_from_embeddings,
)
from sae_explorer.progress import Progress
from sae_explorer.sae import SAE

MAX_MATCH_CELLS = 8192 * 8192
"""Largest ``n_a * n_b`` matched by default: its float64 cost matrix takes 512 MiB."""
BLOCK_ROWS = 1024
"""Rows of the cosine matrix computed at once (float32), then written into the cost matrix."""
MAX_CORRELATION_ITEMS = 20_000
"""Embeddings correlations are computed over by default, spread evenly over the given ones: two
768 -> 6,144 SAEs encode ~750 items / s on a 2-core CPU, so ~30 s; ``None`` takes them all."""


@dataclass(frozen=True)
class CompareConfig:
    """How two SAEs are compared; the help texts are also the CLI help."""

    threshold: float = field(
        default=0.7, metadata=doc("decoder cosine above which a match counts as a good one")
    )
    max_cells: int = field(
        default=MAX_MATCH_CELLS,
        metadata=doc("largest n_a x n_b matched (the float64 cost matrix takes 8 bytes a cell)"),
    )
    batch_size: int = field(default=1024, metadata=doc("embeddings encoded at once"))
    max_items: int | None = field(
        default=MAX_CORRELATION_ITEMS,
        metadata=doc("embeddings the correlations are over, spread evenly (None: all)"),
    )

    def __post_init__(self) -> None:
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be a cosine in [-1, 1], got {self.threshold}")
        if self.max_items is not None and self.max_items < 2:
            raise ValueError(f"max_items must be >= 2 or None, got {self.max_items}")
        if self.max_cells < 1 or self.batch_size < 1:
            raise ValueError(
                f"max_cells and batch_size must be >= 1, got {self.max_cells}, {self.batch_size}"
            )


class Matching(NamedTuple):
    """A one-to-one matching of A's latents with B's (-1 / NaN: no partner)."""

    b_of_a: np.ndarray  # int64 [n_a], B's latent matched with each of A's
    a_of_b: np.ndarray  # int64 [n_b], A's latent matched with each of B's
    cosine_a: np.ndarray  # float64 [n_a], decoder cosine of each A latent with its match


class ComparisonSummary(NamedTuple):
    n_latents_a: int
    n_latents_b: int
    n_matched: int  # min(n_a, n_b)
    mean_cosine: float  # over the matched pairs
    threshold: float
    share_above_a: float  # share of A's latents whose match has cosine >= threshold
    share_above_b: float  # the same for B's latents
    n_unmatched_a: int  # A's latents without a partner (A is the wider dictionary)
    n_unmatched_b: int
    mean_correlation: float  # over matched pairs active on the embeddings (NaN when none is)
    n_items: int  # embeddings the correlations are over


class SAEComparison(NamedTuple):
    summary: ComparisonSummary
    matching: Matching
    correlation_a: np.ndarray  # float64 [n_a], activation correlation with the match (NaN: none)
    unmatched_a: np.ndarray  # int64, A's latents without a partner
    unmatched_b: np.ndarray  # int64, B's latents without a partner

    def table(self) -> pd.DataFrame:
        """One row per latent of A: latent, match (B's latent, -1: none), cosine, correlation;
        best matches first."""
        table = pd.DataFrame(
            {
                "latent": np.arange(len(self.matching.b_of_a)),
                "match": self.matching.b_of_a,
                "cosine": self.matching.cosine_a.round(4),
                "correlation": self.correlation_a.round(4),
            }
        )
        return table.sort_values(["cosine", "latent"], ascending=[False, True], kind="stable")


def check_widths(sae_a: SAE, sae_b: SAE) -> None:
    """ValueError unless both SAEs read embeddings of the same CLIP width."""
    if sae_a.n_inputs != sae_b.n_inputs:
        raise ValueError(
            f"the SAEs read CLIP embeddings of different widths ({sae_a.n_inputs} and "
            f"{sae_b.n_inputs}); compare two SAEs of the same CLIP model"
        )


def cost_matrix(dict_a_ld: torch.Tensor, dict_b_ld: torch.Tensor, max_cells: int) -> np.ndarray:
    """float64 [n_a, n_b]: minus the cosine of each pair of unit-norm decoder directions, filled
    from float32 blocks; ValueError above ``max_cells`` cells."""
    n_a, n_b = len(dict_a_ld), len(dict_b_ld)
    if n_a * n_b > max_cells:
        raise ValueError(
            f"matching {n_a:,} x {n_b:,} latents needs a {n_a * n_b:,}-cell float64 cost matrix "
            f"({n_a * n_b * 8 / 2**30:.1f} GiB), above the limit of {max_cells:,} cells "
            f"({max_cells * 8 / 2**30:.1f} GiB, CompareConfig.max_cells); raise max_cells on a "
            "machine with the memory (the Hungarian algorithm's time grows as n^3), or compare "
            "pruned SAEs (SAE.prune_latents)"
        )
    a_ld = dict_a_ld.detach().float().cpu()
    b_dl = dict_b_ld.detach().float().cpu().t().contiguous()
    cost = np.empty((n_a, n_b), dtype=np.float64)
    for lo in range(0, n_a, BLOCK_ROWS):
        cost[lo : lo + BLOCK_ROWS] = (a_ld[lo : lo + BLOCK_ROWS] @ b_dl).neg_().numpy()
    return cost


def match_latents(
    dict_a_ld: torch.Tensor, dict_b_ld: torch.Tensor, max_cells: int = MAX_MATCH_CELLS
) -> Matching:
    """The one-to-one matching maximising the summed decoder cosine (Hungarian algorithm);
    ``dict_*_ld`` are unit-norm decoder directions (``SAE.get_dictionary()``)."""
    if dict_a_ld.ndim != 2 or dict_b_ld.ndim != 2 or dict_a_ld.shape[1] != dict_b_ld.shape[1]:
        raise ValueError(
            f"decoder directions must be [n_a, d] and [n_b, d], got {tuple(dict_a_ld.shape)} "
            f"and {tuple(dict_b_ld.shape)}"
        )
    cost = cost_matrix(dict_a_ld, dict_b_ld, max_cells)
    rows, cols = linear_sum_assignment(cost)
    b_of_a = np.full(len(dict_a_ld), -1, dtype=np.int64)
    a_of_b = np.full(len(dict_b_ld), -1, dtype=np.int64)
    cosine_a = np.full(len(dict_a_ld), np.nan)
    b_of_a[rows], a_of_b[cols] = cols, rows
    cosine_a[rows] = -cost[rows, cols]
    return Matching(b_of_a, a_of_b, cosine_a)


def modality_saes(sae: SAE, x_nd: np.ndarray, is_image_n: np.ndarray) -> ModalitySAEs:
    """``sae`` as each modality of these embeddings sees it: an SAE trained on one modality
    encodes the other through that modality's statistics, computed from (at most
    ``MAX_STATS_ITEMS`` of) its embeddings here, as the index does from the corpus."""
    is_image_n = np.asarray(is_image_n, dtype=bool)
    own: dict[str, OwnStats] = {}
    for modality, rows in (
        ("image", np.flatnonzero(is_image_n)),
        ("text", np.flatnonzero(~is_image_n)),
    ):
        if len(rows) and needs_own_stats(sae, modality):
            sample = rows[spread_indices(len(rows), MAX_STATS_ITEMS)]
            stats = stats_from_embeddings(sae, np.asarray(x_nd[sample], dtype=np.float32))
            own[modality] = OwnStats(stats, corpus_source(modality, len(sample), len(rows)))
    return ModalityStats(**own).saes(sae)


@torch.inference_mode()
def activation_correlation(
    saes_a: ModalitySAEs,
    saes_b: ModalitySAEs,
    x_nd: np.ndarray,
    is_image_n: np.ndarray,
    pairs_a: np.ndarray,
    pairs_b: np.ndarray,
    batch_size: int = 1024,
    progress: Progress | None = None,
) -> np.ndarray:
    """float64 [n_pairs]: Pearson correlation over ``x_nd`` of A's latent ``pairs_a[i]`` with
    B's ``pairs_b[i]``; NaN where either never varies."""
    n_items = len(x_nd)
    ids_a = torch.as_tensor(pairs_a, dtype=torch.long, device=saes_a.image.device)
    ids_b = torch.as_tensor(pairs_b, dtype=torch.long, device=saes_b.image.device)
    sums = np.zeros((5, len(pairs_a)), dtype=np.float64)  # a, b, a^2, b^2, ab
    for lo in range(0, n_items, batch_size):
        x_bd = torch.from_numpy(np.asarray(x_nd[lo : lo + batch_size], dtype=np.float32))
        image_b = np.asarray(is_image_n[lo : lo + batch_size])
        a_bm = saes_a.encode(x_bd.to(saes_a.image.device), image_b)[:, ids_a].double().cpu()
        b_bm = saes_b.encode(x_bd.to(saes_b.image.device), image_b)[:, ids_b].double().cpu()
        for row, value in enumerate((a_bm, b_bm, a_bm * a_bm, b_bm * b_bm, a_bm * b_bm)):
            sums[row] += value.sum(0).numpy()
        if progress is not None:
            done = min(lo + batch_size, n_items)
            progress(done / n_items, f"activations of both SAEs: {done:,}/{n_items:,} items")
    s_a, s_b, s_aa, s_bb, s_ab = sums
    cov = n_items * s_ab - s_a * s_b
    var_a, var_b = n_items * s_aa - s_a**2, n_items * s_bb - s_b**2
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / np.sqrt(var_a * var_b)
    # Relative to their scale, variances this small are rounding left over from a constant.
    flat = (var_a <= 1e-12 * n_items * s_aa) | (var_b <= 1e-12 * n_items * s_bb)
    return np.where(flat, np.nan, np.clip(corr, -1.0, 1.0))


def compare_saes(
    saes_a: ModalitySAEs,
    saes_b: ModalitySAEs,
    x_nd: np.ndarray,
    is_image_n: np.ndarray,
    config: CompareConfig = CompareConfig(),
    progress: Progress | None = None,
) -> SAEComparison:
    """Match A's latents with B's by decoder cosine and correlate each pair's activations over
    the embeddings ``x_nd`` [n, d] (raw CLIP space; ``is_image_n`` says which are images)."""
    sae_a, sae_b = saes_a.image, saes_b.image
    check_widths(sae_a, sae_b)
    if x_nd.ndim != 2 or x_nd.shape[1] != sae_a.n_inputs or len(is_image_n) != len(x_nd):
        raise ValueError(
            f"embeddings must be [n, {sae_a.n_inputs}] with one modality flag each, got "
            f"{tuple(x_nd.shape)} and {len(is_image_n)} flags"
        )
    if progress is not None:
        progress(0.0, f"matching {sae_a.n_latents:,} x {sae_b.n_latents:,} decoder directions")
    with torch.inference_mode():
        matching = match_latents(sae_a.get_dictionary(), sae_b.get_dictionary(), config.max_cells)
    pairs_a = np.flatnonzero(matching.b_of_a >= 0)
    pairs_b = matching.b_of_a[pairs_a]

    def sub(fraction: float, message: str) -> None:
        if progress is not None:
            progress(0.1 + 0.9 * fraction, message)

    rows = spread_indices(len(x_nd), config.max_items)
    if len(rows) < len(x_nd):  # a memory-mapped index reads only these rows
        x_nd, is_image_n = x_nd[rows], np.asarray(is_image_n)[rows]
    correlation = activation_correlation(
        saes_a, saes_b, x_nd, np.asarray(is_image_n, dtype=bool), pairs_a, pairs_b,
        config.batch_size, sub,
    )  # fmt: skip
    correlation_a = np.full(sae_a.n_latents, np.nan)
    correlation_a[pairs_a] = correlation
    return SAEComparison(
        summary(matching, correlation, config.threshold, len(x_nd)),
        matching,
        correlation_a,
        np.flatnonzero(matching.b_of_a < 0),
        np.flatnonzero(matching.a_of_b < 0),
    )


def summary(
    matching: Matching, correlation: np.ndarray, threshold: float, n_items: int
) -> ComparisonSummary:
    """The comparison in a few numbers (``correlation``: of the matched pairs)."""
    matched = matching.b_of_a >= 0
    cosine = matching.cosine_a[matched]
    n_a, n_b = len(matching.b_of_a), len(matching.a_of_b)
    good = int((cosine >= threshold).sum())
    finite = correlation[np.isfinite(correlation)]
    return ComparisonSummary(
        n_latents_a=n_a,
        n_latents_b=n_b,
        n_matched=int(matched.sum()),
        mean_cosine=float(cosine.mean()) if len(cosine) else float("nan"),
        threshold=threshold,
        share_above_a=good / n_a,
        share_above_b=good / n_b,
        n_unmatched_a=int((~matched).sum()),
        n_unmatched_b=int((matching.a_of_b < 0).sum()),
        mean_correlation=float(finite.mean()) if len(finite) else float("nan"),
        n_items=n_items,
    )
