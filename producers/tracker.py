"""Track ids and boxes for faces between detections: a constant-velocity Kalman filter per
face (SORT's model: centre and size each with a velocity) matched to detections by IoU.

Why: detection every frame is the producer's largest cost, and detectors blink (a turned
head, motion blur). The filter predicts where each face is on frames without a detection
(``detect_every`` > 1, or a missed face), so every frame with a person in it still gets a
box and a label, and the person keeps one id. Pure numpy; a handful of faces per camera.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Box = tuple[int, int, int, int]

# Noise as a fraction of the face's size (DeepSORT's weights): a 200 px face moves and
# resizes in more pixels per frame than a 40 px one.
POS_STD = 1 / 20
VEL_STD = 1 / 160
MEAS_STD = 1 / 20
CENTRE_GATE = 0.5  # low-IoU fallback: centres closer than this share of the face size match
ROLL_SMOOTHING = 0.5  # weight of the new eye-line angle against the track's last one


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
    """State (cx, cy, w, h) and velocities, each coordinate an independent 2-state filter."""

    x: np.ndarray  # (4, 2): value, velocity per coordinate
    p: np.ndarray  # (4, 2, 2): covariance per coordinate
    roll: float
    hits: int = 1
    since_match: int = 0  # frames since the last matched detection
    misses: int = 0  # detections since the last match that did not see this face
    matched_now: bool = True

    @classmethod
    def start(cls, box: Box, roll: float) -> _Track:
        x, y, w, h = box
        size = max(w, h)
        state = np.array([[x + w / 2, 0.0], [y + h / 2, 0.0], [w, 0.0], [h, 0.0]])
        p = np.zeros((4, 2, 2))
        p[:, 0, 0] = (2 * MEAS_STD * size) ** 2
        p[:, 1, 1] = (10 * VEL_STD * size) ** 2  # the first velocity is unknown
        return cls(state, p, roll)

    @property
    def box(self) -> Box:
        cx, cy, w, h = self.x[:, 0]
        w, h = max(1.0, w), max(1.0, h)
        return round(cx - w / 2), round(cy - h / 2), round(w), round(h)

    def predict(self) -> None:
        size = max(self.x[2, 0], self.x[3, 0], 1.0)
        self.x[:, 0] += self.x[:, 1]
        # P = F P F^T + Q with F = [[1, 1], [0, 1]], per coordinate.
        p = self.p
        p00 = p[:, 0, 0] + 2 * p[:, 0, 1] + p[:, 1, 1]
        p01 = p[:, 0, 1] + p[:, 1, 1]
        p[:, 0, 0] = p00 + (POS_STD * size) ** 2
        p[:, 0, 1] = p[:, 1, 0] = p01
        p[:, 1, 1] += (VEL_STD * size) ** 2
        self.since_match += 1
        self.matched_now = False

    def correct(self, box: Box, roll: float | None) -> None:
        x, y, w, h = box
        z = np.array([x + w / 2, y + h / 2, w, h], float)
        r = (MEAS_STD * max(w, h, 1)) ** 2
        s = self.p[:, 0, 0] + r
        k0, k1 = self.p[:, 0, 0] / s, self.p[:, 1, 0] / s
        innovation = z - self.x[:, 0]
        self.x[:, 0] += k0 * innovation
        self.x[:, 1] += k1 * innovation
        p00, p01, p11 = self.p[:, 0, 0].copy(), self.p[:, 0, 1].copy(), self.p[:, 1, 1].copy()
        self.p[:, 0, 0] = (1 - k0) * p00
        self.p[:, 0, 1] = self.p[:, 1, 0] = (1 - k0) * p01
        self.p[:, 1, 1] = p11 - k1 * p01
        if roll is not None:
            self.roll = ROLL_SMOOTHING * roll + (1 - ROLL_SMOOTHING) * self.roll
        self.hits += 1
        self.since_match = 0
        self.misses = 0
        self.matched_now = True


@dataclass(frozen=True, slots=True)
class TrackedFace:
    """A face on this frame: its box (the detector's framing), id, roll, and whether a
    detection saw it on this frame or the filter predicted it."""

    box: Box
    track_id: int
    roll: float
    detected: bool


class FaceTracker:
    """Assigns stable ids to faces and predicts their boxes between detections.

    Call ``predict()`` once per frame, then ``update(boxes, rolls)`` on frames that were
    detected; ``faces()`` gives this frame's boxes.

    Args:
        iou_threshold: Minimum IoU between a predicted box and a detection to match (below it,
            centres within half a face still match: small fast faces overlap little).
        max_missed: Frames a track is remembered without a matching detection, so a face
            that comes back after a short occlusion keeps its id; ids are never reused.
        coast: Frames a track's predicted box is still reported since its last detection
            (longer and a face that left would leave a ghost box behind).
        min_hits: Detections before a track is coasted through a detection that misses it:
            a newer track is reported between detections but dropped at the first miss, so
            one false detection never leaves a trail of boxes.
        coast_misses: Detections in a row that may miss a confirmed track while its box is
            still reported (the detector's blinks); between detections it is always reported.
        birth_score: Detections below this score only continue existing tracks (see ``update``).
    """

    def __init__(self, iou_threshold: float = 0.3, max_missed: int = 15, coast: int = 8, min_hits: int = 2,
                 birth_score: float = 0.0, coast_misses: int = 1) -> None:
        self.iou_threshold = iou_threshold
        self.coast_misses = coast_misses
        self.birth_score = birth_score
        self.max_missed = max_missed
        self.coast = coast
        self.min_hits = min_hits
        self._tracks: dict[int, _Track] = {}
        self._next_id = 0

    @property
    def active(self) -> dict[int, Box]:
        """Remembered tracks: id -> current (predicted or corrected) box."""
        return {tid: t.box for tid, t in self._tracks.items()}

    def reset(self) -> None:
        """Forget every track (a scene cut); ids keep counting up, never reused."""
        self._tracks.clear()

    def predict(self) -> None:
        """Advance every track by one frame; forget those unmatched for too long."""
        for tid in list(self._tracks):
            track = self._tracks[tid]
            track.predict()
            if track.since_match > self.max_missed:
                del self._tracks[tid]

    def update(self, boxes: Sequence[Box], rolls: Sequence[float | None] | None = None,
               scores: Sequence[float] | None = None) -> list[int | None]:
        """Match this frame's detections to tracks (call after ``predict()``).

        Detections scoring at least ``birth_score`` are matched first and may start tracks;
        weaker ones (ByteTrack's idea) only continue a track no strong detection took: a
        face the detector is unsure of on this frame stays tracked, while an unsure box on
        nothing known is dropped, which is where false boxes come from.

        Returns:
            One track id per box, in the order of ``boxes``; None for a weak box that matched
            no track.
        """
        n = len(boxes)
        rolls = list(rolls) if rolls is not None else [None] * n
        strong = [scores is None or scores[i] >= self.birth_score for i in range(n)]
        ids: list[int | None] = [None] * n
        taken: set[int] = set()
        for first in (True, False):
            for _, tid, i in self._pairs(boxes):
                if strong[i] != first or tid in taken or ids[i] is not None:
                    continue
                ids[i] = tid
                taken.add(tid)
                self._tracks[tid].correct(tuple(int(v) for v in boxes[i]), rolls[i])
        for tid, track in self._tracks.items():
            if tid not in taken:
                track.misses += 1
        for i, box in enumerate(boxes):
            if ids[i] is None and strong[i]:
                ids[i] = self._next_id
                self._tracks[self._next_id] = _Track.start(tuple(int(v) for v in box), rolls[i] or 0.0)
                self._next_id += 1
        return ids

    def faces(self) -> list[TrackedFace]:
        """The faces of this frame: every track a detection matched on this frame, and the others
        predicted for at most ``coast`` frames since their last detection and through at most
        ``coast_misses`` detections that missed them (young tracks: none)."""
        out = []
        for tid, t in self._tracks.items():
            allowed = self.coast_misses if t.hits >= self.min_hits else 0
            if t.matched_now or (t.since_match <= self.coast and t.misses <= allowed):
                box = t.box
                if box[2] > 0 and box[3] > 0:
                    out.append(TrackedFace(box, tid, t.roll, t.matched_now))
        return out

    def _pairs(self, boxes: Sequence[Box]) -> list[tuple[float, int, int]]:
        """Candidate (score, track, box) matches, best first: IoU above the threshold, else a
        close centre scored below every IoU match."""
        pairs = []
        for tid, t in self._tracks.items():
            tb = t.box
            tcx, tcy, tsize = tb[0] + tb[2] / 2, tb[1] + tb[3] / 2, max(tb[2], tb[3], 1)
            for i, b in enumerate(boxes):
                overlap = iou(tb, b)
                if overlap >= self.iou_threshold:
                    pairs.append((1.0 + overlap, tid, i))
                    continue
                dist = np.hypot(b[0] + b[2] / 2 - tcx, b[1] + b[3] / 2 - tcy) / tsize
                ratio = max(b[2], b[3]) / tsize
                if dist < CENTRE_GATE and 0.67 < ratio < 1.5:
                    pairs.append((1.0 - dist, tid, i))
        pairs.sort(reverse=True)
        return pairs
