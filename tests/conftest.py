"""Shared fixtures: the real data directory and the PTB-XL subset archive (read in place, never copied)."""
from __future__ import annotations

from pathlib import Path

import pytest

from edge.paths import shared_data_dir
from tests.shared import missing_data


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data directory (``$ECGRET_DATA`` or ``<repo>/../shared/data``). Missing, it is an error for
    every test that needs it (CI must not pass by skipping them); ``ECGRET_TESTS_WITHOUT_DATA=1`` skips them
    instead, on a machine that deliberately has no data."""
    d = shared_data_dir()
    if not (d / "ptbxl-subset").is_dir() or not (d / "cinc2021-sample").is_dir():
        missing_data(f"shared data not found at {d}")
    return d


@pytest.fixture(scope="session")
def ptbxl_subset(shared_data):
    """The 1,625-case PTB-XL subset as an in-memory :class:`convert.archive.Archive` over the shared npy."""
    from convert.ptbxl import open_subset
    return open_subset(shared_data / "ptbxl-subset")
