"""The display consumer: joins labels to frames and draws them into windows or MP4 files.

Frames come per camera (``frames:<camera>``), labels from the stream all cameras share;
both are read with the display consumer group in one blocking XREADGROUP. A frame waits
in its camera's queue until all of its ``faces`` labels arrived or ``label_wait_ms``
passed, then it is drawn (missing faces filled with the last known label of each recent
track, drawn as stale). Queues keep per-camera frame order and are capped, so a camera
whose labels stop coming costs a bounded delay and bounded memory, never a stall.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fer_pipeline.consumers.joiner import DEFAULT_FPS, faces_to_draw, frames_in_window
from fer_pipeline.consumers.overlay import EmotionAnnotator
from fer_pipeline.errors import ConfigError, MessageError
from fer_pipeline.images import frame_refusal
from fer_pipeline.messages import EndOfStream, Frame, Label
from fer_pipeline.service import Service
from fer_pipeline.settings import Settings
from fer_pipeline.transport import Entry, Transport

READ_COUNT = 64            # entries per stream per read (a labels entry is a worker's batch)
DISCOVER_EVERY_S = 1.0     # re-read the cameras set this often
BUFFER_S = 3.0             # frames buffered per camera waiting for labels, in seconds of video
MIN_BUFFER = 30
MAX_LABEL_FRAMES = 600     # buffered not-yet-framed label sets per camera run
MAX_RUNS = 16              # camera runs remembered (label buffers, last drawn frame)
MAX_TRACKS = 256           # last-known labels kept per camera
# MPEG-4 (mp4v) refuses a side of 8192 px or more and a time base beyond 1/65535 s: a video
# file is fitted into these (a 596x8400 PNG from an image folder is legitimate input).
MAX_VIDEO_SIDE = 4096
MIN_VIDEO_FPS, MAX_VIDEO_FPS = 1.0, 1000.0


def screen_available() -> bool:
    """Whether a window can be shown: always on macOS/Windows, with DISPLAY/WAYLAND_DISPLAY elsewhere."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


@dataclass
class _Queued:
    entry: Entry
    msg: Frame | EndOfStream
    deadline: float  # monotonic time after which the frame is drawn with what it has


class _VideoSink:
    """One MP4 per camera (mp4v), sized by its first frame; reopened under a new name after an end."""

    def __init__(self, out_dir: Path, fps_override: float) -> None:
        self.out_dir = out_dir
        self.fps_override = fps_override
        self.paths: dict[str, Path] = {}
        self._writers: dict[str, tuple[cv2.VideoWriter, tuple[int, int]]] = {}
        self._count: dict[str, int] = {}

    def write(self, camera_id: str, image: np.ndarray, fps: float) -> None:
        if camera_id not in self._writers:
            n = self._count.get(camera_id, 0)
            name = _safe_name(camera_id) + (f"-{n + 1}" if n else "") + ".mp4"
            path = self.out_dir / name
            size = _video_size(image.shape[1], image.shape[0])
            rate = _video_rate(self.fps_override or fps or DEFAULT_FPS)
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), rate, size)
            if not writer.isOpened():
                raise ConfigError(f"cannot write video {path} (mp4v, {size[0]}x{size[1]})")
            self._writers[camera_id] = (writer, size)
            self._count[camera_id] = n + 1
            self.paths[camera_id] = path
        writer, size = self._writers[camera_id]
        if (image.shape[1], image.shape[0]) != size:  # a camera may change resolution mid-run
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        writer.write(image)

    def close(self, camera_id: str) -> bool:
        item = self._writers.pop(camera_id, None)
        if item is None:
            return False
        item[0].release()
        return True

    def close_all(self) -> int:
        return sum(self.close(c) for c in list(self._writers))

    def poll(self) -> bool:
        return False


class _WindowSink:
    """One window per camera; q or Esc in any of them asks the service to stop."""

    def __init__(self) -> None:
        self._open: set[str] = set()

    def write(self, camera_id: str, image: np.ndarray, fps: float) -> None:
        cv2.imshow(_title(camera_id), image)
        self._open.add(camera_id)

    def close(self, camera_id: str) -> bool:
        if camera_id in self._open:
            self._open.discard(camera_id)
            cv2.destroyWindow(_title(camera_id))
        return False

    def close_all(self) -> int:
        if self._open:
            cv2.destroyAllWindows()
            self._open.clear()
        return 0

    def poll(self) -> bool:
        """Pump window events; True when the user asked to quit."""
        if not self._open:
            return False
        return (cv2.waitKey(1) & 0xFF) in (ord("q"), 27)


