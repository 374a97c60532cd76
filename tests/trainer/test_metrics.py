from __future__ import annotations

import numpy as np
import pytest

from fer_pipeline.errors import DataError
from fer_pipeline.labels import NUM_CLASSES
from fer_pipeline.trainer import metrics
from fer_pipeline.trainer.data import FaceSet
from fer_pipeline.trainer.evaluate import draw_confusion, evaluate_predictor


class PixelPredictor:
    """Predicts the class written in pixel (0, 0); pixel (0, 47) is used when flipped in."""

    model_id = "pixel"

    def predict(self, crops: np.ndarray) -> np.ndarray:
        return np.eye(NUM_CLASSES, dtype=np.float32)[crops[:, 0, 0]]


def _faces(labels, preds, right=None) -> FaceSet:
    images = np.zeros((len(labels), 48, 48), np.uint8)
    images[:, 0, 0] = preds
    images[:, 0, 47] = preds if right is None else right
    return FaceSet(images, np.array(labels, np.int64), "toy")


def test_evaluate_known_predictor_gives_known_confusion():
    r = evaluate_predictor(PixelPredictor(), _faces([0, 0, 1, 2, 2, 2, 6], [0, 1, 1, 2, 0, 2, 6]))
    expect = np.zeros((7, 7), int)
    expect[0, 0] = expect[0, 1] = expect[1, 1] = expect[2, 0] = expect[6, 6] = 1
    expect[2, 2] = 2
    assert r["confusion"] == expect.tolist()
    assert r["accuracy"] == pytest.approx(5 / 7)
    angry = r["per_class"]["angry"]
    assert (angry["precision"], angry["recall"], angry["support"]) == (0.5, 0.5, 2)
    assert r["per_class"]["disgust"]["precision"] == 0.5 and r["per_class"]["disgust"]["recall"] == 1.0
    assert r["per_class"]["fear"]["f1"] == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))
    # Classes never seen nor predicted score 0, and count in the macro average.
    f1s = [v["f1"] for v in r["per_class"].values()]
    assert r["macro_f1"] == pytest.approx(sum(f1s) / 7) and r["per_class"]["sad"]["f1"] == 0.0


def test_tta_averages_with_the_mirror_image():
    faces = _faces([3, 3], [3, 3], right=[3, 5])
    plain = evaluate_predictor(PixelPredictor(), faces)
    tta = evaluate_predictor(PixelPredictor(), faces, tta=True)
    assert plain["accuracy"] == 1.0
    # Second face: 0.5 happy / 0.5 sad; argmax takes the first (happy), confidence halves.
    assert tta["accuracy"] == 1.0 and tta["nll"] == pytest.approx(np.log(2) / 2)


def test_evaluate_refuses_empty_data():
    with pytest.raises(DataError, match="no images"):
        evaluate_predictor(PixelPredictor(), _faces([], []))


def test_ece_of_perfectly_calibrated_and_overconfident_predictions():
    n = 1000
    probs = np.full((n, NUM_CLASSES), 0.2 / 6)
    probs[:, 0] = 0.8
    labels = np.where(np.arange(n) < 800, 0, 1)  # right exactly 80% of the time at confidence 0.8
    assert metrics.expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)
    onehot = np.eye(NUM_CLASSES)[np.zeros(n, int)]
    assert metrics.expected_calibration_error(onehot, np.where(np.arange(n) < 500, 0, 1)) == pytest.approx(0.5)


def test_fit_temperature_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    true_t = 2.5
    logits = rng.normal(0, 4, (20_000, NUM_CLASSES))
    p = metrics.softmax(logits, true_t)
    labels = np.array([rng.choice(NUM_CLASSES, p=row) for row in p])
    t = metrics.fit_temperature(logits, labels)
    assert t == pytest.approx(true_t, rel=0.05)
    # Calibrating with it removes most of the miscalibration of T=1.
    ece_raw = metrics.expected_calibration_error(metrics.softmax(logits), labels)
    assert metrics.expected_calibration_error(metrics.softmax(logits, t), labels) < ece_raw / 3


def test_softmax_rows_sum_to_one_even_for_huge_logits():
    p = metrics.softmax(np.array([[1000.0, 0, 0, 0, 0, 0, -1000.0]]), 0.5)
    assert np.isfinite(p).all() and p.sum() == pytest.approx(1.0) and p[0, 0] == pytest.approx(1.0)


def test_confusion_png_is_shaded_by_row_rate(tmp_path):
    import cv2

    cm = np.diag([50, 5, 40, 90, 60, 45, 30])
    cm[1, 0] = 45  # disgust: mostly confused with angry
    path = draw_confusion(cm, tmp_path / "cm.png")
    img = cv2.imread(str(path))
    assert img is not None and img.shape[0] > 7 * 60 and img.shape[1] > 7 * 60
    left, top, cell = 120, 110, 72  # the drawing's grid
    def shade(i, j):  # mean brightness of a cell's corner, away from the text
        y, x = top + i * cell + 4, left + j * cell + 4
        return img[y:y + 6, x:x + 6].mean()
    assert shade(0, 0) < shade(0, 1)       # 100% darker than 0%
    assert shade(1, 0) < shade(1, 1)       # 90% darker than 10%, although 45 vs 5 is row-relative
    assert shade(3, 3) == pytest.approx(shade(6, 6), abs=1)  # both rows 100%: same shade, any count
