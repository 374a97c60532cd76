"""The PostgreSQL emotion log against the real server at 127.0.0.1:5432: one fresh schema per
test (dropped afterwards), the same behaviour as the SQLite store, and reports over it."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from fer_pipeline.analytics.episodes import build_report
from fer_pipeline.analytics.options import ReportOptions
from fer_pipeline.cli import app
from fer_pipeline.emotion_log.reader import ConnectionLog
from fer_pipeline.emotion_log.sqlite import SqliteStore
from fer_pipeline.emotion_log.store import open_store
from fer_pipeline.errors import ConfigError
from tests.conftest import pg_schema
from tests.factories import make_label
from tests.logs import T0, open_at_once, track_labels

psycopg = pytest.importorskip("psycopg", reason="psycopg (the postgres extra) not installed")


@pytest.fixture
def pg_url():
    with pg_schema("fer_test") as url:
        yield url


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
    with SqliteStore(tmp_path / "same.sqlite") as s:
        s.add(labels)
    conn = psycopg.connect(pg_url)
    try:
        pg = build_report(ConnectionLog(conn, "postgres"), ReportOptions(chunk_rows=50))
        only_door = build_report(ConnectionLog(conn, "postgres"), ReportOptions(cameras=("door",), since=T0, until=T0 + 10))
    finally:
        conn.close()
    lite = build_report(tmp_path / "same.sqlite", ReportOptions())
    assert pg.tracks == lite.tracks and pg.episodes == lite.episodes and pg.transitions == lite.transitions
    assert [t["camera_id"] for t in only_door.tracks] == ["door"]
    r = CliRunner().invoke(app, ["report", "--db", pg_url, "--export", "json", "--export-dir", str(tmp_path / "o")])
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


def test_logger_service_writes_into_postgres(pg_url, fake_transport, settings, caplog):
    from fer_pipeline.consumers.label_logger import LabelLoggerService
    from tests.logs import drive, publish_labels

    store = open_store(pg_url)
    try:
        svc = LabelLoggerService(settings, fake_transport, "lg", store=store)
        publish_labels(fake_transport, 20, bad=False)
        drive(svc)
        publish_labels(fake_transport, 20, bad=False)  # the same labels again: a redelivery
        drive(svc)
        assert store.count() == 20 and svc.counters["labels_logged"] == 20
        assert svc.counters["duplicates_ignored"] == 20
        # The start-up backfill ran against this store too (a no-op here) and did not fail.
        assert svc.backfill_done(timeout=30) and "label blocks failed" not in caplog.text
        assert store.has_blocks()
    finally:
        store.close()


# -- label blocks ---------------------------------------------------------------------------

def pg_assert_invariant(url) -> None:
    """Every row in exactly one label block, and the log marked as covered."""
    from fer_pipeline.emotion_log import blocks
    from fer_pipeline.emotion_log.schema import PROB_COLUMNS
    from tests.logs import block_tuples, row_tuples

    conn = psycopg.connect(url, autocommit=True)
    try:
        rows = conn.execute(f"SELECT camera_id, run_id, track_id, captured_at, LEAST(w, h), {', '.join(PROB_COLUMNS)} "
                            "FROM labels").fetchall()
        stored = conn.execute("SELECT camera_id, run_id, track_id, first_at, last_at, n, sealed, t, size, probs "
                              "FROM label_blocks").fetchall()
        assert blocks.covered(conn, blocks.POSTGRES)
    finally:
        conn.close()
    assert sorted(row_tuples(rows)) == sorted(block_tuples(stored))


def pg_same_reports(url, options) -> None:
    from tests.logs import same_report

    conn = psycopg.connect(url)
    try:
        for kw in options:
            from_rows = build_report(ConnectionLog(conn, "postgres"), ReportOptions(blocks=False, **kw))
            assert from_rows.labels_read, kw
            assert same_report(build_report(ConnectionLog(conn, "postgres"), ReportOptions(**kw)), from_rows), kw
    finally:
        conn.close()


@pytest.mark.parametrize("rows_per_transaction", [65_536, 40])
def test_label_blocks_follow_add_prune_and_erase(pg_url, monkeypatch, rows_per_transaction):
    from fer_pipeline.emotion_log import postgres
    from tests.logs import T0 as B0
    from tests.logs import day, deliver

    # 40 rows a transaction: prune and a whole-run erase go range by range.
    monkeypatch.setattr(postgres, "ROWS_PER_TRANSACTION", rows_per_transaction)

    labels = day(seed=11)
    options = [{}, {"chunk_rows": 7}, {"smooth": 40}, {"cameras": ("hall",), "run": "r2"},
               {"since": B0 + 20.3, "until": B0 + 95.55}]
    with open_store(pg_url) as s:
        assert deliver(s, labels, seed=12) == len(labels) and s.count() == len(labels) and s.has_blocks()
        pg_assert_invariant(pg_url)
        pg_same_reports(pg_url, options)
        assert s.prune(B0 + 61.37) == sum(x.captured_at < B0 + 61.37 for x in labels)
        pg_assert_invariant(pg_url)
        pg_same_reports(pg_url, options)
        assert s.erase("door", 3) > 0 and s.erase("hall", run_id="r1") > 0
        pg_assert_invariant(pg_url)
        pg_same_reports(pg_url, options[:3])


def test_concurrent_loggers_store_each_label_once(pg_url):
    """Two loggers given overlapping batches at once (a redelivery racing the first delivery):
    ON CONFLICT ... RETURNING hands each row to one transaction, so to one block."""
    import threading

    from tests.logs import day

    labels = day(seed=13, cameras=("door",))
    errors = []

    def logger(seed: int) -> None:
        import random

        rng = random.Random(seed)
        try:
            with open_store(pg_url) as s:
                at = 0
                while at < len(labels):
                    b = rng.randint(1, 40)
                    s.add(labels[max(0, at - rng.randint(0, 10)):at + b])
                    at += b
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    open_store(pg_url).close()
    threads = [threading.Thread(target=logger, args=(seed,)) for seed in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    with open_store(pg_url) as s:
        assert s.count() == len(labels)
    pg_assert_invariant(pg_url)


def test_backfill_of_an_old_postgres_log(pg_url):
    from fer_pipeline.emotion_log.postgres import _INSERT, _SCHEMA
    from fer_pipeline.emotion_log.schema import label_row
    from tests.logs import day

    labels = day(seed=14)
    conn = psycopg.connect(pg_url, autocommit=True)
    try:  # the log as written before label blocks: the labels table only
        conn.execute(_SCHEMA)
        with conn.cursor() as cur:
            cur.executemany(_INSERT, [label_row(x) for x in labels[:1000]])
    finally:
        conn.close()
    with open_store(pg_url) as s:
        assert not s.has_blocks()
        assert s.add(labels[1000:]) == len(labels) - 1000  # kept in blocks already, before the backfill
        seen = []
        assert s.backfill(on_start=seen.append) == len(labels) == seen[0]
        assert s.has_blocks() and s.backfill() == 0
    pg_assert_invariant(pg_url)
    pg_same_reports(pg_url, [{}, {"chunk_rows": 13}])
    r = CliRunner().invoke(app, ["reindex", "--db", pg_url, "--force"])
    assert r.exit_code == 0 and f"label blocks built for {len(labels):,} rows" in r.output
    pg_assert_invariant(pg_url)


def test_writers_without_blocks_drop_the_marker(pg_url):
    """An older logger or a DELETE by hand on a shared PostgreSQL log: the database's own
    trigger drops the coverage marker, so the report reads rows (never stale blocks) until a
    reindex; this version's writes leave it alone."""
    from fer_pipeline.emotion_log.postgres import _INSERT
    from fer_pipeline.emotion_log.schema import label_row
    from tests.logs import day

    labels = day(seed=15)
    with open_store(pg_url) as s:
        assert s.add(labels[:-1]) == len(labels) - 1 and s.has_blocks()
        s.erase("door", 3)
        assert s.has_blocks()  # its own erase keeps blocks: marker kept
        other = psycopg.connect(pg_url, autocommit=True)
        try:
            other.execute(_INSERT, label_row(labels[-1]))  # an older logger
            assert not s.has_blocks()
            assert s.backfill() == s.count() and s.has_blocks()
            other.execute("DELETE FROM labels WHERE camera_id = %s", ("hall",))  # an erase by hand
            assert not s.has_blocks()
            assert s.backfill() == s.count() and s.has_blocks()
        finally:
            other.close()
    pg_assert_invariant(pg_url)
    pg_same_reports(pg_url, [{}])


