"""Round-trip latency of the app's main actions through ``gradio_client`` next to the bare library
call doing the same work, in the same run, on the built-in world.

    python benchmarks/bench_app.py [--calls 100] [--items 1000]

For each action (Inspect text, Inspect image, Latent, Steer) it times ``--calls`` calls of each
kind, interleaved so background load hits both alike, and prints p50/p95 and whether the round
trip stays within the target ``app <= 1.3 x bare + 20 ms`` (on p50).

Two more columns separate the app from the client: ``floor`` is a trivial echo app through the
same gradio_client (gradio_client polls its message queue every 50 ms, so no endpoint answers
faster than that), and ``http`` is the same call through Gradio's plain REST API (``POST
/gradio_api/call/<name>``, then read the event stream) on one kept-alive connection, which is
what a client without that polling sees. Uses the trained ``builtin:shapes`` models when present,
else the world's tiny architecture with random weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app import DEFAULT_CONCURRENCY  # noqa: E402
from explorer_ui.inspect_tab import ALL_PERCENT  # noqa: E402
from explorer_ui.serving import free_port, queued, served  # noqa: E402
from explorer_ui.steer_tab import N_SLIDERS, moved_slider_edits  # noqa: E402
from sae_explorer.explorer_startup import world_explorer  # noqa: E402
from sae_explorer.worlds import shapes  # noqa: E402

LABELS = "red, blue, green, yellow, circle, square"


def percentiles(times_s: list[float]) -> tuple[float, float]:
    ms = np.asarray(times_s) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class RestClient:
    """Gradio's documented REST API on one persistent connection, within one session."""

    def __init__(self, url: str) -> None:
        import httpx

        self.http = httpx.Client(base_url=url + "gradio_api/", timeout=120)
        self.session_hash = uuid.uuid4().hex

    def call(self, api_name: str, *data: object) -> object:
        body = {"data": list(data), "session_hash": self.session_hash}
        response = self.http.post(f"call/{api_name}", json=body)
        response.raise_for_status()
        event_id = response.json()["event_id"]
        event = None
        with self.http.stream("GET", f"call/{api_name}/{event_id}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line.removeprefix("event:").strip()
                elif line.startswith("data:") and event in ("complete", "error"):
                    if event == "error":
                        raise RuntimeError(f"{api_name} failed: {line}")
                    return json.loads(line.removeprefix("data:"))
        raise RuntimeError(f"{api_name}: the event stream ended without a result")

    def upload(self, fpath: Path) -> dict:
        with open(fpath, "rb") as f:
            response = self.http.post("upload", files={"files": (fpath.name, f, "image/png")})
        response.raise_for_status()
        return {"path": response.json()[0], "meta": {"_type": "gradio.FileData"}}


def echo_demo():
    """The cheapest possible round trip: one textbox echoed back."""
    import gradio as gr

    with gr.Blocks() as demo:
        box = gr.Textbox()
        gr.Button().click(lambda text: text, box, box, api_name="echo")
    return demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100, help="calls per action and kind")
    parser.add_argument("--items", type=int, default=500, help="shapes in the corpus (x2 items)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tmp_dpath = Path(tmp)
        explorer = world_explorer(tmp_dpath / "cache", n_items=args.items)
        with served(explorer, DEFAULT_CONCURRENCY) as url, served_echo() as echo_url:
            actions = app_actions(explorer, url, tmp_dpath)
            print(
                f"world: {explorer.sources.clip} + {explorer.sources.sae}, corpus "
                f"{len(explorer.items)} items, {args.calls} calls per kind, interleaved"
            )
            return 0 if compare(actions, client_for(echo_url), args.calls) else 1


Call = Callable[[], object]


def client_for(url: str):
    """A gradio_client that fetches files on their own (as a browser does), not in the round
    trip; plain HTTP to localhost needs no TLS context per request."""
    from gradio_client import Client

    return Client(url, verbose=False, download_files=False, ssl_verify=False)


@contextmanager
def served_echo() -> Iterator[str]:
    echo = queued(echo_demo(), DEFAULT_CONCURRENCY)
    port = free_port()
    echo.launch(server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        echo.close()


def app_actions(explorer, url: str, tmp_dpath: Path) -> dict[str, tuple[Call, Call, Call]]:
    """Each action as (the bare library call, the gradio_client call, the REST call)."""
    from gradio_client import handle_file

    client, rest = client_for(url), RestClient(url)
    image_fpath = tmp_dpath / "shape.png"
    shapes.make_item(3, seed=7).image.save(image_fpath)
    text = "a large red circle on a white background"
    rest.call("steer_start_text", text)
    latent = int(explorer.inspect(explorer.text_query(text)).table["latent"][0])
    start = client.predict(text, api_name="/steer_start_text")
    sliders = start[1 : 1 + N_SLIDERS]  # after the description; the states are not in the API
    values = [s["value"] for s in sliders]
    values[0] = 0.0  # one real edit: zero the strongest latent
    steer_query = explorer.text_query(text)
    slider_latents = [int(v) for v in explorer.top_latents(steer_query, N_SLIDERS)["latent"]]
    initial = [[i, s["value"]] for i, s in zip(slider_latents, sliders)]
    edits = moved_slider_edits(initial, values)  # what the app decodes: the moved slider
    assert len(edits) == 1, edits
    return {
        "inspect text": (
            lambda: explorer.inspect(explorer.text_query(text)),
            lambda: client.predict(text, api_name="/inspect_text"),
            lambda: rest.call("inspect_text", text, ALL_PERCENT),
        ),
        "inspect image": (
            lambda: explorer.inspect(explorer.image_query(image_fpath)),
            lambda: client.predict(handle_file(image_fpath), api_name="/inspect_image"),
            lambda: rest.call("inspect_image", rest.upload(image_fpath), ALL_PERCENT),
        ),
        "latent": (
            lambda: explorer.latent_page(latent),
            lambda: client.predict(latent, api_name="/latent"),
            lambda: rest.call("latent", latent),
        ),
        "steer": (
            lambda: explorer.steer(steer_query, edits, LABELS),
            lambda: client.predict(LABELS, *values, api_name="/steer"),
            lambda: rest.call("steer", LABELS, *values),
        ),
    }


def compare(actions: dict[str, tuple[Call, Call, Call]], echo_client, n_calls: int) -> bool:
    """Time each action's three calls interleaved with the echo floor; print; True when every
    REST round trip meets the target."""
    print(
        f"{'action':<14} {'bare p50/p95':>15} {'client p50/p95':>15} {'ratio':>6} "
        f"{'floor':>6} {'http p50/p95':>15} {'ratio':>6}  target: <= 1.3x bare + 20 ms (p50)"
    )
    all_ok = True
    for name, (bare, round_trip, http_call) in actions.items():
        bare(), round_trip(), http_call()  # warm caches (thumbnails, label embeddings)
        bare_s, app_s, floor_s, http_s = [], [], [], []
        for _ in range(n_calls):
            bare_s.append(timed(bare))
            app_s.append(timed(round_trip))
            http_s.append(timed(http_call))
            floor_s.append(timed(lambda: echo_client.predict("x", api_name="/echo")))
        b50, b95 = percentiles(bare_s)
        a50, a95 = percentiles(app_s)
        h50, h95 = percentiles(http_s)
        f50, _ = percentiles(floor_s)
        client_ok = a50 <= 1.3 * b50 + 20.0
        http_ok = h50 <= 1.3 * b50 + 20.0
        all_ok &= http_ok
        print(
            f"{name:<14} {b50:6.1f}/{b95:6.1f}ms {a50:6.1f}/{a95:6.1f}ms {a50 / b50:5.2f}x "
            f"{f50:4.0f}ms {h50:6.1f}/{h95:6.1f}ms {h50 / b50:5.2f}x  "
            f"client {'ok' if client_ok else 'missed'}, http {'ok' if http_ok else 'missed'}"
        )
    return all_ok


if __name__ == "__main__":
    raise SystemExit(main())
