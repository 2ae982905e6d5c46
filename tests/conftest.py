"""Shared test fixtures: paths to the repo and to the optional real data beside it."""

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
