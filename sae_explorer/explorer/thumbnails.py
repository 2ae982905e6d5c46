"""Thumbnails of corpus images: small WebP files written once and served as they are, and the
thumbnails of a latent's strongest images."""

from __future__ import annotations

import atexit
import io
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from PIL import Image

from sae_explorer.atomic import atomic_write_bytes
from sae_explorer.explorer import examples

if TYPE_CHECKING:
    from sae_explorer.explorer.state import Explorer
    from sae_explorer.index import ActivationIndex

log = logging.getLogger(__name__)

THUMB_PX = 96
"""Thumbnail size of every grid but the latent page's top images."""
TOP_THUMB_PX = 128
"""Thumbnail size of a latent page's max-activating images."""
THUMB_SIZES = (THUMB_PX, TOP_THUMB_PX)
"""Every thumbnail size a page shows (what a published index ships for each image)."""


class CaptionedImage(NamedTuple):
    """One gallery entry: a thumbnail file, the number shown under it, and the corpus item
    (index row) it shows, so a click can open that item."""

    fpath: Path
    caption: str
    item: int


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


def usable_thumbs_dpath(index_dpath: Path) -> Path:
    """The thumbnail folder of an index (:func:`thumbs_dpath_for`, pruned), or a temporary
    one, removed at exit, when the cache cannot be written (a read-only or full cache)."""
    dpath = thumbs_dpath_for(index_dpath)
    try:
        prune_thumb_folders(dpath)
        probe = dpath / f".write-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return dpath
    except OSError as e:
        tmp_dpath = Path(tempfile.mkdtemp(prefix="sae-explorer-thumbs-"))
        atexit.register(shutil.rmtree, tmp_dpath, ignore_errors=True)
        log.warning("cannot write thumbnails to %s (%s); using %s", dpath, e, tmp_dpath)
        return tmp_dpath


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
    fpath = thumb_fpath(explorer.thumbs_dpath, item, px)
    if not fpath.exists():
        write_thumbnail(explorer.index, item, px, fpath)
    return fpath


def thumb_fpath(thumbs_dpath: Path, item: int, px: int) -> Path:
    """Where the ``px`` thumbnail of index row ``item`` lives in a thumbnail folder."""
    return Path(thumbs_dpath) / str(px) / f"{item}.webp"


def write_thumbnail(index: ActivationIndex, item: int, px: int, fpath: Path) -> None:
    """Write the WebP thumbnail of index row ``item`` (read from its stored source) to
    ``fpath``, atomically."""
    image = index.load_image(item).convert("RGB")
    image.thumbnail((px, px))
    buf = io.BytesIO()
    image.save(buf, format="WEBP", quality=90)
    fpath.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(fpath, buf.getvalue())


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
