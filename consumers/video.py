"""Annotated video files: browser-playable H.264 MP4s written with PyAV (libx264).

Browsers play H.264 in yuv420p, not the MPEG-4 Part 2 (mp4v) that OpenCV's writer makes.
A file is written as ``<name>.mp4.part`` and renamed to ``<name>.mp4`` once the encoder is
flushed and the moov atom (the index) moved in front of the media data (``+faststart``),
so a ``.mp4`` in the output folder is always a finished file a browser can start playing
before it has downloaded all of it; a killed process leaves only a ``.part`` behind.

Frames go in at a constant rate (the camera's, clamped): the presentation time of frame n
is n / rate, which is what the display always wrote (one frame per frame drawn).
"""

from __future__ import annotations

import contextlib
import os
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from fer_pipeline.errors import ConfigError

# superfast rather than veryfast: ~3.9 ms instead of ~5.6 ms of CPU per 640x480 frame
# (mp4v took ~1.9), so 4 cameras at 30 fps cost about half a core of a 2-core machine that
# also runs the detector (python -m benchmarks.video_encode); its files are ~1.7x
# veryfast's, still ~0.65x mp4v's. x264's threads stay its own choice (sliced threads
# over the cores): a frame is encoded sooner than on one thread, for the same CPU.
PRESET = "superfast"
CRF = 23  # x264's default quality; lower is better and bigger
# Players and hardware decoders commonly stop at 4096 px a side (H.264 levels up to 5.2
# allow 4096x2304): a taller frame (a 596x8400 PNG from an image folder is legitimate
# input) is scaled to fit, aspect kept.
MAX_SIDE = 4096
MIN_FPS, MAX_FPS = 1.0, 1000.0
# Rates as fractions with a denominator of at most 1001: 29.97 becomes NTSC's exact
# 30000/1001 and 530.416 stays 66302/125; the MP4 time scale is 32-bit, so any fits.
MAX_RATE_DENOMINATOR = 1001


def video_rate(fps: float) -> Fraction:
    """The rate a file is written at: ``fps`` clamped to [1, 1000], as a fraction."""
    fps = min(max(fps, MIN_FPS), MAX_FPS)
    return Fraction(fps).limit_denominator(MAX_RATE_DENOMINATOR)


def video_size(width: int, height: int) -> tuple[int, int]:
    """The size frames of ``width`` x ``height`` are written at: scaled to fit ``MAX_SIDE``
    (aspect kept, at least 2 px a side), then one pixel added to an odd side, since yuv420p
    stores colour per 2x2 block (the added row/column repeats the edge)."""
    scale = min(1.0, MAX_SIDE / max(width, height))
    w, h = max(2, round(width * scale)), max(2, round(height * scale))
    return w + w % 2, h + h % 2


