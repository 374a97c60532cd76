"""Which labels to draw on a frame: its own, then stand-ins for the faces whose label is late.

A frame announces how many faces it carries; when fewer of its labels have arrived, the
newest label of each track of the same producer run seen within ``STALE_WINDOW_S`` of video
fills in, nearest first, drawn as stale. Pure: the display consumer and the dashboard both
call it with what they hold.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from fer_pipeline.consumers.overlay import FaceAnnotation
from fer_pipeline.messages import Frame, Label

STALE_WINDOW_S = 1.0  # a track's last label stands in for this long (in video time) around its frame
DEFAULT_FPS = 30.0  # cameras that do not know their rate (fps 0)


def frames_in_window(frame: Frame) -> int:
    """``STALE_WINDOW_S`` in frames of this frame's camera."""
    return int((frame.fps or DEFAULT_FPS) * STALE_WINDOW_S)


def stale_labels(frame: Frame, last: Mapping[int, Label], have: Collection[int], n: int) -> list[Label]:
    """Up to ``n`` last-known labels (``last``: track -> newest label) of this frame's run, of
    tracks not in ``have``, seen within the window of this frame, nearest first."""
    if n <= 0:
        return []
    window = frames_in_window(frame)
    near = [lab for lab in last.values()
            if lab.run_id == frame.run_id and lab.track_id not in have
            and abs(lab.frame_index - frame.frame_index) <= window]
    near.sort(key=lambda lab: abs(lab.frame_index - frame.frame_index))
    return near[:n]


def faces_to_draw(frame: Frame, fresh: Sequence[Label], last: Mapping[int, Label]) -> tuple[list[FaceAnnotation], int]:
    """The frame's annotations (its own labels, then stale stand-ins for the missing faces)
    and how many of them are stand-ins."""
    faces = [FaceAnnotation.from_label(label) for label in fresh]
    stale = stale_labels(frame, last, {label.track_id for label in fresh}, frame.faces - len(fresh))
    return faces + [FaceAnnotation.from_label(label, stale=True) for label in stale], len(stale)
