"""Shared test fixtures: paths to the repo and to the optional real data beside it, and a
Hugging Face Hub faked two ways (a download function serving a folder, an empty local cache)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(autouse=True)
def fresh_page_cache():
    """Each test starts with an empty page cache (views computed by an earlier test's explorer
    over the same index, or before a test patched the explorer, are not served to it)."""
    if "explorer_ui.page_cache" in sys.modules:
        sys.modules["explorer_ui.page_cache"].PAGES.clear()
    yield


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


@pytest.fixture
def fake_hub_repos(tmp_path, monkeypatch):
    """huggingface_hub's ``HfApi.create_repo`` / ``HfApi.upload_folder`` / ``snapshot_download``
    over ``tmp_path/hub-repos/<repo_id>`` (one folder per repo, no revisions); returns that root
    and the list of ``(repo_id, revision)`` downloads."""
    import shutil
    from types import SimpleNamespace

    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    root = tmp_path / "hub-repos"
    downloads = []

    def create_repo(self, repo_id, *, repo_type=None, private=False, exist_ok=False, **kwargs):
        assert repo_type == "dataset"
        (root / repo_id).mkdir(parents=True, exist_ok=exist_ok)

    def upload_folder(self, *, repo_id, folder_path, repo_type=None, delete_patterns=(), **kwargs):
        dest = root / repo_id
        assert dest.is_dir() and repo_type == "dataset", f"{repo_id} was not created"
        for pattern in delete_patterns or ():
            for path in [p for p in dest.glob(pattern) if p.is_file()]:
                path.unlink()
        shutil.copytree(folder_path, dest, dirs_exist_ok=True)
        return SimpleNamespace(commit_url=f"https://huggingface.co/datasets/{repo_id}/commit/0")

    def snapshot_download(repo_id, *, repo_type=None, revision=None, local_dir=None, **kwargs):
        downloads.append((repo_id, revision))
        if repo_type != "dataset" or not (root / repo_id).is_dir():
            raise EntryNotFoundError(f"no dataset repo {repo_id}")
        shutil.copytree(root / repo_id, local_dir, dirs_exist_ok=True)
        return str(local_dir)

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return root, downloads
