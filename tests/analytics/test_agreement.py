"""The report's figures agree with each other: a row's dominant, its share and its distribution
columns come from the same numbers, and a transition is always a change of emotion.

Each contradiction users saw is built here from its input (``dominant surprise 100%`` beside
``sur 28% | unk 72%``; ``dominant unknown 0%``; ``happy -> happy``), then the same properties
are checked on random runs (hypothesis) and on random logs read end to end.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fer_pipeline.analytics.episodes import Report, build_report, reduce_runs, summarise
from fer_pipeline.analytics.options import STATES, UNKNOWN, ReportOptions
from fer_pipeline.analytics.render import _dominant_cell, _share_cells, render
from fer_pipeline.emotion_log.sqlite import SqliteStore
from fer_pipeline.labels import EMOTIONS
from tests.logs import T0, label, track_labels

K = len(EMOTIONS)


def assert_figures_agree(report: Report) -> None:
    """Every property this module is about, on every track and camera row and transition."""
    for row in [*report.tracks, *report.cameras]:
        shares = [row[f"share_{s}"] for s in STATES]
        dom = row["dominant"]
        assert sum(shares) == pytest.approx(1.0, abs=1e-3), row
        assert row["dominant_share"] == row[f"share_{dom}"], row  # the dominant's share is its own column
        known = shares[:UNKNOWN]
        if dom == "unknown":
            assert max(known) == 0 and row["dominant_share"] == 1.0, row
        else:
            assert row["dominant_share"] == max(known) > 0, row
        # As shown: the dominant's percentage is the one in its column.
        assert _dominant_cell(row).split()[1] == _share_cells(row)[STATES.index(dom)], row
    assert all(t["from"] != t["to"] for t in report.transitions), report.transitions
    assert sum(t["count"] for t in report.transitions) == sum(t["transitions"] for t in report.tracks)
    assert sum(t["episodes"] for t in report.tracks) == len(report.episodes)


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "log.sqlite"
    with SqliteStore(path) as s:
        yield s, path


def test_dominant_share_is_of_all_time_as_the_columns(db):
    """Was: ``dominant surprise 100%`` (of the known time) beside ``sur 28% | unk 72%`` (of all time)."""
    store, path = db
    store.add(track_labels(["surprise"] * 100, small=set(range(28, 100))))  # 28 labels seen, 72 faces too small
    rep = build_report(path, ReportOptions())
    (t,) = rep.tracks
    assert t["dominant"] == "surprise" and t["dominant_share"] == t["share_surprise"] == round(28 / 99, 4)
    assert t["share_unknown"] == round(71 / 99, 4)  # the last label stands for no time
    assert _dominant_cell(t) == "surprise 28%" and _share_cells(t)[STATES.index("unknown")] == "72%"
    assert_figures_agree(rep)


def test_a_track_never_seen_well_is_unknown_100_percent(db):
    """Was: ``dominant unknown 0%``."""
    store, path = db
    store.add(track_labels(["fear"] * 40, confidence=0.3))
    rep = build_report(path, ReportOptions())
    (t,) = rep.tracks
    assert (t["dominant"], t["dominant_share"], t["share_unknown"]) == ("unknown", 1.0, 1.0)
    assert _dominant_cell(t) == "unknown 100%"
    assert_figures_agree(rep)


def test_rows_without_time_are_shared_by_labels(db):
    """A one-label track stands for no time: its columns and dominant come from its label
    count (was: the dominant from counts, the columns from the zero seconds, so blank)."""
    store, path = db
    store.add(track_labels(["happy"], track_id=1))
    # Seen only in its last label (which stands for no time): unknown all the time, not "happy 0%".
    store.add(track_labels(["fear"] * 10 + ["angry"], track_id=2, start=T0 + 100, small=set(range(10))))
    rep = build_report(path, ReportOptions(smooth=1))
    one, late = sorted(rep.tracks, key=lambda t: t["track_id"])
    assert (one["dominant"], one["dominant_share"], one["share_happy"]) == ("happy", 1.0, 1.0)
    assert (late["dominant"], late["dominant_share"], late["n_angry"]) == ("unknown", 1.0, 1)
    assert_figures_agree(rep)


def test_one_emotion_interrupted_is_two_episodes_and_no_transition(db):
    """Was: ``happy -> happy``. Happy, 1.5 s of faces too small (longer than the release), happy again."""
    store, path = db
    store.add(track_labels(["happy"] * 165, small=set(range(60, 105))))
    store.add(track_labels(["happy"] * 60 + ["sad"] * 60 + ["happy"] * 60, track_id=2, start=T0 + 100))
    rep = build_report(path, ReportOptions())
    first = [e["emotion"] for e in rep.episodes if e["track_id"] == 1]
    assert first == ["happy", "happy"]
    assert [(t["from"], t["to"], t["count"]) for t in rep.transitions] == [("happy", "sad", 1), ("sad", "happy", 1)]
    tracks = {t["track_id"]: t for t in rep.tracks}
    assert tracks[1]["transitions"] == 0 and tracks[2]["transitions"] == 2
    assert_figures_agree(rep)


# Random runs straight into the reduction: (state, labels, seconds per label) per run.
_run = st.tuples(st.integers(0, UNKNOWN), st.integers(1, 40), st.sampled_from([0.0, 1 / 30, 1 / 15, 0.5]))


@settings(max_examples=150, deadline=None)
@given(tracks=st.lists(st.lists(_run, min_size=1, max_size=12), min_size=1, max_size=6),
       dwell=st.sampled_from([0.0, 0.3, 1.0]), release=st.sampled_from([None, 0.2, 2.0]))
def test_random_runs_give_figures_that_agree(tracks, dwell, release):
    track, state, labels, seconds = [], [], [], []
    for j, runs in enumerate(tracks):
        for s, n, per in runs:
            track.append(j)
            state.append(s)
            labels.append(n)
            seconds.append(n * per)
    track, labels, sec = np.array(track), np.array(labels), np.array(seconds)
    start = np.cumsum(sec) - sec + track * 1e4
    r = {"track": track, "state": np.array(state), "start": start, "end": start + sec, "seconds": sec,
         "labels": labels, "valid": labels, "prob_sum": np.full((K, len(track)), 0.5) * labels}
    options = ReportOptions(min_dwell_s=dwell, release_s=release)
    keys = [("cam", "run", j) for j in range(len(tracks))]
    assert_figures_agree(summarise([reduce_runs(keys, r, options)], options, int(labels.sum())))


@pytest.mark.parametrize("seed", range(4))
def test_random_logs_give_figures_that_agree(tmp_path, seed):
    rng = np.random.default_rng(seed)
    labels = []
    for camera in ("c0", "c1"):
        for track in range(8):
            t = T0 + track * 60.0
            frame = 0
            for _ in range(int(rng.integers(1, 8))):  # stretches of one emotion, some unsure, some tiny faces
                emotion = int(rng.integers(0, K))
                for _ in range(int(rng.choice([1, 3, 20, 90]))):
                    p = np.full(K, 0.05)
                    p[emotion] = rng.choice([0.3, 0.9])
                    labels.append(label(camera, "r1", track, frame, t, p / p.sum(),
                                        size=int(rng.choice([20, 80, 80, 80]))))
                    t += float(rng.choice([1 / 30, 1 / 30, 0.5, 3.0]))
                    frame += 1
    path = tmp_path / "log.sqlite"
    with SqliteStore(path) as s:
        s.add(labels)
    for options in (ReportOptions(), ReportOptions(smooth=1, min_dwell_s=0.2, release_s=0.5),
                    ReportOptions(min_confidence=0.6)):
        rep = build_report(path, options)
        assert rep.labels_read == len(labels)
        assert_figures_agree(rep)
    assert render(rep)  # and the tables render
