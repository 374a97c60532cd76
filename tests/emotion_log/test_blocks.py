"""Label blocks (emotion_log/blocks.py): every row in exactly one block through add, prune,
erase and the backfill of an old log; the report read from them equals the report read from
the rows, float for float, under every option; erased values leave the file."""

from __future__ import annotations

import logging
import re
import sqlite3
import struct

import numpy as np
import pytest
from typer.testing import CliRunner

from fer_pipeline.analytics.episodes import build_report
from fer_pipeline.analytics.options import ReportOptions
from fer_pipeline.cli import app
from fer_pipeline.emotion_log import blocks
from fer_pipeline.emotion_log import sqlite as store_module
from fer_pipeline.emotion_log.reader import ConnectionLog, SqliteLog
from fer_pipeline.emotion_log.schema import label_row
from fer_pipeline.emotion_log.sqlite import _INSERT, _SCHEMA, SqliteStore
from tests.logs import FPS, T0, K, assert_invariant, day, deliver, label, same_report

OPTIONS = [
    {}, {"threads": 1}, {"threads": 3, "chunk_rows": 7}, {"chunk_rows": 1, "threads": 2}, {"chunk_rows": 50},
    {"smooth": 1}, {"smooth": 9, "min_confidence": 0.5, "min_face": 30}, {"smooth": 40, "chunk_rows": 333},
    {"min_dwell_s": 0.3, "release_s": 2.0, "max_gap_s": 0.25}, {"cameras": ("hall",)}, {"tracks": (2, 4)},
    {"run": "r2"}, {"cameras": ("door",), "tracks": (3,), "run": "r1"},
    {"since": T0 + 20.3, "until": T0 + 95.55}, {"since": T0 + 47.0, "threads": 1, "chunk_rows": 64},
    {"until": T0 + 30.0, "smooth": 12}, {"cameras": ("door", "hall"), "since": T0 + 10, "until": T0 + 200},
]


def assert_same_reports(source, options=OPTIONS) -> None:
    for kw in options:
        from_blocks = build_report(source, ReportOptions(**kw))
        from_rows = build_report(source, ReportOptions(blocks=False, **kw))
        assert from_rows.labels_read, kw
        assert same_report(from_blocks, from_rows), kw


@pytest.fixture
def messy(tmp_path):
    path = tmp_path / "log.sqlite"
    labels = day()
    with SqliteStore(path) as store:
        stored = deliver(store, labels)
    assert stored == len(labels)
    return path, labels


def test_pack_unpack_and_merge_keep_values_and_order():
    rng = np.random.default_rng(1)
    lab = blocks.Labels(np.array([3.0, 1.0, 2.0, 2.0]), np.array([10, 20, 30, 40], dtype=np.int32),
                        rng.random((K, 4)).astype(np.float32))
    first, last, n, t, size, probs = blocks.pack(lab)
    assert (first, last, n, len(t), len(size), len(probs)) == (3.0, 2.0, 4, 32, 16, 4 * K * 4)
    back = blocks.unpack(n, t, size, probs)
    assert (back.t == lab.t).all() and (back.size == lab.size).all() and (back.probs == lab.probs).all()
    assert struct.unpack("<d", t[:8])[0] == 3.0  # little-endian float64, probs emotion by emotion
    assert struct.unpack("<f", probs[4:8])[0] == lab.probs[0, 1]
    merged = blocks.merge([lab.part(2, 4), lab.part(0, 2)])
    assert merged.t.tolist() == [1.0, 2.0, 2.0, 3.0] and merged.size.tolist() == [20, 30, 40, 10]


def test_group_sorts_each_track_and_keeps_equal_times_in_order():
    entries = [("c", "r", 1, 5.0, 50, [0.1] * K), ("c", "r", 2, 1.0, 60, [0.2] * K),
               ("c", "r", 1, 2.0, 70, [0.3] * K), ("c", "r", 1, 2.0, 80, [0.4] * K)]
    g = blocks.group(entries)
    assert list(g) == [("c", "r", 1), ("c", "r", 2)]
    assert g[("c", "r", 1)].t.tolist() == [2.0, 2.0, 5.0] and g[("c", "r", 1)].size.tolist() == [70, 80, 50]


