from __future__ import annotations

import sqlite3

import pytest

from fer_pipeline.emotion_log.schema import PROB_COLUMNS
from fer_pipeline.emotion_log.sqlite import SqliteStore
from fer_pipeline.errors import ConfigError
from tests.factories import make_label
from tests.logs import open_at_once


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(tmp_path / "sub" / "dir" / "emotions.sqlite")
    yield s
    s.close()


def test_creates_parent_folders_and_uses_wal(tmp_path, store):
    path = tmp_path / "sub" / "dir" / "emotions.sqlite"
    assert path.is_file()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        cols = [r[1] for r in db.execute("PRAGMA table_info(labels)")]
        indexes = {r[1]: [c[2] for c in db.execute(f"PRAGMA index_info({r[1]})")]
                   for r in db.execute("PRAGMA index_list(labels)")}
    assert cols[0] == "crop_id" and set(PROB_COLUMNS) <= set(cols)
    assert ["camera_id", "track_id", "captured_at"] in indexes.values()


def test_same_crop_twice_is_one_row(store):
    a = make_label(frame_index=1)
    b = make_label(frame_index=2)
    assert store.add([a, b]) == 2
    assert store.add([a]) == 0                 # redelivery
    assert store.add([a, a, b]) == 0           # duplicates within a batch too
    assert store.add([]) == 0
    assert store.count() == 2


def test_values_with_quotes_are_stored_verbatim(store):
    camera = "o'brien\"; DROP TABLE labels; --"
    label = make_label(camera_id=camera, run_id="r'1", frame_index=4, track_id=2)
    assert store.add([label]) == 1
    assert store.count() == 1 and store.count(camera) == 1 and store.count("cam0") == 0
    (row,) = store.timeline(camera, 2)
    assert row.crop_id == label.crop_id and row.run_id == "r'1"


def test_row_fields_latency_and_probabilities(store):
    label = make_label(emotion="sad", confidence=0.7, captured_at=50.0, labelled_delay=0.125, truth="sad")
    store.add([label])
    (row,) = store.timeline("cam0", 0)
    assert row.emotion == "sad" and row.confidence == pytest.approx(0.7)
    assert row.latency_ms == pytest.approx(125.0)
    assert row.probabilities == pytest.approx(label.probabilities)
    assert row.truth == "sad"


def test_timeline_is_in_capture_order_and_per_track(store):
    times = [5.0, 1.0, 3.0, 2.0, 4.0]
    store.add([make_label(frame_index=i, captured_at=t, track_id=1) for i, t in enumerate(times)])
    store.add([make_label(frame_index=10 + i, track_id=2) for i in range(3)])
    store.add([make_label(frame_index=i, run_id="r2", track_id=1, captured_at=9.0 + i) for i in range(2)])
    rows = store.timeline("cam0", 1, run_id="r1")
    assert [r.captured_at for r in rows] == sorted(times)
    assert [r.frame_index for r in rows] == [1, 3, 2, 4, 0]
    assert len(store.timeline("cam0", 1)) == 7      # both runs
    assert len(store.timeline("cam0", 2)) == 3
    assert store.timeline("other", 1) == []


def test_summary_counts_and_dominant_emotion(store):
    emotions = ["happy", "happy", "sad", "happy", "neutral"]
    store.add([make_label(frame_index=i, track_id=1, emotion=e) for i, e in enumerate(emotions)])
    store.add([make_label(camera_id="cam1", frame_index=i, track_id=1, emotion="angry") for i in range(2)])
    by_key = {(s.camera_id, s.track_id): s for s in store.summary()}
    assert set(by_key) == {("cam0", 1), ("cam1", 1)}
    s = by_key[("cam0", 1)]
    assert s.labels == 5 and s.dominant == "happy" and s.dominant_share == pytest.approx(0.6)
    assert s.first_at < s.last_at and s.mean_latency_ms == pytest.approx(50.0)
    assert by_key[("cam1", 1)].dominant == "angry"


def test_reopening_keeps_rows_and_idempotency(tmp_path):
    path = tmp_path / "e.sqlite"
    labels = [make_label(frame_index=i) for i in range(3)]
    with SqliteStore(path) as s:
        s.add(labels)
    with SqliteStore(path) as s:
        assert s.add(labels) == 0 and s.count() == 3


