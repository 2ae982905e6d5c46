"""Micro-batching: concurrent callers of one model step share one batched call.

A web server runs each request on its own thread, and each request encodes one text or one
image and runs the SAE on one vector. Under load, many such calls wait at the same moment; a
model processes a batch of them in about the time of one (one pass over the weights, one set of
kernel launches). :class:`MicroBatcher` turns ``fn(item) -> result`` calls from many threads into
``run_batch(items) -> results`` calls: the first caller to find the batcher free becomes the
batch's leader, waits at most ``wait_s`` for others to join (never when ``wait_s`` is 0), and
runs up to ``max_batch`` items on its own thread; callers arriving meanwhile queue for the next
batch. One batch runs at a time, so the model step also never runs twice at once (which on a CPU
only makes its threads fight for the cores). No thread of its own: an idle batcher costs
nothing.

A batch's results equal the items' one-by-one results up to float rounding (a batched matrix
product sums in another order: ~1e-7 relative in float32). An item whose batch fails is run
again alone, so an error reaches only the caller whose item caused it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, NamedTuple, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class BatchStats(NamedTuple):
    batches: int
    items: int
    largest: int

    @property
    def mean_size(self) -> float:
        return self.items / self.batches if self.batches else 0.0


class _Slot(Generic[In, Out]):
    __slots__ = ("done", "error", "item", "result")

    def __init__(self, item: In) -> None:
        self.item = item
        self.result: Out | None = None
        self.error: BaseException | None = None
        self.done = False


class MicroBatcher(Generic[In, Out]):
    """``batcher(item)`` from any thread: ``run_batch([..., item, ...])``'s result for it."""

    def __init__(
        self,
        run_batch: Callable[[list[In]], Sequence[Out]],
        max_batch: int = 16,
        wait_s: float = 0.0,
    ) -> None:
        self.run_batch = run_batch
        self.configure(max_batch, wait_s)
        self._pending: list[_Slot[In, Out]] = []
        self._running = False
        self._cond = threading.Condition()
        self._batches = self._items = self._largest = 0

    def configure(self, max_batch: int, wait_s: float) -> None:
        if max_batch < 1 or not wait_s >= 0:
            raise ValueError(f"max_batch must be >= 1 and wait_s >= 0, got {max_batch}, {wait_s}")
        self.max_batch, self.wait_s = max_batch, wait_s

    def __call__(self, item: In) -> Out:
        slot: _Slot[In, Out] = _Slot(item)
        with self._cond:
            self._pending.append(slot)
            self._cond.notify_all()  # a leader in its wait window counts the newcomer
            while not slot.done:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True  # this caller leads the next batch
                batch = self._gather()
                self._cond.release()
                try:
                    self._run(batch)
                finally:
                    self._cond.acquire()
                    self._running = False
                    self._cond.notify_all()
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def _gather(self) -> list[_Slot[In, Out]]:
        """Up to ``max_batch`` pending slots, oldest first, after the wait window (lock held)."""
        deadline = time.monotonic() + self.wait_s
        while len(self._pending) < self.max_batch:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._cond.wait(left)
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
        return batch

    def _run(self, batch: list[_Slot[In, Out]]) -> None:
        """Each slot's result or error (lock not held)."""
        try:
            results = self.run_batch([s.item for s in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"run_batch gave {len(results)} results for {len(batch)} items")
        except BaseException as e:
            if len(batch) == 1:
                batch[0].error, batch[0].done = e, True
                return
            for s in batch:  # alone, so the error reaches its own caller only
                self._run([s])
            return
        for s, r in zip(batch, results):
            s.result, s.done = r, True
        self._batches, self._items = self._batches + 1, self._items + len(batch)
        self._largest = max(self._largest, len(batch))

    def stats(self) -> BatchStats:
        return BatchStats(self._batches, self._items, self._largest)