def test_plan_merge_is_size_tiered():
    assert blocks.tier(1) == blocks.tier(7) == 0 and blocks.tier(8) == 1 and blocks.tier(4095) == 3
    assert blocks.plan_merge([3]) == 0 and blocks.plan_merge([1] * 7) == 0
    assert blocks.plan_merge([1] * 8) == 8                 # eight of one tier merge
    assert blocks.plan_merge([600, 70, 9, 1, 1, 1, 1, 1, 1, 1, 1]) == 8  # the trailing tier only
    assert blocks.plan_merge([600, 9, 2, 1, 30]) == 3      # a new block above the ones before it takes them in
    assert blocks.plan_merge([70, 9, 9, 9]) == 0


def test_compaction_bounds_blocks_and_seals_ended_tracks(tmp_path):
    """One label per transaction, as a logger that keeps up with live traffic writes."""
    path = tmp_path / "log.sqlite"
    rng = np.random.default_rng(2)
    with SqliteStore(path) as store:
        for i in range(700):  # track 1: 70 s of labels; track 2 starts when track 1 ends
            store.add([label("c", "r", 1, i, T0 + i / FPS, rng.dirichlet(np.ones(K)))])
        db = sqlite3.connect(path)
        n_open = db.execute("SELECT COUNT(*) FROM label_blocks WHERE sealed = 0").fetchone()[0]
        # 700 = 1274 in base 8: 1 + 2 + 7 + 4 open blocks of tiers 3, 2, 1 and 0.
        assert n_open == 14 and db.execute("SELECT MAX(n) FROM label_blocks").fetchone()[0] == 512
        for i in range(400):
            store.add([label("c", "r", 2, 10_000 + i, T0 + 70 + i / FPS, rng.dirichlet(np.ones(K)))])
        sealed = db.execute("SELECT track_id, n FROM label_blocks WHERE sealed = 1").fetchall()
        db.close()
    assert sealed == [(1, 700)]  # track 1 went quiet for 30 s: one block
    assert_invariant(path)
    assert_same_reports(path, [{}, {"smooth": 40}, {"since": T0 + 33.3, "until": T0 + 80}])


def test_block_report_equals_row_report_on_a_messy_log(messy):
    path, labels = messy
    assert_invariant(path)
    db = sqlite3.connect(path)
    n_blocks, n_sealed, biggest = db.execute("SELECT COUNT(*), SUM(sealed), MAX(n) FROM label_blocks").fetchone()
    db.close()
    assert n_sealed > 0 and biggest > 24  # merges and seals happened
    assert n_blocks < len(labels) / 8
    assert_same_reports(path)
    # The DB-API readers (sqlite3 connection) and the stdlib row reader agree too.
    conn = sqlite3.connect(path)
    try:
        assert same_report(build_report(ConnectionLog(conn, "sqlite"), ReportOptions(chunk_rows=13)), build_report(path, ReportOptions()))
        assert same_report(build_report(ConnectionLog(conn, "sqlite"), ReportOptions(since=T0 + 50, chunk_rows=100)),
                           build_report(ConnectionLog(conn, "sqlite"), ReportOptions(since=T0 + 50, chunk_rows=100, blocks=False)))
    finally:
        conn.close()


def test_a_sqlite_without_json_functions_keeps_the_same_blocks(tmp_path):
    path = tmp_path / "log.sqlite"
    labels = day(seed=8)[:800]
    with SqliteStore(path) as store:
        store._json = False  # as on a SQLite built without json_each: ids looked up one by one
        assert deliver(store, labels, seed=9) == len(labels)
    assert_invariant(path)


def test_without_arrow_the_row_reader_agrees(messy, monkeypatch):
    import sys

    path, _ = messy
    blocks_report = build_report(path, ReportOptions(threads=2, chunk_rows=64))
    monkeypatch.setitem(sys.modules, "adbc_driver_sqlite.dbapi", None)  # import now fails
    assert same_report(build_report(path, ReportOptions(threads=2, chunk_rows=64, blocks=False)), blocks_report)


@pytest.mark.parametrize("rows_per_transaction", [65_536, 40])
def test_prune_rewrites_blocks_that_straddle_the_cutoff(messy, monkeypatch, rows_per_transaction):
    # 40 rows a transaction: the prune goes range by range, each leaving the log consistent.
    monkeypatch.setattr(store_module, "BACKFILL_ROWS", rows_per_transaction)
    path, labels = messy
    cutoff = T0 + 61.37
    with SqliteStore(path) as store:
        straddling = sqlite3.connect(path).execute(
            "SELECT COUNT(*) FROM label_blocks WHERE first_at < ? AND last_at >= ?", (cutoff, cutoff)).fetchone()[0]
        assert straddling > 0
        assert store.prune(cutoff) == sum(x.captured_at < cutoff for x in labels)
        assert store.prune(cutoff) == 0
    assert_invariant(path)
    assert_same_reports(path, OPTIONS[:6] + [OPTIONS[-4], OPTIONS[-3], OPTIONS[-1]])


