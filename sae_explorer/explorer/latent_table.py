"""The latent browser: every latent in one table, computed once from the index's per-latent
arrays, then filtered, sorted and cut into pages on the server (a page of 24,576 latents costs a
few milliseconds; nothing but the page is sent to the browser).

Columns (``COLUMNS``):

- ``latent``: its id.
- ``name``, ``name_score``: the best vocabulary name and its score: its detection AUROC on the
  corpus once the names are scored (``unnamed`` below the floor, ``naming.AUROC_FLOOR``), else the
  cosine of the decoder direction with the word's embedding (``naming.py``).
- ``frequency``: share of corpus items where the latent is active.
- ``mean_act`` (over its active items), ``max_act``.
- ``level``: its Matryoshka level (median first level keeping it; -1: never kept).
- ``image_share``: share of its active items that are images (NaN when dead).
- ``label_purity``, ``top_label``: the share of the most common label among its labelled top
  examples and that label (``label_mix``); NaN / "" when the corpus has no labels.
- ``dead`` (never active), ``dense`` (active on more than ``DENSE_FREQUENCY`` of the items).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple, get_args

import numpy as np
import pandas as pd

from sae_explorer import naming
from sae_explorer.explorer import label_mix
from sae_explorer.explorer.overview import DENSE_FREQUENCY

if TYPE_CHECKING:
    from sae_explorer.explorer.state import Explorer

NAME_SCORE_COLUMN = "name_score"
"""The column holding the best name's score (see :func:`best_names`)."""
COLUMNS = (
    "latent",
    "name",
    NAME_SCORE_COLUMN,
    "frequency",
    "mean_act",
    "max_act",
    "level",
    "image_share",
    "label_purity",
    "top_label",
    "dead",
    "dense",
)
Presence = Literal["any", "only", "hide"]
"""How a flag (dead, dense) filters: keep all latents, only flagged ones, or hide flagged ones."""
PRESENCE: tuple[Presence, ...] = get_args(Presence)
PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


class BestNames(NamedTuple):
    name_l: np.ndarray  # object [n_latents]; "" when the latent has no name
    score_l: np.ndarray  # float64 [n_latents]; NaN when no name
    all_names_l: np.ndarray  # object [n_latents]: every candidate name, lower case (for search)


class LatentTable(NamedTuple):
    """Every latent, computed once per explorer (``explorer.latent_table``)."""

    frame: pd.DataFrame  # one row per latent, COLUMNS in order
    all_names_l: np.ndarray  # object [n_latents]: every candidate name, lower case (for search)
    hover_l: np.ndarray  # object [n_latents]: one line naming each latent, for plot tooltips


class LatentTablePage(NamedTuple):
    """One page of the filtered, sorted table."""

    rows: pd.DataFrame  # COLUMNS, at most page_size rows
    total: int  # latents passing the filter
    page: int  # 1-based
    n_pages: int  # at least 1 (an empty result is one empty page)


@dataclass(frozen=True)
class LatentFilter:
    """Which latents the browser lists. Ranges are inclusive."""

    min_frequency: float = 0.0
    max_frequency: float = 1.0
    levels: tuple[int, ...] | None = None
    """Matryoshka levels kept (-1: never kept); None: every level."""
    dead: Presence = "any"
    dense: Presence = "any"
    min_image_share: float = 0.0
    max_image_share: float = 1.0
    """Dead latents have no image share: they pass only while the range is all of [0, 1]."""
    name: str = ""
    """Keep latents one of whose candidate names contains this text (case-insensitive)."""

    def __post_init__(self) -> None:
        for low, high in (
            ("min_frequency", "max_frequency"),
            ("min_image_share", "max_image_share"),
        ):
            lo, hi = getattr(self, low), getattr(self, high)
            if not (0.0 <= lo <= 1.0 and 0.0 <= hi <= 1.0):
                raise ValueError(f"{low} and {high} must be in [0, 1], got {lo} and {hi}")
            if lo > hi:
                raise ValueError(f"{low} ({lo}) is above {high} ({hi}); swap them")
        for flag in ("dead", "dense"):
            if getattr(self, flag) not in PRESENCE:
                raise ValueError(f"{flag} must be one of {PRESENCE}, got {getattr(self, flag)!r}")


