"""Deterministic pages computed once: a bounded LRU of views, keyed on the explorer's index.

A latent's page, the analysis of a text, the search of a word: each is a function of the loaded
index, SAE and CLIP and of the request's own arguments, nothing else, so on a public Space the
hundredth visitor opening a popular latent need not recompute it. :data:`PAGES` holds the views
of the process, at most ``max_entries`` (the least recently used is dropped first). Every key
starts with the explorer's identity (:func:`explorer_key`: its index's content key, which hashes
CLIP, SAE, corpus and build settings, the SAE's own hash, and the explorer object), so an
explorer over another index never gets another's page. Concurrent requests for one page compute it once: the others wait for
the first one's result (or its error, which is not kept).

Views kept here are shared between requests and must not be changed by their users (Gradio only
reads them to send them).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from explorer_ui import compute_pool, tables
from sae_explorer.explorer import Explorer, Query

T = TypeVar("T")

DEFAULT_ENTRIES = 1024
"""Views kept. Measured on the built-in world: a latent page holds ~100 KB in memory (11 KB
pickled), an Inspect view ~60 KB, a decode ~25 KB, so at most ~100 MB; a real index's views are
larger by their longer names and captions. Under the soak benchmark's Zipf-repeated requests 256
views kept 62% of latent pages and 31% of Inspect items; 1,024 keep 91% and 53% (simulated)."""


class CacheStats(NamedTuple):
    entries: int
    max_entries: int
    hits: int
    misses: int


class PageCache:
    """A thread-safe LRU of computed views with at most ``max_entries``; a key being computed
    is computed once however many ask for it at the same time."""

    def __init__(self, max_entries: int = DEFAULT_ENTRIES) -> None:
        self.configure(max_entries)
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._computing: dict[Hashable, concurrent.futures.Future] = {}
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def configure(self, max_entries: int) -> None:
        """Keep at most ``max_entries`` views (0: keep none, compute every request)."""
        if max_entries < 0:
            raise ValueError(f"the page cache's size must be >= 0, got {max_entries}")
        self.max_entries = max_entries
        if hasattr(self, "_entries"):
            with self._lock:
                self._evict()

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The view under ``key``, computed by ``compute()`` when not kept (its exception, e.g.
        a ``ValueError`` for a bad id, reaches every caller waiting for it and is not kept)."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key]
            pending = self._computing.get(key)
            if pending is None:
                self.misses += 1
                self._computing[key] = mine = concurrent.futures.Future()
        if pending is not None:
            return pending.result()
        try:
            value = compute()
        except BaseException as e:
            with self._lock:
                del self._computing[key]
            mine.set_exception(e)
            raise
        with self._lock:
            del self._computing[key]
            self._entries[key] = value
            self._evict()
        mine.set_result(value)
        return value

    def _evict(self) -> None:
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(len(self._entries), self.max_entries, self.hits, self.misses)


PAGES = PageCache()
"""The process's page cache (``prepare_serving`` sizes it: ``app.py --page-cache``)."""


def explorer_key(explorer: Explorer) -> tuple[str, str, int]:
    """What names an explorer's pages: its index's content key, its SAE's hash, and the
    explorer itself (two explorers over one index may differ in what else they show: release
    names, their thumbnails' folder)."""
    return (explorer.index_key, explorer.sae_hash, id(explorer))


def query_key(query: Query) -> tuple[Hashable, ...]:
    """What names an input: every field of the query, its embedding by a digest."""
    digest = hashlib.blake2b(query.x_d.tobytes(), digest_size=16).hexdigest()
    return (query.kind, query.item, query.text, query.description, query.warnings, digest)


MAX_KEY_CHARS = 4096
"""Views of longer arguments are computed but not kept (the key would hold the text)."""


def cached(
    explorer: Explorer,
    view: str,
    args: tuple[Hashable, ...],
    fn: Callable[..., T],
    *fn_args: Any,
) -> T:
    """``fn(explorer, *fn_args)``, kept in :data:`PAGES` under the explorer, the view's name
    and ``args``; computed on the compute workers when the app has them
    (:mod:`explorer_ui.compute_pool`: ``fn`` is then a module-level function and ``fn_args``
    picklable)."""

    def compute() -> T:
        view = compute_pool.compute(explorer, fn, *fn_args)
        tables.freeze(view)  # kept and shared: its tables are rendered once
        return view

    if sum(len(a) for a in args if isinstance(a, str)) > MAX_KEY_CHARS:
        return compute()
    return PAGES.get((explorer_key(explorer), view, *args), compute)


def file_digest(fpath: str | Path) -> str:
    """A file's content digest (an upload's, whatever Gradio named it)."""
    with open(fpath, "rb") as fh:
        return hashlib.file_digest(fh, "blake2b").hexdigest()
