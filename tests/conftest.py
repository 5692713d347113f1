"""Shared test fixtures: data-folder discovery."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """The real-data folder: $GEOFM_DATA, else ../shared/data beside the repo."""
    env = os.environ.get("GEOFM_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture
def data_dir() -> Path:
    d = shared_data_dir()
    if d is None:
        pytest.skip("real datasets not found: set $GEOFM_DATA or provide ../shared/data")
    return d
