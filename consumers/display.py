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
from fer_pipeline.consumers.video import VideoRecorder
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
    """Per camera, the H.264 files of its current run (``consumers.video``), named
    ``<camera>-<run>.mp4`` (``-001``, ``-002``, ... with segments); a frame of another run
    finishes the camera's file and starts the new run's."""

    def __init__(self, out_dir: Path, fps_override: float, segment_s: float) -> None:
        self.out_dir = out_dir
        self.fps_override = fps_override
        self.segment_s = segment_s
        self.paths: dict[str, Path] = {}  # camera -> its latest file
        self._recorders: dict[str, tuple[str, VideoRecorder]] = {}  # camera -> (run id, its files)

    def write(self, frame: Frame, image: np.ndarray) -> int:
        """Write one annotated frame; returns the number of files it finished."""
        done = 0
        current = self._recorders.get(frame.camera_id)
        if current is not None and current[0] != frame.run_id:  # a new run without an end marker
            done += self.close(frame.camera_id)
            current = None
        if current is None:
            stem = f"{_safe_name(frame.camera_id)}-{_safe_name(frame.run_id)}"
            current = (frame.run_id, VideoRecorder(self.out_dir, stem, self.fps_override or frame.fps or DEFAULT_FPS,
                                                   self.segment_s))
            self._recorders[frame.camera_id] = current
        recorder = current[1]
        done += recorder.write(image) is not None
        if recorder.path is not None:
            self.paths[frame.camera_id] = recorder.path
        return done

    def close(self, camera_id: str, run_id: str | None = None) -> bool:
        """Finish the camera's open file (only if it is of ``run_id``, when given)."""
        current = self._recorders.get(camera_id)
        if current is None or (run_id is not None and current[0] != run_id):
            return False
        del self._recorders[camera_id]
        path = current[1].close()
        if path is None:
            return False
        self.paths[camera_id] = path
        return True

    def close_all(self) -> int:
        return sum(self.close(c) for c in list(self._recorders))

    def poll(self) -> bool:
        return False


class _WindowSink:
    """One window per camera; q or Esc in any of them asks the service to stop."""

    def __init__(self) -> None:
        self._open: set[str] = set()

    def write(self, frame: Frame, image: np.ndarray) -> int:
        cv2.imshow(_title(frame.camera_id), image)
        self._open.add(frame.camera_id)
        return 0

    def close(self, camera_id: str, run_id: str | None = None) -> bool:
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
            ``consumer.label_wait_ms``, ``consumer.fps``, ``consumer.video_segment_s``, ``streams``).
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

    def run(self) -> int:
        try:
            return super().run()
        finally:
            # After a crash too: the videos so far become finished, playable files (a no-op
            # after finish).
            try:
                self.counters["videos_written"] += self._sink.close_all()
            except Exception as e:  # noqa: BLE001 - never hide the error that brought us here
                self.log.warning("cannot finish the open videos: %s", e)

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
        labels_streams = set(self.transport.keys.labels_shards)
        acks: dict[str, list[str]] = {}
        now = time.monotonic()
        for e in entries:
            acks.setdefault(e.stream, []).append(e.id)
            if e.payload is None:
                continue
            try:
                msg = e.message(self.settings.streams.max_payload_bytes,
                                expect=Label if e.stream in labels_streams else None)
                if e.stream not in labels_streams and not isinstance(msg, (Frame, EndOfStream)):
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
        if self._sink.close(eos.camera_id, eos.run_id):
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
        self._write(frame, image)
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

    def _write(self, frame: Frame, image: np.ndarray) -> None:
        try:
            self.counters["videos_written"] += self._sink.write(frame, image)
        except cv2.error as e:
            if not self.windowed:
                raise
            # A headless OpenCV build (or no usable screen) despite the setting: keep the
            # output rather than fail, in files.
            self.log.warning("cannot open a window (%s); writing MP4 files to %s instead",
                             str(e).strip().splitlines()[-1][:120], self.settings.consumer.out_dir)
            self.windowed = False
            self._sink = self._video_sink()
            self.counters["videos_written"] += self._sink.write(frame, image)

    def _video_sink(self) -> _VideoSink:
        out = self.settings.consumer.out_dir
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create the output folder {out}: {e.strerror or e}") from e
        self._video = _VideoSink(out, self.settings.consumer.fps, self.settings.consumer.video_segment_s)
        return self._video


def _safe_name(camera_id: str) -> str:
    """A file name part for a camera id (ids may be URLs or device paths) or a run id."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", camera_id).strip("._")
    return name or "camera"


def _title(camera_id: str) -> str:
    return f"fer-pipeline: {camera_id}"
