"""Frame sources behind one interface: webcams, video files, network streams, image
folders and a labelled replay camera.

``open_source(spec, settings)`` parses a command-line spec and opens it, raising
``SourceError`` with one line when it cannot. Every source yields ``CapturedFrame``s from
``frames(stop)``, which returns soon after ``stop`` is set; sources never raise once
opened except for bugs (live streams reconnect, bad images are skipped and counted).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np

from fer_pipeline.backoff import Backoff
from fer_pipeline.errors import DataError, SourceError
from fer_pipeline.images import read_image_file
from fer_pipeline.messages import MAX_TIME
from fer_pipeline.settings import Settings
from fer_pipeline.urls import redact_url

log = logging.getLogger("fer.producer.source")

STREAM_SCHEMES = ("rtsp", "http", "https")
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm", ".pbm"}
DEFAULT_FPS = 30.0  # when a container or camera reports no rate
FOLDER_FPS = 1.0  # image folders are slideshows when replayed in real time
REPLAY_TILE = 96  # replayed 48x48 faces are drawn 2x in the display mosaic
# Live streams: a dropped stream is reopened after these waits (doubling, capped).
RECONNECT_INITIAL_S = 0.5
RECONNECT_MAX_S = 10.0
# FFmpeg otherwise waits ~30 s on a dead host and forever on a stalled stream.
STREAM_TIMEOUT_MS = 5000


@dataclass(frozen=True)
class LabelledCrop:
    """A face a source already knows (replay): no detection needed."""

    pixels: np.ndarray  # (48, 48) uint8
    truth: str  # one of fer_pipeline.labels.EMOTIONS
    box: tuple[int, int, int, int]  # where it is drawn in the frame image (x, y, w, h)
    track_id: int  # the dataset row, so each replayed image is its own "person"


@dataclass
class CapturedFrame:
    """One frame from a source.

    Attributes:
        index: Frame number within this source, increasing (also across loops).
        captured_at: Wall-clock capture time (``time.time()``), comparable across hosts.
        image: BGR uint8 image.
        crops: Faces the source already knows; None means "run face detection".
        position_s: Seconds from the start of the video (file and replay sources; back to 0
            when a looping source rewinds), whatever the pacing; None for live sources and
            image folders, which have no timeline.
    """

    index: int
    captured_at: float
    image: np.ndarray
    crops: list[LabelledCrop] | None = None
    position_s: float | None = None


class Source(ABC):
    """A stream of frames. ``fps`` is the native (or requested) rate; ``finite`` says
    whether ``frames()`` ends on its own. ``stats`` counts ``reconnects``, ``skipped``,
    ``realtime_lost_ms`` (how far a paced source fell behind its frame rate) and, for live
    sources, ``stale_skipped``."""

    kind: str = "source"

    def __init__(self, name: str, fps: float, finite: bool) -> None:
        self.name = name  # default camera id
        self.fps = fps
        self.finite = finite
        # Frames a finite source will yield, where known (0: unknown or endless): `up`'s
        # progress bar and ETA. A container's count can be off by a frame or two.
        self.frame_count = 0
        self.stats: Counter[str] = Counter({"reconnects": 0, "skipped": 0})

    @abstractmethod
    def frames(self, stop: threading.Event) -> Iterator[CapturedFrame]:
        """Yield frames until the source ends or ``stop`` is set."""

    def close(self) -> None:  # noqa: B027 - a default: a source that holds nothing has nothing to release
        """Release devices and files; safe to call twice."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Pacer:
    """Paces a finite source to ``fps`` on the monotonic clock; when behind it does not
    sleep and forgets the lag (no catch-up bursts), but adds it up in ``lost_s``: a camera
    replayed slower than real time shows it (the producer's ``realtime_lost_ms``).
    ``fps <= 0`` means as fast as possible."""

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps if fps > 0 else 0.0
        self._due: float | None = None
        self.lost_s = 0.0

    def wait(self, stop: threading.Event) -> None:
        if not self.period:
            return
        now = time.monotonic()
        if self._due is None or self._due <= now:
            if self._due is not None:
                self.lost_s += now - self._due
            self._due = now  # on time or behind: start the next period from now
        else:
            stop.wait(self._due - now)
        self._due += self.period


