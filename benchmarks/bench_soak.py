"""The app under load, as a public Space sees it: ``app.py --demo`` started as a real server in
its own process, driven through Gradio's REST API by 1, 50 and 200 concurrent clients.

    python benchmarks/bench_soak.py --quick            # ~3 minutes: 20 s idle, 20 s per crowd
    python benchmarks/bench_soak.py                    # 60 s idle, 60 s per crowd
    python benchmarks/bench_soak.py --soak-minutes 10  # then 50 clients for 10 minutes (memory)
    python benchmarks/bench_soak.py --app-dir ../main  # the same load on another checkout's app

Each client is one browser session (its own ``session_hash``) calling, one call after another,
a mix of what visitors do (``MIX``): open a latent, inspect a text, a corpus item or an uploaded
image, search the names, start Steer from a text and decode an edit. Inputs are drawn from pools
with a Zipf law (``--skew``, 0 = uniform), so popular latents and texts repeat as they do on a
public page. A client refused with 503 waits as the answer's ``Retry-After`` says (1 s when it
says nothing) and goes on; 503s are counted apart from errors.

Printed per crowd: calls/s, p50/p95 latency of answered calls, errors by kind, 503s, the
server's CPU seconds per answered call and its RSS (start, max, end); the idle server's CPU over
``--idle-seconds``; with ``--soak-minutes`` the RSS every 30 s and its growth (target <= 300 MB).
Targets: 50 clients >= 1.5x one client's calls/s with p95 <= 3 s and no errors; 200 clients:
only clean 503s and the server up; idle CPU ~0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sae_explorer.worlds import shapes  # noqa: E402

ALL_PERCENT = 100.0
LABELS = "red, blue, green, yellow, circle, square"
CALL_TIMEOUT_S = 120.0
MIX = {
    "latent": 30,
    "inspect_text": 20,
    "inspect_item": 15,
    "inspect_image": 10,
    "search": 10,
    "steer": 15,  # steer_start_text, then steer with the strongest slider at 0
}
"""Actions and their weights (a "steer" is two calls, each counted)."""


# ------------------------------------------------------------------------------- the server
class Server(NamedTuple):
    process: subprocess.Popen
    url: str


def start_server(
    app_dpath: Path,
    cache_dpath: Path,
    port: int,
    log_fpath: Path,
    wrap: list[str],
    flags: list[str] = (),
) -> Server:
    """``app.py --demo`` of ``app_dpath`` on ``port`` (``wrap``: a command prefix, e.g. a
    profiler's), once it answers (the first start builds the world's index: about a minute)."""
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    app = [sys.executable, "app.py", "--demo", "--port", str(port), "--cache-dir", str(cache_dpath)]
    cmd = [*wrap, *app, *flags]
    log = open(log_fpath, "w")  # noqa: SIM115 (kept open while the server runs)
    process = subprocess.Popen(cmd, cwd=app_dpath, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}; see {log_fpath}")
        try:
            import urllib.request

            with urllib.request.urlopen(url + "gradio_api/info", timeout=5) as r:
                if r.status == 200:
                    return Server(process, url)
        except OSError:
            time.sleep(1)
    process.kill()
    raise RuntimeError(f"the server did not answer within 600 s; see {log_fpath}")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(20)
    except subprocess.TimeoutExpired:
        server.process.kill()


def server_tree(server: Server) -> list[psutil.Process]:
    root = psutil.Process(server.process.pid)
    return [root, *root.children(recursive=True)]


def server_cpu_s(server: Server) -> float:
    total = 0.0
    for p in server_tree(server):
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def server_rss_mb(server: Server) -> float:
    total = 0
    for p in server_tree(server):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total / 2**20


# ------------------------------------------------------------------------------- the client
class Refused(Exception):
    """A 503: the server's queue is full."""

    def __init__(self, retry_after_s: float | None, text: str) -> None:
        super().__init__(text)
        self.retry_after_s = retry_after_s


class CallFailed(Exception):
    def __init__(self, kind: str, text: str) -> None:
        super().__init__(text)
        self.kind = kind


