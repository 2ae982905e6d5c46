"""Shared pieces of the explorer, app and browser tests, under the names the tests use: a small
explorer of the built-in shapes world (``explorer_startup.world_explorer``), the app served on a
free port (``explorer_ui.serving``), a headless Chromium page (``explorer_ui.browser``), and a
decompression bomb's header."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from explorer_ui.browser import CHROMIUM, chromium_page
from explorer_ui.serving import ServeLimits, free_port, served
from sae_explorer import builtin
from sae_explorer.explorer import Explorer
from sae_explorer.explorer_startup import world_explorer

__all__ = [
    "CHROMIUM",
    "builtin_world_trained",
    "chromium_page",
    "explorer_over",
    "free_port",
    "huge_png_header",
    "launched_app",
    "small_explorer",
]

N_ITEMS = 200
"""Shapes drawn for the test corpus (each gives an image and its caption: 2x items)."""


def builtin_world_trained() -> bool:
    dpath = builtin.DEFAULT.dpath
    return (dpath / "clip" / "open_clip_config.json").is_file() and (
        dpath / "sae" / "config.json"
    ).is_file()


def small_explorer(cache_dpath: Path, n_items: int = N_ITEMS) -> Explorer:
    return world_explorer(cache_dpath, n_items)


def explorer_over(corpus_source: str, cache_dpath: Path) -> Explorer:
    """The small models over any corpus source (e.g. a folder of images)."""
    return world_explorer(cache_dpath, corpus=corpus_source)


@contextmanager
def launched_app(
    explorer: Explorer, concurrency: int | None = None, limits: ServeLimits | None = None
) -> Iterator[str]:
    """The page served on a free local port as ``app.py`` serves it (``limits``: others);
    yields its URL."""
    import app

    with served(explorer, concurrency or app.DEFAULT_CONCURRENCY, limits) as url:
        yield url


def huge_png_header(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width x height`` pixels and no data: a decompression bomb's
    shape without its bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")