# -- video files and live captures ------------------------------------------------------------------
def _capture_fps(cap) -> float:
    import cv2

    fps = cap.get(cv2.CAP_PROP_FPS)
    return float(fps) if fps and math.isfinite(fps) and 0 < fps <= 1000 else DEFAULT_FPS


def _open_file(path: Path, threads: int):
    """A capture of a video file decoding on ``threads`` FFmpeg threads (0: FFmpeg's choice).

    One thread costs a third less CPU per frame (0.90 against 1.33 ms for the 596x336 test
    clip): with a process per camera, cameras are the parallelism, and FFmpeg's helper
    threads only contend with them.
    """
    import cv2

    if threads:
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, threads])
        if cap.isOpened():
            return cap
        cap.release()  # another backend's file: open it the plain way
    return cv2.VideoCapture(str(path))


class VideoClock:
    """Where each decoded frame sits in its file, in seconds: the container's presentation
    timestamp (OpenCV's ``CAP_PROP_POS_MSEC``), or one frame period after the previous frame
    where there is none.

    Timestamps rather than ``index / fps``: phones record at a variable frame rate, and a
    stream's nominal rate can be far from its frames' spacing (a 25 fps-tagged file whose
    frames are irregular), so ``index / fps`` drifts from what a player shows; the timestamp is
    what a player shows. But a file may carry no usable ones: a raw H.264 stream reads 0 for
    every frame, an MPEG-PS its last frame as 0, a broken mux may jump back. So a timestamp is
    taken only when it moves forwards (the first frame's when it is a time at all), and a frame
    without one is placed a period after the previous frame, so positions always increase.
    """

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps
        self._last: float | None = None

    def position(self, pos_msec: float) -> float:
        t = pos_msec / 1000.0 if math.isfinite(pos_msec) else -1.0
        if self._last is None:
            self._last = t if 0.0 <= t < MAX_TIME else 0.0
        elif self._last < t < MAX_TIME:
            self._last = t
        else:
            self._last = min(self._last + self.period, math.nextafter(MAX_TIME, 0.0))
        return self._last

    def rewind(self) -> None:
        self._last = None


class VideoFileSource(Source):
    """A video file as a camera: paced to its frame rate when ``realtime``, rewound at the end
    when ``loop``."""

    kind = "file"

    def __init__(self, path: Path, settings: Settings) -> None:

        what = f"cannot open video file '{path}'"
        if not path.exists():
            raise SourceError(f"{what}: no such file")
        self.path = path
        self._threads = settings.producer.decode_threads
        cap = _open_file(path, self._threads)
        if not cap.isOpened():
            raise SourceError(f"{what}: not a readable video")
        super().__init__(_safe_id(path.stem), _capture_fps(cap), finite=not settings.producer.loop)
        if self.finite:
            import cv2

            self.frame_count = max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0)
        self._cap = cap
        self._loop = settings.producer.loop
        self._pacer = Pacer(self.fps if settings.producer.realtime else 0.0)
        self._clock = VideoClock(self.fps)

    def frames(self, stop: threading.Event) -> Iterator[CapturedFrame]:
        import cv2

        index = 0
        while not stop.is_set():
            ok, image = self._cap.read()
            if not ok:
                if not self._loop or index == 0:  # index 0: the file has no frames at all
                    return
                self._cap.release()  # reopening is more reliable than seeking across codecs
                self._cap = _open_file(self.path, self._threads)
                self._clock.rewind()
                ok, image = self._cap.read()
                if not ok:
                    log.warning("video %s yields no frames after rewinding; ending", self.path)
                    return
            position = self._clock.position(self._cap.get(cv2.CAP_PROP_POS_MSEC))
            self._pacer.wait(stop)
            self.stats["realtime_lost_ms"] = round(self._pacer.lost_s * 1000)
            yield CapturedFrame(index, time.time(), image, position_s=position)
            index += 1

    def close(self) -> None:
        self._cap.release()