class H264File:
    """One MP4 being written, sized by ``size`` (from ``video_size``) at ``rate``.

    Raises:
        ConfigError: the file cannot be created.
    """

    def __init__(self, path: Path, size: tuple[int, int], rate: Fraction, *,
                 preset: str = PRESET, crf: int = CRF, threads: int = 0) -> None:
        self.path = path
        self.part = path.with_name(path.name + ".part")
        self.size = size
        self.rate = rate
        self.frames = 0
        try:
            self.part.open("wb").close()  # FFmpeg opens the file only at the first frame: fail here
            # format given: the name ends in .part, which names no container.
            self._container = av.open(str(self.part), "w", format="mp4", options={"movflags": "+faststart"})
        except OSError as e:
            raise self._error(e) from e
        stream = self._container.add_stream("libx264", rate=rate)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": preset, "crf": str(crf)}
        ctx = stream.codec_context
        ctx.thread_count = threads  # 0: x264's own choice (sliced threads over the cores)
        # BT.601 limited range, which cv2's BGR->I420 produces: tagged so that players do
        # not guess (they would take BT.709 for HD sizes and shift the colours).
        ctx.colorspace, ctx.color_primaries, ctx.color_trc, ctx.color_range = 6, 6, 6, 1
        self._stream = stream
        self._closed = False

    @property
    def duration_s(self) -> float:
        """Seconds of video written so far."""
        return float(self.frames / self.rate)

    def write(self, image: np.ndarray) -> None:
        """Encode one BGR frame; a frame of another size is first scaled to the file's."""
        w, h = self.size
        if image.shape[1] != w or image.shape[0] != h:
            fitted = video_size(image.shape[1], image.shape[0])
            if fitted == (w, h) and image.shape[1] in (w - 1, w) and image.shape[0] in (h - 1, h):
                # An odd side: repeat the last column/row rather than stretch the picture.
                image = cv2.copyMakeBorder(image, 0, h - image.shape[0], 0, w - image.shape[1],
                                           cv2.BORDER_REPLICATE)
            else:  # a camera may change resolution mid-run
                image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        # OpenCV's conversion is ~2x swscale's here and gives the same BT.601 limited range.
        yuv = np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = self.frames
        try:
            self._container.mux(self._stream.encode(frame))
        except OSError as e:  # e.g. the disk is full
            raise self._error(e) from e
        self.frames += 1

    def close(self) -> Path:
        """Flush the encoder, finish the MP4 (faststart rewrites it with the index first)
        and give it its final name; idempotent."""
        if not self._closed:
            self._closed = True
            try:
                try:
                    self._container.mux(self._stream.encode(None))
                finally:
                    self._container.close()
                os.replace(self.part, self.path)
            except OSError as e:
                raise self._error(e) from e
        return self.path

    def _error(self, e: OSError) -> ConfigError:
        return ConfigError(f"cannot write video {self.part}: {e.strerror or e}")

    def abandon(self) -> None:
        """Close without finishing (after an error): the ``.part`` stays as it is."""
        self._closed = True
        with contextlib.suppress(Exception):
            self._container.close()


class VideoRecorder:
    """The files of one camera run: ``<stem>.mp4`` or, with ``segment_s``, a new file every
    ``segment_s`` seconds of video: ``<stem>-001.mp4``, ``<stem>-002.mp4``, ...

    A finished file is never overwritten: a name already taken (the display restarted
    mid-run, or the camera back after its end in the same run) moves on to the next free
    one, ``<stem>-2.mp4``, ... or the next segment number. Each file is sized by its first
    frame.
    """

    def __init__(self, out_dir: Path, stem: str, fps: float, segment_s: float = 0.0) -> None:
        self.out_dir = out_dir
        self.stem = stem
        self.rate = video_rate(fps)
        self.segment_s = segment_s
        self.written: list[Path] = []  # finished files, oldest first
        self._file: H264File | None = None
        self._number = 0

    @property
    def path(self) -> Path | None:
        """The file being written, else the last one finished."""
        if self._file is not None:
            return self._file.path
        return self.written[-1] if self.written else None

    def write(self, image: np.ndarray) -> Path | None:
        """Write one BGR frame; returns the file that a new segment finished, if any."""
        done = None
        if self._file is not None and self.segment_s and self._file.duration_s >= self.segment_s - 1e-9:
            done = self.close()
        if self._file is None:
            self._file = H264File(self._next_path(), video_size(image.shape[1], image.shape[0]), self.rate)
        try:
            self._file.write(image)
        except Exception:
            self._file.abandon()
            self._file = None
            raise
        return done

    def close(self) -> Path | None:
        """Finish the open file; returns it (None when none was open)."""
        file, self._file = self._file, None
        if file is None:
            return None
        try:
            path = file.close()
        except Exception:
            file.abandon()
            raise
        self.written.append(path)
        return path

    def _next_path(self) -> Path:
        while True:
            self._number += 1
            n = self._number
            if self.segment_s:
                name = f"{self.stem}-{n:03d}.mp4"
            else:
                name = f"{self.stem}.mp4" if n == 1 else f"{self.stem}-{n}.mp4"
            path = self.out_dir / name
            if not path.exists():
                return path