@pytest.mark.parametrize("what", [("door", 3, None), ("door", 3, "r2"), ("hall", None, None), ("door", None, "r1")])
@pytest.mark.parametrize("rows_per_transaction", [65_536, 40])
def test_erase_keeps_the_blocks_of_everything_else(messy, what, monkeypatch, rows_per_transaction):
    # 40 rows a transaction: a whole camera (or run) is erased range by range.
    monkeypatch.setattr(store_module, "BACKFILL_ROWS", rows_per_transaction)
    path, labels = messy
    camera, track, run = what
    gone = [x for x in labels if x.camera_id == camera and track in (None, x.track_id) and run in (None, x.run_id)]
    with SqliteStore(path) as store:
        assert store.erase(camera, track, run_id=run) == len(gone) > 0
    assert_invariant(path)
    assert_same_reports(path, OPTIONS[:3] + [{"since": T0 + 20.3, "until": T0 + 95.55}])


def test_erased_values_leave_the_file_blocks_included(tmp_path):
    """Probabilities only the erased track has: after the erase they are in no file, neither
    as the rows' float64 nor as the blocks' float32, not in a block merged away earlier."""
    path = tmp_path / "log.sqlite"
    secret = (0.6172839, 0.0100003, 0.0200007, 0.0300011, 0.0400013, 0.0500017, 0.2286110)
    rng = np.random.default_rng(3)
    with SqliteStore(path) as store:
        for i in range(300):  # small transactions: blocks get merged (and freed) many times
            store.add([label("door", "r1", 7, i, T0 + i / FPS, secret),
                       label("door", "r1", 8, i, T0 + i / FPS, rng.dirichlet(np.ones(K)))])
        store.add([label("door", "r1", 7, 5000 + i, T0 + 100 + i / FPS, secret) for i in range(50)])
        data = b"".join(p.read_bytes() for p in tmp_path.glob("log.sqlite*"))
        assert struct.pack("<f", secret[0]) in data and struct.pack(">d", secret[0]) in data
        assert store.erase("door", 7) == 350
    assert_invariant(path)
    data = b"".join(p.read_bytes() for p in tmp_path.glob("log.sqlite*"))
    for value in secret:
        assert struct.pack("<f", value) not in data and struct.pack(">d", value) not in data


def test_pruned_values_leave_a_rewritten_block(tmp_path):
    path = tmp_path / "log.sqlite"
    old = (0.5172839, 0.0100003, 0.0200007, 0.0300011, 0.0400013, 0.0500017, 0.3286110)
    with SqliteStore(path) as store:
        store.add([label("door", "r1", 1, i, T0 + i, old if i < 10 else (1 / K,) * K) for i in range(20)])
        assert store.prune(T0 + 10) == 10
    assert_invariant(path)
    data = b"".join(p.read_bytes() for p in tmp_path.glob("log.sqlite*"))
    assert struct.pack("<f", old[0]) not in data and struct.pack(">d", old[0]) not in data


def old_log(path, labels) -> None:
    """A log as written before label blocks: the labels table only."""
    db = sqlite3.connect(path)
    db.executescript(_SCHEMA)
    db.executemany(_INSERT, [label_row(x) for x in labels])
    db.commit()
    db.close()


def test_backfill_of_an_old_log(tmp_path, monkeypatch):
    path = tmp_path / "old.sqlite"
    labels = day(seed=4)
    old_log(path, labels[:1500])
    with SqliteLog(path) as log:
        assert not log.blocks  # no blocks: the report reads the rows
    rows_report = build_report(path, ReportOptions())
    with SqliteStore(path) as store:
        assert not store.has_blocks()
        # This version's writes keep blocks for their own rows already, before the backfill.
        assert deliver(store, labels[1500:], seed=5) == len(labels) - 1500
        with SqliteLog(path) as log:
            assert not log.blocks
        # Small batches: several ranges per camera, and a track bigger than a batch on its own.
        monkeypatch.setattr(store_module, "BACKFILL_ROWS", 120)
        seen = []
        assert store.backfill(on_start=seen.append) == len(labels) == seen[0]
        assert store.has_blocks() and store.backfill() == 0
    assert_invariant(path)
    assert_same_reports(path)
    assert same_report(build_report(path, ReportOptions(blocks=False)), build_report(path, ReportOptions()))
    assert rows_report.labels_read == 1500