def best_names(explorer: Explorer) -> BestNames:
    """Each latent's best vocabulary name and its score (see the module docstring)."""
    n = explorer.n_latents
    names = explorer.names
    if names is None:
        empty = np.full(n, "", dtype=object)
        return BestNames(empty, np.full(n, np.nan), empty)
    vocabulary = np.asarray(names.vocabulary, dtype=object)
    words_ln = vocabulary[names.word_ids_ln]
    all_names = np.array(["\n".join(row).lower() for row in words_ln], dtype=object)
    if not names.scored:
        return BestNames(words_ln[:, 0], names.cosine_ln[:, 0].astype(np.float64), all_names)
    best_l = np.where(names.named_l, words_ln[:, 0], naming.UNNAMED)
    return BestNames(best_l, names.auroc_ln[:, 0].astype(np.float64), all_names)


def latent_table(explorer: Explorer) -> LatentTable:
    """Every latent, one row each (``explorer.latent_table`` keeps it)."""
    named = best_names(explorer)
    purity, top_code = label_mix.purity_l(explorer.index._top_idx, explorer.label_codes)
    labels = np.append(explorer.label_codes.labels, "").astype(object)  # -1 -> ""
    frequency = explorer.frequency_l
    table = pd.DataFrame(
        {
            "latent": np.arange(explorer.n_latents, dtype=np.int64),
            "name": named.name_l,
            NAME_SCORE_COLUMN: named.score_l,
            "frequency": frequency,
            "mean_act": explorer.mean_act_l,
            "max_act": explorer.max_act_l,
            "level": explorer.levels_l,
            "image_share": np.asarray(explorer.index.image_fraction, dtype=np.float64),
            "label_purity": purity,
            "top_label": labels[top_code],
            "dead": frequency == 0,
            "dense": frequency > DENSE_FREQUENCY,
        }
    )
    assert tuple(table.columns) == COLUMNS
    hover = (
        "latent " + table["latent"].astype(str) + ": " + table["name"].astype(str)
        + " · level " + table["level"].astype(str)
        + " · frequency " + table["frequency"].map("{:.3%}".format)
    )  # fmt: skip
    return LatentTable(table, named.all_names_l, hover.to_numpy(dtype=object))


def filter_mask(latents: LatentTable, flt: LatentFilter) -> np.ndarray:
    """bool [n_latents]: the latents ``flt`` keeps."""
    table = latents.frame
    frequency = table["frequency"].to_numpy()
    keep = (frequency >= flt.min_frequency) & (frequency <= flt.max_frequency)
    if flt.levels is not None:
        keep &= np.isin(table["level"].to_numpy(), np.asarray(flt.levels, dtype=np.int64))
    for flag in ("dead", "dense"):
        presence, flagged = getattr(flt, flag), table[flag].to_numpy()
        keep &= flagged if presence == "only" else ~flagged if presence == "hide" else True
    if (flt.min_image_share, flt.max_image_share) != (0.0, 1.0):
        share = table["image_share"].to_numpy()
        with np.errstate(invalid="ignore"):
            keep &= (share >= flt.min_image_share) & (share <= flt.max_image_share)
    text = flt.name.strip().lower()
    if text:
        keep &= pd.Series(latents.all_names_l).str.contains(text, regex=False).to_numpy()
    return keep


def browse(
    explorer: Explorer,
    flt: LatentFilter = LatentFilter(),
    sort_by: str = "frequency",
    descending: bool = True,
    page: int = 1,
    page_size: int = PAGE_SIZE,
) -> LatentTablePage:
    """One page of the latents ``flt`` keeps, sorted by ``sort_by`` (missing values last, ties
    by latent id); ``ValueError`` for an unknown column or a page outside the result."""
    if sort_by not in COLUMNS:
        raise ValueError(f"cannot sort by {sort_by!r}; columns: {', '.join(COLUMNS)}")
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be in [1, {MAX_PAGE_SIZE}], got {page_size}")
    latents = explorer.latent_table
    table = latents.frame
    rows = np.flatnonzero(filter_mask(latents, flt))
    total = len(rows)
    n_pages = max(math.ceil(total / page_size), 1)
    if not 1 <= page <= n_pages:
        raise ValueError(f"page {page} does not exist: {total} latents make {n_pages} page(s)")
    keys = table[sort_by].iloc[rows]
    order = keys.sort_values(ascending=not descending, na_position="last", kind="stable")
    start = (page - 1) * page_size
    chosen = order.index.to_numpy()[start : start + page_size]
    return LatentTablePage(table.iloc[chosen].reset_index(drop=True), total, page, n_pages)
