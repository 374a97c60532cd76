"""The PostgreSQL emotion log against the real server at 127.0.0.1:5432: one fresh schema per
test (dropped afterwards), the same behaviour as the SQLite store, and reports over it."""

from __future__ import annotations

import os
import uuid

import pytest
from typer.testing import CliRunner

from fer_pipeline.cli import app
from fer_pipeline.consumers.analytics import ReportOptions
from fer_pipeline.consumers.episodes import build_report
from fer_pipeline.consumers.store import EmotionStore, open_store
from fer_pipeline.errors import ConfigError
from tests.consumers.factories import make_label
from tests.consumers.test_analytics import T0, track_labels

psycopg = pytest.importorskip("psycopg", reason="psycopg (the postgres extra) not installed")
PG_URL = os.environ.get("FER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def pg_url():
    try:
        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=2)
    except psycopg.Error as e:
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {str(e).strip().splitlines()[0]}")
    schema = f"fer_test_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()


def test_add_is_idempotent_and_values_are_verbatim(pg_url):
    with open_store(pg_url) as s:
        a, b = make_label(frame_index=1), make_label(frame_index=2, camera_id="o'brien\"; DROP TABLE labels; --")
        assert s.add([a, b]) == 2
        assert s.add([a]) == 0 and s.add([a, a, b]) == 0 and s.add([]) == 0
        assert s.count() == 2 and s.count("o'brien\"; DROP TABLE labels; --") == 1
        (row,) = s.timeline("cam0", 0)
        assert row.crop_id == a.crop_id and row.probabilities == pytest.approx(a.probabilities)
        assert row.latency_ms == pytest.approx(50.0)
    with open_store(pg_url) as s:  # reopening keeps the table and its rows
        assert s.count() == 2


def test_prune_and_erase(pg_url):
    with open_store(pg_url) as s:
        s.add([make_label(track_id=1, frame_index=i, captured_at=100.0 + i) for i in range(4)])
        s.add([make_label(track_id=2, frame_index=10 + i, captured_at=500.0 + i) for i in range(3)])
        assert s.prune(300.0, dry_run=True) == 4 and s.prune(300.0) == 4 and s.count() == 3
        assert s.erase("cam0", 2, run_id="other") == 0
        assert s.erase("cam0", 2) == 3 and s.count() == 0


def test_report_over_postgres_matches_sqlite(pg_url, tmp_path):
    labels = track_labels(["happy"] * 60 + ["sad"] * 60, camera_id="door") + \
        track_labels(["angry"] * 45, camera_id="hall", track_id=4, start=T0 + 30)
    with open_store(pg_url) as s:
        s.add(labels)
    with EmotionStore(tmp_path / "same.sqlite") as s:
        s.add(labels)
    conn = psycopg.connect(pg_url)
    try:
        pg = build_report(conn, ReportOptions(chunk_rows=50))
        only_door = build_report(conn, ReportOptions(cameras=("door",), since=T0, until=T0 + 10))
    finally:
        conn.close()
    lite = build_report(tmp_path / "same.sqlite", ReportOptions())
    assert pg.tracks == lite.tracks and pg.episodes == lite.episodes and pg.transitions == lite.transitions
    assert [t["camera_id"] for t in only_door.tracks] == ["door"]
    r = CliRunner().invoke(app, ["report", "--db", pg_url, "--export", "json", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert "165 labels, 2 tracks" in r.output.replace("\n", " ")
    r = CliRunner().invoke(app, ["erase", "--db", pg_url, "--camera", "hall"])
    assert r.exit_code == 0 and "erased 45 rows" in r.output


def test_settings_keep_urls_and_paths_apart(tmp_path):
    from fer_pipeline.settings import Settings

    s = Settings(_env_file=None).with_updates(consumer={"db": "postgresql://u:secret@db:5432/fer"})
    assert s.consumer.db == "postgresql://u:secret@db:5432/fer"
    s = Settings(_env_file=None).with_updates(consumer={"db": "out/x.sqlite"})
    assert str(s.consumer.db) == "out/x.sqlite" and s.consumer.db.parent.name == "out"


def test_unreachable_database_is_one_line_without_password():
    with pytest.raises(ConfigError) as e:
        open_store("postgresql://fer:hunter2@127.0.0.1:1/none")
    assert "hunter2" not in str(e.value) and "\n" not in str(e.value)


def test_logger_service_writes_into_postgres(pg_url, fake_transport, settings):
    from fer_pipeline.consumers.recorder import LoggerService
    from tests.consumers.test_recorder import drive, publish_labels

    store = open_store(pg_url)
    try:
        svc = LoggerService(settings, fake_transport, "lg", store=store)
        publish_labels(fake_transport, 20, bad=False)
        drive(svc)
        publish_labels(fake_transport, 20, bad=False)  # the same labels again: a redelivery
        drive(svc)
        assert store.count() == 20 and svc.counters["labels_logged"] == 20
        assert svc.counters["duplicates_ignored"] == 20
    finally:
        store.close()
