"""Gradio's request queue, made cheap when idle and under load.

Two costs of Gradio's queue (6.x) are fixed here, on the built page's queue:

- **Idle polling.** The queue's dispatch loop sleeps 1 ms between looks at an empty queue, and its
  progress loop 10 ms: about 1,100 wake-ups a second, ~7% of a core with no request at all.
  :class:`QuietQueue` polls as fast while requests come (so none waits for a slot longer than
  before) and, once nothing has come for :data:`HOT_S`, every :data:`IDLE_POLL_S` (20 wake-ups a
  second; the first request after a quiet spell waits at most that long to start).
- **Analytics.** After *every* event the queue rebuilds a DataFrame of its last 10,000 events to
  summarise them for its monitoring page: a cost per request that grows with the events served,
  up to a 10,000-row frame each time. It is rebuilt here every :data:`ANALYTICS_EVERY` events
  over the last :data:`ANALYTICS_EVENTS` only.
"""

from __future__ import annotations

import time

import gradio as gr
from gradio.queueing import Queue

HOT_S = 2.0
"""After a request, the queue polls as Gradio does (every 1 ms) for this long."""
HOT_POLL_S = 0.001
IDLE_POLL_S = 0.05
"""The queue's poll interval once idle: 20 wake-ups a second."""
PROGRESS_POLL_S = 0.01
"""How often progress updates are sent while requests run (Gradio's own)."""
ANALYTICS_EVENTS = 1000
ANALYTICS_EVERY = 200


class QuietQueue(Queue):
    """Gradio's queue polling fast only while there is work (see the module's note).

    Gradio reads ``sleep_when_free`` and ``progress_update_sleep_when_free`` at every turn of
    its loops; here they are properties (which take precedence over the values Gradio's
    ``__init__`` stored on the instance), so nothing of the loops themselves is replaced."""

    _last_busy: float = 0.0

    def _busy(self) -> bool:
        now = time.monotonic()
        if len(self) or any(job is not None for job in self.active_jobs):
            self._last_busy = now
        return now - self._last_busy < HOT_S

    @property
    def sleep_when_free(self) -> float:  # type: ignore[override]
        return HOT_POLL_S if self._busy() else IDLE_POLL_S

    @property
    def progress_update_sleep_when_free(self) -> float:  # type: ignore[override]
        return PROGRESS_POLL_S if self._busy() else IDLE_POLL_S


def quiet(demo: gr.Blocks) -> gr.Blocks:
    """``demo`` (queued) with its queue a :class:`QuietQueue` and its analytics bounded."""
    queue = demo._queue
    if not isinstance(queue, QuietQueue):
        queue.__class__ = QuietQueue
    queue.ANALYTICS_MAX_EVENTS = ANALYTICS_EVENTS
    queue.ANAYLTICS_CACHE_FREQUENCY = ANALYTICS_EVERY  # (sic: Gradio's spelling)
    return demo
