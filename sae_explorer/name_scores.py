"""Names scored against the data: how well a name, read by CLIP, finds where its latent fires.

A latent's name candidates (:mod:`sae_explorer.naming`) are chosen by the cosine between its
decoder direction and each vocabulary word; that says what the direction points at, not whether
the name describes the items the latent fires on. The detection score does: the name's CLIP text
embedding is used as a classifier over the corpus items (score = cosine between the item's CLIP
embedding and the word's) predicting whether the latent is active on the item, and the score is
that classifier's AUROC (0.5: the name says nothing about where the latent fires; 1: every item
it fires on is closer to the name than every item it does not). This is the image analogue of
delphi's embedding scorer.

**Centred.** Every image embedding shares a large "this is an image" component and every text
embedding a "this is text" one (CLIP's modality gap); measured raw, that shared part and the
varying norms of the items it is divided by blur the ranking. So the cosine is taken between the
item minus the mean of the scored items and the word minus the vocabulary's mean (as the
candidates were chosen, see :mod:`sae_explorer.naming`). On the built-in world this lifts the
AUROC of the colour words as classifiers of their true colour from 0.79-0.94 to 0.97-1.00.

**Which items.** Cosines of texts with a word and of images with a word live on different scales
(CLIP's modality gap), so the modalities are never pooled: the score is measured over the
corpus's images, or over its texts when it has no images (``NameScores.scored_on``).

**Where a latent is active.** An item's stored codes in the index (its ``top_k`` largest
activations, 128 by default): the same activations the index's statistics and top examples read.

**Exact and bounded.** The AUROC is the Mann-Whitney statistic computed from ranks (ties share
their average rank), equal to ``sklearn.metrics.roc_auc_score``. For each candidate word the
cosines of all items are ranked once (items x a chunk of words, ``max_bytes`` at a time); each
latent then sums the ranks of its active items under each of its candidates, a gather over the
index's non-zero codes: time O(words x items log items + candidates x codes), memory one chunk.

**Unnamed.** A latent none of whose candidates reaches :data:`AUROC_FLOOR` is shown as
:data:`UNNAMED` rather than by its best guess; dead latents (or latents active on every item)
have no AUROC (NaN) and are unnamed too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np
import scipy.sparse
from scipy.stats import rankdata

if TYPE_CHECKING:
    from sae_explorer.index.reader import ActivationIndex
    from sae_explorer.progress import Progress

AUROC_FLOOR = 0.75
"""A name whose detection AUROC is below this is not shown as the latent's name."""
UNNAMED = "unnamed"
"""What a latent with no name at or above the floor is called."""
MAX_RANK_BYTES = 64 * 2**20
"""Memory of one chunk of ranked cosines (items x words, float64)."""

ScoredOn = Literal["image", "text"]
SCORED_ON: tuple[ScoredOn, ...] = ("image", "text")


class NameScores(NamedTuple):
    auroc_lk: np.ndarray  # float32 [n_latents, k]: AUROC of each candidate; NaN when undefined
    scored_on: ScoredOn  # the modality whose items were classified
    n_items: int  # items of that modality


def scored_modality(index: ActivationIndex) -> ScoredOn:
    """Images when the index has any, else texts."""
    return "image" if bool(index.is_image.any()) else "text"


def active_matrix(index: ActivationIndex, rows_n: np.ndarray) -> scipy.sparse.csc_matrix:
    """bool [len(rows_n), n_latents], CSC: where each latent is active among the items ``rows_n``
    (from the index's stored codes)."""
    indptr = index.whole_codes_indptr()
    ids = np.asarray(index.codes_ids)
    values = np.asarray(index.codes_values)
    starts, ends = indptr[rows_n], indptr[rows_n + 1]
    lengths = ends - starts
    entries = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
    keep = values[entries] > 0
    row_of_entry = np.repeat(np.arange(len(rows_n)), lengths)[keep]
    col_of_entry = ids[entries][keep].astype(np.int64)
    data = np.ones(len(row_of_entry), dtype=bool)
    shape = (len(rows_n), index.n_latents)
    return scipy.sparse.csc_matrix((data, (row_of_entry, col_of_entry)), shape=shape)


