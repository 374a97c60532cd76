from __future__ import annotations

import cv2
import numpy as np
import pytest

from fer_pipeline.producers.faces import FaceDetector, crop_face
from fer_pipeline.producers.tracker import iou
from fer_pipeline.settings import ProducerSettings


def gray_frames(path, indices):
    cap = cv2.VideoCapture(str(path))
    out = []
    for i in indices:
        cap.set(cv2.CAP_PROP_POS_FRAMES, i)
        ok, image = cap.read()
        assert ok, f"cannot read frame {i} of {path}"
        out.append(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    cap.release()
    return out


@pytest.mark.data
def test_haar_finds_the_woman_in_woman2(video_dir):
    frames = gray_frames(video_dir / "woman2.mp4", [0, 150, 300])
    full = FaceDetector(ProducerSettings())
    small = FaceDetector(ProducerSettings(detect_width=320))
    for gray in frames:
        boxes = full.detect(gray)
        assert boxes, "no face found at full size"
        h, w = gray.shape
        for x, y, bw, bh in boxes:
            assert 0 <= x and 0 <= y and x + bw <= w and y + bh <= h and bw >= 30
        # Downscaled detection reports boxes in full-size pixels, on the same face.
        reduced = small.detect(gray)
        assert reduced
        best = max(iou(a, b) for a in boxes for b in reduced)
        assert best > 0.5


def test_blank_frame_has_no_faces():
    assert FaceDetector(ProducerSettings()).detect(np.full((120, 160), 128, np.uint8)) == []


def test_crop_face_resizes_and_clips():
    gray = np.arange(100 * 200, dtype=np.uint32).reshape(100, 200).astype(np.uint8)
    crop = crop_face(gray, (10, 20, 96, 48))
    assert crop.shape == (48, 48) and crop.dtype == np.uint8
    expected = cv2.resize(gray[20:68, 10:106], (48, 48), interpolation=cv2.INTER_AREA)
    assert np.array_equal(crop, expected)
    # A box hanging over the edge is clipped to the frame, not padded.
    edge = crop_face(gray, (180, 90, 40, 40))
    assert np.array_equal(edge, cv2.resize(gray[90:100, 180:200], (48, 48), interpolation=cv2.INTER_AREA))
    with pytest.raises(ValueError, match="outside"):
        crop_face(gray, (300, 0, 10, 10))