class Session:
    """One browser session: Gradio's REST API (``POST /gradio_api/call/<name>``, then the
    event stream of that call) under one ``session_hash``."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http, self.api, self.session_hash = http, url + "gradio_api/", uuid.uuid4().hex

    async def call(self, name: str, *data: Any) -> Any:
        body = {"data": list(data), "session_hash": self.session_hash}
        async with self.http.post(f"{self.api}call/{name}", json=body) as r:
            if r.status == 503:
                retry = r.headers.get("Retry-After")
                raise Refused(float(retry) if retry else None, await r.text())
            if r.status != 200:
                raise CallFailed(f"http {r.status}", await r.text())
            event_id = (await r.json())["event_id"]
        event = None
        async with self.http.get(f"{self.api}call/{name}/{event_id}") as stream:
            if stream.status != 200:
                raise CallFailed(f"stream http {stream.status}", await stream.text())
            async for raw in stream.content:
                line = raw.decode().strip()
                if line.startswith("event:"):
                    event = line.removeprefix("event:").strip()
                elif line.startswith("data:") and event == "complete":
                    return json.loads(line.removeprefix("data:"))
                elif line.startswith("data:") and event == "error":
                    raise CallFailed("error event", line[:200])
        raise CallFailed("stream ended", f"{name}: no result")

    async def upload(self, png: bytes) -> dict:
        form = aiohttp.FormData()
        form.add_field("files", png, filename="shape.png", content_type="image/png")
        async with self.http.post(f"{self.api}upload", data=form) as r:
            if r.status == 503:
                raise Refused(None, await r.text())
            if r.status != 200:
                raise CallFailed(f"upload http {r.status}", await r.text())
            path = (await r.json())[0]
        return {"path": path, "meta": {"_type": "gradio.FileData"}}


class Pools(NamedTuple):
    texts: list[str]
    words: list[str]
    images: list[bytes]  # PNG
    n_items: int
    n_latents: int


def make_pools(n_images: int = 16) -> Pools:
    images = []
    for i in range(n_images):
        buf = io.BytesIO()
        shapes.make_item(i, seed=99).image.save(buf, format="PNG")
        images.append(buf.getvalue())
    return Pools(shapes.all_captions(), shapes.vocabulary(), images, 6000, 256)


class Zipf:
    """Draws indexes in ``[0, n)`` with P(rank r) ~ 1 / (r + 1) ** skew, over a fixed shuffle."""

    def __init__(self, n: int, skew: float, rng: random.Random) -> None:
        self.order = list(range(n))
        rng.shuffle(self.order)
        self.weights = [1.0 / (r + 1) ** skew for r in range(n)]
        self.rng = rng

    def draw(self) -> int:
        return self.order[self.rng.choices(range(len(self.order)), self.weights)[0]]


@dataclass
class Tally:
    """What the clients of one crowd saw."""

    latencies_s: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    refused: int = 0
    retry_hints: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)


class Draws(NamedTuple):
    text: Zipf
    word: Zipf
    image: Zipf
    item: Zipf
    latent: Zipf


def draws_for(pools: Pools, skew: float, seed: int) -> Draws:
    rng = random.Random(seed)  # one shared ranking: every client likes the same things
    draws = [Zipf(n, skew, rng) for n in (len(pools.texts), len(pools.words), len(pools.images))]
    return Draws(*draws, Zipf(pools.n_items, skew, rng), Zipf(pools.n_latents, skew, rng))


async def one_action(session: Session, action: str, pools: Pools, draws: Draws, tally: Tally):
    """One visitor action: its calls timed one by one into ``tally``."""

    async def timed(name: str, *data: Any) -> Any:
        t0 = time.perf_counter()
        out = await session.call(name, *data)
        tally.latencies_s.append(time.perf_counter() - t0)
        return out

    if action == "latent":
        await timed("latent", draws.latent.draw())
    elif action == "inspect_text":
        await timed("inspect_text", pools.texts[draws.text.draw()], ALL_PERCENT)
    elif action == "inspect_item":
        await timed("inspect_item", draws.item.draw(), ALL_PERCENT)
    elif action == "inspect_image":
        t0 = time.perf_counter()
        upload = await session.upload(pools.images[draws.image.draw()])
        await session.call("inspect_image", upload, ALL_PERCENT)
        tally.latencies_s.append(time.perf_counter() - t0)  # the upload is part of the call
    elif action == "search":
        await timed("search", pools.words[draws.word.draw()])
    else:  # steer: start from a text, then decode with the strongest slider at 0 (the
        # sliders left out are unchanged)
        await timed("steer_start_text", pools.texts[draws.text.draw()])
        await timed("steer", LABELS, 0.0, *[None] * 5)


async def client(
    http: aiohttp.ClientSession, url: str, pools: Pools, draws: Draws, stop_at: float,
    tally: Tally, seed: int,
) -> None:  # fmt: skip
    rng = random.Random(seed)
    session = Session(http, url)
    actions, weights = list(MIX), list(MIX.values())
    while time.monotonic() < stop_at:
        action = rng.choices(actions, weights)[0]
        try:
            await one_action(session, action, pools, draws, tally)
        except Refused as e:
            tally.refused += 1
            tally.retry_hints["Retry-After" if e.retry_after_s is not None else "none"] += 1
            tally.examples.setdefault("503", str(e)[:160])
            await asyncio.sleep(min(e.retry_after_s or 1.0, max(0.0, stop_at - time.monotonic())))
        except CallFailed as e:
            tally.errors[e.kind] += 1
            tally.examples.setdefault(e.kind, str(e)[:160])
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            kind = type(e).__name__
            tally.errors[kind] += 1
            tally.examples.setdefault(kind, str(e)[:160])
            await asyncio.sleep(0.5)


class CrowdResult(NamedTuple):
    clients: int
    seconds: float
    calls: int
    p50_s: float
    p95_s: float
    tally: Tally
    cpu_s: float
    client_cpu_s: float  # this process's (the clients')
    rss_mb: tuple[float, float, float]  # start, max, end
    server_up: bool


async def run_crowd(
    server: Server, n_clients: int, seconds: float, pools: Pools, draws: Draws,
    on_tick: Callable[[float], None] | None = None,
) -> CrowdResult:  # fmt: skip
    """``n_clients`` clients for ``seconds``; the server's RSS sampled every second."""
    tally = Tally()
    rss = [server_rss_mb(server)]
    cpu0, client0, t0 = server_cpu_s(server), time.process_time(), time.monotonic()
    stop_at = t0 + seconds
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        tasks = [
            asyncio.create_task(client(http, server.url, pools, draws, stop_at, tally, seed=i))
            for i in range(n_clients)
        ]
        while not all(t.done() for t in tasks):
            await asyncio.sleep(1.0)
            rss.append(server_rss_mb(server))
            if on_tick is not None:
                on_tick(rss[-1])
        await asyncio.gather(*tasks)
    elapsed = time.monotonic() - t0
    lat = np.asarray(tally.latencies_s or [float("nan")])
    return CrowdResult(
        n_clients,
        elapsed,
        len(tally.latencies_s),
        float(np.percentile(lat, 50)),
        float(np.percentile(lat, 95)),
        tally,
        server_cpu_s(server) - cpu0,
        time.process_time() - client0,
        (rss[0], max(rss), rss[-1]),
        server.process.poll() is None and alive(server),
    )


