"""The loggers benchmark's helpers and one small end-to-end run (real Redis, real PostgreSQL,
a real `fer-pipeline logger --db postgresql://...` process); no timing is asserted."""

from __future__ import annotations

import pytest

from benchmarks.loggers import make_payloads, pg_schema_url, run_loggers, steady_rate
from fer_pipeline import bundles
from fer_pipeline.messages import Label, decode
from fer_pipeline.settings import Settings
from tests.conftest import pg_schema


def test_payloads_are_worker_labels_with_unique_crop_ids_in_capture_order():
    payloads = make_payloads(300, cameras=3, faces=2)
    labels = [decode(p, expect=Label) for p in payloads]
    assert len({lab.crop_id for lab in labels}) == 300
    assert {lab.camera_id for lab in labels} == {"cam0", "cam1", "cam2"}
    assert [lab.captured_at for lab in labels] == sorted(lab.captured_at for lab in labels)
    assert all(abs(sum(lab.probabilities) - 1) < 1e-6 for lab in labels)
    # A stream entry holds a worker's full batch, as workers publish them.
    bodies, counts = bundles.pack(payloads)
    assert counts[:4] == [bundles.MAX_BUNDLE] * 4


def test_steady_rate_leaves_out_the_start_and_the_tail():
    series = [(0.0, 0), (1.0, 0), (2.0, 100), (3.0, 300), (4.0, 500), (5.0, 700), (6.0, 900), (7.0, 1000)]
    # 10% (100 rows) first at t=2, 90% (900) first at t=6: 800 rows in 4 s.
    assert steady_rate(series, 1000) == pytest.approx(200.0)
    assert steady_rate([(0.0, 0), (1.0, 50)], 1000) is None


def test_pg_schema_url_adds_the_search_path_option():
    assert pg_schema_url("postgresql://u@h/db", "s1") == "postgresql://u@h/db?options=-csearch_path%3Ds1"
    assert pg_schema_url("postgresql://u@h/db?sslmode=disable", "s1").endswith("&options=-csearch_path%3Ds1")


@pytest.mark.redis
def test_two_logger_processes_log_a_prefilled_stream_once_into_postgresql(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a logger that took the URL for a file path would write here
    import psycopg

    base = Settings(_env_file=None).with_updates(redis={"url": "redis://127.0.0.1:6379/0"})
    payloads = make_payloads(1_000)
    with pg_schema("benchlog") as url:

        def count() -> int:
            try:
                with psycopg.connect(url, autocommit=True) as conn:
                    return int(conn.execute("SELECT COUNT(*) FROM labels").fetchone()[0])
            except psycopg.Error:
                return 0

        r = run_loggers(base, payloads, 2, url, count, tmp_path, "t", timeout_s=60)
        assert r["logged"] == 1_000 and count() == 1_000
    assert set(r["exit_codes"].values()) == {0}
    assert r["labels_per_s"] > 0 and len(r["logger_cpu_s"]) == 2
    assert not (tmp_path / "postgresql:").exists()
