"""What the dashboard shows, read from Redis: each camera's newest frame with its faces
drawn, the probabilities of each live track for the charts, the tracks that ended, whether
each camera is still live, and the pipeline's health.

It only reads: the newest frames of each camera (XREVRANGE) and the labels stream from a
cursor (XRANGE), so it joins no consumer group and never delays the display or the logger;
any number of dashboards can watch one deployment.

Two clocks, on purpose. Whether a camera is *live* is measured on Redis's clock (its TIME
against the stream entry ids, which Redis stamps), so a pipeline that stopped is seen as
stopped whatever the machines' clocks say. Whether a *track* ended is measured on the
camera's own clock (the newest capture time seen from it): when the whole pipeline stops,
the charts freeze as they were instead of emptying, and the page says it stopped.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field

from fer_pipeline.errors import MessageError
from fer_pipeline.health import collect
from fer_pipeline.images import frame_refusal
from fer_pipeline.labels import EMOTIONS
from fer_pipeline.messages import EndOfStream, Frame, Label
from fer_pipeline.settings import Settings
from fer_pipeline.streams import entry_order
from fer_pipeline.transport import Transport

READ_COUNT = 200  # labels entries read per poll (a worker's batch each)
SERIES_POINTS = 1800  # points kept per live track: a minute at 30 labels/s
CHART_POINTS = 300  # points per track sent to the page (thinned evenly): a chart is ~300 px wide
FRAMES_KEPT = 300  # frames per camera whose labels are kept for drawing
RECENT_FRAMES = 30  # frames per camera kept decoded while their labels come in (a second at 30 fps)
FIRST_LOOK = 5  # frames read when the dashboard first looks at a camera
FRAMES_READ = 60  # frames read per look; more waiting means the dashboard fell behind: it skips to now
ENDED_KEPT = 20  # ended tracks remembered per camera (a summary each; their series are dropped)
POLL_EVERY_S = 0.1
# A track with no label for this long (camera clock) has ended: the person left, or a looping
# clip came round again and the tracker gave them a new id. Its chart goes to the ended list.
TRACK_END_S = 5.0
# A camera with neither a new frame nor a new label for this long (Redis clock) is not live.
STALE_AFTER_S = 5.0


def _entry_ms(entry_id: str) -> int:
    return entry_order(entry_id)[0]


@dataclass
class _Track:
    started: float  # capture time of its first label
    points: deque = field(default_factory=lambda: deque(maxlen=SERIES_POINTS))  # (t, probabilities)
    emotions: Counter = field(default_factory=Counter)  # labels per emotion, for the ended summary

    @property
    def last(self) -> float:
        return self.points[-1][0]

    def summary(self, track_id: int) -> dict:
        emotion, n = self.emotions.most_common(1)[0]
        total = sum(self.emotions.values())
        return {"track": track_id, "started": self.started, "ended": self.last, "labels": total,
                "emotion": emotion, "share": round(n / total, 2)}


@dataclass
class _Camera:
    labels: OrderedDict[tuple[str, int], list[Label]] = field(default_factory=OrderedDict)  # (run, frame) -> labels
    last: dict[int, Label] = field(default_factory=dict)  # track -> newest label
    tracks: dict[int, _Track] = field(default_factory=dict)  # the live tracks
    ended: deque = field(default_factory=lambda: deque(maxlen=ENDED_KEPT))  # summaries, oldest first
    clock: float = 0.0  # the newest capture time seen from this camera (frames and labels)
    # (entry id, annotated jpeg, frame index, faces drawn, of which carried over)
    jpeg: tuple[str, bytes, int, int, int] | None = None
    head: str | None = None  # the newest entry id of its frames stream
    read_id: str | None = None  # the last entry of its frames stream read
    recent: deque = field(default_factory=lambda: deque(maxlen=RECENT_FRAMES))  # (entry id, Frame, seen at)
    ended_stream: bool = False  # that newest entry is an end-of-stream marker (a file finished)
    label_ms: int = 0  # Redis time (ms) of the newest labels entry holding one of its labels
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
                self._add(label, _entry_ms(e.id))

    def _add(self, label: Label, entry_ms: int) -> None:
        cam = self.cameras.setdefault(label.camera_id, _Camera())
        cam.label_ms = max(cam.label_ms, entry_ms)
        if cam.run != label.run_id:
            # A restarted producer numbers its tracks from 0 again: new people, new charts.
            cam.run = label.run_id
            for t, tr in sorted(cam.tracks.items(), key=lambda kv: kv[1].last):
                cam.ended.append(tr.summary(t))
            cam.tracks.clear()
            cam.last.clear()
        key = (label.run_id, label.frame_index)
        cam.labels.setdefault(key, []).append(label)
        while len(cam.labels) > FRAMES_KEPT:
            cam.labels.popitem(last=False)
        cam.last[label.track_id] = label
        cam.clock = max(cam.clock, label.captured_at)
        track = cam.tracks.get(label.track_id)
        if track is None:
            track = cam.tracks[label.track_id] = _Track(started=label.captured_at)
        track.points.append((round(label.captured_at, 3), tuple(round(p, 3) for p in label.probabilities)))
        track.emotions[label.emotion] += 1
        if self.latency is not None:
            self.latency.labels(label.camera_id).observe(max(0.0, label.labelled_at - label.captured_at))
        if len(track.points) == 1:
            self._end_tracks(cam)  # a new person: a good moment to retire the ones who left

    @staticmethod
    def _end_tracks(cam: _Camera) -> None:
        """Move the tracks silent for ``TRACK_END_S`` (camera clock) to the ended list: their
        series go, so a clip looping for days keeps a bounded state and a page of live charts."""
        gone = sorted((tr.last, t) for t, tr in cam.tracks.items() if tr.last < cam.clock - TRACK_END_S)
        for _, t in gone:
            cam.ended.append(cam.tracks.pop(t).summary(t))
            cam.last.pop(t, None)

    # -- frames ------------------------------------------------------------------------------
    def frame(self, camera_id: str) -> tuple[bytes, int, int, int] | None:
        """The newest frame of a camera to show, with its faces drawn: (JPEG, frame index, faces
        drawn, of which carried over from an earlier label), or None when it has none to show."""
        got = self.frame_entry(camera_id)
        return None if got is None else got[1:]

    def frame_entry(self, camera_id: str) -> tuple[str, bytes, int, int, int] | None:
        """``frame`` with the frame's entry id first (a video stream sends each frame once).

        Labels come after their frame (a worker's round trip): the frame shown is the newest
        whose labels are all in, or one that waited ``label_wait_ms`` for them, as the display
        does; only then are missing faces drawn with their previous label, marked ``~``.
        """
        self.poll()
        self._read_frames(camera_id)
        wait_s = self.settings.consumer.label_wait_ms / 1000
        now = time.monotonic()
        with self._lock:
            cam = self.cameras[camera_id]
            shown = cam.jpeg[0] if cam.jpeg is not None else None
            pick = None
            for entry_id, frame, seen in reversed(cam.recent):
                if shown is not None and entry_order(entry_id) <= entry_order(shown):
                    break  # never back in time
                labelled = len(cam.labels.get((frame.run_id, frame.frame_index), ()))
                if labelled >= frame.faces or now - seen >= wait_s or shown is None:
                    pick = entry_id, frame
                    break
            if pick is None:
                return cam.jpeg
        jpeg, drawn, stale = self._annotate(pick[1])
        with self._lock:
            if cam.jpeg is None or entry_order(pick[0]) > entry_order(cam.jpeg[0]):
                cam.jpeg = (pick[0], jpeg, pick[1].frame_index, drawn, stale)
            return cam.jpeg

    def _read_frames(self, camera_id: str) -> None:
        """Read the camera's frames published since the last look (each frame is read once)."""
        stream = self.transport.keys.frames(camera_id)
        with self._lock:
            cam = self.cameras.setdefault(camera_id, _Camera())
            after = cam.read_id
        entries = [] if after is None else self.transport.entries(stream, start=f"({after}", count=FRAMES_READ)
        if after is None or len(entries) == FRAMES_READ:
            entries = self.transport.entries(stream, count=FIRST_LOOK, newest=True)  # first look, or far behind
        now = time.monotonic()
        decoded = []
        for entry in entries:
            try:
                msg = entry.message(self.settings.streams.max_payload_bytes)
            except MessageError:
                msg = None  # skipped, as the display would dead-letter it
            if isinstance(msg, Frame) and frame_refusal(msg.jpeg, self.settings.consumer.max_frame_pixels) is not None:
                msg = None  # what the display would dead-letter undecoded: skipped, never decoded
            decoded.append((entry.id, msg))
        with self._lock:
            for entry_id, msg in decoded:
                if cam.read_id is not None and entry_order(entry_id) <= entry_order(cam.read_id):
                    continue  # another request read it meanwhile
                cam.read_id = cam.head = entry_id
                if isinstance(msg, EndOfStream):
                    cam.ended_stream = True  # a file finished; a later frame (a restart) clears it
                elif isinstance(msg, Frame):
                    cam.ended_stream = False
                    cam.clock = max(cam.clock, msg.captured_at)
                    cam.recent.append((entry_id, msg, now))

    def _annotate(self, frame: Frame) -> tuple[bytes, int, int]:
        import cv2
        import numpy as np

        from fer_pipeline.consumers.joiner import faces_to_draw
        from fer_pipeline.consumers.overlay import EmotionAnnotator

        if self._annotator is None:
            self._annotator = EmotionAnnotator()
        with self._lock:
            cam = self.cameras.get(frame.camera_id, _Camera())
            fresh = list(cam.labels.get((frame.run_id, frame.frame_index), []))
            faces, stale = faces_to_draw(frame, fresh, cam.last)
        image = cv2.imdecode(np.frombuffer(frame.jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            return frame.jpeg, 0, 0
        self._annotator.annotate(image, faces, scale=frame.scale)
        ok, out = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
        return (out.tobytes() if ok else frame.jpeg), len(faces), stale

    # -- what the endpoints return -------------------------------------------------------------
    def camera_ids(self) -> list[str]:
        return self.transport.camera_ids()

    def tracks(self, camera_id: str, seconds: float = 60.0, max_tracks: int = 8) -> dict:
        """The charts of a camera: per live track (the ``max_tracks`` seen most recently), its
        label times and one probability column per emotion over the last ``seconds`` of the
        camera's clock; and the tracks that ended, newest first."""
        self.poll()
        with self._lock:
            cam = self.cameras.get(camera_id)
            if cam is None:
                return {"now": None, "tracks": [], "ended": []}
            self._end_tracks(cam)
            since = cam.clock - seconds
            recent = sorted((tr.last, t) for t, tr in cam.tracks.items() if tr.last >= since)
            shown = []
            # The most recently seen tracks only, in track order: a page, not a log.
            for t in sorted(t for _, t in recent[-max_tracks:]):
                tr = cam.tracks[t]
                points = [p for p in tr.points if p[0] >= since]
                step = math.ceil(len(points) / CHART_POINTS)
                if step > 1:  # thinned evenly, keeping the newest point
                    points = points[::-1][::step][::-1]
                newest = cam.last[t]
                shown.append({"track": t, "started": tr.started, "last": tr.last,
                              "emotion": newest.emotion, "confidence": round(newest.confidence, 3),
                              "t": [p[0] for p in points],
                              "p": [[p[1][k] for p in points] for k in range(len(EMOTIONS))]})
            return {"now": cam.clock, "tracks": shown, "ended": list(reversed(cam.ended))}

    def liveness(self, now_ms: int) -> dict[str, dict]:
        """Per camera: seconds since its newest frame and label (Redis clock), whether it is live,
        whether its source ended, and what its newest frame shows."""
        out = {}
        for camera_id in self.camera_ids():
            got = self.frame_entry(camera_id)
            with self._lock:
                cam = self.cameras.setdefault(camera_id, _Camera())
                frame_age = (now_ms - _entry_ms(cam.head)) / 1000 if cam.head else None
                label_age = (now_ms - cam.label_ms) / 1000 if cam.label_ms else None
                ages = [a for a in (frame_age, label_age) if a is not None]
                out[camera_id] = {
                    "frame_age_s": None if frame_age is None else round(max(frame_age, 0.0), 1),
                    "label_age_s": None if label_age is None else round(max(label_age, 0.0), 1),
                    "live": bool(ages) and min(ages) <= STALE_AFTER_S and not cam.ended_stream,
                    "ended": cam.ended_stream,
                    "frame_index": None if got is None else got[2],
                    "faces": None if got is None else got[3],
                    "carried_over": None if got is None else got[4],
                }
        return out

    def status(self) -> dict:
        """The health snapshot, with labels/s measured between calls and each camera's liveness."""
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
        cameras = self.liveness(self.transport.server_time_ms())
        return {**st.to_dict(), "cameras": cameras, "live": any(c["live"] for c in cameras.values()),
                "stale_after_s": STALE_AFTER_S}
