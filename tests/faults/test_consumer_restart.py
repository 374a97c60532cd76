"""Consumers killed with `kill -9` and restarted under the same name resume from their
group position: the log misses nothing and counts nothing twice, the display draws on from
where the group stood instead of starting over."""

from __future__ import annotations

import signal

import cv2
import pytest

from fer_pipeline.messages import Frame, decode
from fer_pipeline.streams import DISPLAY_GROUP, LOGGER_GROUP, WORKERS_GROUP
from tests.faults.conftest import client_for, group_info, log_rows, replay_spec, stats, wait_alive, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(150)]

CROPS = 300


def frames_after(r, stream: str, last_id: str) -> int:
    """Frame messages (not the end-of-stream marker) after ``last_id``."""
    return sum(isinstance(decode(f[b"d"]), Frame) for _, f in r.xrange(stream, min=f"({last_id}", max="+"))


def video_frames(path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    return n


def test_logger_and_display_killed_and_restarted_resume_from_their_group(cluster, redis_settings, data_dir,
                                                                          record):
    prefix = redis_settings.redis.prefix
    r = client_for(redis_settings)
    crops, labels, frames = f"{prefix}:crops", f"{prefix}:labels", f"{prefix}:frames:replay"
    db = redis_settings.consumer.db

    logger = cluster.start("logger-1", "logger", "--ident", "log")
    display = cluster.start("display-1", "display", "--ident", "disp")
    worker = cluster.start("worker", "worker", "--ident", "w")
    wait_alive(r, prefix, {"logger:log", "display:disp", "worker:w"}, [logger, display, worker])
    # 30 fps: 150 frames over 5 s, so the kill lands mid-run.
    producer = cluster.start("producer", "producer", "--source", replay_spec(data_dir, fps=30, limit=CROPS),
                             "--camera-id", "replay")

    wait_until(lambda: len(log_rows(db)) >= 40, 60, "40 rows in the log")
    # The display finds a camera's frames stream by polling: kill it only once it has joined
    # and taken frames (a display killed before that would simply start the stream from 0).
    wait_until(lambda: group_info(r, frames, DISPLAY_GROUP).get("last-delivered-id", b"0-0") != b"0-0", 30,
               "the display reading frames")
    logger.signal(signal.SIGKILL)
    display.signal(signal.SIGKILL)
    logger.wait(10), display.wait(10)
    rows_at_kill = len(log_rows(db))
    pending_at_kill = r.xpending(labels, LOGGER_GROUP)["pending"]
    display_pos = group_info(r, frames, DISPLAY_GROUP)["last-delivered-id"].decode()
    # Read by the killed display but not acknowledged: the restarted one must take them back.
    display_held = [p["message_id"] for p in r.xpending_range(frames, DISPLAY_GROUP, min="-", max="+", count=1000)]
    held_frames = sum(isinstance(decode(f[b"d"]), Frame) for i in display_held for _, f in r.xrange(frames, i, i))

    logger = cluster.start("logger-2", "logger", "--ident", "log")
    display = cluster.start("display-2", "display", "--ident", "disp")
    assert producer.wait(60) == 0
    wait_until(lambda: len(log_rows(db)) >= CROPS, 60, f"{CROPS} rows in the log")
    wait_until(lambda: group_info(r, labels, LOGGER_GROUP).get("lag") == 0
               and group_info(r, frames, DISPLAY_GROUP).get("lag") == 0, 30, "consumers to read everything")
    wait_until(lambda: r.xpending(crops, WORKERS_GROUP)["pending"] == 0, 10, "workers to ack everything")
    for p in (worker, logger, display):
        assert p.stop() == 0, p.log()[-2000:]

    rows = log_rows(db)
    figures = stats(r, prefix)
    assert figures[f"published:{crops}"] == CROPS
    assert len(rows) == CROPS and len({row[0] for row in rows}) == CROPS  # nothing missed, nothing twice
    assert r.xpending(labels, LOGGER_GROUP)["pending"] == 0
    assert r.xpending(frames, DISPLAY_GROUP)["pending"] == 0
    second = logger.counters()
    assert second["labels_logged"] == CROPS - rows_at_kill  # it picked up exactly where the first left off
    # The restarted display went on from the group's position: it drew exactly the frames
    # its predecessor held unacknowledged plus those delivered after, not the run from the start.
    expected = held_frames + frames_after(r, frames, display_pos)
    drawn = display.counters()["frames_drawn"]
    assert drawn == expected
    # One finished <camera>-<run>.mp4: the restarted display took over its predecessor's .part.
    [video] = redis_settings.consumer.out_dir.glob("replay-*.mp4")
    assert video_frames(video) == expected
    record(published=CROPS, labels_published=figures[f"published:{labels}"], rows_in_log=len(rows),
           rows_before_kill=rows_at_kill, labels_pending_at_kill=pending_at_kill,
           rows_by_restarted_logger=int(second["labels_logged"]),
           duplicates_ignored=int(second.get("duplicates_ignored", 0)),
           frames_drawn_by_restarted_display=int(drawn), frames_held_by_killed_display=held_frames, frames_published=figures[f"published:{frames}"],
           dead_letters=figures.get("dead_letters", 0))
