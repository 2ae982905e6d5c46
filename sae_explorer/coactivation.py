"""Matryoshka hierarchy from co-activations: a latent's parents are latents of coarser levels
that are active whenever it is (high P(parent active | child active)); its children are the
finer latents it is a parent of.

"Active" is what the index stores per item: the item's top-K codes (``codes_*.npy``, every
positive latent when an item has at most K, else its K largest). Counts come from one binary
``[n_items, n_latents]`` sparse matrix over those codes, kept in CSR (item rows) and CSC (latent
columns): memory is ``O(nnz)`` (16 bytes per stored code: ~190 MB for 100k items x 128 codes,
224 MB peak measured), never ``n_latents^2``. The family of one latent is one sparse vector-matrix product,
``O(n_active(latent) x K)``, so nothing is precomputed beyond the two matrices.

Levels are the index's per-latent Matryoshka level (median first level keeping the latent,
``latent_level.npy``); a latent no level keeps (-1), or every latent of an SAE without nesting,
has no parents and no children. ``min_count`` keeps rare latents, whose few items make any
co-active latent look like a certain parent, out of each other's families.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from scipy import sparse

from sae_explorer.cli import doc

COACTIVE_CACHE = 64
"""Latents whose co-activation counts are kept (``n_latents`` int64 each: 12 MB at 24,576)."""


@dataclass(frozen=True)
class HierarchyConfig:
    """When a coarser latent counts as a parent; the help texts are also the CLI help."""

    min_p_parent: float = field(
        default=0.8, metadata=doc("P(parent active | child active) at least this")
    )
    min_count: int = field(
        default=5, metadata=doc("a child must be active on at least this many items")
    )
    max_relatives: int = field(default=10, metadata=doc("parents and children listed, each"))

    def __post_init__(self) -> None:
        if not 0.0 < self.min_p_parent <= 1.0:
            raise ValueError(f"min_p_parent must be in (0, 1], got {self.min_p_parent}")
        if self.min_count < 1 or self.max_relatives < 1:
            raise ValueError(
                f"min_count and max_relatives must be >= 1, got {self.min_count}, "
                f"{self.max_relatives}"
            )


class Relatives(NamedTuple):
    """Parents or children of one latent, most certain first."""

    latent_ids: np.ndarray  # int64 [m]
    levels: np.ndarray  # int64 [m]
    p_parent: np.ndarray  # float64 [m], P(parent active | child active)
    p_child: np.ndarray  # float64 [m], P(child active | parent active)
    n_both: np.ndarray  # int64 [m], items where both are active


class LatentFamily(NamedTuple):
    latent: int
    level: int  # -1: no level keeps it (then no parents and no children)
    n_active: int  # items whose stored codes hold it
    parents: Relatives
    children: Relatives


class TreeNode(NamedTuple):
    """One line of a descendant tree, in depth-first order."""

    latent: int
    depth: int  # 0: the root
    level: int
    p_parent: float  # P(its parent in the tree | it); NaN for the root
    n_active: int
    repeated: bool  # already shown above under another parent (its subtree is not repeated)


class Coactivations:
    """Which latents are active on which items, from an index's stored codes."""

    def __init__(
        self,
        indptr_n1: np.ndarray,
        ids: np.ndarray,
        n_latents: int,
        levels_l: np.ndarray,
        top_k: int | None = None,
    ) -> None:
        """``indptr_n1``/``ids``: the CSR of each item's active latents, largest first (the
        index's ``codes_indptr``/``codes_ids``); ``levels_l``: each latent's Matryoshka level,
        -1 none; ``top_k``: only each item's ``top_k`` largest count as active (None: all)."""
        indptr = np.asarray(indptr_n1, dtype=np.int64)
        ids = np.asarray(ids, dtype=np.int32)
        if len(levels_l) != n_latents or indptr[-1] != len(ids):
            raise ValueError(
                f"codes and levels disagree: {len(levels_l)} levels for {n_latents} latents, "
                f"indptr ends at {indptr[-1]} for {len(ids)} codes"
            )
        if top_k is not None:
            indptr, ids = first_codes(indptr, ids, top_k)
        ones = np.ones(len(ids), dtype=np.int32)
        shape = (len(indptr) - 1, n_latents)
        self.items_nl = sparse.csr_array((ones, ids, indptr), shape=shape)
        self.latents_nl = self.items_nl.tocsc()
        self.n_latents = n_latents
        self.levels_l = np.asarray(levels_l, dtype=np.int64)
        self.count_l = np.bincount(ids, minlength=n_latents).astype(np.int64)
        # A latent page asks for a latent's family, then its tree (the same family first).
        self._coactive = functools.lru_cache(maxsize=COACTIVE_CACHE)(self._count_coactive)

    @classmethod
    def from_index(cls, index, top_k: int | None = None) -> Coactivations:
        """From an :class:`~sae_explorer.index.ActivationIndex`."""
        indptr = index.whole_codes_indptr()
        return cls(indptr, index.codes_ids, index.n_latents, index.levels, top_k)

    def coactive(self, latent: int) -> np.ndarray:
        """int64 [n_latents]: items where ``latent`` and each latent are both active."""
        counts = self._coactive(self._check(latent))
        return counts.copy()

    def _count_coactive(self, latent: int) -> np.ndarray:
        column = self.latents_nl[:, [latent]]
        return (column.T @ self.items_nl).toarray().ravel().astype(np.int64)

    def family(self, latent: int, config: HierarchyConfig = HierarchyConfig()) -> LatentFamily:
        """``latent``'s parents (coarser levels, P(parent | it) >= ``min_p_parent``) and children
        (finer latents with it as a parent)."""
        level, n_active = int(self.levels_l[self._check(latent)]), int(self.count_l[latent])
        if level < 0 or n_active == 0:
            empty = self._relatives(np.zeros(0, np.int64), np.zeros(0, np.int64), latent, True)
            return LatentFamily(latent, level, n_active, empty, empty)
        both_l = self._coactive(latent)
        with np.errstate(invalid="ignore", divide="ignore"):
            p_given_l = both_l / self.count_l  # P(latent | other)
        is_parent = (self.levels_l >= 0) & (self.levels_l < level)
        parents = np.flatnonzero(is_parent & (both_l >= config.min_p_parent * n_active))
        if n_active < config.min_count:
            parents = parents[:0]
        is_child = (self.levels_l > level) & (self.count_l >= config.min_count)
        children = np.flatnonzero(is_child & (p_given_l >= config.min_p_parent))
        k = config.max_relatives
        parents = parents[np.lexsort((parents, -both_l[parents]))][:k]
        children = children[np.lexsort((children, -both_l[children], -p_given_l[children]))][:k]
        return LatentFamily(
            latent,
            level,
            n_active,
            self._relatives(parents, both_l[parents], latent, True),
            self._relatives(children, both_l[children], latent, False),
        )

    def _relatives(
        self, ids: np.ndarray, both: np.ndarray, latent: int, are_parents: bool
    ) -> Relatives:
        parent_counts = (
            self.count_l[ids] if are_parents else np.full(len(ids), self.count_l[latent])
        )
        child_counts = np.full(len(ids), self.count_l[latent]) if are_parents else self.count_l[ids]
        return Relatives(
            ids.astype(np.int64),
            self.levels_l[ids],
            both / np.maximum(child_counts, 1),
            both / np.maximum(parent_counts, 1),
            both.astype(np.int64),
        )

    def descendants(
        self,
        root: int,
        max_depth: int = 2,
        max_children: int = 5,
        config: HierarchyConfig = HierarchyConfig(),
    ) -> list[TreeNode]:
        """The tree of ``root``'s children, their children, ... (``max_depth`` generations, at
        most ``max_children`` each), depth first; a latent reached twice is marked ``repeated``
        and not expanded again."""
        if max_depth < 0 or max_children < 1:
            raise ValueError(
                f"need max_depth >= 0, max_children >= 1; got {max_depth}, {max_children}"
            )
        seen: set[int] = set()
        nodes: list[TreeNode] = []

        def visit(latent: int, depth: int, p_parent: float) -> None:
            level, n_active = int(self.levels_l[latent]), int(self.count_l[latent])
            repeated = latent in seen
            nodes.append(TreeNode(latent, depth, level, p_parent, n_active, repeated))
            seen.add(latent)
            if repeated or depth == max_depth:
                return
            children = self.family(latent, config).children
            for child, p in zip(children.latent_ids[:max_children], children.p_parent):
                visit(int(child), depth + 1, float(p))

        visit(self._check(root), 0, float("nan"))
        return nodes

    def _check(self, latent: int) -> int:
        if not 0 <= int(latent) < self.n_latents:
            raise ValueError(f"latent must be in [0, {self.n_latents}), got {latent}")
        return int(latent)


def first_codes(indptr_n1: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The CSR cut to each row's first ``k`` entries (the largest, as the index stores them)."""
    if k < 1:
        raise ValueError(f"top_k must be >= 1, got {k}")
    counts_n = np.diff(indptr_n1)
    rank = np.arange(len(ids)) - np.repeat(indptr_n1[:-1], counts_n)
    kept_n = np.minimum(counts_n, k)
    return np.concatenate([[0], np.cumsum(kept_n)]).astype(np.int64), ids[rank < k]
