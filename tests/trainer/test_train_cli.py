"""`fer-pipeline train --quick`, `evaluate` and `export` end to end on synthetic faces
(one shared quick-trained model; see conftest.quick_run)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fer_pipeline.cli import app
from fer_pipeline.errors import ConfigError, DataError
from fer_pipeline.labels import EMOTIONS, NUM_CLASSES
from fer_pipeline.model import load_predictor, read_info
from fer_pipeline.trainer.data import load_npz

pytestmark = pytest.mark.slow


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_quick_train_writes_a_model_whose_metadata_matches(quick_run):
    from fer_pipeline.trainer.architectures import build, macs

    files = {p.name for p in quick_run.out_dir.iterdir()}
    assert {"model.json", "model.keras", "model.tflite"} <= files
    assert {"best.keras", "last.keras", "state.json"} <= {p.name for p in quick_run.run_dir.iterdir()}
    meta = json.loads((quick_run.out_dir / "model.json").read_text())
    assert meta["labels"] == list(EMOTIONS)
    assert meta["input"]["shape"] == [None, 48, 48, 1]
    assert meta["architecture"] == "compact"
    assert meta["macs_per_face"] == macs(build("compact"))
    recipe = meta["training"]["recipe"]
    assert recipe["quick"] and recipe["epochs"] == 2 and recipe["batch_size"] == 32
    assert meta["training"]["train_images"] + meta["training"]["val_images"] == 300
    assert meta["metrics"]["publictest"]["n"] == 140
    # Per-epoch rows and the summary reached the terminal.
    assert "val_acc" in quick_run.output and " 2/2 " in quick_run.output
    assert "macro-F1" in quick_run.output and "model.tflite" in quick_run.output


def test_exported_tflite_agrees_with_keras(quick_run):
    images = load_npz(quick_run.test_npz).images
    keras_probs = load_predictor(quick_run.out_dir, "keras").predict(images)
    tflite_probs = load_predictor(quick_run.out_dir, "litert").predict_many(images)
    assert tflite_probs.shape == (len(images), NUM_CLASSES)
    assert np.abs(keras_probs - tflite_probs).max() < 1e-4


def test_evaluate_json_reproduces_the_export_check(quick_run, tmp_path):
    png = tmp_path / "cm.png"
    result = _invoke("evaluate", "--model", str(quick_run.out_dir / "model.json"), "--data", str(quick_run.test_npz),
                     "--json", "--confusion-png", str(png))
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    meta = read_info(quick_run.out_dir).raw
    assert report["data"]["images"] == 140 and sum(map(sum, report["confusion"])) == 140
    assert report["accuracy"] == meta["export_check"]["accuracy_tflite"]
    assert report["model"]["temperature"] == meta["temperature"]
    assert png.stat().st_size > 1000


def test_evaluate_prints_tables_with_limit_tta_and_int8(quick_run):
    meta = read_info(quick_run.out_dir).raw
    args = ["evaluate", "--model", str(quick_run.out_dir), "--data", str(quick_run.test_npz), "--limit", "70", "--tta"]
    if "tflite_int8" in meta["files"]:
        args.append("--int8")
    result = _invoke(*args)
    assert result.exit_code == 0, result.output
    assert "70 faces, flip TTA" in result.output
    for word in ("accuracy", "macro-F1", "ECE", "precision", "recall", "confusion", *EMOTIONS):
        assert word in result.output


def test_export_refits_the_same_temperature_from_the_checkpoint(quick_run, tmp_path):
    out = tmp_path / "again"
    result = _invoke("export", "--checkpoint", str(quick_run.run_dir / "best.keras"), "--out", str(out),
                     "--test-data", str(quick_run.test_npz), "--threads", "1")
    assert result.exit_code == 0, result.output
    first, again = read_info(quick_run.out_dir).raw, read_info(out).raw
    # Same checkpoint, same validation split recreated from state.json: same temperature.
    assert again["temperature"] == pytest.approx(first["temperature"], rel=1e-6)
    assert again["training"]["val_images"] == first["training"]["val_images"]
    assert again["metrics"]["publictest"]["accuracy"] == first["metrics"]["publictest"]["accuracy"]
    assert again["training"]["checkpoint"].endswith("best.keras")


def test_resume_with_other_options_is_refused(quick_run):
    result = _invoke("train", "--quick", "--threads", "1", "--batch-size", "64", "--data", str(quick_run.train_npz),
                     "--test-data", str(quick_run.test_npz), "--run-dir", str(quick_run.run_dir), "--resume")
    assert isinstance(result.exception, DataError) and "different recipe" in str(result.exception)


def test_bad_options_are_user_errors(tmp_path):
    assert isinstance(_invoke("train", "--arch", "vgg").exception, ConfigError)
    assert isinstance(_invoke("evaluate", "--runtime", "onnx").exception, ConfigError)
    missing = _invoke("evaluate", "--model", str(tmp_path))
    assert "model metadata not found" in str(missing.exception)
    nodata = _invoke("export", "--checkpoint", str(tmp_path / "best.keras"))
    assert "checkpoint not found" in str(nodata.exception)
