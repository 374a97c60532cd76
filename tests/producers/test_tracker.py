from __future__ import annotations

import pytest

from fer_pipeline.producers.tracker import IouTracker, iou


def test_iou_values():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == pytest.approx(1.0)
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (10, 0, 10, 10)) == 0.0  # touching edges do not overlap


def test_ids_are_stable_while_faces_move_a_little():
    tr = IouTracker(iou_threshold=0.3, max_missed=2)
    first = tr.update([(10, 10, 50, 50), (200, 40, 60, 60)])
    assert first[0] != first[1]
    for step in range(1, 6):
        # Second face listed first: ids follow the boxes, not their order.
        ids = tr.update([(200 - step * 2, 40, 60, 60), (10 + step * 3, 10 + step, 50, 50)])
        assert ids == [first[1], first[0]]


def test_a_new_face_gets_a_new_id_and_ids_are_never_reused():
    tr = IouTracker(0.3, 1)
    (a,) = tr.update([(0, 0, 40, 40)])
    a2, b = tr.update([(2, 0, 40, 40), (300, 300, 40, 40)])
    assert a2 == a and b != a
    tr.update([])
    tr.update([])  # both tracks now missed twice > max_missed=1: forgotten
    assert tr.active == {}
    (c,) = tr.update([(2, 0, 40, 40)])
    assert c not in (a, b)


def test_tracks_survive_up_to_max_missed_frames():
    tr = IouTracker(0.3, max_missed=3)
    (a,) = tr.update([(50, 50, 40, 40)])
    for _ in range(3):
        assert tr.update([]) == []
    assert tr.update([(52, 50, 40, 40)]) == [a]  # missed exactly 3: still known
    for _ in range(4):
        tr.update([])
    assert tr.update([(52, 50, 40, 40)]) != [a]


def test_greedy_matching_prefers_the_best_overlap():
    tr = IouTracker(0.1, 5)
    a, b = tr.update([(0, 0, 100, 100), (60, 0, 100, 100)])
    # One box overlapping both tracks goes to the track it overlaps most; the other box gets the other track.
    ids = tr.update([(55, 0, 100, 100), (0, 0, 100, 100)])
    assert ids == [b, a]


def test_low_overlap_is_a_new_track():
    tr = IouTracker(0.5, 5)
    (a,) = tr.update([(0, 0, 100, 100)])
    (b,) = tr.update([(60, 0, 100, 100)])  # IoU 0.25 < 0.5
    assert b != a
