from __future__ import annotations

import pytest

from fer_pipeline.producers.tracker import FaceTracker, iou


def step(tracker: FaceTracker, boxes=None, rolls=None):
    """One frame: predict, then (when ``boxes`` is given) a detection."""
    tracker.predict()
    ids = tracker.update(boxes, rolls) if boxes is not None else None
    return ids, {f.track_id: f for f in tracker.faces()}


def test_iou_values():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == pytest.approx(1.0)
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (10, 0, 10, 10)) == 0.0  # touching edges do not overlap


def test_ids_are_stable_while_faces_move_a_little():
    tr = FaceTracker(iou_threshold=0.3, max_missed=2)
    first, _ = step(tr, [(10, 10, 50, 50), (200, 40, 60, 60)])
    assert first[0] != first[1]
    for k in range(1, 6):
        # Second face listed first: ids follow the boxes, not their order.
        ids, _ = step(tr, [(200 - k * 2, 40, 60, 60), (10 + k * 3, 10 + k, 50, 50)])
        assert ids == [first[1], first[0]]


def test_a_new_face_gets_a_new_id_and_ids_are_never_reused():
    tr = FaceTracker(0.3, max_missed=1)
    (a,), _ = step(tr, [(0, 0, 40, 40)])
    (a2, b), _ = step(tr, [(2, 0, 40, 40), (300, 300, 40, 40)])
    assert a2 == a and b != a
    step(tr, [])
    step(tr, [])  # both tracks now unmatched for 2 frames > max_missed=1: forgotten
    assert tr.active == {}
    (c,), _ = step(tr, [(2, 0, 40, 40)])
    assert c not in (a, b)


def test_predicts_motion_between_detections():
    """A face moving 6 px a frame, detected every 4th frame: the predicted boxes in between
    follow it, so the crops cut there hold the face."""
    tr = FaceTracker(coast=8)
    truth = [(20 + 6 * t, 100, 60, 60) for t in range(40)]
    for t, box in enumerate(truth):
        _, faces = step(tr, [box] if t % 4 == 0 else None)
        (face,) = faces.values()
        if t >= 12:  # a few detections to learn the velocity
            assert iou(face.box, box) > 0.8, (t, face.box, box)
            assert face.detected == (t % 4 == 0)


def test_coasting_stops_after_coast_misses_detections():
    """Detected every frame: a confirmed face that the detector misses is still boxed through
    ``coast_misses`` misses (a blink), not longer (a ghost)."""
    tr = FaceTracker(coast=8, coast_misses=1)
    (a,), _ = step(tr, [(100, 100, 50, 50)])
    step(tr, [(101, 100, 50, 50)])
    _, faces = step(tr, [])
    assert a in faces and not faces[a].detected
    _, faces = step(tr, [])
    assert a not in faces


def test_holds_the_id_through_a_short_occlusion_and_coasts_only_so_long():
    tr = FaceTracker(max_missed=15, coast=3, coast_misses=10)
    (a,), _ = step(tr, [(100, 100, 50, 50)])
    step(tr, [(101, 100, 50, 50)])
    for k in range(6):  # hidden for 6 detections: reported for `coast` frames, then not
        _, faces = step(tr, [])
        assert (a in faces) == (k < 3)
    (back,), faces = step(tr, [(103, 100, 50, 50)])
    assert back == a and faces[a].detected


def test_one_false_detection_is_reported_once_not_coasted():
    tr = FaceTracker(coast=8, min_hits=2)
    _, faces = step(tr, [(10, 10, 40, 40)])
    assert len(faces) == 1
    _, faces = step(tr, [])  # the next detection does not see it: gone at once
    assert faces == {}


def test_young_tracks_are_reported_between_detections():
    """With detect_every > 1 a face seen once is still boxed until the next detection."""
    tr = FaceTracker(coast=8, min_hits=2)
    step(tr, [(10, 10, 40, 40)])
    for _ in range(2):
        _, faces = step(tr)
        assert len(faces) == 1


def test_small_fast_faces_keep_their_id():
    """A 20 px face moving 12 px a frame overlaps its last box by IoU 0.25, under the
    threshold: the predicted position and the centre gate keep it one track."""
    tr = FaceTracker(iou_threshold=0.3)
    x = 100
    (first,), _ = step(tr, [(x, 100, 20, 20)])
    for speed in (8, 10, 12, 12, 12, 12, 12, 12):
        x += speed
        (tid,), _ = step(tr, [(x, 100, 20, 20)])
        assert tid == first
    assert iou((x - 12, 100, 20, 20), (x, 100, 20, 20)) < 0.3


def test_greedy_matching_prefers_the_best_overlap():
    tr = FaceTracker(0.1, 5)
    (a, b), _ = step(tr, [(0, 0, 100, 100), (60, 0, 100, 100)])
    ids, _ = step(tr, [(55, 0, 100, 100), (0, 0, 100, 100)])
    assert ids == [b, a]


def test_roll_follows_the_eyes_smoothly():
    tr = FaceTracker()
    step(tr, [(0, 0, 50, 50)], [10.0])
    _, faces = step(tr, [(0, 0, 50, 50)], [20.0])
    (face,) = faces.values()
    assert 10.0 < face.roll < 20.0
