"""One event stream per session: a second concurrent stream is refused at once, with a reason.

Gradio delivers a session's results over one server-sent-event stream (``/queue/data?session_hash=``):
every message of the session goes into one queue, and each open stream takes whichever message
comes next. The browser and ``gradio_client`` open one stream per session and share it between
concurrent calls, which works. Two callers that reuse one ``session_hash`` open two streams that
steal each other's results: all but one wait for a result another stream took, until Gradio's
10-second wait for the next message finds the session closed and answers ``404 session not found``.
:class:`OneStreamPerSession` refuses the second stream at once (409) instead, saying why and what
to do; the first caller's stream still delivers every result of the session.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from starlette.middleware import Middleware
from starlette.responses import JSONResponse

STREAM_PATH = "/queue/data"
REFUSED = (
    "this session already has an open event stream: its results go to that stream. Use one "
    "stream per session (as gradio_client and the browser do: they share it between concurrent "
    "calls), or a session_hash of its own for each concurrent caller."
)


class OneStreamPerSession:
    """ASGI middleware: at most one open ``/queue/data`` stream per ``session_hash``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.open: set[str] = set()  # sessions with a stream (one event loop: no lock needed)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        session = stream_session(scope)
        if session is None:
            await self.app(scope, receive, send)
            return
        if session in self.open:
            await JSONResponse({"error": REFUSED}, status_code=409)(scope, receive, send)
            return
        self.open.add(session)
        try:
            await self.app(scope, receive, send)
        finally:
            self.open.discard(session)


def stream_session(scope: dict) -> str | None:
    """The session of an event-stream request; None for any other request."""
    if scope.get("type") != "http" or not scope.get("path", "").endswith(STREAM_PATH):
        return None
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return (query.get("session_hash") or [None])[0]


def app_kwargs() -> dict[str, Any]:
    """What ``demo.launch(app_kwargs=...)`` passes to the FastAPI app: this middleware."""
    return {"middleware": [Middleware(OneStreamPerSession)]}
