"""Cross-modal agreement: is a latent the same concept in images and in texts?

Definition. Let ``I`` be the latent's ``k`` strongest corpus images and ``T`` its strongest
distinct corpus texts. Each text of ``T`` ranks *all* corpus images by the cosine of their CLIP
embeddings with its own; its precision@k is the share of its ``k`` best-ranked images that are
in ``I``. The agreement is the mean precision@k over ``T``: 1 when every top text retrieves
exactly the latent's top images, about ``k / n_images`` (the ``chance`` value reported beside
it) when the texts know nothing of them. It needs no encoder: corpus texts and images are
already embedded in the index.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from sae_explorer.explorer import examples

if TYPE_CHECKING:
    from sae_explorer.explorer.state import Explorer

N_IMAGES = 12
"""The latent's top images that its texts should retrieve (``k``)."""
N_TEXTS = 10


class CrossModalAgreement(NamedTuple):
    score: float  # mean precision@k of the top texts retrieving the top images; NaN: no pair
    chance: float  # k / n_images: what a random ranking scores
    k: int  # top images (targets)
    n_texts: int  # top texts (queries)
    precision_t: np.ndarray  # float64 [n_texts]: each text's precision@k


def retrieval_precision(
    text_td: np.ndarray, image_nd: np.ndarray, target_rows: np.ndarray
) -> np.ndarray:
    """float64 [t]: for each text embedding, the share of its ``k = len(target_rows)`` nearest
    images (cosine) that are among ``target_rows`` (rows of ``image_nd``)."""
    target_rows = np.unique(np.asarray(target_rows, dtype=np.int64))
    k = len(target_rows)
    if k == 0 or len(text_td) == 0:
        return np.zeros(len(text_td))
    if k > len(image_nd) or target_rows.min() < 0 or target_rows.max() >= len(image_nd):
        raise ValueError(f"target rows must be distinct rows of the {len(image_nd)} images")
    sims_tn = unit(text_td) @ unit(image_nd).T
    if k == len(image_nd):
        return np.ones(len(text_td))
    nearest_tk = np.argpartition(-sims_tn, k - 1, axis=1)[:, :k]
    return np.isin(nearest_tk, target_rows).mean(axis=1)


def unit(x_nd: np.ndarray) -> np.ndarray:
    x_nd = np.asarray(x_nd, dtype=np.float32)
    return x_nd / np.linalg.norm(x_nd, axis=1, keepdims=True).clip(min=1e-12)


def cross_modal_agreement(
    explorer: Explorer, latent_id: int, n_images: int = N_IMAGES, n_texts: int = N_TEXTS
) -> CrossModalAgreement:
    """The latent's cross-modal agreement (module docstring); NaN when it has no active image
    or no active text."""
    top_images = examples.top_items(explorer, latent_id, n_images, "image")
    texts = examples.top_items(explorer, latent_id, 4 * n_texts, "text")
    texts = texts.drop_duplicates("label").head(n_texts)  # captions repeat in a corpus
    return agreement_of(explorer, top_images["item"].to_numpy(), texts["item"].to_numpy())


def agreement_of(
    explorer: Explorer, image_items: np.ndarray, text_items: np.ndarray
) -> CrossModalAgreement:
    """The agreement of these top images and top texts (index rows), as the latent page has them."""
    image_rows = explorer.modality_rows["image"]
    k, n_texts = len(image_items), len(text_items)
    chance = k / max(len(image_rows), 1)
    if k == 0 or n_texts == 0:
        return CrossModalAgreement(float("nan"), chance, k, n_texts, np.zeros(0))
    embeddings = explorer.index.embeddings
    image_nd = np.asarray(embeddings[image_rows], dtype=np.float32)
    text_td = np.asarray(embeddings[np.asarray(text_items, dtype=np.int64)], dtype=np.float32)
    targets = np.searchsorted(image_rows, np.asarray(image_items, dtype=np.int64))
    assert np.array_equal(image_rows[targets], image_items), "top images must be image rows"
    precision = retrieval_precision(text_td, image_nd, targets)
    return CrossModalAgreement(float(precision.mean()), chance, k, n_texts, precision)
