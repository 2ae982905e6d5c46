"""Views computed in forked worker processes: equal to the ones computed in the process, errors
reach the caller as raised, a dead worker ends the pool without ending the app (the request is
computed here), another explorer is computed here, and the workers end with the server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from _explorer_helpers import small_explorer

from explorer_ui import compute_pool, inspect_tab, latent_tab, steer_tab
from explorer_ui.compute_pool import ComputePool
from explorer_ui.page_cache import PAGES

REPO = Path(__file__).resolve().parents[1]


def process_id(_explorer) -> int:
    return os.getpid()


@pytest.fixture(scope="module")
def cache_dpath(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def explorer(cache_dpath):
    return small_explorer(cache_dpath, n_items=40)


@pytest.fixture
def pool(explorer):
    PAGES.clear()
    pool = compute_pool.start_pool(explorer, 1)
    yield pool
    compute_pool.stop_pool()
    PAGES.clear()


def test_views_computed_by_a_worker_equal_the_ones_computed_here(explorer, pool):
    assert pool.run(explorer, process_id) in pool.pids != [os.getpid()]
    view = latent_tab.latent_view(explorer, 5)  # through the page cache, on the worker
    here = latent_tab.build_latent_view(explorer, 5)
    assert view.summary == here.summary and view.top_images == here.top_images
    for got, want in zip(view, here):
        if isinstance(want, pd.DataFrame):
            pd.testing.assert_frame_equal(got, want)
    query = explorer.item_query(3)
    inspected = inspect_tab.inspect_view(explorer, query, 100.0)
    pd.testing.assert_frame_equal(
        inspected.table, inspect_tab.build_inspect_view(explorer, query).table
    )
    decoded = steer_tab.decode(explorer, query, [], [[4, "zero", 0.0]], "red, blue")
    assert (
        decoded.cosine
        == steer_tab.decoded_view(explorer, query, [steer_tab.Edit(4, "zero")], "red, blue").cosine
    )


def test_an_error_reaches_the_caller_as_raised(explorer, pool):
    with pytest.raises(ValueError, match="latent 9999 does not exist"):
        latent_tab.latent_view(explorer, 9999)
    assert not pool.broken


def test_a_dead_worker_ends_the_pool_and_the_request_is_computed_here(explorer, pool, caplog):
    for pid in pool.pids:
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    assert pool.run(explorer, process_id) == os.getpid()  # this request, and every later one
    assert "a compute worker died" in pool.broken and "a compute worker died" in caplog.text
    assert (
        latent_tab.latent_view(explorer, 6).summary
        == latent_tab.build_latent_view(explorer, 6).summary
    )


def test_another_explorer_is_computed_here(explorer, pool, tmp_path):
    other = small_explorer(tmp_path, n_items=30)
    assert pool.run(other, process_id) == os.getpid()


def test_a_pool_needs_a_worker(explorer):
    with pytest.raises(ValueError, match="at least 1 worker"):
        ComputePool(explorer, 0)
    assert compute_pool.start_pool(explorer, 0) is None and compute_pool.POOL is None


def test_the_workers_end_with_the_server(explorer, cache_dpath):
    """A server killed outright (SIGKILL: no clean-up runs) leaves no worker behind."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        sys.path[:0] = [{str(REPO)!r}, {str(REPO / "tests")!r}]
        from _explorer_helpers import small_explorer
        from explorer_ui import compute_pool
        explorer = small_explorer(Path({str(cache_dpath)!r}), n_items=40)  # already built
        pool = compute_pool.start_pool(explorer, 2)
        print(*pool.pids, flush=True)
        time.sleep(600)
        """
    )
    server = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in server.stdout.readline().split()]
        assert len(pids) == 2 and all(alive(p) for p in pids)
    finally:
        server.kill()
        server.wait()
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in pids)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False