def alive(server: Server) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(server.url + "gradio_api/info", timeout=10) as r:
            return r.status == 200
    except OSError:
        return False


# ------------------------------------------------------------------------------- the report
def print_crowd(r: CrowdResult) -> None:
    errors = ", ".join(f"{k}: {v}" for k, v in r.tally.errors.items()) or "0"
    hints = ", ".join(f"{k}: {v}" for k, v in r.tally.retry_hints.items())
    per_call = r.cpu_s / r.calls * 1e3 if r.calls else float("nan")
    print(
        f"{r.clients:>4} clients  {r.calls / r.seconds:6.1f} calls/s  p50 {r.p50_s:6.2f} s  "
        f"p95 {r.p95_s:6.2f} s  errors {errors}  503s {r.tally.refused}"
        + (f" ({hints})" if hints else "")
        + f"  server CPU {per_call:4.0f} ms/call ({r.cpu_s / r.seconds:.2f} cores; clients "
        f"{r.client_cpu_s / r.seconds:.2f})  RSS {r.rss_mb[0]:.0f}/{r.rss_mb[1]:.0f}/"
        f"{r.rss_mb[2]:.0f} MB (start/max/end)  server {'up' if r.server_up else 'DOWN'}",
        flush=True,
    )
    for kind, text in r.tally.examples.items():
        print(f"       e.g. {kind}: {text}", flush=True)


def idle_cpu(server: Server, seconds: float) -> float:
    """The server's CPU over ``seconds`` with no request, in % of one core."""
    cpu0 = server_cpu_s(server)
    time.sleep(seconds)
    return 100 * (server_cpu_s(server) - cpu0) / seconds


