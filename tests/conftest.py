"""Shared fixtures: tests use tiny committed data, never the big files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

FIXTURE_DATA = Path(__file__).parent / "fixtures" / "data"


@pytest.fixture
def tiny_data_dir(tmp_path, monkeypatch) -> Path:
    """A private copy of the tiny fixture data set, installed as ``$PLANNER_DATA_DIR``."""
    root = tmp_path / "data"
    shutil.copytree(FIXTURE_DATA, root)
    monkeypatch.setenv("PLANNER_DATA_DIR", str(root))
    return root
