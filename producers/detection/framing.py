"""From a detector's box to the framing the classifier was trained on, and the 48x48 crop.

FER2013's faces are square crops whose framing no detector reproduces: Haar's boxes include
the forehead, BlazeFace's hug the eyes and mouth, res10's are tall. Each detector gets a
``Framing`` fitted on faces whose FER2013 square is known exactly (the labelled scenes of
``benchmarks/scenes.py``, fitted by ``python -m benchmarks.framing``): the square's side and
centre offset in units of the detection's size. Offsets are in the face's own frame, so they
turn with the face when the crop is rotated upright by the eye line.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from fer_pipeline.messages import CROP_SIZE

Box = tuple[int, int, int, int]
FloatBox = tuple[float, float, float, float]
STRAIGHT_DEG = 0.5  # below this roll the crop is a plain resize, as the tutorial's


@dataclass(frozen=True)
class Framing:
    """FER square = centre + (dx, dy) * size, side = scale * size, size = sqrt(w * h)."""

    scale: float = 1.0
    dx: float = 0.0
    dy: float = 0.0

    def apply(self, box: Box, roll: float = 0.0) -> FloatBox:
        """The FER2013-framed square (x, y, side, side) for a detection box; may leave the frame."""
        x, y, w, h = box
        size = math.sqrt(w * h)
        ox, oy = _turn(self.dx * size, self.dy * size, roll)
        side = self.scale * size
        cx, cy = x + w / 2 + ox, y + h / 2 + oy
        return cx - side / 2, cy - side / 2, side, side

    def invert(self, square: FloatBox, aspect: float = 1.0, roll: float = 0.0) -> FloatBox:
        """The detection box (w / h = ``aspect``) that ``apply`` maps onto ``square``."""
        sx, sy, side, _ = square
        size = side / self.scale
        w, h = size * math.sqrt(aspect), size / math.sqrt(aspect)
        ox, oy = _turn(self.dx * size, self.dy * size, roll)
        cx, cy = sx + side / 2 - ox, sy + side / 2 - oy
        return cx - w / 2, cy - h / 2, w, h

    @classmethod
    def fit(cls, pairs: Iterable[tuple[Box, FloatBox, float]]) -> Framing:
        """The framing mapping detections onto true squares: medians over (detection box,
        true FER square, roll) triples, robust to the odd loose box.

        Raises:
            ValueError: no pairs.
        """
        scales, dxs, dys = [], [], []
        for (x, y, w, h), (tx, ty, tside, _), roll in pairs:
            size = math.sqrt(w * h)
            ox = tx + tside / 2 - (x + w / 2)
            oy = ty + tside / 2 - (y + h / 2)
            fx, fy = _turn(ox, oy, -roll)
            scales.append(tside / size)
            dxs.append(fx / size)
            dys.append(fy / size)
        if not scales:
            msg = "cannot fit a framing from no matched faces"
            raise ValueError(msg)
        return cls(float(np.median(scales)), float(np.median(dxs)), float(np.median(dys)))


def _turn(dx: float, dy: float, roll: float) -> tuple[float, float]:
    """(dx, dy) in the face's upright frame -> image offsets for a face rolled ``roll``
    degrees counter-clockwise (image y points down)."""
    if not roll:
        return dx, dy
    a = math.radians(roll)
    c, s = math.cos(a), math.sin(a)
    return c * dx + s * dy, -s * dx + c * dy


# FER2013 was cut along OpenCV's face-detector boxes (the dataset's paper), so Haar's box is the
# framing; the others are fitted to Haar's box of the same real face by benchmarks/framing.py
# (2026-12-03, 569-629 face pairs from both shared clips). Identity for anything unknown.
FRAMINGS: dict[str, Framing] = {
    "haar": Framing(1.0, 0.0, 0.0),
    "blazeface": Framing(1.059, -0.012, -0.055),  # boxes in the full-range model's framing
    "blazeface-full": Framing(1.056, -0.016, -0.056),
    "blazeface-short": Framing(1.050, -0.025, -0.100),
    "res10": Framing(1.035, -0.011, -0.023),
}


def framing_for(detector: str) -> Framing:
    """The fitted framing of a detector by name (identity when none is fitted)."""
    return FRAMINGS.get(detector, Framing())


def crop_face(gray: np.ndarray, box: FloatBox | Box, roll: float = 0.0) -> np.ndarray:
    """The face in ``box`` as a 48x48 uint8 crop, turned upright by ``-roll`` degrees.

    A straight box inside the frame is cut and resized with INTER_AREA, as the tutorial did.
    Otherwise the region is first shrunk with INTER_AREA to about 48 px per side (so the
    rotation samples neighbouring pixels and does not alias), then rotated; parts of the
    square outside the frame repeat the edge pixels instead of stretching the face.

    Raises:
        ValueError: the box does not overlap the frame, or is empty.
    """
    import cv2

    h, w = gray.shape[:2]
    x, y, bw, bh = (float(v) for v in box)
    if bw <= 0 or bh <= 0 or x >= w or y >= h or x + bw <= 0 or y + bh <= 0:
        raise ValueError(f"box {tuple(box)} is outside the {w}x{h} frame")
    ix, iy, iw, ih = round(x), round(y), round(bw), round(bh)
    if abs(roll) < STRAIGHT_DEG and ix >= 0 and iy >= 0 and ix + iw <= w and iy + ih <= h and iw > 0 and ih > 0:
        return cv2.resize(gray[iy:iy + ih, ix:ix + iw], (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA)
    cx, cy, side = x + bw / 2, y + bh / 2, max(bw, bh)
    reach = side * 0.75  # half the diagonal, and a little more, holds the square at any roll
    x0, y0 = max(0, math.floor(cx - reach)), max(0, math.floor(cy - reach))
    x1, y1 = min(w, math.ceil(cx + reach)), min(h, math.ceil(cy + reach))
    region = gray[y0:y1, x0:x1]
    f = min(1.0, CROP_SIZE / side)
    fx = fy = 1.0
    if f < 1.0:
        region = cv2.resize(region, (max(1, round((x1 - x0) * f)), max(1, round((y1 - y0) * f))),
                            interpolation=cv2.INTER_AREA)
        fx, fy = region.shape[1] / (x1 - x0), region.shape[0] / (y1 - y0)
    # Frame -> crop: turn by -roll about the face's centre and scale the square to 48 px; the
    # region's own (possibly unequal) shrink is undone first, so the face is never stretched.
    to_crop = cv2.getRotationMatrix2D((cx, cy), -roll, CROP_SIZE / side)
    to_crop[:, 2] += (CROP_SIZE / 2 - cx, CROP_SIZE / 2 - cy)
    # warpAffine works on pixel indices (a pixel's centre is its index), the geometry above on
    # continuous coordinates (pixel i spans [i, i + 1)): convert on both sides.
    region_to_frame = np.array([[1 / fx, 0.0, x0 + 0.5 / fx], [0.0, 1 / fy, y0 + 0.5 / fy], [0.0, 0.0, 1.0]])
    m = to_crop @ region_to_frame
    m[:, 2] -= 0.5
    return cv2.warpAffine(region, m, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