def soak(server: Server, minutes: float, n_clients: int, pools: Pools, draws: Draws) -> None:
    """``n_clients`` for ``minutes``; RSS every 30 s and its growth over the soak."""
    print(f"soak: {n_clients} clients for {minutes:g} minutes (RSS every 30 s)", flush=True)
    t0, last = time.monotonic(), [0.0]

    def tick(rss_mb: float) -> None:
        now = time.monotonic() - t0
        if now - last[0] >= 30:
            last[0] = now
            print(f"  {now / 60:5.1f} min  RSS {rss_mb:6.0f} MB", flush=True)

    r = asyncio.run(run_crowd(server, n_clients, minutes * 60, pools, draws, tick))
    print_crowd(r)
    growth = r.rss_mb[2] - r.rss_mb[0]
    print(
        f"soak RSS growth {growth:+.0f} MB (max {r.rss_mb[1] - r.rss_mb[0]:+.0f} MB) over "
        f"{minutes:g} minutes: {'ok' if growth <= 300 else 'MISSED'} (target <= 300 MB)",
        flush=True,
    )


def verdict(results: dict[int, CrowdResult]) -> None:
    one, fifty, crowd = results.get(1), results.get(50), results.get(200)
    if one and fifty:
        ratio = (fifty.calls / fifty.seconds) / (one.calls / one.seconds)
        ok = ratio >= 1.5 and fifty.p95_s <= 3.0 and not fifty.tally.errors
        print(
            f"50 clients: {ratio:.2f}x one client's calls/s, p95 {fifty.p95_s:.2f} s, "
            f"{sum(fifty.tally.errors.values())} errors: {'ok' if ok else 'MISSED'} "
            "(target >= 1.5x, <= 3 s, 0 errors)"
        )
    if crowd:
        ok = not crowd.tally.errors and crowd.server_up
        print(
            f"200 clients: {crowd.tally.refused} clean 503s, "
            f"{sum(crowd.tally.errors.values())} other errors, server "
            f"{'up' if crowd.server_up else 'DOWN'}: {'ok' if ok else 'MISSED'}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 s idle and 20 s per crowd")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds per crowd")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--clients", default="1,50,200", help="crowd sizes, comma-separated")
    parser.add_argument("--soak-minutes", type=float, default=0.0, help="then a soak this long")
    parser.add_argument("--soak-clients", type=int, default=50)
    parser.add_argument("--skew", type=float, default=1.0, help="Zipf exponent of the inputs")
    parser.add_argument("--app-dir", default=str(REPO), help="checkout whose app.py is served")
    parser.add_argument("--cache-dir", default=None, help="index cache (default: a temp one)")
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--wrap", default="", help="command prefix for the server (a profiler)")
    parser.add_argument(
        "--server-flags", default="", help="more flags for app.py, e.g. '--workers 0'"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.idle_seconds = 20.0, 20.0

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache_dir) if args.cache_dir else Path(tmp) / "cache"
        port = args.port or free_port()
        log = Path(tmp) / "server.log"
        print(
            f"starting {Path(args.app_dir).resolve()}/app.py --demo {args.server_flags} on port "
            f"{port}",
            flush=True,
        )
        flags = args.server_flags.split()
        server = start_server(Path(args.app_dir), cache, port, log, args.wrap.split(), flags)
        try:
            return measure(server, args)
        finally:
            stop_server(server)


def measure(server: Server, args: argparse.Namespace) -> int:
    pools = make_pools()
    draws = draws_for(pools, args.skew, seed=0)
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} cores")
    time.sleep(5)  # start-up's own work settles
    print(
        f"idle: {idle_cpu(server, args.idle_seconds):.2f}% of a core over "
        f"{args.idle_seconds:g} s (RSS {server_rss_mb(server):.0f} MB)",
        flush=True,
    )
    asyncio.run(run_crowd(server, 1, 3, pools, draws))  # warm up (lazy caches, first calls)
    results: dict[int, CrowdResult] = {}
    for n in (int(c) for c in args.clients.split(",")):
        results[n] = asyncio.run(run_crowd(server, n, args.seconds, pools, draws))
        print_crowd(results[n])
        time.sleep(3)  # the crowd's last calls drain
    verdict(results)
    if args.soak_minutes > 0:
        soak(server, args.soak_minutes, args.soak_clients, pools, draws)
    print(f"load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0 if alive(server) else 1


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    raise SystemExit(main())
