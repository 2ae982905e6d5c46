"""The Latent tab: everything about one latent (its statistics, strongest images and texts,
samples from lower activations, histogram, names) and the latents with similar directions."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from sae_explorer.coactivation import TreeNode
from sae_explorer.explorer import examples, hierarchy, names, plots, queries, thumbnails
from sae_explorer.explorer.thumbnails import CaptionedImage

if TYPE_CHECKING:
    from sae_explorer.explorer.state import Explorer


class LatentPageSummary(NamedTuple):
    """One latent's corpus statistics and Matryoshka level: the Latent tab's header."""

    latent: int
    names: str  # our best names with scores, e.g. "blue (0.41), navy (0.30)"
    frequency: float  # fraction of corpus items where the latent is active
    mean_activation: float  # over the items where it is active
    max_activation: float
    image_fraction: float  # share of its active items that are images (0 when dead)
    text_fraction: float
    level: int  # median Matryoshka level that keeps it on the corpus; -1: never kept
    level_k: int | None  # latents kept at that level (None: no level)
    dead: bool  # never active on the corpus
    msae_names: str | None = None  # the SAE release's own names, when it ships some


class LatentPage(NamedTuple):
    latent_id: int
    summary: LatentPageSummary
    top_images: list[CaptionedImage]  # strongest corpus images (activation captions)
    top_texts: pd.DataFrame  # value, text
    quantiles: pd.DataFrame  # quantile_bin, value, modality, label
    quantile_images: list[CaptionedImage]
    histogram: go.Figure
    names: pd.DataFrame  # name, score (+ MSAE name, MSAE cosine with release names)
    similar: pd.DataFrame  # latent, cosine, names (+ MSAE names)
    family: pd.DataFrame  # Matryoshka parents and children (hierarchy.FAMILY_COLUMNS)
    descendants: list[TreeNode]  # the tree of its children, grandchildren, depth first


def latent_page(
    explorer: Explorer, latent: int | float | str, n_images: int = 12, n_texts: int = 10
) -> LatentPage:
    """Everything the Latent tab shows about one latent."""
    latent_id = queries.check_latent(explorer, latent)
    images = examples.top_items(explorer, latent_id, n_images, "image")
    top_images = [
        CaptionedImage(
            thumbnails.thumbnail_fpath(explorer, int(r.item), thumbnails.TOP_THUMB_PX),
            f"{r.value:.3f}",
            int(r.item),
        )
        for r in images.itertuples()
    ]
    quant = examples.normalise_examples(explorer.index.quantile_samples(latent_id))
    quantile_images = [
        CaptionedImage(
            thumbnails.thumbnail_fpath(explorer, int(r.item)), f"{r.value:.3f}", int(r.item)
        )
        for r in quant.itertuples()
        if r.modality == "image"
    ]
    counts, edges = explorer.index.histogram(latent_id)
    return LatentPage(
        latent_id,
        summary(explorer, latent_id),
        top_images,
        top_texts(explorer, latent_id, n_texts),
        quantiles_table(quant),
        quantile_images,
        plots.histogram(counts, edges, latent_id),
        names.names_table(explorer, latent_id, 10),
        similar_latents(explorer, latent_id),
        hierarchy.family_table(explorer, latent_id),
        hierarchy.descendant_tree(explorer, latent_id),
    )


def top_texts(explorer: Explorer, latent_id: int, n: int) -> pd.DataFrame:
    """The latent's strongest distinct texts: value, text."""
    texts = examples.top_items(explorer, latent_id, 4 * n, "text")
    texts = texts.drop_duplicates("label").head(n)  # captions repeat in a corpus
    return pd.DataFrame(
        {
            "value": texts["value"].astype(np.float64).round(4).to_numpy(),
            "text": texts["label"].to_numpy(),
        }
    )


def quantiles_table(quant: pd.DataFrame) -> pd.DataFrame:
    """The index's quantile samples as shown: quantile_bin, value, modality, label."""
    return pd.DataFrame(
        {
            "quantile_bin": quant["bin"].to_numpy(),
            "value": quant["value"].astype(np.float64).round(4).to_numpy(),
            "modality": quant["modality"].to_numpy(),
            "label": quant["label"].to_numpy(),
        }
    )


def summary(explorer: Explorer, latent_id: int) -> LatentPageSummary:
    """The latent's corpus statistics and Matryoshka level, for the page's header."""
    dead = bool(explorer.frequency_l[latent_id] == 0)
    image_fraction = 0.0 if dead else float(np.asarray(explorer.index.image_fraction)[latent_id])
    level = int(explorer.levels_l[latent_id])
    nesting = explorer.sae.nesting_list
    release = explorer.release_names
    return LatentPageSummary(
        latent=latent_id,
        names=names.names_text(explorer, latent_id, 5),
        frequency=float(explorer.frequency_l[latent_id]),
        mean_activation=float(explorer.mean_act_l[latent_id]),
        max_activation=float(explorer.max_act_l[latent_id]),
        image_fraction=image_fraction,
        text_fraction=0.0 if dead else 1.0 - image_fraction,
        level=level,
        level_k=int(nesting[level]) if nesting and 0 <= level < len(nesting) else None,
        dead=dead,
        msae_names=release.text(latent_id, 5) if release is not None else None,
    )


def similar_latents(explorer: Explorer, latent_id: int, n: int = 8) -> pd.DataFrame:
    """Latents whose decoder directions are closest (cosine) to this one's."""
    latent_id = queries.check_latent(explorer, latent_id)
    cos_l = explorer.dictionary_ld @ explorer.dictionary_ld[latent_id]
    cos_l[latent_id] = -math.inf
    values, ids = cos_l.topk(min(n, explorer.n_latents - 1))
    table = pd.DataFrame(
        {
            "latent": ids.tolist(),
            "cosine": np.round(values.double().numpy(), 4),
            "names": [names.names_text(explorer, int(i)) for i in ids],
        }
    )
    return names.with_release_names(explorer, table)
