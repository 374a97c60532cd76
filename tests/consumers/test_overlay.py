from __future__ import annotations

import numpy as np
import pytest

from fer_pipeline.consumers.overlay import DEFAULT_COLORS, STALE_MARK, EmotionAnnotator, FaceAnnotation
from fer_pipeline.labels import EMOTIONS
from fer_pipeline.messages import BBox
from tests.factories import make_label


def blank(h: int = 200, w: int = 300) -> np.ndarray:
    return np.full((h, w, 3), 60, np.uint8)


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mask of pixels that differ between two images."""
    return np.any(a != b, axis=-1)


def test_box_and_caption_are_drawn_in_place_by_default():
    img = blank()
    before = img.copy()
    face = FaceAnnotation(100, 80, 60, 60, "happy", 0.87)
    out = EmotionAnnotator().annotate(img, [face])
    assert out is img
    diff = changed(before, out)
    # Box edges: the left edge column and the bottom edge row.
    assert diff[80:140, 99:102].any(axis=1).all()
    assert diff[139:142, 100:160].any(axis=0).all()
    # Caption sits above the box on a filled background of the emotion's colour.
    caption = out[60:79, 100:160]
    assert (np.abs(caption.astype(int) - DEFAULT_COLORS["happy"]).sum(axis=-1) == 0).mean() > 0.5
    # Text drawn in a contrasting colour inside the caption background.
    assert (caption.sum(axis=-1) < 150).any()
    # The box interior and far-away pixels stay untouched.
    assert not diff[95:125, 115:145].any()
    assert not diff[170:, :].any() and not diff[:, 200:].any()


def test_copy_leaves_the_input_untouched():
    img = blank()
    before = img.copy()
    out = EmotionAnnotator().annotate(img, [FaceAnnotation(10, 40, 50, 50, "sad", 0.5)], copy=True)
    assert out is not img
    assert np.array_equal(img, before)
    assert changed(before, out).any()


def test_boxes_are_scaled_from_source_pixels():
    img = blank(100, 150)
    before = img.copy()
    # Source box (100, 100, 80, 60) at scale 0.5 -> image box (50, 50)-(90, 80).
    EmotionAnnotator(show_track=False).annotate(img, [FaceAnnotation(100, 100, 80, 60, "angry", 0.6)], scale=0.5)
    diff = changed(before, img)
    assert diff[55:78, 49:52].any(axis=1).all()      # left edge at x=50
    assert diff[55:78, 89:92].any(axis=1).all()      # right edge at x=90
    assert not diff[55:78, 95:].any()                  # nothing at the unscaled position


def test_stale_labels_are_marked_and_thinner():
    fresh = FaceAnnotation(100, 80, 60, 60, "neutral", 0.7, track_id=3)
    stale = FaceAnnotation(100, 80, 60, 60, "neutral", 0.7, track_id=3, stale=True)
    assert stale.text(show_track=True) == f"{STALE_MARK}#3 neutral 70%"
    assert fresh.text(show_track=False) == "neutral 70%"
    annotator = EmotionAnnotator(thickness=3)
    a, b = blank(), blank()
    annotator.annotate(a, [fresh])
    annotator.annotate(b, [stale])
    box_region = (slice(85, 135), slice(90, 170))  # left/right edges, below the caption
    assert changed(blank(), b)[box_region].sum() < changed(blank(), a)[box_region].sum()


def test_each_emotion_has_its_own_colour_and_readable_text():
    colours = {DEFAULT_COLORS[e] for e in EMOTIONS}
    assert len(colours) == len(EMOTIONS)
    # Yellow (happy) gets dark text, blue (sad) gets light text.
    for emotion, dark_text in (("happy", True), ("sad", False)):
        img = blank()
        EmotionAnnotator().annotate(img, [FaceAnnotation(100, 80, 60, 60, emotion, 0.9)])
        caption = img[60:79, 100:160].astype(int)
        off_bg = np.abs(caption - DEFAULT_COLORS[emotion]).sum(axis=-1) > 150
        text_pixels = caption[off_bg]
        assert len(text_pixels) > 10
        assert (text_pixels.mean() < 128) == dark_text


@pytest.mark.parametrize(("x", "y"), [(0, 0), (280, 0), (280, 180), (0, 175)])
def test_faces_at_the_edges_keep_their_caption_inside_the_image(x, y):
    img = blank()
    before = img.copy()
    EmotionAnnotator().annotate(img, [FaceAnnotation(x, y, 40, 40, "surprise", 0.99, track_id=12)])
    diff = changed(before, img)
    assert diff.any()
    # The caption background (orange) is visible somewhere: it was not clipped away.
    orange = np.abs(img.astype(int) - DEFAULT_COLORS["surprise"]).sum(axis=-1) == 0
    assert orange.sum() > 100


def test_from_label_and_gray_input():
    label = make_label(bbox=BBox(x=20, y=30, w=40, h=40), emotion="fear", confidence=0.55, track_id=4)
    face = FaceAnnotation.from_label(label)
    assert (face.x, face.y, face.w, face.h, face.emotion, face.track_id) == (20, 30, 40, 40, "fear", 4)
    assert face.confidence == pytest.approx(0.55)
    gray = np.full((100, 100), 50, np.uint8)
    out = EmotionAnnotator().annotate(gray, [face])
    assert out.shape == (100, 100, 3)
    assert gray.max() == 50  # the gray input itself is not modified


def test_boxes_outside_the_image_are_skipped():
    img = blank(50, 50)
    before = img.copy()
    EmotionAnnotator().annotate(img, [FaceAnnotation(500, 500, 40, 40, "sad", 0.5)])
    assert np.array_equal(img, before)
    with pytest.raises(ValueError, match="uint8"):
        EmotionAnnotator().annotate(np.zeros((10, 10, 3), np.float32), [])