def test_unwritable_path_is_a_config_error(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(ConfigError) as e:
        SqliteStore(blocker / "emotions.sqlite")
    assert "emotions.sqlite" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError):
        SqliteStore(tmp_path)  # a folder, not a database file


def test_a_log_path_with_hash_or_question_mark_is_read_where_it_is(tmp_path):
    """The read-only URI is percent-encoded: a raw # or ? used to cut the path, drop mode=ro
    and create a stray file at the cut."""
    from fer_pipeline.analytics.episodes import build_report
    from fer_pipeline.analytics.options import ReportOptions

    path = tmp_path / "day#1?.sqlite"
    with SqliteStore(path) as store:
        store.add([make_label(frame_index=i) for i in range(5)])
    assert build_report(path, ReportOptions()).labels_read == 5
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("day#1?.sqlite")) == []


# -- video time (position_s) --------------------------------------------------------------------
def test_positions_are_stored_and_read_back(store):
    labels = [make_label(frame_index=i, track_id=3).model_copy(update={"position_s": i / 25}) for i in range(3)]
    live = make_label(frame_index=9, track_id=3)  # a live camera's label: no position
    assert store.add([*labels, live]) == 4
    assert [r.position_s for r in store.timeline("cam0", 3)] == [0.0, 0.04, 0.08, None]


def test_a_log_of_the_previous_version_gains_the_position_column(tmp_path):
    """The column is added when a store opens a log written before it; the old rows read NULL,
    new rows carry it, and a logger of the previous version can go on writing."""
    from fer_pipeline.analytics.episodes import build_report
    from fer_pipeline.analytics.options import ReportOptions
    from tests.emotion_log.previous import OLD_COLUMNS, old_insert, old_row, old_schema

    path = tmp_path / "old.sqlite"
    old = [make_label(frame_index=i, track_id=1) for i in range(4)]
    with sqlite3.connect(path) as db:
        db.executescript(old_schema("sqlite"))
        db.executemany(old_insert("?"), [old_row(x) for x in old])
    new = [make_label(frame_index=10 + i, track_id=1).model_copy(update={"position_s": 7.0 + i}) for i in range(2)]
    with SqliteStore(path) as s:
        assert s.count() == 4
        assert s.add(new) == 2 and s.add(old) == 0
        assert [r.position_s for r in s.timeline("cam0", 1)] == [None] * 4 + [7.0, 8.0]
        assert s.backfill() == 6 and s.has_blocks()
    with sqlite3.connect(path) as db:
        cols = [r[1] for r in db.execute("PRAGMA table_info(labels)")]
        assert cols == [*OLD_COLUMNS, "position_s"]  # the same layout as a log created now
        db.execute(old_insert("?"), old_row(make_label(frame_index=20, track_id=1)))  # an older logger
    with SqliteStore(path) as s:  # reopening adds nothing twice
        assert s.count() == 7 and s.timeline("cam0", 1)[-1].position_s is None
    assert build_report(path, ReportOptions()).labels_read == 7


def test_new_and_migrated_logs_have_one_layout(tmp_path):
    with SqliteStore(tmp_path / "new.sqlite"), sqlite3.connect(tmp_path / "new.sqlite") as db:
        new = [r[1:] for r in db.execute("PRAGMA table_info(labels)")]
    from tests.emotion_log.previous import old_schema

    with sqlite3.connect(tmp_path / "old.sqlite") as db:
        db.executescript(old_schema("sqlite"))
    with SqliteStore(tmp_path / "old.sqlite"), sqlite3.connect(tmp_path / "old.sqlite") as db:
        migrated = [r[1:] for r in db.execute("PRAGMA table_info(labels)")]
    assert migrated == new and new[-1][:2] == ("position_s", "REAL")


def test_loggers_opening_an_old_log_at_once_add_the_column_once(tmp_path):
    from tests.emotion_log.previous import old_schema

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(old_schema("sqlite"))
    errors = open_at_once(lambda: SqliteStore(path).close())
    assert not errors
    with sqlite3.connect(path) as db:
        assert [r[1] for r in db.execute("PRAGMA table_info(labels)")].count("position_s") == 1
