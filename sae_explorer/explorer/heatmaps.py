"""Where in the inspected image its latents fire: heatmaps of chosen latents (by default the
input's strongest) through the vision tower (:mod:`sae_explorer.attribution`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from PIL import Image

from sae_explorer.attribution import METHODS, Heatmaps, Method, latent_heatmaps
from sae_explorer.explorer import queries
from sae_explorer.explorer.queries import Query
from sae_explorer.images import check_image
from sae_explorer.progress import Progress

if TYPE_CHECKING:
    from sae_explorer.explorer.state import Explorer

N_TOP = 4
"""Latents mapped when none are chosen: the input's strongest."""


def heatmaps(
    explorer: Explorer,
    query: Query,
    latent_ids: Sequence[int] | None = None,
    method: Method = METHODS[0],
    image: Any = None,
    progress: Progress | None = None,
) -> Heatmaps:
    """Heatmaps of ``latent_ids`` (default: the input's ``N_TOP`` strongest latents) over the
    query's image: a corpus image item, or for an upload the uploaded ``image`` itself (a
    ``Query`` keeps only the embedding). ``ValueError`` for a text, or an upload without it."""
    picture = query_image(explorer, query, image)
    if latent_ids is None:
        latent_ids = [int(i) for i in explorer.top_latents(query, N_TOP)["latent"]]
        if not latent_ids:
            raise ValueError("no latent is active on this image: nothing to map")
    sae = explorer.sae_for(query)
    return latent_heatmaps(explorer.encoder, sae, picture, latent_ids, method, progress=progress)


def query_image(explorer: Explorer, query: Query, image: Any = None) -> Image.Image:
    """The image a query was made from (a corpus item's, or the given upload's)."""
    if query.kind == "item" and query.item is not None:
        if queries.query_modality(explorer, query) != "image":
            raise ValueError(f"corpus item {query.item} is a text: heatmaps show where in an image")
        return explorer.index.load_image(query.item).convert("RGB")
    if query.kind == "image":
        if image is None:
            raise ValueError("give the uploaded image again: heatmaps need its pixels")
        return check_image(image).image
    raise ValueError("heatmaps show where in an image a latent fires: inspect an image first")
