"""What every face detector returns, and the contract it keeps.

Detectors differ in how they frame a face (Haar boxes include the forehead, BlazeFace's are
tight around eyes and mouth, res10's are tall); ``Detection.box`` is each detector's own
framing, and ``framing.py`` maps it onto the framing the classifier was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

Box = tuple[int, int, int, int]  # x, y, w, h in source pixels
Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Detection:
    """One face found in one frame.

    Attributes:
        box: (x, y, w, h) in the frame's pixels, in the detector's own framing, clipped to the frame.
        score: The detector's confidence in [0, 1] (1.0 where it has none, as Haar).
        eyes: The two eye centres in frame pixels, left-most first, where the detector gives them.
    """

    box: Box
    score: float = 1.0
    eyes: tuple[Point, Point] | None = None

    def __post_init__(self) -> None:
        if len(self.box) != 4 or self.box[2] <= 0 or self.box[3] <= 0:
            msg = f"a detection box is (x, y, w, h) with w, h > 0, got {self.box}"
            raise ValueError(msg)

    @property
    def roll(self) -> float:
        """In-plane rotation of the face in degrees from the eye line (counter-clockwise
        positive, as ``cv2.getRotationMatrix2D``), 0 without eyes."""
        if self.eyes is None:
            return 0.0
        (lx, ly), (rx, ry) = self.eyes
        # Image y grows downwards: a face turned counter-clockwise has its right eye higher.
        return float(np.degrees(np.arctan2(ly - ry, rx - lx)))


class Detector(Protocol):
    """Finds faces in a frame. Instances are not thread-safe: one per camera thread."""

    name: str

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in an (H, W, 3) BGR or (H, W) gray uint8 frame, best first."""
        ...


def clip_box(box: tuple[float, float, float, float], w: int, h: int) -> Box | None:
    """``box`` rounded and clipped to a w x h frame; None when nothing of it is inside (or
    it is not finite)."""
    x, y, bw, bh = box
    if not all(np.isfinite(v) for v in box):
        return None
    x0, y0 = max(0, round(x)), max(0, round(y))
    x1, y1 = min(w, round(x + bw)), min(h, round(y + bh))
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1 - x0, y1 - y0


def as_bgr(image: np.ndarray) -> np.ndarray:
    """The frame as 3-channel BGR (gray frames from image folders or tests are expanded)."""
    import cv2

    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def as_gray(image: np.ndarray) -> np.ndarray:
    """The frame as (H, W) gray."""
    import cv2

    if image.ndim == 2:
        return image
    code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
    return cv2.cvtColor(image, code)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Indices kept by greedy non-maximum suppression, best score first.

    Args:
        boxes: (N, 4) as x0, y0, x1, y1.
        scores: (N,).
        iou_threshold: A box overlapping a kept one by more than this is dropped.
    """
    order = np.argsort(-scores)
    keep: list[int] = []
    area = np.maximum(0, boxes[:, 2] - boxes[:, 0]) * np.maximum(0, boxes[:, 3] - boxes[:, 1])
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        xx0 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy0 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx1 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy1 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.maximum(0, xx1 - xx0) * np.maximum(0, yy1 - yy0)
        overlap = inter / np.maximum(1e-9, area[i] + area[rest] - inter)
        order = rest[overlap <= iou_threshold]
    return keep