def test_reindex_command(tmp_path):
    path = tmp_path / "old.sqlite"
    old_log(path, day(seed=6)[:400])
    runner = CliRunner()
    r = runner.invoke(app, ["report", "--db", str(path)])
    assert r.exit_code == 0 and "fer-pipeline reindex" in r.output  # read from the rows, and says so
    r = runner.invoke(app, ["reindex", "--db", str(path)])
    assert r.exit_code == 0, r.output
    assert "building label blocks for 400 rows" in r.output and "label blocks built for 400 rows" in r.output
    assert_invariant(path)
    r = runner.invoke(app, ["reindex", "--db", str(path)])
    assert r.exit_code == 0 and "already has its label blocks" in r.output
    r = runner.invoke(app, ["reindex", "--db", str(path), "--force"])
    assert r.exit_code == 0 and "built for 400 rows" in r.output
    assert_invariant(path)
    r = runner.invoke(app, ["report", "--db", str(path), "--run", "all"])
    assert r.exit_code == 0 and "400 labels" in r.output and "reindex" not in r.output


def test_rows_written_without_blocks_send_the_report_back_to_the_rows(messy):
    """A writer that does not keep blocks (an older logger during an upgrade, a script): the
    database's trigger drops the marker at once, the report reads the rows, and this
    version's writes do not bring the marker back: only a reindex does."""
    path, labels = messy
    extra = label("door", "r1", 3, 99_999, T0 + 70.01, (1 / K,) * K)
    db = sqlite3.connect(path)
    db.execute(_INSERT, label_row(extra))
    db.commit()
    db.close()
    with SqliteLog(path) as log:
        assert not log.blocks
    assert build_report(path, ReportOptions()).labels_read == len(labels) + 1
    with SqliteStore(path) as store:
        assert store.add([label("door", "r1", 3, 99_998, T0 + 70.02, (1 / K,) * K)]) == 1
        assert not store.has_blocks()
        assert store.backfill() == len(labels) + 2
        assert store.has_blocks()
    assert_invariant(path)


def test_an_erase_by_a_writer_without_blocks_is_not_reported_from_stale_blocks(messy):
    """An older version's erase (or a DELETE by hand) removes rows but not their blocks: the
    trigger drops the marker, so the erased person is not reported; reindex then rebuilds
    the blocks without them."""
    path, labels = messy
    victim = len({lab.crop_id for lab in labels if lab.camera_id == "door" and lab.track_id == 2})
    assert victim
    db = sqlite3.connect(path)
    db.execute("DELETE FROM labels WHERE camera_id = 'door' AND track_id = 2")
    db.commit()
    db.close()
    rows_left = len({lab.crop_id for lab in labels}) - victim
    assert build_report(path, ReportOptions()).labels_read == rows_left
    with SqliteStore(path) as store:
        assert not store.has_blocks()
        store.backfill()
        assert store.has_blocks()
    assert build_report(path, ReportOptions()).labels_read == rows_left
    assert_invariant(path)


def test_logger_builds_the_blocks_of_an_old_log_when_it_starts(settings, fake_transport, caplog):
    from fer_pipeline.consumers.label_logger import LabelLoggerService
    from tests.logs import drive, publish_labels

    old_log(settings.consumer.db, day(seed=7)[:300])
    service = LabelLoggerService(settings, fake_transport, ident="log-a")
    with caplog.at_level(logging.INFO):
        publish_labels(fake_transport, 20, bad=False)
        drive(service)  # labels are logged while the blocks are built beside
        assert service.backfill_done(timeout=30)
    assert "building them for 300 rows" in caplog.text
    # The labels logged meanwhile are counted too when they landed before the final check.
    built = re.search(r"label blocks built for (\d+) rows", caplog.text)
    assert built and 300 <= int(built.group(1)) <= 320
    assert service.store.has_blocks() and service.store.count() == 320
    service.finish()
    assert_invariant(settings.consumer.db)


def test_a_stopped_backfill_leaves_the_log_unmarked_and_the_next_one_finishes(tmp_path):
    import threading

    path = tmp_path / "old.sqlite"
    old_log(path, day(seed=9)[:400])
    stop = threading.Event()
    stop.set()  # the logger stopping before the first range
    with SqliteStore(path) as store:
        assert store.backfill(stop=stop) == 0 and not store.has_blocks()
        assert store.backfill() == 400 and store.has_blocks()
    assert_invariant(path)
