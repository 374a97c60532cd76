from __future__ import annotations

import cv2
import numpy as np
import pytest

from fer_pipeline.producers.detection import Detection
from fer_pipeline.producers.faces import FaceFinder, crop_face
from fer_pipeline.settings import ProducerSettings
from tests.fakes import ScriptedDetector


def test_crop_face_straight_inside_is_the_tutorials_resize():
    gray = np.arange(100 * 200, dtype=np.uint32).reshape(100, 200).astype(np.uint8)
    crop = crop_face(gray, (10, 20, 96, 48))
    assert crop.shape == (48, 48) and crop.dtype == np.uint8
    expected = cv2.resize(gray[20:68, 10:106], (48, 48), interpolation=cv2.INTER_AREA)
    assert np.array_equal(crop, expected)
    with pytest.raises(ValueError, match="outside"):
        crop_face(gray, (300, 0, 10, 10))


def test_crop_face_over_the_edge_repeats_the_border_instead_of_stretching():
    gray = np.zeros((100, 100), np.uint8)
    gray[:, 50:] = 200  # right half bright
    crop = crop_face(gray, (60, 20, 80, 80))  # half the square hangs over the right edge
    assert crop.shape == (48, 48)
    assert crop[:, 30:].min() == 200  # the padding repeats the edge column, the face keeps its scale


def test_crop_face_turns_a_rolled_face_upright():
    """A bar drawn rolled 20 degrees counter-clockwise comes out horizontal."""
    gray = np.zeros((200, 200), np.uint8)
    cv2.rectangle(gray, (60, 95), (140, 105), 255, -1)
    rot = cv2.getRotationMatrix2D((100, 100), 20, 1.0)
    rolled = cv2.warpAffine(gray, rot, (200, 200))
    upright = crop_face(rolled, (40, 40, 120, 120), roll=20)
    straight = crop_face(gray, (40, 40, 120, 120))
    assert np.abs(upright.astype(int) - straight.astype(int)).mean() < 8
    assert np.abs(crop_face(rolled, (40, 40, 120, 120)).astype(int) - straight.astype(int)).mean() > 15


def test_finder_detects_every_nth_frame_and_tracks_in_between():
    settings = ProducerSettings(detect_every=3, min_face=10)
    det = ScriptedDetector([[Detection((10 + 3 * t, 10, 40, 40))] for t in range(0, 12, 3)])
    finder = FaceFinder(settings, lambda: det)
    frames = [np.full((120, 160, 3), t, np.uint8) for t in range(10)]
    found = [finder.find(f) for f in frames]
    assert det.calls == 4  # frames 0, 3, 6, 9
    assert all(len(faces) == 1 for faces in found)  # a box on every frame, not only detected ones
    assert {faces[0].track_id for faces in found} == {0}
    assert [faces[0].detected for faces in found] == [t % 3 == 0 for t in range(10)]
    assert [int(faces[0].crop[0, 0]) for faces in found] == list(range(10))  # cut from each frame


def test_finder_drops_faces_below_min_face():
    finder = FaceFinder(ProducerSettings(min_face=30), lambda: ScriptedDetector([[Detection((0, 0, 20, 20))]]))
    assert finder.find(np.zeros((64, 64, 3), np.uint8)) == []


def test_finder_keeps_faces_between_sparse_detections_whatever_the_tracker_settings():
    settings = ProducerSettings(detect_every=10, tracker_coast=2, tracker_max_missed=0, min_face=10)
    det = ScriptedDetector([[Detection((20, 20, 40, 40))]] * 5)
    finder = FaceFinder(settings, lambda: det)
    found = [finder.find(np.zeros((120, 160, 3), np.uint8)) for _ in range(30)]
    assert all(len(f) == 1 for f in found) and {f[0].track_id for f in found} == {0}


def test_crop_face_maps_a_point_exactly_when_the_region_shrinks_unevenly():
    """A square mostly below the frame: its region is shrunk by different factors across and
    down (72/150 and 22/45); a bright dot lands where the geometry says (not stretched)."""
    gray = np.zeros((300, 400), np.uint8)
    gray[286:295, 146:155] = 255  # centre (150, 290)
    crop = crop_face(gray, (100, 280, 100, 100), roll=0.001)  # rolled: the warp path
    ys, xs = np.nonzero(crop)
    w = crop[ys, xs].astype(float)
    # The dot's centre (150.5, 290.5) is 0.5 right of and 39.5 above the square's (150, 330);
    # 100 px -> 48: (24.24, 5.04), pixel indices (23.74, 4.54).
    # (Stretching the region's rows by its columns' factor, as an earlier version did, put it
    # 0.35 px lower.)
    assert abs((xs * w).sum() / w.sum() - 23.74) < 0.15 and abs((ys * w).sum() / w.sum() - 4.54) < 0.15


@pytest.mark.parametrize("shape", [(20, 8192, 3), (2000, 5, 3), (1600, 63, 3), (1, 1, 3), (3, 2)])
def test_odd_frame_shapes_run_through_blazeface(shape):
    finder = FaceFinder(ProducerSettings())
    assert finder.find(np.zeros(shape, np.uint8)) == []
