"""Counting one run's rows (what `up`'s summary reports), its restarts included, in both stores."""

from __future__ import annotations

import pytest

from fer_pipeline.emotion_log.store import open_store
from tests.conftest import pg_schema
from tests.factories import make_label


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        yield str(tmp_path / "log.sqlite")
        return
    pytest.importorskip("psycopg", reason="psycopg (the postgres extra) not installed")
    with pg_schema("fer_runs") as url:
        yield url


def test_count_of_one_run_takes_its_restarts_and_nothing_else(store_url):
    runs = {"a_b": 3, "a_b~1": 2, "axb~1": 4, "a_bc": 5, "other": 1}  # "_" is no wildcard here
    with open_store(store_url) as s:
        for run, n in runs.items():
            s.add([make_label(run_id=run, frame_index=i) for i in range(n)])
        assert s.count() == 15
        assert s.count(run_id="a_b") == 5
        assert s.count(run_id="a_bc") == 5 and s.count(run_id="missing") == 0
        assert s.count("cam0", run_id="other") == 1 and s.count("cam9", run_id="other") == 0