class _LatestFrame:
    """A one-frame mailbox: the grabber overwrites, the producer takes the newest."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: CapturedFrame | None = None

    def put(self, frame: CapturedFrame) -> None:
        with self._cond:
            self._frame = frame
            self._cond.notify()

    def take(self, timeout: float) -> CapturedFrame | None:
        with self._cond:
            if self._frame is None:
                self._cond.wait(timeout)
            frame, self._frame = self._frame, None
            return frame


class LiveSource(Source):
    """A webcam or network stream: never ends by itself; a dropped stream is reopened with
    capped exponential backoff (counted in ``stats['reconnects']``) instead of failing.

    Capture never waits for processing (frigate's lesson): a grabber thread reads the device
    at its own rate and the producer always gets the newest frame. Without it, a producer
    slower than the camera reads from the driver's or FFmpeg's queue and falls further and
    further behind real time. Frames overtaken that way are counted in
    ``stats['stale_skipped']``; ``latest_only=False`` reads every frame in order instead.
    """

    kind = "live"

    def __init__(self, target: int | str, name: str, opener: Callable[[], object], *,
                 backoff_initial_s: float = RECONNECT_INITIAL_S, backoff_max_s: float = RECONNECT_MAX_S,
                 latest_only: bool = True) -> None:
        self.target = target
        self._open = opener
        self._backoff = Backoff(backoff_initial_s, backoff_max_s)
        self.latest_only = latest_only
        cap = opener()
        if not cap.isOpened():
            what = f"webcam {target}" if isinstance(target, int) else f"stream '{redact_url(str(target))}'"
            why = "no camera at that index, or it is in use" if isinstance(target, int) else "no answer or not a video stream"
            raise SourceError(f"cannot open {what}: {why}")
        self._cap = cap
        self._grabber: tuple[threading.Thread, threading.Event] | None = None
        super().__init__(name, _capture_fps(cap), finite=False)

    def frames(self, stop: threading.Event) -> Iterator[CapturedFrame]:
        if not self.latest_only:
            yield from self._read(stop)
            return
        mailbox, halt = _LatestFrame(), threading.Event()
        grabber = threading.Thread(target=self._grab, args=(halt, mailbox), name=f"grab-{self.name}", daemon=True)
        self._grabber = (grabber, halt)
        grabber.start()
        last = -1
        try:
            while not stop.is_set():
                frame = mailbox.take(timeout=0.1)
                if frame is None:
                    continue
                self.stats["stale_skipped"] += frame.index - last - 1
                last = frame.index
                yield frame
        finally:
            self._stop_grabber()

    def _stop_grabber(self) -> None:
        if self._grabber is not None:
            grabber, halt = self._grabber
            halt.set()
            # A read blocks at most the stream timeout; the grabber is a daemon in any case.
            grabber.join(timeout=STREAM_TIMEOUT_MS / 1000 + 1)
            self._grabber = None

    def _grab(self, halt: threading.Event, mailbox: _LatestFrame) -> None:
        for frame in self._read(halt):
            mailbox.put(frame)

    def _read(self, stop: threading.Event) -> Iterator[CapturedFrame]:
        """Every frame in order, reopening a dropped stream with backoff."""
        index = 0
        self._backoff.reset()
        while not stop.is_set():
            ok, image = self._cap.read() if self._cap is not None else (False, None)
            if ok:
                self._backoff.reset()
                yield CapturedFrame(index, time.time(), image)
                index += 1
                continue
            if self._cap is not None:
                self._cap.release()
                self._cap = None
                log.warning("source %s dropped; reconnecting", self.name)
            if stop.wait(self._backoff.next()):
                return
            self.stats["reconnects"] += 1
            try:
                cap = self._open()
            except Exception as e:  # a failing driver must not end a camera meant to survive drops
                log.warning("reopening %s failed: %s", self.name, e)
                continue
            if cap.isOpened():
                self._cap = cap
                log.info("source %s reconnected", self.name)

    def close(self) -> None:
        self._stop_grabber()  # never release the capture under a read in progress
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def _open_webcam(index: int) -> LiveSource:
    import cv2

    return LiveSource(index, f"cam{index}", lambda: cv2.VideoCapture(index))


def _open_stream(url: str) -> LiveSource:
    import cv2

    parts = urlsplit(url)
    if not parts.hostname:
        raise SourceError(f"cannot open stream '{redact_url(url)}': no host in the URL")
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS]
    return LiveSource(url, _safe_id(parts.hostname), lambda: cv2.VideoCapture(url, cv2.CAP_FFMPEG, params))


# -- image folders --------------------------------------------------------------------------------
class ImageFolderSource(Source):
    """A folder of images as a camera: one frame per readable image in name order (paced to
    ``FOLDER_FPS`` when ``realtime``); unreadable or oversized images are skipped. Frames have
    no ``position_s``: a folder is no timeline (the frame index is the image's place in it)."""

    kind = "folder"

    def __init__(self, path: Path, settings: Settings) -> None:
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise SourceError(f"cannot open image folder '{path}': no {'/'.join(sorted(IMAGE_SUFFIXES))} files in it")
        super().__init__(_safe_id(path.name or "images"), FOLDER_FPS, finite=not settings.producer.loop)
        self.frame_count = len(files) if self.finite else 0
        self.files = files
        self._max_pixels = settings.producer.max_image_pixels
        self._loop = settings.producer.loop
        self._pacer = Pacer(self.fps if settings.producer.realtime else 0.0)

    def _read(self, path: Path) -> np.ndarray | None:
        try:
            return read_image_file(path, self._max_pixels)
        except SourceError as e:
            return self._skip(path, str(e))

    def _skip(self, path: Path, why: str) -> None:
        self.stats["skipped"] += 1
        log.warning("skipping image %s: %s", path, why)
        return None

    def frames(self, stop: threading.Event) -> Iterator[CapturedFrame]:
        index = 0
        while not stop.is_set():
            produced = False
            for path in self.files:
                if stop.is_set():
                    return
                image = self._read(path)
                if image is None:
                    continue
                produced = True
                self._pacer.wait(stop)
                self.stats["realtime_lost_ms"] = round(self._pacer.lost_s * 1000)
                yield CapturedFrame(index, time.time(), image)
                index += 1
            if not self._loop or not produced:
                return


# -- labelled replay --------------------------------------------------------------------------
class ReplaySource(Source):
    """Replays labelled 48x48 faces (FER2013 npz) as a camera: each frame carries ``faces``
    crops with their truth labels, drawn as a mosaic image for display. The replay is a video
    at ``fps``: a frame's ``position_s`` is its place in one pass (back to 0 on each loop),
    however fast it is actually replayed."""

    kind = "replay"

    def __init__(self, path: Path, settings: Settings, *, fps: float, faces: int, loop: bool,
                 limit: int | None) -> None:
        from fer_pipeline.labels import EMOTIONS
        from fer_pipeline.trainer.data import load_npz

        try:
            data = load_npz(path)
        except DataError as e:
            raise SourceError(f"cannot open replay '{path}': {e}") from e
        n = len(data) if limit is None else min(limit, len(data))
        if n == 0:
            raise SourceError(f"cannot open replay '{path}': no images")
        super().__init__(_safe_id(f"replay-{path.stem}"), fps, finite=not loop)
        self.images, self.truths = data.images[:n], [EMOTIONS[i] for i in data.labels[:n]]
        self.faces, self._loop = faces, loop
        self._cols = math.ceil(math.sqrt(faces))
        self._rows = math.ceil(faces / self._cols)
        self._pacer = Pacer(fps if settings.producer.realtime else 0.0)
        self.frame_count = 0 if loop else math.ceil(n / faces)

    def frames(self, stop: threading.Event) -> Iterator[CapturedFrame]:
        import cv2

        n, index, row = len(self.images), 0, 0
        t, period = REPLAY_TILE, 1.0 / self.fps
        while not stop.is_set():
            if row >= n:
                if not self._loop:
                    return
                row = 0
            mosaic = np.zeros((self._rows * t, self._cols * t, 3), np.uint8)
            crops, position = [], row // self.faces * period
            for k, r in enumerate(range(row, min(row + self.faces, n))):
                y, x = divmod(k, self._cols)
                box = (x * t, y * t, t, t)
                big = cv2.resize(self.images[r], (t, t), interpolation=cv2.INTER_NEAREST)
                mosaic[box[1]:box[1] + t, box[0]:box[0] + t] = big[:, :, None]
                crops.append(LabelledCrop(self.images[r], self.truths[r], box, r))
            row += self.faces
            self._pacer.wait(stop)
            self.stats["realtime_lost_ms"] = round(self._pacer.lost_s * 1000)
            yield CapturedFrame(index, time.time(), mosaic, crops, position)
            index += 1


def _parse_replay(spec: str, settings: Settings) -> ReplaySource:
    body = spec[len("replay:"):]
    path_part, _, query = body.partition("?")
    if not path_part:
        raise SourceError(f"replay source '{spec}' names no file: use replay:<file.npz>?fps=30&faces=2")
    allowed = {"fps", "faces", "loop", "limit"}
    try:
        qs = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True, strict_parsing=bool(query)).items()}
    except ValueError as e:
        raise SourceError(f"replay source '{spec}': malformed options ({e})") from e
    unknown = sorted(set(qs) - allowed)
    if unknown:
        raise SourceError(f"replay source '{spec}': unknown option {unknown[0]!r} (use {', '.join(sorted(allowed))})")
    try:
        fps = float(qs.get("fps", DEFAULT_FPS))
        faces = int(qs.get("faces", 1))
        loop = bool(int(qs["loop"])) if "loop" in qs else settings.producer.loop
        limit = int(qs["limit"]) if "limit" in qs else None
    except ValueError as e:
        raise SourceError(f"replay source '{spec}': {e}") from e
    if not (math.isfinite(fps) and 0 < fps <= 1000):
        raise SourceError(f"replay source '{spec}': fps must be in (0, 1000], got {qs.get('fps')}")
    if not 1 <= faces <= 64:
        raise SourceError(f"replay source '{spec}': faces must be 1..64, got {faces}")
    if limit is not None and limit < 1:
        raise SourceError(f"replay source '{spec}': limit must be >= 1, got {limit}")
    path = Path(path_part).expanduser()
    if not path.is_file():
        raise SourceError(f"cannot open replay '{path}': no such file")
    return ReplaySource(path, settings, fps=fps, faces=faces, loop=loop, limit=limit)


