"""Fixtures of the analytics tests."""

from __future__ import annotations

import pytest

from fer_pipeline.emotion_log.sqlite import SqliteStore
from tests.logs import two_demo_runs


@pytest.fixture
def log(tmp_path):
    """A SQLite log holding the demo run twice (``tests.logs.two_demo_runs``)."""
    path = tmp_path / "log.sqlite"
    with SqliteStore(path) as s:
        s.add(two_demo_runs())
    return path
