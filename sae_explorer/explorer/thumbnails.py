"""Thumbnails of corpus images: small WebP files written once and served as they are, and the
thumbnails of a latent's strongest images."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from PIL import Image

from sae_explorer.atomic import atomic_write_bytes
from sae_explorer.explorer import examples

if TYPE_CHECKING:
    from sae_explorer.explorer.state import Explorer

THUMB_PX = 96


class CaptionedImage(NamedTuple):
    """One gallery entry: a thumbnail file, the number shown under it, and the corpus item
    (index row) it shows, so a click can open that item."""

    fpath: Path
    caption: str
    item: int
    label: str | None = None  # the item's corpus label, when it has one


class Thumb(NamedTuple):
    """A thumbnail of one of a latent's strongest images (clicking it opens the latent)."""

    fpath: Path  # a small WebP of the corpus image
    caption: str  # the item's label and the latent's activation on it
    latent_id: int
    item: int  # index row of the corpus item


MAX_THUMB_FOLDERS = 8
"""Thumbnail folders (one per index) kept beside the indexes; older ones are removed."""


def thumbs_dpath_for(index_dpath: Path) -> Path:
    """Where an index's thumbnails live: ``<cache>/thumbs/<key>`` for an index in the cache
    (``<cache>/index/<key>``), else a ``thumbs`` folder beside the index; reused by every start
    and bounded by :func:`prune_thumb_folders` (never inside the index folder itself, which
    holds index files only)."""
    index_dpath = Path(index_dpath)
    parent = index_dpath.parent
    root = parent.parent / "thumbs" if parent.name == "index" else parent / "thumbs"
    return root / index_dpath.name


def prune_thumb_folders(thumbs_dpath: Path, keep: int = MAX_THUMB_FOLDERS) -> list[Path]:
    """Mark ``thumbs_dpath`` as used and remove all but the ``keep`` most recently used
    thumbnail folders beside it; returns the removed ones."""
    thumbs_dpath.mkdir(parents=True, exist_ok=True)
    os.utime(thumbs_dpath)
    folders = [p for p in thumbs_dpath.parent.iterdir() if p.is_dir() and p != thumbs_dpath]
    folders.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    removed = folders[max(keep - 1, 0) :]  # the folder in use is always kept
    for dpath in removed:
        shutil.rmtree(dpath, ignore_errors=True)
    return removed


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
            f"{str(r.label)[:24]} · {r.value:.2f}",
            latent_id,
            int(r.item),
        )
        for r in top.itertuples()
    ]
