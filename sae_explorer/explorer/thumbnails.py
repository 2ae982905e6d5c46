"""Thumbnails of corpus images: small WebP files written once and served as they are, and the
thumbnails of a latent's strongest images."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from PIL import Image

from sae_explorer.atomic import atomic_write_bytes
from sae_explorer.explorer import examples

if TYPE_CHECKING:
    from sae_explorer.explorer.state import Explorer

THUMB_PX = 96


class CaptionedImage(NamedTuple):
    """One gallery entry: a thumbnail file and the number shown under it."""

    fpath: Path
    caption: str


class Thumb(NamedTuple):
    """A thumbnail of one of a latent's strongest images (clicking it opens the latent)."""

    fpath: Path  # a small WebP of the corpus image
    caption: str
    latent_id: int
    item: int


def thumbnail(explorer: Explorer, item: int, px: int = THUMB_PX) -> Image.Image:
    """An indexed image (``item`` is an index row, as everywhere here) shrunk to fit
    ``px`` x ``px``. Read through the index: its rows skip unreadable corpus files, so they
    are not corpus positions."""
    image = explorer.index.load_image(item).convert("RGB")
    image.thumbnail((px, px))
    return image


def thumbnail_fpath(explorer: Explorer, item: int, px: int = THUMB_PX) -> Path:
    """The thumbnail as a WebP file under ``explorer.thumbs_dpath``, written on first use.

    Galleries get file paths rather than images: the web app then serves the same small
    file every time instead of encoding an image per request."""
    fpath = explorer.thumbs_dpath / str(px) / f"{item}.webp"
    if not fpath.exists():
        fpath.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        thumbnail(explorer, item, px).save(buf, format="WEBP", quality=90)
        atomic_write_bytes(fpath, buf.getvalue())
    return fpath


def latent_thumbs(explorer: Explorer, latent_id: int, n: int) -> list[Thumb]:
    """Thumbnails of the ``n`` corpus images where the latent is strongest."""
    top = examples.top_items(explorer, latent_id, n, "image")
    return [
        Thumb(
            thumbnail_fpath(explorer, int(r.item)),
            f"#{latent_id} · {r.value:.2f}",
            latent_id,
            int(r.item),
        )
        for r in top.itertuples()
    ]
