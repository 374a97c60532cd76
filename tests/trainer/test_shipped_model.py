"""The model in models/ is what the workers serve: it must load through LiteRT, agree with its
metadata and be accurate on real faces."""

from __future__ import annotations

import numpy as np
import pytest

from fer_pipeline.labels import EMOTIONS, NUM_CLASSES
from fer_pipeline.model import load_predictor, read_info
from fer_pipeline.settings import DEFAULT_MODEL_DIR

SLICE = 1000
MIN_ACCURACY = 0.60


@pytest.fixture(scope="module")
def shipped():
    if not (DEFAULT_MODEL_DIR / "model.json").is_file():
        pytest.fail(f"no shipped model in {DEFAULT_MODEL_DIR}: train one with `fer-pipeline train --out models`")
    info = read_info(DEFAULT_MODEL_DIR / "model.json")
    return info, load_predictor(info.path, "litert")


def test_shipped_model_matches_its_metadata(shipped):
    info, predictor = shipped
    assert info.labels == EMOTIONS
    assert info.raw["input"]["shape"] == [None, 48, 48, 1]
    assert info.raw["output"]["shape"] == [None, NUM_CLASSES]
    assert info.raw["architecture"] in ("compact", "seed") and info.raw["macs_per_face"] > 0
    assert 0 < info.raw["temperature"] < 100
    for name in info.files.values():
        assert (info.path.parent / name).is_file()
    probs = predictor.predict(np.random.default_rng(0).integers(0, 256, (5, 48, 48), dtype=np.uint8))
    assert probs.shape == (5, NUM_CLASSES) and np.allclose(probs.sum(axis=1), 1, atol=1e-4)


@pytest.mark.data
def test_shipped_model_is_accurate_on_publictest(shipped, data_dir):
    from fer_pipeline.trainer.data import load_npz
    from fer_pipeline.trainer.evaluate import evaluate_predictor

    faces = load_npz(data_dir / "fer2013_publictest.npz")
    faces = faces.subset(np.arange(SLICE))
    report = evaluate_predictor(shipped[1], faces)
    assert report["accuracy"] > MIN_ACCURACY, (
        f"{shipped[0].model_id}: {report['accuracy']:.1%} on the first {SLICE} PublicTest faces")
    # The metadata's own PublicTest figure must describe this file, not another model.
    recorded = shipped[0].raw.get("metrics", {}).get("publictest", {}).get("accuracy")
    if recorded is not None:
        assert report["accuracy"] == pytest.approx(recorded, abs=0.05)
