"""Draw emotion labels onto frames (a pure annotator in roboflow-supervision's style).

``EmotionAnnotator.annotate`` takes an image and the faces to draw and touches nothing
else: no Redis, no windows, no state between calls, so it is easy to test and reuse.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from fer_pipeline.messages import Label

# BGR; hues chosen so neighbouring boxes of different emotions stay distinguishable.
DEFAULT_COLORS: Mapping[str, tuple[int, int, int]] = {
    "angry": (40, 40, 220),
    "disgust": (40, 140, 40),
    "fear": (170, 60, 170),
    "happy": (0, 215, 255),
    "neutral": (190, 190, 190),
    "sad": (200, 110, 30),
    "surprise": (0, 140, 255),
}
_UNKNOWN_COLOR = (255, 255, 255)
STALE_MARK = "~"


@dataclass(frozen=True)
class FaceAnnotation:
    """One face to draw; the box is in source-frame pixels (as detected)."""

    x: int
    y: int
    w: int
    h: int
    emotion: str
    confidence: float
    track_id: int | None = None
    # Drawn with a thin box and a "~" mark: a label carried over from an earlier frame
    # because this frame's own label did not arrive in time.
    stale: bool = False

    @classmethod
    def from_label(cls, label: Label, *, stale: bool = False) -> FaceAnnotation:
        b = label.bbox
        return cls(b.x, b.y, b.w, b.h, label.emotion, label.confidence, label.track_id, stale)

    def text(self, show_track: bool) -> str:
        parts = []
        if show_track and self.track_id is not None:
            parts.append(f"#{self.track_id}")
        parts.append(f"{self.emotion} {round(self.confidence * 100):d}%")
        text = " ".join(parts)
        return f"{STALE_MARK}{text}" if self.stale else text


class EmotionAnnotator:
    """Draws a coloured box per face and an "emotion NN%" caption on a filled background.

    Args:
        thickness: box line width in pixels for fresh labels (stale ones use 1).
        font_scale: OpenCV Hershey font scale of the caption.
        show_track: prefix the caption with the track id ("#3 happy 87%").
        colors: BGR colour per emotion name; defaults to ``DEFAULT_COLORS``.
    """

    def __init__(self, *, thickness: int = 2, font_scale: float = 0.5, show_track: bool = True,
                 colors: Mapping[str, tuple[int, int, int]] | None = None) -> None:
        if thickness < 1 or font_scale <= 0:
            msg = "thickness must be >= 1 and font_scale > 0"
            raise ValueError(msg)
        self.thickness = thickness
        self.font_scale = font_scale
        self.show_track = show_track
        self.colors = dict(DEFAULT_COLORS if colors is None else colors)
        self.font = cv2.FONT_HERSHEY_SIMPLEX

    def color(self, emotion: str) -> tuple[int, int, int]:
        return self.colors.get(emotion, _UNKNOWN_COLOR)

    def annotate(self, image: np.ndarray, faces: Sequence[FaceAnnotation], *, scale: float = 1.0,
                 copy: bool = False) -> np.ndarray:
        """Draw ``faces`` onto ``image``.

        Args:
            image: a BGR (H, W, 3) or gray (H, W) uint8 image.
            faces: what to draw; boxes in source pixels.
            scale: factor from source pixels to ``image`` pixels (a ``Frame``'s ``scale``).
            copy: draw on a copy and leave ``image`` untouched; by default the image is
                drawn on in place (as supervision's annotators do), saving a frame copy.

        Returns:
            The annotated image (``image`` itself unless ``copy``); a gray input comes back
            as BGR, since colours need three channels.
        """
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            msg = f"image must be a uint8 (H, W) or (H, W, 3) array, got {image.shape} {image.dtype}"
            raise ValueError(msg)
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        elif copy:
            image = image.copy()
        height, width = image.shape[:2]
        # Fresh boxes last, so they are on top where a stale box overlaps them.
        for face in sorted(faces, key=lambda f: not f.stale):
            x1 = _clip(round(face.x * scale), width - 1)
            y1 = _clip(round(face.y * scale), height - 1)
            x2 = _clip(round((face.x + face.w) * scale), width - 1)
            y2 = _clip(round((face.y + face.h) * scale), height - 1)
            if x2 <= x1 or y2 <= y1:
                continue  # entirely outside this (cropped/downscaled) image
            color = self.color(face.emotion)
            cv2.rectangle(image, (x1, y1), (x2, y2), color, 1 if face.stale else self.thickness, cv2.LINE_AA)
            self._caption(image, face.text(self.show_track), x1, y1, y2, color)
        return image

    def _caption(self, image: np.ndarray, text: str, x1: int, y1: int, y2: int, color: tuple[int, int, int]) -> None:
        height, width = image.shape[:2]
        (tw, th), base = cv2.getTextSize(text, self.font, self.font_scale, 1)
        pad = 3
        box_h = th + base + 2 * pad
        # Above the box when it fits, otherwise just inside its top edge (faces at the top
        # of the frame), and shifted left so the caption never runs off the right edge.
        top = y1 - box_h if y1 - box_h >= 0 else min(y1, max(0, height - box_h))
        left = max(0, min(x1, width - tw - 2 * pad))
        cv2.rectangle(image, (left, top), (left + tw + 2 * pad, top + box_h), color, cv2.FILLED)
        cv2.putText(image, text, (left + pad, top + pad + th), self.font, self.font_scale,
                    _text_color(color), 1, cv2.LINE_AA)


def _clip(v: int, hi: int) -> int:
    return max(0, min(int(v), hi))


def _text_color(bg: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light backgrounds, white on dark ones (Rec. 601 luma of a BGR colour)."""
    b, g, r = bg
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


__all__ = ["DEFAULT_COLORS", "EmotionAnnotator", "FaceAnnotation", "STALE_MARK"]
