"""Serving the page: the queue settings ``app.py`` serves with, and the page served on a free
local port for scripts (benchmarks, screenshots) and tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import gradio as gr

from explorer_ui.page import build_demo
from explorer_ui.sessions import app_kwargs
from sae_explorer.explorer import Explorer

MAX_QUEUE = 64
"""Requests waiting at most; beyond it a request is refused at once rather than kept waiting."""


def queued(demo: gr.Blocks, concurrency: int) -> gr.Blocks:
    """``demo`` with its request queue: ``concurrency`` requests served at once, the rest wait."""
    return demo.queue(default_concurrency_limit=concurrency, max_size=MAX_QUEUE)


@contextmanager
def served(explorer: Explorer, concurrency: int) -> Iterator[str]:
    """The page over ``explorer``, queued as the app queues it, served on a free local port
    until the block ends; yields its URL."""
    demo = queued(build_demo(explorer), concurrency)
    port = free_port()
    demo.launch(server_port=port, prevent_thread_lock=True, quiet=True, app_kwargs=app_kwargs())
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def free_port() -> int:
    """A TCP port free on this machine now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
