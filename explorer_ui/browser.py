"""The page in a headless browser (Debian's ``/usr/bin/chromium`` driven by Playwright, never a
downloaded browser), for the README's screenshots and the browser tests. Playwright is a
development dependency, imported only when a page is opened."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


@contextmanager
def chromium_page(
    viewport: dict[str, int] | None = None, timeout_ms: int = 60_000
) -> Iterator[Any]:
    """A Playwright page in headless Chromium, with a throwaway profile."""
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
