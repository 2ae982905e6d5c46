"""Shared test fixtures: paths to the repo and to the optional real data beside it, and a
Hugging Face Hub faked two ways (a download function serving a folder, an empty local cache)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def repo_dpath() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data_dpath() -> Path:
    """`../shared/data` beside the checkout; tests needing real photos skip without it."""
    dpath = SHARED / "data"
    if not dpath.is_dir():
        pytest.skip(
            f"real test data not found at {dpath} (only present beside the project checkout)"
        )
    return dpath


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """``hf_hub_download`` serving ``tmp_path/hub/<repo_id>/<filename>``; returns that root and
    the list of ``(repo_id, filename, revision)`` calls."""
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    root = tmp_path / "hub"
    calls = []

    def download(repo_id, filename, *, revision=None, **kwargs):
        calls.append((repo_id, filename, revision))
        fpath = root / repo_id / filename
        if not fpath.is_file():
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        return str(fpath)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    return root, calls


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache for this test (what ``HF_HUB_CACHE`` points at)."""
    from huggingface_hub import constants

    dpath = tmp_path / "hf-cache"
    dpath.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(dpath))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return dpath
