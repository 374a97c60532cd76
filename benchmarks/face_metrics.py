"""Pure scoring of found faces against ground truth: matching, recall, false boxes, track
fragmentation. Used by the detection benchmark and the framing fit; unit-tested in
tests/benchmarks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from fer_pipeline.producers.tracker import iou

Box = tuple[float, float, float, float]
IOU_MATCH = 0.4  # loose enough for detectors that frame a face differently from the truth


def match(truth: Sequence[Box], found: Sequence[Box], iou_min: float = IOU_MATCH) -> list[tuple[int, int]]:
    """Greedy one-to-one (truth index, found index) pairs, best overlap first."""
    pairs = sorted(((iou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)), reverse=True)
    used_t: set[int] = set()
    used_f: set[int] = set()
    out = []
    for score, i, j in pairs:
        if score < iou_min:
            break
        if i not in used_t and j not in used_f:
            used_t.add(i)
            used_f.add(j)
            out.append((i, j))
    return out


@dataclass
class FrameScore:
    """One frame: truth faces (required), ignore regions, found boxes, and what matched."""

    required: int
    matched: list[tuple[int, int]]  # (required index, found index)
    false: int  # found boxes matching neither a required face nor an ignore region


def covered(box: Box, region: Box) -> float:
    """The share of ``box`` inside ``region`` (COCO's rule for crowd/ignore regions)."""
    iw = min(box[0] + box[2], region[0] + region[2]) - max(box[0], region[0])
    ih = min(box[1] + box[3], region[1] + region[3]) - max(box[1], region[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    return iw * ih / (box[2] * box[3])


def score_frame(required: Sequence[Box], ignore: Sequence[Box], found: Sequence[Box],
                iou_min: float = IOU_MATCH) -> FrameScore:
    """Match found boxes to required faces first; a leftover box at least half inside an
    ignore region (a face too small, ambiguous or mostly outside the frame) counts neither
    way, as COCO treats its crowd regions; any other leftover box is false."""
    pairs = match(required, found, iou_min)
    used = {j for _, j in pairs}
    rest = [j for j in range(len(found)) if j not in used]
    absorbed = sum(any(covered(found[k], g) >= 0.5 for g in ignore) for k in rest)
    return FrameScore(len(required), pairs, len(rest) - absorbed)


@dataclass
class Tally:
    """Recall and false boxes over many frames."""

    frames: int = 0
    required: int = 0
    matched: int = 0
    false: int = 0
    frames_with_face: int = 0  # frames with at least one required face
    frames_with_face_found: int = 0  # ... on which at least one of them was found

    def add(self, s: FrameScore) -> None:
        self.frames += 1
        self.required += s.required
        self.matched += len(s.matched)
        self.false += s.false
        if s.required:
            self.frames_with_face += 1
            self.frames_with_face_found += bool(s.matched)

    def as_dict(self) -> dict:
        return {"frames": self.frames, "faces": self.required, "matched": self.matched, "false_boxes": self.false,
                "recall": self.matched / self.required if self.required else None,
                "false_per_frame": self.false / self.frames if self.frames else None,
                "frames_with_face_found": (self.frames_with_face_found / self.frames_with_face
                                           if self.frames_with_face else None)}


@dataclass
class Identities:
    """Which track ids each true identity was matched to, frame after frame."""

    seq: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))

    def add(self, identity: int, track_id: int) -> None:
        self.seq[identity].append(track_id)

    def as_dict(self) -> dict:
        """``fragments``: track ids per identity (1 is ideal); ``switches``: times an identity's
        track id changed between matched frames; ``shared_ids``: track ids given to more than
        one identity."""
        if not self.seq:
            return {"identities": 0, "fragments_per_identity": None, "switches": 0, "shared_ids": 0}
        frags = [len(set(ids)) for ids in self.seq.values()]
        switches = sum(sum(a != b for a, b in zip(ids, ids[1:])) for ids in self.seq.values())
        owners: dict[int, set[int]] = defaultdict(set)
        for identity, ids in self.seq.items():
            for t in ids:
                owners[t].add(identity)
        return {"identities": len(self.seq), "fragments_per_identity": sum(frags) / len(frags),
                "identities_in_one_track": sum(f == 1 for f in frags) / len(frags),
                "switches": switches, "shared_ids": sum(len(o) > 1 for o in owners.values())}
