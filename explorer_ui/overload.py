"""A full queue answered cleanly: the 503 Gradio sends when its queue is full gets a
``Retry-After`` header and says in words when to try again.

Gradio refuses a request beyond the queue's maximum size with ``503 {"detail": "Queue is full.
Max size is 64 and size is 64."}`` and nothing else, so a client can only guess when to come back
(and a crowd of them retrying at once fills the queue again). :class:`RetryHint` adds how long the
queue needs to drain, estimated from the time requests have been taking.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

QUEUED_PATHS = ("/queue/join",)
"""Where requests join the queue (besides ``/call/<api_name>``, the REST API's)."""
MAX_RETRY_S = 60


def retry_after_s(queued: int, concurrency: int, mean_request_s: float) -> int:
    """Whole seconds for ``queued`` requests to drain at ``concurrency`` at a time, each taking
    ``mean_request_s``: at least 1, at most :data:`MAX_RETRY_S`."""
    drain_s = queued * max(mean_request_s, 0.0) / max(concurrency, 1)
    return int(min(MAX_RETRY_S, max(1, math.ceil(drain_s))))


def is_queue_path(path: str) -> bool:
    return path.endswith(QUEUED_PATHS) or "/call/" in path


class RetryHint:
    """ASGI middleware: a 503 from a queue route gets ``Retry-After: <s>`` and a ``detail``
    that ends "try again in <s> s"; ``hint_s()`` gives the seconds. Other responses pass as
    they are, unbuffered."""

    def __init__(self, app: Any, hint_s: Callable[[], int]) -> None:
        self.app, self.hint_s = app, hint_s

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or not is_queue_path(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        start: dict | None = None
        body = bytearray()

        async def hinted(message: dict) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] == 503:
                start = message  # held until the body is complete
                return
            if start is None:
                await send(message)
                return
            body.extend(message.get("body", b""))
            if not message.get("more_body", False):
                await self._send_hinted(start, bytes(body), send)

        await self.app(scope, receive, hinted)

    async def _send_hinted(self, start: dict, body: bytes, send: Any) -> None:
        seconds = self.hint_s()
        try:
            detail = str(json.loads(body).get("detail", ""))
        except (ValueError, AttributeError):
            detail = body.decode("utf-8", "replace")
        text = f"{detail.rstrip('. ')}. The server is busy: try again in {seconds} s."
        payload = json.dumps({"detail": text, "retry_after_s": seconds}).encode()
        headers = [
            (k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-length",)
        ]
        headers += [(b"content-length", str(len(payload)).encode()),
                    (b"retry-after", str(seconds).encode())]  # fmt: skip
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
