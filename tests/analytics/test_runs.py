"""Report analytics on synthetic logs written through the logger's store: smoothing,
unknown, episodes with min dwell and hysteresis, transitions, filters, chunked reading."""

from __future__ import annotations

import sqlite3

import pytest

from fer_pipeline.analytics.episodes import build_report
from fer_pipeline.analytics.options import ReportOptions, parse_time
from fer_pipeline.emotion_log.reader import ConnectionLog, select_sql
from fer_pipeline.emotion_log.sqlite import SqliteStore
from fer_pipeline.errors import ConfigError
from tests.logs import T0, random_log, same_report, track_labels
from tests.logs import TRACK_FPS as FPS


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "log.sqlite"
    with SqliteStore(path) as s:
        yield s, path


def report(path, **kw):
    return build_report(path, ReportOptions(**kw))


def test_one_frame_flickers_do_not_count(db):
    store, path = db
    emotions = ["sad" if i % 10 == 5 else "happy" for i in range(90)]  # 3 s of happy, a flicker every 1/3 s
    store.add(track_labels(emotions))
    rep = report(path)
    (t,) = rep.tracks
    assert t["n_happy"] == 90 and t["n_sad"] == 0 and t["dominant"] == "happy" and t["dominant_share"] == 1.0
    assert [e["emotion"] for e in rep.episodes] == ["happy"] and rep.transitions == []
    # Without smoothing the flickers are states of their own, but still too short for episodes.
    raw = report(path, smooth=1)
    assert raw.tracks[0]["n_sad"] == 9 and [e["emotion"] for e in raw.episodes] == ["happy"]


def test_sustained_change_is_an_episode_and_a_transition(db):
    store, path = db
    store.add(track_labels(["happy"] * 60 + ["sad"] * 60))
    rep = report(path)
    happy, sad = rep.episodes
    assert (happy["emotion"], sad["emotion"]) == ("happy", "sad")
    assert happy["onset"] == pytest.approx(T0)
    # A 5-label trailing window turns after 3 sad labels (3 of 5 then outweigh happy).
    assert sad["onset"] == pytest.approx(T0 + 62 / FPS)
    assert happy["offset"] == pytest.approx(sad["onset"])
    assert sad["duration_s"] == pytest.approx(57 / FPS, abs=1e-3)  # up to its last label
    assert happy["labels"] + sad["labels"] == 120
    assert 0.5 < happy["mean_confidence"] <= 0.8
    assert rep.transitions == [{"camera_id": "cam0", "from": "happy", "to": "sad", "count": 1}]
    t = rep.tracks[0]
    assert t["transitions"] == 1 and t["episodes"] == 2
    # Time: each label stands for 1/30 s, the last one for nothing.
    assert t["seconds"] == pytest.approx(119 / FPS) and t["s_happy"] + t["s_sad"] == pytest.approx(119 / FPS, abs=1e-2)


def test_min_dwell_and_release(db):
    store, path = db
    store.add(track_labels(["happy"] * 60 + ["angry"] * 15 + ["happy"] * 60))  # half a second of anger
    rep = report(path, smooth=1, min_dwell_s=1.0)
    assert [e["emotion"] for e in rep.episodes] == ["happy"] and rep.transitions == []
    assert rep.episodes[0]["duration_s"] == pytest.approx(134 / FPS, abs=1e-3)
    short = report(path, smooth=1, min_dwell_s=0.4)
    assert [e["emotion"] for e in short.episodes] == ["happy", "angry", "happy"]
    assert len(short.transitions) == 2
    # Hysteresis: anger is long enough to end the happy episode but not to start its own.
    broken = report(path, smooth=1, min_dwell_s=1.0, release_s=0.4)
    assert [e["emotion"] for e in broken.episodes] == ["happy", "happy"]
    assert broken.episodes[0]["offset"] == pytest.approx(T0 + 60 / FPS)
    # Two episodes of one emotion in a row: no emotion changed, so no transition (never happy -> happy).
    assert broken.transitions == [] and broken.tracks[0]["transitions"] == 0


