"""Bounded cost per request, through a launched server: upload and body caps, inline images
checked before decoding, one concurrency limit over every endpoint, a deadline per request,
few and expiring sessions, and no server path in what a visitor receives."""

from __future__ import annotations

import base64
import io
import itertools
import os
import threading
import time

import gradio as gr
import httpx
import pytest
from _explorer_helpers import huge_png_header, launched_app, small_explorer
from gradio.data_classes import ImageData
from PIL import Image

import app
from explorer_ui import build_demo, serving, wiring
from explorer_ui.inspect_tab import ALL_PERCENT
from explorer_ui.serving import RequestRunner, RequestTimeoutError, ServeLimits
from explorer_ui.uploaded_image import UploadedImage

pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")
LIMITS = ServeLimits(concurrency=1, max_upload_mb=1.0, max_sessions=7, session_ttl_s=120)


@pytest.fixture(scope="module")
def explorer(tmp_path_factory):
    return small_explorer(tmp_path_factory.mktemp("cache"), n_items=40)


@pytest.fixture(scope="module")
def url(explorer):
    with launched_app(explorer, limits=LIMITS) as url:
        yield url


def call(url: str, api_name: str, *data) -> tuple[str, str]:
    """One call through Gradio's REST API: ``(event, data)`` of its last message."""
    event_id = httpx.post(f"{url}gradio_api/call/{api_name}", json={"data": list(data)}).json()
    stream = httpx.get(f"{url}gradio_api/call/{api_name}/{event_id['event_id']}", timeout=120)
    event, _, data = stream.text.strip().rpartition("event: ")[2].partition("\ndata: ")
    return event, data


def data_url(payload: bytes) -> dict:
    return {"url": "data:image/png;base64," + base64.b64encode(payload).decode(), "meta": {}}


def test_an_upload_over_the_limit_is_refused(url):
    small = {"files": ("a.png", b"x" * 1000, "image/png")}
    assert httpx.post(f"{url}gradio_api/upload", files=small).status_code == 200
    big = {"files": ("b.png", b"x" * 1_200_000, "image/png")}  # over 1 MB
    response = httpx.post(f"{url}gradio_api/upload", files=big)
    assert response.status_code == 413


def test_a_huge_body_is_refused_before_it_is_read(url):
    """A 3 MB text (over the 1 MB upload cap's body limit) gets 413 at once; the next call works."""
    text = "a red circle " * 250_000
    response = httpx.post(f"{url}gradio_api/call/inspect_text", json={"data": [text]})
    assert response.status_code == 413 and "request body over" in response.text
    event, data = call(url, "inspect_text", "a red circle", ALL_PERCENT)
    assert event == "complete" and "red circle" in data


def test_an_inline_image_is_checked_before_decoding(url):
    """A data: URL of a 12000x12000 PNG is refused from its header (Gradio no longer decodes and
    re-saves it first); one over the size limit is refused unread; a small one works."""
    event, data = call(url, "inspect_image", data_url(huge_png_header(12_000, 12_000)), ALL_PERCENT)
    assert event == "error" and "12000x12000 = 144,000,000 pixels" in data
    buf = io.BytesIO()
    Image.new("RGB", (50, 40), (255, 0, 0)).save(buf, format="PNG")
    event, data = call(url, "inspect_image", data_url(buf.getvalue()), ALL_PERCENT)
    assert event == "complete" and "uploaded image 50x40" in data


