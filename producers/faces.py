"""One camera's faces, frame by frame: detect, track between detections, frame and crop.

A ``FaceFinder`` is not thread-safe (detectors keep scratch buffers): make one per camera
thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fer_pipeline.producers.detection import Detection, Detector, build_detector
from fer_pipeline.producers.detection.base import as_gray, clip_box
from fer_pipeline.producers.detection.framing import crop_face, framing_for
from fer_pipeline.producers.tracker import FaceTracker
from fer_pipeline.settings import ProducerSettings

Box = tuple[int, int, int, int]
THUMB = (32, 24)  # frames are compared at this size to notice a cut

__all__ = ["Face", "FaceFinder", "crop_face"]


@dataclass(frozen=True, slots=True)
class Face:
    """A face on one frame, ready to publish.

    Attributes:
        box: The FER2013-framed square the crop was cut from, clipped to the frame.
        track_id: The person's id on this camera.
        crop: 48x48 uint8, upright when the detector gave eyes and alignment is on.
        detected: False when the tracker predicted the box on a frame without a detection.
    """

    box: Box
    track_id: int
    crop: np.ndarray
    detected: bool


class FaceFinder:
    """Detects every ``detect_every``-th frame (the first included); the tracker carries each
    face between detections (and through a detector's blinks), so a person present on a frame
    gets a box on it, with one id while they stay.

    Args:
        settings: Producer settings (detector, thresholds, ``detect_every``, tracker).
        detector_factory: Builds the detector on first use (tests pass a scripted one).
    """

    def __init__(self, settings: ProducerSettings, detector_factory: Callable[[], Detector] | None = None) -> None:
        self.detect_every = settings.detect_every
        self.min_face = settings.min_face
        self.align = settings.align
        self.detect_ms = 0.0  # wall time spent in detect(), for heartbeats and benchmarks
        self.detect_cpu_ms = 0.0  # this thread's CPU time in detect(): the cost, whatever the load
        self.detections = 0
        # The last detected frame's detections, by the track each matched or started (the
        # tracker's own answer): what a caller wanting a face's detector score looks up.
        self.detected: dict[int, Detection] = {}
        self._factory = detector_factory or (lambda: build_detector(settings))
        self._detector: Detector | None = None
        # Between detections every face must stay shown and remembered, whatever the tracker
        # settings say: coasting shorter than the gap would blink the boxes off.
        gap = settings.detect_every
        self._tracker = FaceTracker(settings.tracker_iou, max(settings.tracker_max_missed, gap),
                                    max(settings.tracker_coast, gap - 1), birth_score=settings.track_score,
                                    coast_misses=settings.tracker_coast_misses)
        self._since_detect = settings.detect_every  # detect on the first frame
        self.scene_cut = settings.scene_cut
        self.cuts = 0
        self._thumb: np.ndarray | None = None

    @property
    def detector(self) -> Detector:
        """The detector, built on first use (model files load in the camera's thread)."""
        if self._detector is None:
            self._detector = self._factory()
        return self._detector

    def find(self, image: np.ndarray) -> list[Face]:
        """The faces on this (H, W, 3) BGR or (H, W) gray uint8 frame."""
        gray = as_gray(image)
        if self._cut(gray):
            # A new shot: predicted boxes from the last one would be ghosts on whatever is
            # there now, so forget every track and detect on this frame.
            self.cuts += 1
            self._tracker.reset()
            self._since_detect = self.detect_every
        self._tracker.predict()
        if self._since_detect >= self.detect_every:
            detector = self.detector
            t0, c0 = time.perf_counter(), time.thread_time()
            found = [d for d in detector.detect(image) if max(d.box[2], d.box[3]) >= self.min_face]
            self.detect_ms += (time.perf_counter() - t0) * 1000
            self.detect_cpu_ms += (time.thread_time() - c0) * 1000
            self.detections += 1
            ids = self._tracker.update([d.box for d in found], [d.roll if d.eyes else None for d in found],
                                       [d.score for d in found])
            self.detected = {tid: d for tid, d in zip(ids, found, strict=True) if tid is not None}
            self._since_detect = 0
        self._since_detect += 1
        h, w = gray.shape[:2]
        framing = framing_for(self.detector.name)
        faces: list[Face] = []
        for tracked in sorted(self._tracker.faces(), key=lambda t: t.track_id):
            roll = tracked.roll if self.align else 0.0
            square = framing.apply(tracked.box, roll)
            shown = clip_box(square, w, h)
            if shown is None:  # predicted out of the frame: the person has left
                continue
            faces.append(Face(shown, tracked.track_id, crop_face(gray, square, roll), tracked.detected))
        return faces

    def _cut(self, gray: np.ndarray) -> bool:
        """Whether this frame starts a new shot: its thumbnail differs from the last one's by
        more than ``scene_cut`` gray levels on average (camera motion and talking stay far
        below: under 2 on woman2, at most 13 in the Hamilton clip's pans; its cuts are 26-30)."""
        if not self.scene_cut:
            return False
        import cv2

        thumb = cv2.resize(gray, THUMB, interpolation=cv2.INTER_AREA).astype(np.int16)
        last, self._thumb = self._thumb, thumb
        return last is not None and last.shape == thumb.shape and float(np.abs(thumb - last).mean()) > self.scene_cut
