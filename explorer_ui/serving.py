"""Serving the page: the queue and limits ``app.py`` serves with, and the page served on a free
local port for scripts (benchmarks, screenshots) and tests, with the same limits.

The limits keep any single request, and any crowd of them, from taking the server down: one
concurrency limit shared by every endpoint, a deadline per request, a cap on request bodies and
uploads, Gradio's cache folder kept bounded in age and size, few and expiring sessions, and
thumbnails served from a route that names no server folder. Under load, requests of one kind
share batched model calls (``Explorer.batchers``), deterministic pages are served from a bounded
cache (``page_cache``), a full queue answers 503 with when to retry (``overload``), and the queue
stops polling when idle (``quiet_queue``). ``prepare_serving(demo, explorer, limits)`` applies
them to a built page and returns the keyword arguments of ``demo.launch``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import re
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import gradio as gr
from gradio.utils import get_upload_folder
from starlette.middleware import Middleware
from starlette.responses import FileResponse, PlainTextResponse
from starlette.routing import Route

from explorer_ui.compute_pool import start_pool
from explorer_ui.overload import RetryHint, retry_after_s
from explorer_ui.page_cache import DEFAULT_ENTRIES, PAGES
from explorer_ui.quiet_queue import quiet
from explorer_ui.sessions import app_kwargs

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from sae_explorer.explorer import Explorer

T = TypeVar("T")

MAX_QUEUE = 64
"""Requests waiting at most; beyond it a request is refused at once rather than kept waiting."""
STATUS_EVERY_S = 2.0
"""How often waiting requests are told their place in the queue."""
CONCURRENCY_ID = "explorer"
"""The one concurrency group of every event: the limit holds across endpoints, not per endpoint."""
THUMBS_ROUTE = "gradio_api/thumbs"
"""Where thumbnails are served: ``<route>/<px>/<item>.webp`` (under ``/gradio_api`` so a Space's
front proxy passes it to Python as it does Gradio's own routes)."""
BODY_MARGIN_BYTES = 1 << 20
"""Room above the upload limit for a request's other fields and multipart framing."""


@dataclass(frozen=True)
class ServeLimits:
    """What one server allows (``app.py``'s serving flags)."""

    concurrency: int
    request_timeout_s: float = 60.0
    max_upload_mb: float = 20.0
    max_sessions: int = 500
    session_ttl_s: int = 3600
    cache_check_s: int = 30  # how often Gradio's cache is swept
    cache_ttl_s: int = 600  # uploads and handed-out exports older than this are deleted
    max_cache_mb: float = 1024.0  # and the oldest beyond this size
    page_cache: int = DEFAULT_ENTRIES  # deterministic pages kept (0: none)
    workers: int = 0  # processes computing the pages the cache misses (0: this one)
    max_batch: int = 16  # inputs in one batched model call at most
    batch_wait_ms: float = 2.0  # how long a batch waits for more inputs when the model is free

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_cache_bytes(self) -> int:
        return int(self.max_cache_mb * 1024 * 1024)

    @property
    def max_body_bytes(self) -> int:
        """A request body's cap: an upload, or an inline (base64) image of that size."""
        return self.max_upload_bytes * 4 // 3 + BODY_MARGIN_BYTES


class RequestTimeoutError(TimeoutError):
    """A request that ran past the deadline (its answer is an error; see :class:`RequestRunner`)."""


class RequestRunner:
    """Runs every handler on one pool of ``concurrency`` threads, with a deadline.

    A request that runs past the deadline gets an error at once; its computation cannot be
    killed, so it finishes on its thread, and because the pool has no more threads than the
    concurrency limit, overrun work still counts against it instead of piling up beside new
    requests. One runner per process: every session shares the same machine."""

    def __init__(self, concurrency: int, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self.mean_s = 0.1
        """Recent requests' mean duration (a moving average), for a full queue's retry hint."""
        self._pool = concurrent.futures.ThreadPoolExecutor(concurrency, "explorer-request")

    def configure(self, concurrency: int, timeout_s: float) -> None:
        if concurrency < 1 or not timeout_s > 0:
            raise ValueError(
                f"concurrency must be >= 1 and the timeout > 0 s, got {concurrency}, {timeout_s}"
            )
        if concurrency != self.concurrency:
            old, self._pool = (
                self._pool,
                concurrent.futures.ThreadPoolExecutor(concurrency, "explorer-request"),
            )
            old.shutdown(wait=False)
        self.concurrency, self.timeout_s = concurrency, timeout_s

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the pool, in the caller's context (Gradio's request, its toasts);
        ``RequestTimeoutError`` after ``timeout_s``."""
        future = self._pool.submit(contextvars.copy_context().run, fn, *args)
        t0 = time.monotonic()
        future.add_done_callback(lambda _: self._timed(time.monotonic() - t0))
        try:
            return future.result(timeout=self.timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()  # still queued: never runs; running: finishes on its thread
            raise RequestTimeoutError(
                f"the request took longer than {self.timeout_s:g} s and was stopped; the server "
                "is busy or the input is too large. Try again, or with a smaller input"
            ) from None

    def _timed(self, seconds: float) -> None:
        self.mean_s = 0.9 * self.mean_s + 0.1 * seconds


RUNNER = RequestRunner(1, ServeLimits(1).request_timeout_s)
"""The process's runner; :func:`prepare_serving` sizes it (``app.py``: to the machine)."""


class BodyLimit:
    """ASGI middleware refusing a request body over ``max_bytes`` (413) before it is read: a
    200 MB text or inline image costs nothing. A body without a length stops being read at the
    limit (the app sees a disconnected client)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_bytes:
            text = f"request body over {self.max_bytes:,} bytes; send a smaller file or text"
            await PlainTextResponse(text, status_code=413)(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, limited, send)


def sweep_folder(dpath: Path, max_bytes: int, max_age_s: float) -> int:
    """Delete the files under ``dpath`` older than ``max_age_s``, then the oldest until the rest
    fit in ``max_bytes`` (then empty folders); returns how many files were deleted. Files that
    vanish meanwhile are skipped."""
    files = []
    for fpath in Path(dpath).rglob("*"):
        with contextlib.suppress(OSError):
            if fpath.is_file():
                stat = fpath.stat()
                files.append((stat.st_mtime, stat.st_size, fpath))
    files.sort(reverse=True)  # newest first
    now, kept_bytes, removed = time.time(), 0, 0
    for mtime, size, fpath in files:
        if now - mtime <= max_age_s and kept_bytes + size <= max_bytes:
            kept_bytes += size
            continue
        with contextlib.suppress(OSError):
            fpath.unlink()
            removed += 1
    for folder in sorted((p for p in Path(dpath).rglob("*") if p.is_dir()), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only empty ones
    return removed


def cache_sweeper(limits: ServeLimits) -> Callable[[Any], Any]:
    """A lifespan keeping Gradio's upload and cache folder bounded in age and size while the
    server runs (Gradio's own cache deletion is by age only, and only of files it tracks)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async def sweep() -> None:
            while True:
                await asyncio.sleep(limits.cache_check_s)
                await asyncio.to_thread(
                    sweep_folder, Path(get_upload_folder()), limits.max_cache_bytes,
                    limits.cache_ttl_s,
                )  # fmt: skip

        task = asyncio.create_task(sweep())
        try:
            yield
        finally:
            task.cancel()

    return lifespan


THUMB_NAME = re.compile(r"^[0-9]{1,6}$"), re.compile(r"^[0-9]{1,12}\.webp$")


def thumbs_route(explorer: Explorer) -> Route:
    """``GET /gradio_api/thumbs/<px>/<item>.webp``: a thumbnail file of ``explorer``, by name
    only (no path of the server appears in the page)."""

    async def serve(request: Request) -> Any:
        px, name = request.path_params["px"], request.path_params["name"]
        fpath = explorer.thumbs_dpath / px / name
        if not (THUMB_NAME[0].match(px) and THUMB_NAME[1].match(name)) or not fpath.is_file():
            return PlainTextResponse("no such thumbnail", status_code=404)
        return FileResponse(
            fpath, media_type="image/webp", headers={"Cache-Control": "max-age=3600"}
        )

    return Route(f"/{THUMBS_ROUTE}/{{px}}/{{name}}", serve, methods=["GET"])


def prepare_serving(demo: gr.Blocks, explorer: Explorer, limits: ServeLimits) -> dict[str, Any]:
    """Apply ``limits`` to the built page (its queue, every event's concurrency group, session
    state lifetimes, Gradio's cache deletion, the request runner) and return ``demo.launch``'s
    keyword arguments for the rest (upload and body caps, sessions kept, the thumbnail route,
    the sweep keeping Gradio's cache folder bounded)."""
    RUNNER.configure(limits.concurrency, limits.request_timeout_s)
    PAGES.configure(limits.page_cache)
    start_pool(explorer, limits.workers)  # forked now, before the server's threads exist
    explorer.batchers.configure(limits.max_batch, limits.batch_wait_ms / 1000)
    quiet(queued(demo, limits.concurrency))
    for fn in demo.fns.values():
        fn.concurrency_id = CONCURRENCY_ID
        fn.concurrency_limit = limits.concurrency
    for block in demo.blocks.values():
        if isinstance(block, gr.State):
            block.time_to_live = limits.session_ttl_s
    demo.delete_cache = (limits.cache_check_s, limits.cache_ttl_s)
    return {
        "max_file_size": limits.max_upload_bytes,
        "state_session_capacity": limits.max_sessions,
        "app_kwargs": {
            "middleware": [
                Middleware(RetryHint, hint_s=lambda: full_queue_retry_s(limits.concurrency)),
                Middleware(BodyLimit, max_bytes=limits.max_body_bytes),
                *app_kwargs()["middleware"],  # one event stream per session
            ],
            "routes": [thumbs_route(explorer)],
            "lifespan": cache_sweeper(limits),
        },
    }


def full_queue_retry_s(concurrency: int) -> int:
    """Seconds a full queue needs to drain at the recent pace (the 503's ``Retry-After``)."""
    return retry_after_s(MAX_QUEUE, concurrency, RUNNER.mean_s)


def queued(demo: gr.Blocks, concurrency: int) -> gr.Blocks:
    """``demo`` with its request queue: ``concurrency`` requests served at once, the rest wait
    (told their place in the queue every :data:`STATUS_EVERY_S`, not at every finished request:
    with a full queue that was one message to each waiting request per request served)."""
    return demo.queue(
        default_concurrency_limit=concurrency, max_size=MAX_QUEUE, status_update_rate=STATUS_EVERY_S
    )


@contextlib.contextmanager
def served(
    explorer: Explorer, concurrency: int, limits: ServeLimits | None = None
) -> Iterator[str]:
    """The page over ``explorer``, served as the app serves it (``limits``, default: the app's
    with ``concurrency``) on a free local port until the block ends; yields its URL."""
    from explorer_ui.page import build_demo

    demo = build_demo(explorer)
    kwargs = prepare_serving(demo, explorer, limits or ServeLimits(concurrency))
    port = free_port()
    demo.launch(server_port=port, prevent_thread_lock=True, quiet=True, **kwargs)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def free_port() -> int:
    """A TCP port free on this machine now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