def test_an_oversized_inline_image_is_refused_unread(monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded an oversized data: URL")

    monkeypatch.setattr(base64, "b64decode", no_decoding)
    url = "data:image/png;base64," + "A" * 30_000_000
    with pytest.raises(gr.Error, match="the limit is 20,971,520"):
        UploadedImage().preprocess(ImageData(url=url))


def test_one_concurrency_limit_holds_over_all_endpoints(explorer, url, monkeypatch):
    """With --concurrency 1, two Inspect and two Latent calls sent at once run one at a time
    (Gradio's own limit is per endpoint unless every event shares one group)."""
    spans, lock = [], threading.Lock()

    def timed(method):
        def run(*args, **kwargs):
            start = time.monotonic()
            time.sleep(0.3)
            result = method(*args, **kwargs)
            with lock:
                spans.append((start, time.monotonic()))
            return result

        return run

    monkeypatch.setattr(explorer, "inspect", timed(explorer.inspect))
    monkeypatch.setattr(explorer, "latent_page", timed(explorer.latent_page))
    calls = [  # distinct inputs: a page asked for twice is computed once (the page cache)
        ("inspect_text", "a red circle", ALL_PERCENT),
        ("inspect_text", "a blue square", ALL_PERCENT),
        ("latent", 3),
        ("latent", 4),
    ]
    threads = [threading.Thread(target=call, args=(url, *c)) for c in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spans.sort()
    assert len(spans) == 4
    assert all(end <= start for (_, end), (start, _) in itertools.pairwise(spans))


def test_serving_limits_are_applied(explorer):
    demo = build_demo(explorer)
    kwargs = serving.prepare_serving(demo, explorer, LIMITS)
    assert {fn.concurrency_id for fn in demo.fns.values()} == {serving.CONCURRENCY_ID}
    assert {fn.concurrency_limit for fn in demo.fns.values()} == {1}
    states = [b for b in demo.blocks.values() if isinstance(b, gr.State)]
    assert states and all(s.time_to_live == 120 for s in states)
    assert demo.delete_cache == (LIMITS.cache_check_s, LIMITS.cache_ttl_s)
    assert kwargs["state_session_capacity"] == 7 and kwargs["max_file_size"] == 1024 * 1024
    assert serving.RUNNER.concurrency == 1
    assert kwargs["app_kwargs"]["lifespan"] is not None  # the cache sweep runs with the server


def test_the_default_concurrency_is_sized_to_the_machine(monkeypatch):
    monkeypatch.setattr(app.os, "cpu_count", lambda: 16)
    assert app.default_concurrency() == 4
    monkeypatch.setattr(app.os, "cpu_count", lambda: 2)
    assert app.default_concurrency() == 2
    assert app.parse_args([], {"SAE_EXPLORER_CONCURRENCY": "3"}).serve.concurrency == 3


def test_a_request_past_its_deadline_gets_an_error_and_still_holds_its_slot():
    runner = RequestRunner(concurrency=1, timeout_s=0.3)
    with pytest.raises(RequestTimeoutError, match=r"longer than 0\.3 s"):
        runner.run(time.sleep, 1.2)
    # the overrun work still runs on the pool's one thread: the next request waits behind it
    with pytest.raises(RequestTimeoutError):
        runner.run(lambda: "queued")
    time.sleep(1.0)
    assert runner.run(lambda: "free again") == "free again"


def test_a_bound_handler_past_its_deadline_shows_an_error(explorer, monkeypatch):
    monkeypatch.setattr(serving, "RUNNER", RequestRunner(1, 0.2))
    monkeypatch.setattr(wiring, "RUNNER", serving.RUNNER)

    def slow(explorer, seconds: float) -> str:
        time.sleep(seconds)
        return "done"

    with pytest.raises(gr.Error, match=r"took longer than 0\.2 s"):
        wiring.bind(slow, explorer)(0.6)


def test_no_server_path_reaches_a_visitor(explorer, url):
    """Neither the page's config nor a latent page names a folder of the server."""
    folders = {str(explorer.thumbs_dpath.parent.parent), str(explorer.index.dpath)}
    config = httpx.get(f"{url}config").text
    event, latent = call(url, "latent", 3)
    assert event == "complete" and "gradio_api/thumbs/" in latent
    assert not [f for f in folders if f in config or f in latent]
    thumb = latent.split('src=\\"', 1)[1].split('\\"', 1)[0]
    assert httpx.get(url + thumb).status_code == 200
    for bad in ("96/..%2F..%2Fmanifest.json", "96/1.png", "x/1.webp", "96/99999.webp"):
        assert httpx.get(f"{url}gradio_api/thumbs/{bad}").status_code == 404


def test_the_cache_folder_stays_bounded_in_age_and_size(tmp_path):
    """Gradio's folder (uploads, exports handed out) loses files older than the limit, then the
    oldest until the rest fit."""
    now = time.time()
    ages = {"new.png": 10, "newer.png": 5, "mid.png": 100, "old.png": 700}
    for name, age in ages.items():
        fpath = tmp_path / name.split(".")[0] / name
        fpath.parent.mkdir()
        fpath.write_bytes(b"x" * 400)
        os.utime(fpath, (now - age, now - age))
    removed = serving.sweep_folder(tmp_path, max_bytes=1000, max_age_s=600)
    left = sorted(p.name for p in tmp_path.rglob("*.png"))
    assert removed == 2 and left == ["new.png", "newer.png"]  # old: too old; mid: over 1000 B
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "newer"]  # empty folders go