def test_small_and_uncertain_faces_are_unknown(db):
    store, path = db
    store.add(track_labels(["happy"] * 60, small={20, 21}))           # two tiny faces mid-episode
    store.add(track_labels(["fear"] * 40, track_id=2, confidence=0.3))  # unsure throughout
    rep = report(path)
    t1, t2 = sorted(rep.tracks, key=lambda t: t["track_id"])
    assert t1["n_unknown"] == 2 and t1["n_happy"] == 58
    # The short unknown stretch does not cut the episode in two.
    assert [(e["track_id"], e["emotion"]) for e in rep.episodes] == [(1, "happy")]
    assert t2["n_unknown"] == 40 and t2["dominant"] == "unknown" and t2["episodes"] == 0
    # With a low enough bar the same labels are fear.
    assert report(path, min_confidence=0.25, tracks=(2,)).tracks[0]["dominant"] == "fear"
    assert report(path, min_face=10).tracks[0]["n_unknown"] == 0


def test_filters_and_per_camera_summary(db):
    store, path = db
    store.add(track_labels(["happy"] * 60, camera_id="door", track_id=1))
    store.add(track_labels(["sad"] * 90, camera_id="door", track_id=2, start=T0 + 100))
    store.add(track_labels(["angry"] * 30, camera_id="hall", track_id=1))
    store.add(track_labels(["neutral"] * 30, camera_id="door", track_id=1, run_id="r2", start=T0 + 500))
    rep = report(path)
    cams = {c["camera_id"]: c for c in rep.cameras}
    assert cams["door"]["tracks"] == 3 and cams["door"]["labels"] == 180 and cams["door"]["dominant"] == "sad"
    assert cams["hall"]["dominant"] == "angry"
    keys = {(t["camera_id"], t["run_id"], t["track_id"]) for t in rep.tracks}
    assert keys == {("door", "r1", 1), ("door", "r1", 2), ("hall", "r1", 1), ("door", "r2", 1)}
    assert {t["camera_id"] for t in report(path, cameras=("hall",)).tracks} == {"hall"}
    assert {t["track_id"] for t in report(path, cameras=("door",), tracks=(2,)).tracks} == {2}
    assert [t["run_id"] for t in report(path, cameras=("door",), run="r2").tracks] == ["r2"]
    window = report(path, since=T0 + 50, until=T0 + 200)
    assert [(t["camera_id"], t["track_id"], t["labels"]) for t in window.tracks] == [("door", 2, 90)]
    assert report(path, since=T0 + 10_000).tracks == []


def test_chunked_and_dbapi_reading_agree(db, tmp_path):
    store, path = db
    for track in range(6):
        store.add(track_labels(["happy"] * 40 + ["surprise"] * 50, track_id=track, camera_id=f"c{track % 2}",
                               start=T0 + track))
    whole = report(path)
    for chunk_rows in (7, 45, 90):
        assert report(path, chunk_rows=chunk_rows).tracks == whole.tracks
        assert report(path, chunk_rows=chunk_rows).episodes == whole.episodes
    conn = sqlite3.connect(path)
    try:
        via_dbapi = build_report(ConnectionLog(conn, "sqlite"), ReportOptions(chunk_rows=50))
    finally:
        conn.close()
    assert via_dbapi.tracks == whole.tracks and via_dbapi.transitions == whole.transitions


def test_empty_log_and_missing_file(db, tmp_path):
    _, path = db
    rep = report(path)
    assert rep.labels_read == 0 and rep.tracks == [] and rep.episodes == [] and rep.cameras == []
    with pytest.raises(ConfigError):
        report(tmp_path / "nope.sqlite")


def test_select_sql_uses_parameters_only():
    sql, params = select_sql(ReportOptions(cameras=("a'; DROP TABLE labels; --",), tracks=(3,), since=1.0))
    assert "DROP" not in sql and params == ["a'; DROP TABLE labels; --", 3, 1.0]
    sql, params = select_sql(ReportOptions(runs=("x", "x~1")), placeholder="%s")
    assert "run_id IN (%s, %s)" in sql and params == ["x", "x~1"]


def test_options_are_validated():
    with pytest.raises(ConfigError):
        ReportOptions(smooth=0)
    with pytest.raises(ConfigError):
        ReportOptions(since=10.0, until=5.0)
    with pytest.raises(ConfigError):
        ReportOptions(min_confidence=1.5)


