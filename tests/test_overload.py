"""Under load: a full queue answers 503 with when to retry (header and words) and the server
stays up; the queue stops polling fast once idle; its analytics stay bounded."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from _explorer_helpers import launched_app, small_explorer
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from explorer_ui import build_demo, quiet_queue, serving
from explorer_ui.overload import MAX_RETRY_S, RetryHint, retry_after_s
from explorer_ui.serving import ServeLimits

pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")


def test_the_retry_hint_is_the_time_the_queue_needs_to_drain():
    assert retry_after_s(64, 2, 0.1) == 4  # 64 requests, 2 at a time, 0.1 s each: 3.2 s
    assert retry_after_s(64, 2, 0.0) == 1  # never "now"
    assert retry_after_s(64, 1, 100.0) == MAX_RETRY_S


def hinted_app() -> TestClient:
    def full(request):
        return JSONResponse({"detail": "Queue is full. Max size is 64 and size is 64."}, 503)

    def ok(request):
        return JSONResponse({"event_id": "e1"})

    routes = [
        Route("/gradio_api/queue/join", full, methods=["POST"]),
        Route("/gradio_api/call/latent", full, methods=["POST"]),
        Route("/gradio_api/call/search", ok, methods=["POST"]),
        Route("/other", full, methods=["GET"]),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(RetryHint, hint_s=lambda: 7)])
    return TestClient(app)


def test_a_full_queue_answers_503_with_retry_after_and_words():
    client = hinted_app()
    for path in ("/gradio_api/queue/join", "/gradio_api/call/latent"):
        response = client.post(path, json={})
        assert response.status_code == 503
        assert response.headers["retry-after"] == "7"
        body = response.json()
        assert body["retry_after_s"] == 7
        assert body["detail"].startswith("Queue is full. Max size is 64")
        assert body["detail"].endswith("try again in 7 s.")
    answered = client.post("/gradio_api/call/search", json={})
    assert answered.status_code == 200 and "retry-after" not in answered.headers
    other = client.get("/other")  # not a queue route: left as it is
    assert other.status_code == 503 and "retry-after" not in other.headers


def test_the_overflow_of_a_real_server_gets_clean_503s_and_it_stays_up(tmp_path, monkeypatch):
    explorer = small_explorer(tmp_path / "cache", n_items=30)
    compute = explorer.latent_page
    monkeypatch.setattr(explorer, "latent_page", lambda i: time.sleep(0.5) or compute(i))
    monkeypatch.setattr(serving, "MAX_QUEUE", 1)  # one waiting request at most
    answers: list[httpx.Response] = []
    with launched_app(explorer, limits=ServeLimits(concurrency=1)) as url:

        def post(latent: int) -> None:
            body = {"data": [latent]}
            answers.append(httpx.post(f"{url}gradio_api/call/latent", json=body, timeout=30))

        threads = [threading.Thread(target=post, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        refused = [a for a in answers if a.status_code == 503]
        assert refused and len(refused) < len(answers)
        assert {a.status_code for a in answers} == {200, 503}
        for a in refused:
            assert 1 <= int(a.headers["retry-after"]) <= MAX_RETRY_S
            assert "try again in" in a.json()["detail"]
        time.sleep(2)  # the queue drains; the server answers as before
        again = httpx.post(f"{url}gradio_api/call/latent", json={"data": [2]}, timeout=30)
        assert again.status_code == 200


def test_the_queue_polls_slowly_once_idle_and_keeps_bounded_analytics(tmp_path):
    explorer = small_explorer(tmp_path / "cache", n_items=30)
    demo = build_demo(explorer)
    serving.prepare_serving(demo, explorer, ServeLimits(concurrency=2))
    queue = demo._queue
    assert isinstance(queue, quiet_queue.QuietQueue)
    assert queue.ANALYTICS_MAX_EVENTS == quiet_queue.ANALYTICS_EVENTS
    assert queue.ANAYLTICS_CACHE_FREQUENCY == quiet_queue.ANALYTICS_EVERY
    queue.active_jobs = [None, None]
    queue._last_busy = time.monotonic() - 2 * quiet_queue.HOT_S  # nothing for a while
    assert queue.sleep_when_free == quiet_queue.IDLE_POLL_S
    assert queue.progress_update_sleep_when_free == quiet_queue.IDLE_POLL_S
    queue.active_jobs = [["an event"], None]  # a request runs: poll as Gradio does
    assert queue.sleep_when_free == quiet_queue.HOT_POLL_S
    queue.active_jobs = [None, None]  # it just finished: still fast for a while
    assert queue.sleep_when_free == quiet_queue.HOT_POLL_S