class DisplayService(Service):
    """Role "display": frames + labels -> annotated windows or per-camera MP4 files.

    Args:
        settings: the pipeline settings (``consumer.window``, ``consumer.out_dir``,
            ``consumer.label_wait_ms``, ``consumer.fps``, ``streams``).
        transport: an open transport.
        ident: consumer name in the display group (``consumer.display_group``); defaults to host-pid.
        annotator: how faces are drawn; defaults to ``EmotionAnnotator()``.

    Raises:
        ConfigError: the output folder cannot be created (file sink).
    """

    role = "display"

    def __init__(self, settings: Settings, transport: Transport, ident: str | None = None,
                 annotator: EmotionAnnotator | None = None) -> None:
        super().__init__(settings, transport, ident)
        self.group = settings.consumer.display_group
        self.annotator = annotator or EmotionAnnotator()
        mode = settings.consumer.window
        self.windowed = mode == "on" or (mode == "auto" and screen_available())
        self._video: _VideoSink | None = None
        self._sink: _VideoSink | _WindowSink = _WindowSink() if self.windowed else self._video_sink()
        self._wait_s = settings.consumer.label_wait_ms / 1000.0
        self._frame_streams: dict[str, str] = {}  # frames stream -> camera id
        self._next_discovery = 0.0
        self._queues: dict[str, deque[_Queued]] = {}
        # (camera, run) -> frame index -> face index -> label, for frames not yet drawn.
        self._labels: OrderedDict[tuple[str, str], dict[int, dict[int, Label]]] = OrderedDict()
        self._drawn: OrderedDict[tuple[str, str], int] = OrderedDict()  # last frame drawn per run
        self._last: dict[str, dict[int, Label]] = {}  # camera -> track -> newest label

    # -- service hooks -------------------------------------------------------------------
    def setup(self) -> None:
        self.transport.ensure_group(self.transport.keys.labels, self.group, start="0")
        self._discover()
        self._resume()

    def step(self) -> None:
        now = time.monotonic()
        if now >= self._next_discovery:
            self._discover()
        streams = [self.transport.keys.labels, *self._frame_streams]
        entries = self.transport.read_group(streams, self.group, self.ident, count=READ_COUNT,
                                            block_ms=self._block_ms(now))
        self._ingest(entries)
        self._drain(force=False)
        if self._sink.poll():
            self.log.info("quit key pressed: stopping")
            self.request_stop()

    def finish(self) -> None:
        self._drain(force=True)
        self.counters["videos_written"] += self._sink.close_all()

    def info(self) -> dict[str, str | int | float]:
        return {**self.counters, "cameras": len(self._frame_streams),
                "buffered": sum(len(q) for q in self._queues.values())}

    def outputs(self) -> dict[str, Path]:
        """Camera id -> its (latest) MP4 path; empty when drawing to windows."""
        return dict(self._video.paths) if self._video is not None else {}

    # -- reading ---------------------------------------------------------------------------
    def _discover(self) -> None:
        self._next_discovery = time.monotonic() + DISCOVER_EVERY_S
        for camera_id in self.transport.camera_ids():
            stream = self.transport.keys.frames(camera_id)
            if stream not in self._frame_streams:
                self.transport.ensure_group(stream, self.group, start="0")
                self._frame_streams[stream] = camera_id
                self.log.info("display: camera %s", camera_id)

    def _resume(self) -> None:
        """Take back what a previous process of this name read and never acked (killed
        between its read and its ack): without this those entries stay pending forever and
        their frames are never drawn."""
        streams = [self.transport.keys.labels, *self._frame_streams]
        while True:
            entries = self.transport.read_group(streams, self.group, self.ident, count=READ_COUNT, block_ms=None,
                                                own_pending=True)
            if not entries:
                return
            self.counters["entries_resumed"] += len(entries)
            self._ingest(entries)  # acks them

    def _block_ms(self, now: float) -> int | None:
        """Block no longer than the earliest queued frame's deadline (None: do not block)."""
        block = self.settings.streams.block_ms / 1000.0
        for q in self._queues.values():
            if q:
                block = min(block, q[0].deadline - now)
        return None if block <= 0.001 else int(block * 1000)

    def _ingest(self, entries: list[Entry]) -> None:
        labels_stream = self.transport.keys.labels
        acks: dict[str, list[str]] = {}
        now = time.monotonic()
        for e in entries:
            acks.setdefault(e.stream, []).append(e.id)
            if e.payload is None:
                continue
            try:
                msg = e.message(self.settings.streams.max_payload_bytes,
                                expect=Label if e.stream == labels_stream else None)
                if e.stream != labels_stream and not isinstance(msg, (Frame, EndOfStream)):
                    raise MessageError(f"expected a Frame or EndOfStream message, got kind {msg.kind!r}")
            except MessageError as err:
                self.transport.dead_letter(source=e.stream, entry_id=e.ref, payload=e.payload, reason=err.reason,
                                           role=self.role)
                self.counters["dead_letters"] += 1
                continue
            if isinstance(msg, Label):
                self._on_label(msg)
            else:
                self._on_frame(_Queued(e, msg, now + self._wait_s))
        # Acked on receipt: the display is best effort, a crash may lose what it buffered.
        for stream, ids in acks.items():
            self.transport.ack(stream, self.group, ids)

    def _on_label(self, label: Label) -> None:
        tracks = self._last.setdefault(label.camera_id, {})
        prev = tracks.get(label.track_id)
        if prev is None or prev.run_id != label.run_id or prev.frame_index <= label.frame_index:
            tracks[label.track_id] = label
            if len(tracks) > MAX_TRACKS:  # e.g. a camera whose frames never come: forget the oldest
                del tracks[min(tracks, key=lambda t: tracks[t].labelled_at)]
        key = (label.camera_id, label.run_id)
        drawn = self._drawn.get(key)
        if drawn is not None and label.frame_index <= drawn:
            self.counters["labels_late"] += 1
            return
        frames = self._labels.get(key)
        if frames is None:
            frames = self._labels[key] = {}
            if len(self._labels) > MAX_RUNS:
                _, old = self._labels.popitem(last=False)
                self.counters["labels_dropped"] += sum(len(f) for f in old.values())
        frames.setdefault(label.frame_index, {})[label.face_index] = label
        if len(frames) > MAX_LABEL_FRAMES:  # labels whose frames never come (frames off or trimmed)
            self.counters["labels_dropped"] += len(frames.pop(min(frames)))

    def _on_frame(self, item: _Queued) -> None:
        q = self._queues.setdefault(item.msg.camera_id, deque())
        q.append(item)
        fps = item.msg.fps if isinstance(item.msg, Frame) and item.msg.fps > 0 else DEFAULT_FPS
        cap = max(MIN_BUFFER, int(fps * BUFFER_S))
        while len(q) > cap:  # labels far behind: draw the oldest now rather than grow
            self.counters["frames_forced"] += 1
            self._emit(q.popleft())

    # -- drawing ---------------------------------------------------------------------------
    def _drain(self, *, force: bool) -> None:
        now = time.monotonic()
        for q in self._queues.values():
            while q:
                head = q[0]
                if not force and isinstance(head.msg, Frame) and not self._ready(head, now):
                    break
                self._emit(q.popleft())

    def _ready(self, item: _Queued, now: float) -> bool:
        frame = item.msg
        if frame.faces == 0 or now >= item.deadline:
            return True
        got = self._labels.get((frame.camera_id, frame.run_id), {}).get(frame.frame_index, {})
        return len(got) >= frame.faces

    def _emit(self, item: _Queued) -> None:
        if isinstance(item.msg, EndOfStream):
            self._end(item.msg)
        else:
            self._draw(item)

    def _end(self, eos: EndOfStream) -> None:
        if self._sink.close(eos.camera_id):
            self.counters["videos_written"] += 1
            self.log.info("camera %s ended after %d frames: %s", eos.camera_id, eos.frames,
                          self.outputs().get(eos.camera_id))
        self._last.pop(eos.camera_id, None)
        self._labels.pop((eos.camera_id, eos.run_id), None)

    def _draw(self, item: _Queued) -> None:
        frame: Frame = item.msg
        key = (frame.camera_id, frame.run_id)
        buffered = self._labels.get(key, {})
        fresh = buffered.pop(frame.frame_index, {})
        for idx in [i for i in buffered if i < frame.frame_index]:  # their frames were never seen
            self.counters["labels_dropped"] += len(buffered.pop(idx))
        self._drawn[key] = frame.frame_index
        self._drawn.move_to_end(key)
        if len(self._drawn) > MAX_RUNS:
            self._drawn.popitem(last=False)
        self._forget_tracks(frame)
        faces, stale = faces_to_draw(frame, list(fresh.values()), self._last.get(frame.camera_id, {}))
        self.counters["labels_joined"] += len(fresh)
        if frame.faces > len(fresh):
            self.counters["frames_incomplete"] += 1
        self.counters["labels_stale_drawn"] += stale
        image = self._decode_jpeg(item)
        if image is None:
            return
        self.annotator.annotate(image, faces, scale=frame.scale)
        self._write(frame.camera_id, image, frame.fps)
        self.counters["frames_drawn"] += 1

    def _decode_jpeg(self, item: _Queued) -> np.ndarray | None:
        """The frame's image, or None after dead-lettering it: the size comes from the header
        first, so a few bytes declaring a huge image never reach the decoder."""
        data = item.msg.jpeg
        image = None
        reason = frame_refusal(data, self.settings.consumer.max_frame_pixels)
        if reason is None:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            reason = "frame jpeg cannot be decoded"
        if image is None:
            self.transport.dead_letter(source=item.entry.stream, entry_id=item.entry.id, payload=item.entry.payload,
                                       reason=reason, role=self.role)
            self.counters["dead_letters"] += 1
        return image

    def _forget_tracks(self, frame: Frame) -> None:
        """Drop last-known labels of tracks long gone (or of an older run) of this camera."""
        tracks = self._last.get(frame.camera_id)
        if not tracks:
            return
        horizon = frame.frame_index - 10 * frames_in_window(frame)
        for track_id in [t for t, lab in tracks.items() if lab.run_id != frame.run_id or lab.frame_index < horizon]:
            del tracks[track_id]

    def _write(self, camera_id: str, image: np.ndarray, fps: float) -> None:
        try:
            self._sink.write(camera_id, image, fps)
        except cv2.error as e:
            if not self.windowed:
                raise
            # A headless OpenCV build (or no usable screen) despite the setting: keep the
            # output rather than fail, in files.
            self.log.warning("cannot open a window (%s); writing MP4 files to %s instead",
                             str(e).strip().splitlines()[-1][:120], self.settings.consumer.out_dir)
            self.windowed = False
            self._sink = self._video_sink()
            self._sink.write(camera_id, image, fps)

    def _video_sink(self) -> _VideoSink:
        out = self.settings.consumer.out_dir
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create the output folder {out}: {e.strerror or e}") from e
        self._video = _VideoSink(out, self.settings.consumer.fps)
        return self._video


def _video_rate(fps: float) -> float:
    """The rate a video file is written at: within what MPEG-4 takes, and rounded so that
    the time base's denominator (the rate's numerator as a fraction) stays under 65536
    (530.416 fps would need 66302; 530.42 needs 26521)."""
    fps = min(max(fps, MIN_VIDEO_FPS), MAX_VIDEO_FPS)
    return round(fps, 2) if fps < 600 else float(round(fps))


def _video_size(width: int, height: int) -> tuple[int, int]:
    """The frame size a camera's video is written at: the first frame's, scaled to fit
    ``MAX_VIDEO_SIDE`` (aspect kept, at least 2 px a side)."""
    scale = min(1.0, MAX_VIDEO_SIDE / max(width, height))
    return max(2, round(width * scale)), max(2, round(height * scale))


def _safe_name(camera_id: str) -> str:
    """A file name for a camera id (ids may be URLs or device paths)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", camera_id).strip("._")
    return name or "camera"


def _title(camera_id: str) -> str:
    return f"fer-pipeline: {camera_id}"
