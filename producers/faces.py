"""Face detection (OpenCV Haar cascade, as the original tutorial) and 48x48 cropping.

A ``FaceDetector`` is not thread-safe (``CascadeClassifier`` keeps scratch buffers): make
one per camera thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from fer_pipeline.errors import ConfigError
from fer_pipeline.messages import CROP_SIZE
from fer_pipeline.producers.tracker import IouTracker
from fer_pipeline.settings import ProducerSettings

CASCADE_FILE = "haarcascade_frontalface_default.xml"
# The cascade's own window is 24x24: asking for smaller faces after a downscale is pointless.
CASCADE_WINDOW = 24

Box = tuple[int, int, int, int]


class FaceDetector:
    """Finds frontal faces in a gray frame; boxes are (x, y, w, h) in source pixels."""

    def __init__(self, settings: ProducerSettings) -> None:
        import cv2

        path = cv2.data.haarcascades + CASCADE_FILE
        cascade = cv2.CascadeClassifier(path)
        if cascade.empty():
            raise ConfigError(f"cannot load the Haar cascade {path}: reinstall opencv-python")
        self._cascade = cascade
        self.scale_factor = settings.scale_factor
        self.min_neighbors = settings.min_neighbors
        self.min_face = settings.min_face
        self.detect_width = settings.detect_width

    def detect(self, gray: np.ndarray) -> list[Box]:
        """Detect faces.

        Args:
            gray: (H, W) uint8 frame.

        Returns:
            Boxes in ``gray``'s pixels, clipped to the frame, in the cascade's order.
        """
        import cv2

        h, w = gray.shape[:2]
        scale = 1.0
        small = gray
        if self.detect_width and w > self.detect_width:
            # Haar cost grows with pixels; faces big enough to classify survive this.
            scale = self.detect_width / w
            small = cv2.resize(gray, (self.detect_width, max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        min_size = max(CASCADE_WINDOW, round(self.min_face * scale))
        found = self._cascade.detectMultiScale(
            small, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(min_size, min_size))
        boxes: list[Box] = []
        for x, y, bw, bh in np.asarray(found).reshape(-1, 4):
            box = _clip((round(x / scale), round(y / scale), round(bw / scale), round(bh / scale)), w, h)
            if box is not None:
                boxes.append(box)
        return boxes


class FaceFinder:
    """One camera's faces frame by frame: Haar every ``detect_every``-th frame (the first
    included), the last boxes reused in between, and a track id per box (IoU tracker).

    Args:
        settings: Producer settings (Haar parameters, ``detect_width``, ``detect_every``, tracker).
        detector_factory: Builds the detector on first use (tests pass a scripted one).
    """

    def __init__(self, settings: ProducerSettings,
                 detector_factory: Callable[[], FaceDetector] | None = None) -> None:
        self.detect_every = settings.detect_every
        self.detect_ms = 0.0  # time spent in detect(), for heartbeats and benchmarks
        self.detections = 0
        self._factory = detector_factory or (lambda: FaceDetector(settings))
        self._detector: FaceDetector | None = None
        self._tracker = IouTracker(settings.tracker_iou, settings.tracker_max_missed)
        self._since_detect = settings.detect_every  # detect on the first frame
        self._last: tuple[list[Box], list[int]] = ([], [])

    def find(self, gray: np.ndarray) -> list[tuple[Box, int]]:
        """(box, track id) of each face in this (H, W) uint8 frame."""
        if self._since_detect >= self.detect_every:
            if self._detector is None:
                self._detector = self._factory()
            t0 = time.perf_counter()
            boxes = self._detector.detect(gray)
            self.detect_ms += (time.perf_counter() - t0) * 1000
            self.detections += 1
            self._last = (boxes, self._tracker.update(boxes))
            self._since_detect = 0
        # Between detections the last boxes are reused (faces move little in a few frames);
        # the crops are still cut from each new frame.
        self._since_detect += 1
        boxes, ids = self._last
        return list(zip(boxes, ids))


def crop_face(gray: np.ndarray, box: Box) -> np.ndarray:
    """The box's region resized to 48x48 uint8 (INTER_AREA, as the tutorial).

    Raises:
        ValueError: the box does not overlap the frame.
    """
    import cv2

    h, w = gray.shape[:2]
    clipped = _clip(box, w, h)
    if clipped is None:
        raise ValueError(f"box {box} is outside the {w}x{h} frame")
    x, y, bw, bh = clipped
    return cv2.resize(gray[y:y + bh, x:x + bw], (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA)


def _clip(box: Box, w: int, h: int) -> Box | None:
    x, y, bw, bh = (int(v) for v in box)
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(w, x + bw), min(h, y + bh)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1 - x0, y1 - y0
