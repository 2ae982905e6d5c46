"""Start-up without the Hub: a short probe decides, offline loads come from the local Hugging Face
cache at once (no minute of retries), and without a cached copy the built-in world is shown within
seconds. Everything runs against local sockets and a temporary cache; nothing leaves the machine."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub
import pytest
from _builders import tiny_startup_cfg, write_msae_pth
from _explorer_helpers import builtin_world_trained
from huggingface_hub import constants

from sae_explorer import hub, startup_config
from sae_explorer.explorer_startup import StartupConfig, StartupError, load_explorer, needs_hub
from sae_explorer.worlds import shapes

REPO = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
WORLD_MSAE = f"{shapes.CLIP_ARCH}/centered/128_64_TopKReLU_8_RW_False_False_0.0_shapes_train_image_100_64.pth"
"""An MSAE release-style file for the world's tiny CLIP (64-d embeddings), as auto picks it."""
FAST_S = 20.0
"""Bound on an offline start-up (it took ~50 s of retries before the probe; ~2 s now)."""

needs_world = pytest.mark.skipif(
    not builtin_world_trained(), reason="needs the trained builtin:shapes models"
)


def offline() -> hub.HubStatus:
    return hub.HubStatus(False, "test: offline")


def online() -> hub.HubStatus:
    return hub.HubStatus(True)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def no_probe(monkeypatch) -> None:
    def probe(url: str, timeout_s: float) -> str | None:
        raise AssertionError(f"probed {url} although the Hub is switched off")

    monkeypatch.setattr(hub, "_probe", probe)


def cache_file(cache_dpath: Path, repo_id: str, path: str) -> Path:
    """Where huggingface_hub keeps ``path`` of ``repo_id`` at ``main`` once downloaded."""
    storage = cache_dpath / f"models--{repo_id.replace('/', '--')}"
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / "main").write_text(COMMIT)  # no newline, as huggingface_hub writes it
    fpath = storage / "snapshots" / COMMIT / path
    fpath.parent.mkdir(parents=True, exist_ok=True)
    return fpath


# --------------------------------------------------------------------------- the probe
def test_hf_hub_offline_decides_without_a_request(monkeypatch, no_probe):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # HF_HUB_OFFLINE=1 at import
    assert hub.hub_status() == hub.HubStatus(False, "HF_HUB_OFFLINE is set")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # set after huggingface_hub was imported
    assert not hub.hub_status().online


def test_closed_port_is_offline_at_once(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)  # what HF_ENDPOINT becomes at import
    start = time.monotonic()
    status = hub.hub_status()
    assert time.monotonic() - start < FAST_S
    assert not status.online
    assert f"the Hugging Face Hub at {endpoint} cannot be reached" in status.reason


def test_silent_endpoint_times_out(monkeypatch):
    """A server that accepts the connection and never answers (a black-holed proxy)."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        start = time.monotonic()
        status = hub.hub_status(f"http://127.0.0.1:{server.getsockname()[1]}", timeout_s=0.5)
        elapsed = time.monotonic() - start
    assert not status.online and "cannot be reached" in status.reason
    assert elapsed < 0.5 + 5.0  # the probe's own bound, with room for a slow machine


@pytest.fixture
def answering_endpoint() -> Iterator[str]:
    """A local server that answers every request with 404, as a mirror's root might."""

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_any_http_answer_means_online(monkeypatch, answering_endpoint):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for proxy in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    assert hub.hub_status(answering_endpoint) == hub.HubStatus(True)