def test_parse_time():
    assert parse_time("1700000000") == 1_700_000_000.0
    assert parse_time("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_time("30m", now=10_000.0) == 10_000.0 - 1800
    assert parse_time("2023-11-14T22:13:20+00:00") == 1_700_000_000.0
    with pytest.raises(ConfigError):
        parse_time("yesterday")


def test_without_arrow_the_stdlib_reader_gives_the_same(db, monkeypatch):
    import sys

    store, path = db
    store.add(track_labels(["happy"] * 50 + ["fear"] * 50, small={3}))
    fast = report(path)
    monkeypatch.setitem(sys.modules, "adbc_driver_sqlite.dbapi", None)  # import now fails
    slow = report(path)
    assert slow.tracks == fast.tracks and slow.episodes == fast.episodes and slow.labels_read == 100


def test_cameras_read_in_parallel_give_the_sequential_report(db):
    store, path = db
    for cam in ("b-cam", "a-cam", "c-cam"):
        for track in range(3):
            store.add(track_labels(["neutral"] * 35 + ["happy"] * 40, camera_id=cam, track_id=track,
                                   start=T0 + track * 2))
    sequential = report(path, threads=1)
    parallel = report(path, threads=3)
    assert [t["camera_id"] for t in parallel.tracks][::3] == ["a-cam", "b-cam", "c-cam"]
    assert parallel.tracks == sequential.tracks and parallel.episodes == sequential.episodes
    assert parallel.cameras == sequential.cameras and parallel.labels_read == 675
    assert report(path, threads=2, cameras=("c-cam", "a-cam")).labels_read == 450


def test_parts_threads_batches_and_readers_agree(tmp_path, monkeypatch):
    import sys

    path = tmp_path / "log.sqlite"
    random_log(path)
    base = report(path, threads=1)
    assert len(base.tracks) == 3 * 2 * 9 and base.episodes and base.transitions
    # Several threads on track-id ranges; batches that end inside tracks (down to one row).
    for kw in ({"threads": 3}, {"threads": 2, "chunk_rows": 1}, {"chunk_rows": 7}, {"threads": 4, "chunk_rows": 50},
               {"threads": 1, "chunk_rows": 149}):
        assert same_report(report(path, **kw), base), kw
    conn = sqlite3.connect(path)
    try:
        assert same_report(build_report(ConnectionLog(conn, "sqlite"), ReportOptions(chunk_rows=13)), base)
    finally:
        conn.close()
    monkeypatch.setitem(sys.modules, "adbc_driver_sqlite.dbapi", None)  # the stdlib reader
    assert same_report(report(path, threads=2, chunk_rows=64), base)


def test_producer_runs_sharing_a_track_id_are_separate_tracks(tmp_path):
    path = tmp_path / "log.sqlite"
    random_log(path)
    rep = report(path, cameras=("c0",), tracks=(3,))
    # The run whose first label came first (run-b, a second earlier) is listed first, whatever the ids sort as.
    assert [(t["run_id"], t["track_id"]) for t in rep.tracks] == [("run-b", 3), ("run-a", 3)]
    for t in rep.tracks:
        alone = report(path, cameras=("c0",), tracks=(3,), run=t["run_id"]).tracks
        assert alone == [t]


def test_plan_parts_cover_each_camera_in_track_ranges(tmp_path):
    from fer_pipeline.emotion_log.reader import SqliteLog, plan_parts

    path = tmp_path / "log.sqlite"
    random_log(path)
    with SqliteLog(path) as log:
        parts = plan_parts(log, ReportOptions(), ["c0", "c1"], 4)
        assert [p.camera for p in parts] == ["c0"] * 4 + ["c1"] * 4
        for cam in ("c0", "c1"):
            mine = [p for p in parts if p.camera == cam]
            assert mine[0].lo == 0 and mine[-1].hi == 9 and all(a.hi == b.lo for a, b in zip(mine, mine[1:]))
        assert plan_parts(log, ReportOptions(), ["c0"], 1) == [type(parts[0])("c0")]
        assert plan_parts(log, ReportOptions(tracks=(1, 2)), ["c0"], 4) == [type(parts[0])("c0")]
