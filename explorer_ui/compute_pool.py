"""The app's views computed in worker processes, so a CPU server uses more than one core.

Python runs one thread of a process at a time (the GIL): however many cores a Space has, one
server process computes its pages on about one of them, and under load every request waits for
that core while the others idle. :class:`ComputePool` forks ``n_workers`` copies of the loaded
app before it serves (the CLIP model, the SAE and the index shared copy-on-write: nothing is
loaded twice) and each view the page cache misses (a latent's page, an input's analysis, a
decode, ...) is computed by one of them; the main process keeps the HTTP side, the queue and the
page cache. A view computed by a worker equals the one computed in the process (tested).

- Only a CPU explorer is forked: CUDA cannot be used across a fork, and on a GPU the model work
  already runs outside the GIL (a pool over a GPU explorer is refused with the reason).
- Every worker is forked at start, before the server's threads exist; a worker that dies (killed,
  out of memory) ends the pool: its request and every later one are computed in the process, the
  app keeps serving, and the log says why.
- A worker runs its model on one thread (``torch.set_num_threads(1)``): the workers are the
  parallelism.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from sae_explorer.explorer import Explorer

T = TypeVar("T")
log = logging.getLogger(__name__)

_WORKER_EXPLORER: Explorer | None = None
"""In a worker: the explorer it was forked with (set in the parent just before forking)."""


def _start_worker(parent_pid: int) -> None:
    import signal

    import torch

    torch.set_num_threads(1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # ends at once when told to
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C: the server ends, and this with it
    _exit_with_parent(parent_pid)


def _exit_with_parent(parent_pid: int) -> None:
    """End this worker when the server ends, however it ends (a forked worker holds its own
    copy of the task pipe, so it would otherwise wait on it forever): Linux signals it
    (``PR_SET_PDEATHSIG``), elsewhere a thread watches the parent."""
    import ctypes
    import signal
    import sys

    if sys.platform == "linux":
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the server ended before the signal was asked for
            os._exit(0)
        return

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="compute-worker-watch", daemon=True).start()


def _compute(fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    if _WORKER_EXPLORER is None:
        raise RuntimeError("this process is not a compute worker")
    return fn(_WORKER_EXPLORER, *args)


def _pid(_: int) -> int:
    return os.getpid()


class ComputePool:
    """``n_workers`` processes forked from this one, each computing ``fn(explorer, *args)``."""

    def __init__(self, explorer: Explorer, n_workers: int) -> None:
        if n_workers < 1:
            raise ValueError(f"a compute pool needs at least 1 worker, got {n_workers}")
        import torch

        device, cuda_started = str(explorer.encoder.device), torch.cuda.is_initialized()
        if device != "cpu" or cuda_started:
            raise ValueError(
                f"compute workers need a CPU explorer (this one runs on {device}, CUDA "
                f"{'started' if cuda_started else 'not started'}; CUDA cannot be "
                "used in a forked process, and on a GPU the model already runs outside the GIL)"
            )
        global _WORKER_EXPLORER
        _WORKER_EXPLORER = explorer
        self.explorer, self.n_workers, self.broken = explorer, n_workers, ""
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ProcessPoolExecutor(
            n_workers,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_start_worker,
            initargs=(os.getpid(),),
        )
        before = {p.pid for p in multiprocessing.active_children()}
        self._pool.submit(_pid, 0).result()  # forks every worker (a fork pool starts them all)
        self.pids = sorted(p.pid for p in multiprocessing.active_children() if p.pid not in before)
        """The workers' process ids."""

    def run(self, explorer: Explorer, fn: Callable[..., T], *args: Any) -> T:
        """``fn(explorer, *args)`` on a worker when ``explorer`` is the pool's and the pool is
        whole, else here. A ``ValueError`` (a bad id, ...) reaches the caller as raised."""
        if explorer is not self.explorer or self.broken:
            return fn(explorer, *args)
        try:
            return self._pool.submit(_compute, fn, args).result()
        except BrokenProcessPool as e:
            with self._lock:
                if not self.broken:
                    self.broken = f"a compute worker died ({e}); computing in the server process"
                    log.error("%s", self.broken)
            return fn(explorer, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


POOL: ComputePool | None = None
"""The process's pool (``prepare_serving`` starts it: ``app.py --workers``); None: none."""


def start_pool(explorer: Explorer, n_workers: int) -> ComputePool | None:
    """Fork the workers for ``explorer`` (none when ``n_workers`` is 0, or, with the reason
    logged, when the explorer cannot be forked)."""
    global POOL
    stop_pool()
    if n_workers == 0:
        return None
    try:
        POOL = ComputePool(explorer, n_workers)
    except ValueError as e:
        log.warning("no compute workers: %s", e)
        return None
    log.info("computing views in %d worker processes %s", n_workers, POOL.pids)
    return POOL


def stop_pool() -> None:
    global POOL
    if POOL is not None:
        POOL.close()
        POOL = None


def compute(explorer: Explorer, fn: Callable[..., T], *args: Any) -> T:
    """``fn(explorer, *args)``: on the pool's workers when there is a pool for ``explorer``."""
    pool = POOL
    return fn(explorer, *args) if pool is None else pool.run(explorer, fn, *args)
