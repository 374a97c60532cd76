"""What the dashboard shows, read from Redis: each camera's newest frame with its faces
drawn, recent labels per track for the charts, and the pipeline's health.

It only reads: the newest frame of each camera (XREVRANGE) and the labels stream from a
cursor (XRANGE), so it joins no consumer group and never delays the display or the logger;
any number of dashboards can watch one deployment.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from fer_pipeline.errors import MessageError
from fer_pipeline.health import collect
from fer_pipeline.images import frame_refusal
from fer_pipeline.labels import INDEX
from fer_pipeline.messages import Frame, Label
from fer_pipeline.settings import Settings
from fer_pipeline.transport import Transport

READ_COUNT = 200  # labels entries read per poll (a worker's batch each)
SERIES_POINTS = 600  # points kept per track for the chart
FRAMES_KEPT = 300  # frames per camera whose labels are kept for drawing
POLL_EVERY_S = 0.1


@dataclass
class _Camera:
    labels: OrderedDict[tuple[str, int], list[Label]] = field(default_factory=OrderedDict)  # (run, frame) -> labels
    last: dict[int, Label] = field(default_factory=dict)  # track -> newest label
    series: dict[int, deque] = field(default_factory=dict)  # track -> (t, emotion index, confidence)
    jpeg: tuple[str, bytes, int, int] | None = None  # (entry id, annotated jpeg, frame index, faces drawn)
    run: str | None = None  # the producer run whose tracks are charted


class DashboardState:
    """What the page shows, refreshed from Redis at most every ``POLL_EVERY_S`` (thread-safe).

    Args:
        settings: the pipeline settings (prefix, payload limit).
        transport: an open transport.
        latency: optional prometheus Histogram (label ``camera``) observing capture-to-label seconds.
    """

    def __init__(self, settings: Settings, transport: Transport, latency=None) -> None:
        self.settings = settings
        self.transport = transport
        self.latency = latency
        self.cameras: dict[str, _Camera] = {}
        self._lock = threading.Lock()
        self._cursor: str | None = None
        self._next_poll = 0.0
        self._rate_mark: tuple[float, int] | None = None
        self._rate = 0.0
        self._annotator = None

    # -- labels ------------------------------------------------------------------------------
    def poll(self) -> None:
        """Read the labels published since the last poll."""
        with self._lock:
            now = time.monotonic()
            if now < self._next_poll:
                return
            self._next_poll = now + POLL_EVERY_S
            stream = self.transport.keys.labels
            if self._cursor is None:
                # Start with the recent past, so charts are not empty on a quiet pipeline.
                entries = self.transport.entries(stream, count=READ_COUNT, newest=True)
            else:
                entries = self.transport.entries(stream, start=f"({self._cursor}", count=READ_COUNT)
            if not entries and self._cursor is None:
                self._cursor = "0-0"
            for e in entries:
                self._cursor = e.id
                if e.payload is None:
                    continue
                try:
                    label = e.message(self.settings.streams.max_payload_bytes, expect=Label)
                except MessageError:
                    continue  # the consumers dead-letter bad ones; the dashboard just skips them
                self._add(label)

    def _add(self, label: Label) -> None:
        cam = self.cameras.setdefault(label.camera_id, _Camera())
        if cam.run != label.run_id:
            # A restarted producer numbers its tracks from 0 again: new people, new charts.
            cam.run = label.run_id
            cam.series.clear()
            cam.last.clear()
        key = (label.run_id, label.frame_index)
        cam.labels.setdefault(key, []).append(label)
        while len(cam.labels) > FRAMES_KEPT:
            cam.labels.popitem(last=False)
        cam.last[label.track_id] = label
        series = cam.series.setdefault(label.track_id, deque(maxlen=SERIES_POINTS))
        series.append((round(label.captured_at, 3), INDEX[label.emotion], round(label.confidence, 3)))
        if self.latency is not None:
            self.latency.labels(label.camera_id).observe(max(0.0, label.labelled_at - label.captured_at))

    # -- what the endpoints return -------------------------------------------------------------
    def camera_ids(self) -> list[str]:
        return self.transport.camera_ids()

    def frame(self, camera_id: str) -> tuple[bytes, int, int] | None:
        """The newest frame of a camera with its faces drawn: (JPEG, frame index, faces drawn)."""
        self.poll()
        for entry in reversed(self.transport.entries(self.transport.keys.frames(camera_id), count=5, newest=True)):
            entry_id = entry.id
            with self._lock:
                cam = self.cameras.setdefault(camera_id, _Camera())
                if cam.jpeg is not None and cam.jpeg[0] == entry_id:
                    return cam.jpeg[1:]
            try:
                msg = entry.message(self.settings.streams.max_payload_bytes)
            except MessageError:
                continue
            if not isinstance(msg, Frame):
                continue  # an end-of-stream marker
            if frame_refusal(msg.jpeg, self.settings.consumer.max_frame_pixels) is not None:
                continue  # what the display would dead-letter undecoded: skipped, never decoded
            jpeg, drawn = self._annotate(msg)
            with self._lock:
                cam.jpeg = (entry_id, jpeg, msg.frame_index, drawn)
            return jpeg, msg.frame_index, drawn
        return None

    def _annotate(self, frame: Frame) -> tuple[bytes, int]:
        import cv2
        import numpy as np

        from fer_pipeline.consumers.joiner import faces_to_draw
        from fer_pipeline.consumers.overlay import EmotionAnnotator

        if self._annotator is None:
            self._annotator = EmotionAnnotator()
        with self._lock:
            cam = self.cameras.get(frame.camera_id, _Camera())
            fresh = list(cam.labels.get((frame.run_id, frame.frame_index), []))
            faces, _ = faces_to_draw(frame, fresh, cam.last)
        image = cv2.imdecode(np.frombuffer(frame.jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            return frame.jpeg, 0
        self._annotator.annotate(image, faces, scale=frame.scale)
        ok, out = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
        return (out.tobytes() if ok else frame.jpeg), len(faces)

    def tracks(self, camera_id: str, seconds: float = 30.0, max_tracks: int = 8) -> dict[str, list]:
        """Per track (the ``max_tracks`` seen most recently), the points (time, emotion index,
        confidence) of the last ``seconds`` before the camera's newest label."""
        self.poll()
        with self._lock:
            cam = self.cameras.get(camera_id)
            if cam is None:
                return {}
            newest = max((s[-1][0] for s in cam.series.values() if s), default=0.0)
            recent = sorted((s[-1][0], t) for t, s in cam.series.items() if s and s[-1][0] >= newest - seconds)
            # The most recently seen tracks only, in track order: a page, not a log.
            shown = sorted(t for _, t in recent[-max_tracks:])
            return {str(t): [p for p in cam.series[t] if p[0] >= newest - seconds] for t in shown}

    def status(self) -> dict:
        """The health snapshot, with labels/s measured between calls."""
        st = collect(self.transport, rate_interval_s=0)
        published = st.published.get("labels", 0)
        now = time.monotonic()
        with self._lock:
            if self._rate_mark is not None and now - self._rate_mark[0] >= 0.5:
                self._rate = (published - self._rate_mark[1]) / (now - self._rate_mark[0])
                self._rate_mark = (now, published)
            elif self._rate_mark is None:
                self._rate_mark = (now, published)
            st.labels_per_s = round(max(self._rate, 0.0), 1)
        return st.to_dict()
