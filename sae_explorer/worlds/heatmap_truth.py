"""Do heatmaps point at the truth? Scores against the shapes world, where every image's shape
mask is known exactly (:func:`sae_explorer.worlds.shapes.shape_mask`).

For a map and the truth (the drawn shape; for background latents everything but the shape):

- **heat on truth**: the share of the map's heat on the truth;
- **pointing**: whether the hottest pixel is on the truth. Pixels tied for the maximum share the
  hit (a map flat over a patch scores the patch's share on the truth, not whichever pixel comes
  first in memory); a map with no heat at all scores 0.

Two reference maps bound what a method can score: ``random`` (uniform noise: pointing at chance,
the truth's area) and ``oracle`` (each ``patch``-pixel cell's share of the truth, constant over
the cell: the best a map at the tower's patch resolution can do).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from sae_explorer.worlds import shapes

VALIDITY_SEED = shapes.HELDOUT_SEED + 1
"""Seed of the images heatmaps are scored on (unseen by the choice of each value's latent)."""


class MapScore(NamedTuple):
    heat_on_truth: float
    pointing: float  # 1 hit, 0 miss; between for maxima tied on and off the truth


class KindScore(NamedTuple):
    kind: str  # attribute: shape, color, size, background
    heat_on_truth: float
    pointing: float
    n_maps: int


def score_map(map_hw: np.ndarray, truth_hw: np.ndarray) -> MapScore:
    """Heat on truth and pointing (ties shared) of one map against a bool truth mask."""
    total = float(map_hw.sum())
    peak = float(map_hw.max())
    if total <= 0 or peak <= 0:
        return MapScore(0.0, 0.0)
    top_hw = map_hw >= peak * (1 - 1e-6)
    return MapScore(float(map_hw[truth_hw].sum()) / total, float(truth_hw[top_hw].mean()))


def oracle_map(truth_hw: np.ndarray, patch: int) -> np.ndarray:
    """Each ``patch`` cell's share of the truth, constant over the cell."""
    h, w = truth_hw.shape
    cells = truth_hw.reshape(h // patch, patch, w // patch, patch).mean((1, 3))
    return np.kron(cells, np.ones((patch, patch)))


def truth_mask(index: int, attribute: str, seed: int = VALIDITY_SEED) -> np.ndarray:
    """Where a latent for ``attribute`` should point on item ``index``: the shape, or for
    background latents everything else."""
    mask_hw = shapes.shape_mask(index, seed)
    return ~mask_hw if attribute == "background" else mask_hw


def by_kind(scores: list[tuple[str, MapScore]]) -> list[KindScore]:
    """Mean scores per attribute kind, in the world's attribute order."""
    out = []
    for kind in shapes.ATTRIBUTES:
        mine = [s for k, s in scores if k == kind]
        if mine:
            heat = float(np.mean([s.heat_on_truth for s in mine]))
            out.append(KindScore(kind, heat, float(np.mean([s.pointing for s in mine])), len(mine)))
    return out


def examples_per_value(
    values: list[tuple[str, str]], per_value: int, seed: int = VALIDITY_SEED
) -> dict[tuple[str, str], list[int]]:
    """For each ``(attribute, value)``, the first ``per_value`` item indices of ``seed`` that
    have it (scanning at most ``60 * per_value`` items)."""
    attributes = [shapes.make_item(i, seed).attributes for i in range(60 * per_value)]
    return {
        (a, v): [i for i, attrs in enumerate(attributes) if attrs[a] == v][:per_value]
        for a, v in values
    }


def reference_scores(
    examples: dict[tuple[str, str], list[int]],
    make_map: Callable[[np.ndarray], np.ndarray],
) -> list[KindScore]:
    """Scores of a reference map (``oracle_map`` or noise) made from each truth mask."""
    scores = [
        (attribute, score_map(make_map(truth), truth))
        for (attribute, _), indices in examples.items()
        for truth in (truth_mask(i, attribute) for i in indices)
    ]
    return by_kind(scores)