# -- spec parsing -----------------------------------------------------------------------------
def open_source(spec: str, settings: Settings) -> Source:
    """Open a source from a command-line spec.

    Args:
        spec: ``"0"`` (webcam index), a video file, an image folder, an ``rtsp://``,
            ``http://`` or ``https://`` stream, or ``replay:<file.npz>?fps=30&faces=2&loop=0``
            (also ``limit=N`` to replay only the first N images).
        settings: Pacing (``producer.realtime``), looping and image limits come from here.

    Returns:
        The opened source; its ``name`` is a suggested camera id.

    Raises:
        SourceError: the spec is malformed or the source cannot be opened.
    """
    spec = spec.strip()
    if not spec:
        raise SourceError("empty source: give a webcam index, a video file, a folder, a URL or replay:<file.npz>")
    if spec.isdigit():
        return _open_webcam(int(spec))
    if spec.startswith("replay:"):
        return _parse_replay(spec, settings)
    if "://" in spec:
        scheme = spec.split("://", 1)[0].lower()
        if scheme not in STREAM_SCHEMES:
            raise SourceError(f"unsupported source scheme '{scheme}://': use rtsp://, http:// or https://, "
                              "a webcam index, a video file, an image folder or replay:<file.npz>")
        return _open_stream(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        return ImageFolderSource(path, settings)
    if path.is_file() or path.suffix.lower() in VIDEO_SUFFIXES:
        return VideoFileSource(path, settings)
    raise SourceError(f"cannot open source '{spec}': no such file or folder")


def _safe_id(text: str) -> str:
    """A camera id usable inside Redis key names and file names."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:64]
    return cleaned or "camera"