def detection_auroc(
    x_nd: np.ndarray,
    t_vd: np.ndarray,
    active_nl: scipy.sparse.csc_matrix,
    word_ids_lk: np.ndarray,
    max_bytes: int = MAX_RANK_BYTES,
    progress: Progress | None = None,
) -> np.ndarray:
    """float64 [n_latents, k]: AUROC of cosine(item, word ``word_ids_lk[l, j]``) predicting
    ``active_nl[:, l]``, over the items ``x_nd`` (embeddings, any norm); NaN where a latent is
    active on no item or on every item."""
    n_items, n_latents = active_nl.shape
    if x_nd.shape[0] != n_items or word_ids_lk.shape[0] != n_latents:
        raise ValueError(
            f"{x_nd.shape[0]} item embeddings and {word_ids_lk.shape[0]} latents' candidates for "
            f"an activity matrix of shape {active_nl.shape}"
        )
    active_nl = scipy.sparse.csc_matrix(active_nl)
    active_nl.sum_duplicates()
    unit_nd = _unit_rows(x_nd)
    used_u, word_pos_lk = np.unique(word_ids_lk, return_inverse=True)
    word_pos_lk = word_pos_lk.reshape(word_ids_lk.shape)
    unit_ud = _unit_rows(t_vd[used_u])
    latent_of_entry = np.repeat(np.arange(n_latents), np.diff(active_nl.indptr))
    item_of_entry = active_nl.indices
    rank_sum_lk = np.zeros(word_ids_lk.shape, dtype=np.float64)
    chunk = max(1, int(max_bytes // (8 * max(n_items, 1))))
    for lo in range(0, len(used_u), chunk):
        rank_nc = rankdata(unit_nd @ unit_ud[lo : lo + chunk].T, axis=0)
        for j in range(word_ids_lk.shape[1]):
            col_of_entry = word_pos_lk[latent_of_entry, j] - lo
            sel = (col_of_entry >= 0) & (col_of_entry < rank_nc.shape[1])
            rank_sum_lk[:, j] += np.bincount(
                latent_of_entry[sel],
                weights=rank_nc[item_of_entry[sel], col_of_entry[sel]],
                minlength=n_latents,
            )
        if progress is not None:
            done = min(lo + chunk, len(used_u))
            progress(done / len(used_u), f"scored {done}/{len(used_u)} candidate names")
    n_pos_l1 = np.diff(active_nl.indptr).astype(np.float64)[:, None]
    n_neg_l1 = n_items - n_pos_l1
    with np.errstate(invalid="ignore", divide="ignore"):
        auroc_lk = (rank_sum_lk - n_pos_l1 * (n_pos_l1 + 1) / 2) / (n_pos_l1 * n_neg_l1)
    return np.where((n_pos_l1 > 0) & (n_neg_l1 > 0), auroc_lk, np.nan)


def score_candidates(
    index: ActivationIndex,
    embeddings_vd: np.ndarray,
    word_ids_lk: np.ndarray,
    progress: Progress | None = None,
) -> NameScores:
    """Every latent's candidates (``word_ids_lk``, rows of ``embeddings_vd``, the whole
    vocabulary's raw CLIP text embeddings) scored over the index's items of one modality, both
    centred (see the module)."""
    if word_ids_lk.shape[0] != index.n_latents:
        raise ValueError(
            f"candidates for {word_ids_lk.shape[0]} latents, the index has {index.n_latents}"
        )
    modality = scored_modality(index)
    rows_n = np.flatnonzero(index.is_image == (modality == "image"))
    x_nd = np.asarray(index.embeddings[rows_n], dtype=np.float32)
    t_vd = np.asarray(embeddings_vd, dtype=np.float32)
    active_nl = active_matrix(index, rows_n)
    auroc_lk = detection_auroc(
        x_nd - x_nd.mean(0), t_vd - t_vd.mean(0), active_nl, word_ids_lk, progress=progress
    )
    return NameScores(auroc_lk.astype(np.float32), modality, len(rows_n))


def ranked_by_auroc(auroc_lk: np.ndarray) -> np.ndarray:
    """int [n_latents, k]: per latent, its candidates' positions best AUROC first (NaN last;
    ties keep the cosine order)."""
    return np.argsort(np.where(np.isnan(auroc_lk), np.inf, -auroc_lk), axis=1, kind="stable")


def _unit_rows(x_nd: np.ndarray) -> np.ndarray:
    x_nd = np.asarray(x_nd, dtype=np.float32)
    return x_nd / np.linalg.norm(x_nd, axis=1, keepdims=True).clip(min=1e-12)