@pytest.mark.parametrize("env", ["HF_ENDPOINT", "HF_HUB_OFFLINE"])
def test_environment_read_at_import_is_honoured(env):
    """In a fresh interpreter, as `HF_ENDPOINT=... python app.py` or `HF_HUB_OFFLINE=1 ...`."""
    endpoint = f"http://127.0.0.1:{closed_port()}"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    environ[env] = endpoint if env == "HF_ENDPOINT" else "1"
    environ["PYTHONPATH"] = str(REPO)
    script = (
        "from sae_explorer import hub\n"
        "hub._probe = (lambda url, t: print('probed', url) or 'refused')\n"
        "print(hub.hub_status())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], env=environ, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    if env == "HF_ENDPOINT":
        assert f"probed {endpoint}" in out.stdout and "online=False" in out.stdout
    else:
        assert "probed" not in out.stdout and "HF_HUB_OFFLINE is set" in out.stdout


# --------------------------------------------------------------------------- the local cache
def test_offline_mode_answers_from_the_cache_and_is_scoped(hf_cache):
    cached = cache_file(hf_cache, "org/repo", "sub/weights.bin")
    cached.write_bytes(b"cached")
    with hub.offline_mode():
        assert constants.HF_HUB_OFFLINE
        fpath = huggingface_hub.hf_hub_download("org/repo", "sub/weights.bin")
        assert Path(fpath).read_bytes() == b"cached"
        start = time.monotonic()
        with pytest.raises(huggingface_hub.errors.LocalEntryNotFoundError):
            huggingface_hub.hf_hub_download("org/repo", "not-cached.bin")
        assert time.monotonic() - start < FAST_S  # no retries
    assert not constants.HF_HUB_OFFLINE


def test_cached_repo_files_are_listed(hf_cache):
    for path in ("README.md", WORLD_MSAE):
        cache_file(hf_cache, hub.MSAE_REPO, path).write_bytes(b"x")
    assert hub.list_cached_repo_files() == ["README.md", WORLD_MSAE]
    chosen, source = hub.msae_source(shapes.CLIP_ARCH, 64, list_files=hub.list_cached_repo_files)
    assert chosen.path == WORLD_MSAE
    assert source == f"hf-hub:{hub.MSAE_REPO}/{WORLD_MSAE}"
    with pytest.raises(FileNotFoundError, match=r"org/absent@main .*models--org--absent"):
        hub.list_cached_repo_files("org/absent")


def test_needs_hub_only_for_hub_sources(tmp_path):
    assert needs_hub(StartupConfig())
    local = StartupConfig(
        clip=f"local-dir:{tmp_path}", sae=str(tmp_path), corpus=str(tmp_path), pretrained=None
    )
    assert not needs_hub(local)
    assert needs_hub(StartupConfig(clip="ViT-B-32", pretrained="openai", sae=str(tmp_path)))
    assert needs_hub(StartupConfig(clip="hf-hub:org/clip", pretrained=None, sae=str(tmp_path)))
    assert needs_hub(StartupConfig(clip=f"local-dir:{tmp_path}", sae="hf-hub:org/sae"))
    assert not needs_hub(
        StartupConfig(clip="x", pretrained=None, sae="/s", corpus=f"hf:{tmp_path}")
    )


# --------------------------------------------------------------------------- start-up
def test_offline_start_uses_the_cached_release(tmp_path, hf_cache):
    """A user who ran online before: the SAE chosen then is found in the cache and loaded."""
    write_msae_pth(cache_file(hf_cache, hub.MSAE_REPO, WORLD_MSAE))
    explorer = load_explorer(tiny_startup_cfg(tmp_path, strict=True), hub_status=offline)
    assert explorer.sources.sae == f"hf-hub:{hub.MSAE_REPO}/{WORLD_MSAE}"
    assert explorer.sae.n_latents == 128 and explorer.sources.note == ""
    assert "offline" in explorer.sources.details["hub"]
    assert not constants.HF_HUB_OFFLINE  # offline only while loading


def test_offline_without_cache_names_the_hub_and_the_cache(tmp_path, hf_cache):
    with pytest.raises(StartupError, match=r"test: offline; not in the local cache: .*models--"):
        load_explorer(tiny_startup_cfg(tmp_path, strict=True), hub_status=offline)


def test_online_start_lists_the_hub_not_the_cache(tmp_path, hf_cache):
    asked = []

    def hub_listing(repo_id: str) -> list[str]:
        asked.append(repo_id)
        raise OSError("listing the Hub")

    with pytest.raises(StartupError, match="listing the Hub"):
        load_explorer(
            tiny_startup_cfg(tmp_path, strict=True), list_files=hub_listing, hub_status=online
        )
    assert asked == [hub.MSAE_REPO]


@needs_world
def test_unreachable_hub_falls_back_within_seconds(tmp_path, hf_cache, monkeypatch, caplog):
    """The default setup (ViT-L-14/openai, auto MSAE, CIFAR-10) with the Hub endpoint on a closed
    port and nothing cached: the built-in world, in seconds, and the banner says why."""
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(startup_config, "BUILTIN_CORPUS", "builtin:shapes?n=20")
    start = time.monotonic()
    with caplog.at_level("WARNING"):
        explorer = load_explorer(StartupConfig(cache_dir=str(tmp_path), device="cpu"))
    assert time.monotonic() - start < FAST_S
    assert explorer.encoder.model_id == "builtin:shapes"
    assert f"the Hugging Face Hub at {endpoint} cannot be reached" in explorer.sources.note
    assert "Errno" not in explorer.sources.note and "Error" not in explorer.sources.note
    assert "falling back to the built-in shapes world" in caplog.text


@needs_world
def test_hf_hub_offline_falls_back_without_probing(tmp_path, hf_cache, monkeypatch, no_probe):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(startup_config, "BUILTIN_CORPUS", "builtin:shapes?n=20")
    start = time.monotonic()
    explorer = load_explorer(StartupConfig(cache_dir=str(tmp_path), device="cpu"))
    assert time.monotonic() - start < FAST_S
    assert explorer.encoder.model_id == "builtin:shapes"
    assert "HF_HUB_OFFLINE is set; not in the local cache" in explorer.sources.note
