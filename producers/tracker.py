"""Track ids for face boxes across frames: greedy IoU matching (pure Python, no OpenCV).

Good enough for the tutorial's scenes (few faces, small motion between frames); ids let
the logger build per-person emotion timelines. A track survives ``max_missed`` frames
without a match (a blink of the detector) before its id is retired; ids are never reused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Box = tuple[int, int, int, int]


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = min(ax + aw, bx + bw) - max(ax, bx)
    ih = min(ay + ah, by + bh) - max(ay, by)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / (aw * ah + bw * bh - inter)


@dataclass
class _Track:
    box: Box
    missed: int = 0


class IouTracker:
    """Assigns stable ids to boxes frame by frame.

    Args:
        iou_threshold: Minimum IoU between a track's last box and a new box to match.
        max_missed: Frames a track may go unmatched before it is forgotten.
    """

    def __init__(self, iou_threshold: float = 0.3, max_missed: int = 15) -> None:
        self.iou_threshold = iou_threshold
        self.max_missed = max_missed
        self._tracks: dict[int, _Track] = {}
        self._next_id = 0

    @property
    def active(self) -> dict[int, Box]:
        """Live tracks: id -> last matched box."""
        return {tid: t.box for tid, t in self._tracks.items()}

    def update(self, boxes: Sequence[Box]) -> list[int]:
        """Match this frame's boxes to tracks.

        Returns:
            One track id per box, in the order of ``boxes``.
        """
        pairs = sorted(
            ((iou(t.box, b), tid, i) for tid, t in self._tracks.items() for i, b in enumerate(boxes)),
            reverse=True,
        )
        ids: list[int | None] = [None] * len(boxes)
        matched: set[int] = set()
        for score, tid, i in pairs:
            if score < self.iou_threshold:
                break
            if tid in matched or ids[i] is not None:
                continue
            ids[i] = tid
            matched.add(tid)
        for tid in list(self._tracks):
            if tid not in matched:
                self._tracks[tid].missed += 1
                if self._tracks[tid].missed > self.max_missed:
                    del self._tracks[tid]
        for i, box in enumerate(boxes):
            if ids[i] is None:
                ids[i] = self._next_id
                self._next_id += 1
            self._tracks[ids[i]] = _Track(tuple(int(v) for v in box))
        return ids  # type: ignore[return-value]