def test_a_log_of_the_previous_version_gains_the_position_column(pg_url):
    """As in SQLite: the column is added on open (once, however many loggers open the log at
    the same time), old rows read NULL, new ones carry it, an older logger goes on writing."""
    from fer_pipeline.emotion_log import blocks
    from tests.emotion_log.previous import OLD_COLUMNS, old_insert, old_row, old_schema

    old = [make_label(frame_index=i, track_id=1) for i in range(4)]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        # Its tables: labels as it was, label_blocks as it still is (the concurrent openers below
        # race on the new column only; two creating the same table at once is another matter).
        conn.execute(old_schema("postgres"))
        conn.execute(blocks.POSTGRES.schema)
        with conn.cursor() as cur:
            cur.executemany(old_insert("%s"), [old_row(x) for x in old])
    errors = open_at_once(lambda: open_store(pg_url).close())
    assert not errors
    new = [make_label(frame_index=10 + i, track_id=1).model_copy(update={"position_s": 7.0 + i}) for i in range(2)]
    with open_store(pg_url) as s:
        assert s.count() == 4 and s.add(new) == 2 and s.add(old) == 0
        assert [r.position_s for r in s.timeline("cam0", 1)] == [None] * 4 + [7.0, 8.0]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        cols = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = 'labels' ORDER BY ordinal_position")]
        assert cols == [*OLD_COLUMNS, "position_s"]
        conn.execute(old_insert("%s"), old_row(make_label(frame_index=20, track_id=1)))  # an older logger
    with open_store(pg_url) as s:
        assert s.count() == 7 and s.timeline("cam0", 1)[-1].position_s is None
        assert s.backfill() == 7 and s.has_blocks()
    with psycopg.connect(pg_url) as conn:
        assert build_report(ConnectionLog(conn, "postgres"), ReportOptions()).labels_read == 7


def test_loggers_creating_a_new_log_at_the_same_moment_all_open_it(pg_url):
    # Several loggers started together on an empty database (compose, a Kubernetes Deployment
    # with replicas): before, one failed on the catalog's unique index creating the same table.
    for _ in range(3):
        assert open_at_once(lambda: open_store(pg_url).close(), n=4) == []
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("DROP TABLE labels, label_blocks, log_meta CASCADE")
