"""One producer process, three cameras: one stalls mid-stream (a video arriving through a
pipe whose writer stops writing: the capture thread blocks inside OpenCV's read), one ends
early, one goes on. The others are unaffected: every crop of theirs is labelled, on time."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import cv2
import pytest

from fer_pipeline.streams import LOGGER_GROUP
from tests.faults.conftest import client_for, group_info, log_rows, replay_spec, stats, wait_alive, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(150)]

STEADY = 300  # crops of the camera that goes on (60 fps, 2 faces: 2.5 s)
SHORT = 20  # crops of the camera that ends early


def write_avi(src: Path, dst: Path, frames: int) -> bytes:
    """The first ``frames`` frames of ``src`` as MJPG-in-AVI, which FFmpeg reads from a pipe."""
    cap = cv2.VideoCapture(str(src))
    writer = None
    for _ in range(frames):
        ok, image = cap.read()
        assert ok
        if writer is None:
            writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"MJPG"), 30, (image.shape[1], image.shape[0]))
        writer.write(image)
    writer.release()
    cap.release()
    return dst.read_bytes()


class StallingPipe:
    """Feeds a video into a FIFO: the first part, then nothing until ``resume()``, then the rest."""

    def __init__(self, path: Path, data: bytes, first: float) -> None:
        os.mkfifo(path)
        self.path, self.data, self.split = path, data, int(len(data) * first)
        self.gate = threading.Event()
        self.thread = threading.Thread(target=self._feed, daemon=True)
        self.thread.start()

    def _feed(self) -> None:
        try:
            with self.path.open("wb") as f:  # blocks until the producer opens the video
                f.write(self.data[:self.split])
                f.flush()
                self.gate.wait()
                f.write(self.data[self.split:])
        except BrokenPipeError:  # the reader went away (test failed early)
            pass

    def resume(self) -> None:
        self.gate.set()

    def close(self) -> None:
        self.gate.set()
        if self.thread.is_alive():  # nobody ever opened the pipe: open it ourselves to unblock the writer
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
                os.close(fd)
            except OSError:
                pass
        self.thread.join(5)


def test_a_stalled_and_an_ended_camera_do_not_affect_the_others(cluster, redis_settings, data_dir, video_dir,
                                                                tmp_path, record):
    prefix = redis_settings.redis.prefix
    r = client_for(redis_settings)
    db = redis_settings.consumer.db
    data = write_avi(video_dir / "woman2.mp4", tmp_path / "woman.avi", frames=90)
    pipe = StallingPipe(tmp_path / "stall.avi", data, first=0.3)
    try:
        logger = cluster.start("logger", "logger", "--ident", "log")
        worker = cluster.start("worker", "worker", "--ident", "w")
        wait_alive(r, prefix, {"logger:log", "worker:w"}, [logger, worker])
        producer = cluster.start(
            "producer", "producer", "--ident", "p", "--no-frames",
            "--source", str(pipe.path), "--source", replay_spec(data_dir, fps=60, limit=STEADY),
            "--source", replay_spec(data_dir, fps=60, limit=SHORT),
            "--camera-id", "stall", "--camera-id", "steady", "--camera-id", "short")

        def per_camera():
            counts: dict[str, int] = {}
            for _, camera, _ in log_rows(db):
                counts[camera] = counts.get(camera, 0) + 1
            return counts

        wait_until(lambda: per_camera().get("steady") == STEADY and per_camera().get("short") == SHORT, 60,
                   "every crop of the healthy cameras in the log")
        stalled_rows = per_camera().get("stall", 0)
        # The stalled camera holds its thread, not the process: still running, the others done.
        def beat():
            return {k.decode(): v.decode() for k, v in r.hgetall(f"{prefix}:health:producer:p").items()}

        wait_until(lambda: beat().get("cameras_running") == "1", 10, "the producer to report one camera running")
        assert producer.alive and beat()["cameras"] == "3"
        with sqlite3.connect(db) as con:
            first, last = con.execute("SELECT MIN(captured_at), MAX(captured_at) FROM labels WHERE camera_id = ?",
                                      ("steady",)).fetchone()
        assert last - first < 2 * (STEADY / 2 / 60) + 1.0  # captured at its pace (2.5 s), not held up

        pipe.resume()  # the rest of the video arrives, then end of file: the last camera ends
        assert producer.wait(60) == 0, producer.log()[-3000:]
        published = stats(r, prefix)[f"published:{prefix}:crops"]
        wait_until(lambda: len(log_rows(db)) == published, 30, "every published crop in the log")
        wait_until(lambda: group_info(r, f"{prefix}:labels", LOGGER_GROUP).get("lag") == 0, 10, "logger caught up")
        assert worker.stop() == 0 and logger.stop() == 0
        counts = per_camera()
        assert counts["steady"] == STEADY and counts["short"] == SHORT
        assert counts["stall"] == published - STEADY - SHORT > stalled_rows  # it went on after the stall
        prod = producer.counters()
        assert prod["frames"] == 90 + STEADY // 2 + SHORT // 2 and prod["crops_dropped"] == 0
        record(published=published, steady_rows=counts["steady"], short_rows=counts["short"],
               stalled_camera_rows_during_stall=stalled_rows, stalled_camera_rows_total=counts["stall"],
               steady_capture_span_s=round(last - first, 2), rows_in_log=len(log_rows(db)),
               dead_letters=stats(r, prefix).get("dead_letters", 0))
    finally:
        pipe.close()
