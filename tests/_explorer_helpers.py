"""Shared pieces of the explorer, app and browser tests (and ``docs/screenshots.py``): a small
explorer (the built-in shapes world when its trained checkpoints are present, otherwise the
world's tiny CLIP architecture with random weights and a random Matryoshka SAE: same code paths,
meaningless latents), the app launched on a free port, and a headless Chromium page."""

from __future__ import annotations

import shutil
import socket
import struct
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from sae_explorer import builtin
from sae_explorer.checkpoints import load_sae
from sae_explorer.corpus import load_corpus
from sae_explorer.encoder import load_encoder
from sae_explorer.explorer import Explorer, Sources
from sae_explorer.precompute import PrecomputeConfig, precompute
from sae_explorer.sae import SAE, SAEConfig
from sae_explorer.worlds import shapes

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
N_ITEMS = 200
"""Shapes drawn for the test corpus (each gives an image and its caption: 2x items)."""


def builtin_world_trained() -> bool:
    dpath = builtin.DEFAULT.dpath
    return (dpath / "clip" / "open_clip_config.json").is_file() and (
        dpath / "sae" / "config.json"
    ).is_file()


def small_explorer(cache_dpath: Path, n_items: int = N_ITEMS) -> Explorer:
    return explorer_over(f"builtin:shapes?n={n_items}&seed={shapes.DEFAULT_DEMO_SEED}", cache_dpath)


def explorer_over(corpus_source: str, cache_dpath: Path) -> Explorer:
    """The small models over any corpus source (e.g. a folder of images)."""
    if builtin_world_trained():
        encoder = load_encoder("builtin:shapes", device="cpu")
        sae = load_sae("builtin:shapes")
        clip_id, sae_id = "builtin:shapes", "builtin:shapes"
    else:
        encoder = load_encoder(shapes.CLIP_ARCH, device="cpu")
        cfg = SAEConfig.matryoshka(encoder.embed_dim, 256, 8)
        sae = SAE(cfg, generator=torch.Generator().manual_seed(0))
        clip_id, sae_id = encoder.model_id, "random matryoshka (256 latents)"
    corpus = load_corpus(corpus_source)
    index = precompute(encoder, sae, corpus, cache_dpath, PrecomputeConfig(n_words=0))
    return Explorer(encoder, sae, index, corpus, Sources(clip_id, sae_id, corpus_source))


@contextmanager
def launched_app(
    explorer: Explorer, concurrency: int | None = None, limits: Any = None
) -> Iterator[str]:
    """``explorer_ui.build_demo(explorer)`` served on a free local port with the limits
    ``app.py`` serves it with (``limits``: others); yields its URL."""
    import app
    from explorer_ui import build_demo
    from explorer_ui.serving import prepare_serving

    demo = build_demo(explorer)
    limits = limits or app.ServeConfig(concurrency=concurrency or app.DEFAULT_CONCURRENCY).limits()
    kwargs = prepare_serving(demo, explorer, limits)
    port = free_port()
    demo.launch(server_port=port, prevent_thread_lock=True, quiet=True, **kwargs)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@contextmanager
def chromium_page(
    viewport: dict[str, int] | None = None, timeout_ms: int = 60_000
) -> Iterator[Any]:
    """A Playwright page in headless Debian Chromium, with a throwaway profile."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="sae-explorer-chromium-")
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                args=CHROMIUM_ARGS,
                headless=True,
                viewport=viewport or {"width": 1400, "height": 1000},
            )
            try:
                page = context.new_page()
                page.set_default_timeout(timeout_ms)
                yield page
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def huge_png_header(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width x height`` pixels and no data: a decompression bomb's
    shape without its bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")
