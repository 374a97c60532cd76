"""Live episodes against the report: the same label sequence, the report's episodes, live."""

from __future__ import annotations

import numpy as np
import pytest

from fer_pipeline.analytics.episodes import build_report
from fer_pipeline.analytics.options import ReportOptions
from fer_pipeline.consumers.sinks.episodes import LiveEpisodes
from fer_pipeline.emotion_log.store import open_store
from fer_pipeline.messages import BBox
from tests.consumers.sinks.scenes import person
from tests.factories import make_label


def report_episodes(tmp_path, labels, options: ReportOptions | None = None) -> list[dict]:
    """The batch report's episodes of ``labels``: written to a real log, read by ``build_report``."""
    path = tmp_path / f"log-{len(list(tmp_path.iterdir()))}.sqlite"
    store = open_store(path)
    store.add(labels)
    store.close()
    return build_report(path, options or ReportOptions()).episodes


def live_events(labels, live: LiveEpisodes | None = None):
    live = live or LiveEpisodes()
    events = [e for label in labels for e in live.add(label, now=0.0)]
    return events + live.close_all("track_lost")


def steps(*spans, fps=10.0, t0=1_000.0, track_id=0, camera_id="cam0"):
    """Labels holding each (emotion, seconds) in turn, at ``fps``."""
    out, t, frame = [], t0, 0
    for emotion, seconds in spans:
        for _ in range(round(seconds * fps)):
            out.append(make_label(emotion=emotion, confidence=0.8, frame_index=frame, captured_at=round(t, 6),
                                  track_id=track_id, camera_id=camera_id))
            t, frame = t + 1 / fps, frame + 1
    return out


def test_clean_changes_give_the_reports_episodes_exactly(tmp_path):
    labels = steps(("happy", 2.5), ("sad", 3.0), ("neutral", 0.4), ("sad", 1.5), ("angry", 2.0))
    batch = report_episodes(tmp_path, labels)
    ends = [e for e in live_events(labels) if e.type == "end"]
    assert [(b["emotion"], round(b["onset"], 6), round(b["offset"], 6), b["labels"], b["mean_confidence"])
            for b in batch] == [(e.emotion, round(e.started_at, 6), round(e.ended_at, 6), e.labels, e.mean_confidence)
                                for e in ends]
    assert [e.emotion for e in ends] == ["happy", "sad", "angry"]  # the 0.4 s flicker is absorbed into sad


def test_an_episode_starts_once_held_for_the_dwell_time_and_ends_after_the_release():
    live = LiveEpisodes()
    labels = steps(("happy", 3.0), ("sad", 3.0))
    seen = [(label.captured_at, e) for label in labels for e in live.add(label, now=0.0)]
    start_at, start = seen[0]
    assert start.type == "start" and start.emotion == "happy" and start.ended_at is None
    # Smoothing (5 labels) and the dwell (1 s): the start comes 1 s after the first happy label.
    assert start_at - 1_000.0 == pytest.approx(1.0, abs=1e-6)
    end_at, end = next((t, e) for t, e in seen if e.type == "end")
    assert end.emotion == "happy" and end.reason == "released" and end.episode_id == start.episode_id
    # sad takes over after smoothing (~2 labels) and must hold the release time (1 s).
    assert 1_004.0 <= end_at <= 1_004.4 and end.ended_at == pytest.approx(1_003.2, abs=0.11)
    assert end.peak_confidence >= end.mean_confidence > 0.5
    assert live.open_episodes() == {("cam0", "r1", 0): "sad"}


def test_a_track_that_disappears_ends_its_episode():
    live = LiveEpisodes(track_timeout_s=3.0)
    events = [e for label in steps(("happy", 2.0)) for e in live.add(label, now=100.0)]
    assert [e.type for e in events] == ["start"]
    assert live.expire(now=102.0) == []  # not yet: 2 s of wall clock
    (end,) = live.expire(now=103.5)
    assert end.type == "end" and end.reason == "track_lost" and end.ended_at == pytest.approx(1_001.9)
    # A label of another track of the camera captured the timeout later ends it too (capture clock).
    live = LiveEpisodes(track_timeout_s=3.0)
    events = [e for label in steps(("happy", 2.0)) for e in live.add(label, now=0.0)]
    events += live.add(make_label(track_id=7, frame_index=500, captured_at=1_004.5), now=0.0)
    assert [e.type for e in events] == ["start"]  # 2.6 s: could be workers out of order, or a short gap
    events += live.add(make_label(track_id=7, frame_index=501, captured_at=1_005.0), now=0.0)
    assert [(e.type, e.track_id, e.reason) for e in events] == [("start", 0, None), ("end", 0, "track_lost")]


def test_late_and_redelivered_labels_are_left_out():
    live = LiveEpisodes()
    labels = steps(("happy", 1.5))
    for label in labels:
        live.add(label, now=0.0)
    assert live.add(labels[3], now=0.0) == [] and live.add(labels[-1], now=0.0) == []
    assert live.late == 2


def test_small_faces_are_unknown_and_start_nothing():
    labels = [make_label(frame_index=i, captured_at=1_000 + i / 10, bbox=BBox(x=0, y=0, w=30, h=30)) for i in range(40)]
    assert live_events(labels) == []


def test_realistic_noisy_tracks_agree_with_the_report(tmp_path):
    """Flickering, noisy people: the live episodes are the report's, within the release time.

    Where they differ (see episodes.py): a flicker between two episodes goes to the longer
    one in the report, known only once both are over; and an episode started on a prefix
    can be retracted by later labels. Measured on 20 minutes of this stress (an emotion
    change every 0.3-5 s): 98% of the report's episodes matched, 4% extra live ones.
    """
    matched = total = extra = retracted = exact = 0
    for seed in range(4):
        rng = np.random.default_rng(seed)
        labels = person(rng, seconds=60.0) + person(rng, track_id=1, seconds=40.0, first_frame=10_000)
        batch = report_episodes(tmp_path, labels)
        events = live_events(labels)
        ends = [e for e in events if e.type == "end" and e.reason != "retracted"]
        retracted += sum(e.reason == "retracted" for e in events)
        assert sum(e.type == "start" for e in events) == sum(e.type == "end" for e in events)
        used: set[int] = set()
        for b in batch:
            total += 1
            for i, e in enumerate(ends):
                if i not in used and (e.emotion, e.track_id) == (b["emotion"], b["track_id"]) and \
                        abs(e.started_at - b["onset"]) <= 1.0 and abs(e.ended_at - b["offset"]) <= 1.0:
                    used.add(i)
                    matched += 1
                    exact += (e.started_at, e.ended_at) == (b["onset"], b["offset"])
                    break
        extra += len(ends) - len(used)
    assert total > 80
    assert matched / total >= 0.95, (matched, total)
    assert extra / total <= 0.08, (extra, total)
    assert exact / total >= 0.5, (exact, total)
    assert retracted / total <= 0.2, (retracted, total)
