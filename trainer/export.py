"""Turn a trained logits model into the shipped form: serving .keras, .tflite (float32 and,
if it keeps accuracy, dynamic-range int8) and ``model.json`` metadata.

The serving model takes raw 48x48x1 gray pixels in [0, 255] with a free batch dimension and
returns temperature-calibrated probabilities, so any client with ``model.json`` can use it.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from fer_pipeline.labels import EMOTIONS
from fer_pipeline.model import METADATA_FORMAT


def serving_model(logits_model, temperature: float):
    import keras
    from keras import layers

    inputs = keras.Input((48, 48, 1), name="pixels")
    x = logits_model(inputs)
    x = layers.Rescaling(1.0 / temperature, name="temperature")(x)
    outputs = layers.Softmax(name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"{logits_model.name}_serving")


def to_tflite(model, path: Path, *, int8: bool = False) -> Path:
    """Convert through a SavedModel (the route that works for Keras 3 models)."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        conv = tf.lite.TFLiteConverter.from_saved_model(tmp)
        if int8:
            conv.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic-range int8 weights
        path.write_bytes(conv.convert())
    return path


def predict_keras(model, images: np.ndarray, batch: int = 512) -> np.ndarray:
    out = [np.asarray(model(images[i:i + batch, ..., None].astype(np.float32), training=False))
           for i in range(0, len(images), batch)]
    return np.concatenate(out) if out else np.zeros((0, len(EMOTIONS)), np.float32)


def write_metadata(out_dir: Path, meta: dict) -> Path:
    path = out_dir / "model.json"
    path.write_text(json.dumps(meta, indent=2) + "\n")
    return path


def export(logits_model, out_dir: Path, *, temperature: float, arch: str, macs: int, training: dict,
           check_images: np.ndarray, check_labels: np.ndarray, int8_tolerance: float = 0.005,
           extra: dict | None = None) -> dict:
    """Write the shipped files into ``out_dir`` and return the metadata written."""
    from fer_pipeline.model import LiteRTPredictor, read_info

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    serving = serving_model(logits_model, temperature)
    serving.save(out_dir / "model.keras")
    to_tflite(serving, out_dir / "model.tflite")
    created = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    meta = {
        "format": METADATA_FORMAT,
        "model_id": f"{arch}-{created:%Y%m%d-%H%M%S}",
        "labels": list(EMOTIONS),
        "input": {"shape": [None, 48, 48, 1], "dtype": "float32", "range": [0, 255],
                  "layout": "NHWC, one gray channel; preprocessing is inside the model"},
        "output": {"shape": [None, len(EMOTIONS)], "kind": "probabilities (softmax of logits / temperature)"},
        "files": {"keras": "model.keras", "tflite": "model.tflite"},
        "architecture": arch,
        "parameters": int(logits_model.count_params()),
        "macs_per_face": int(macs),
        "temperature": float(temperature),
        "training": training,
        "created": created.isoformat(),
        **(extra or {}),
    }
    write_metadata(out_dir, meta)

    # Check the float TFLite against Keras, and keep int8 only if it holds accuracy.
    keras_probs = predict_keras(serving, check_images)
    info = read_info(out_dir)
    f32 = LiteRTPredictor(info).predict_many(check_images)
    meta["export_check"] = {"images": int(len(check_images)),
                            "max_abs_diff_tflite_vs_keras": float(np.abs(f32 - keras_probs).max()),
                            "accuracy_keras": float((keras_probs.argmax(1) == check_labels).mean()),
                            "accuracy_tflite": float((f32.argmax(1) == check_labels).mean())}
    int8_path = to_tflite(serving, out_dir / "model_int8.tflite", int8=True)
    meta["files"]["tflite_int8"] = int8_path.name
    write_metadata(out_dir, meta)
    q = LiteRTPredictor(read_info(out_dir), int8=True).predict_many(check_images)
    acc_q = float((q.argmax(1) == check_labels).mean())
    meta["export_check"]["accuracy_tflite_int8"] = acc_q
    if meta["export_check"]["accuracy_tflite"] - acc_q > int8_tolerance:
        del meta["files"]["tflite_int8"]
        int8_path.unlink()
        meta["export_check"]["int8_dropped"] = f"lost more than {int8_tolerance:.1%} accuracy"
    write_metadata(out_dir, meta)
    return meta


def copy_model(src_dir: Path, dst_dir: Path) -> None:
    """Copy a model directory's files listed in its metadata (and the metadata)."""
    meta = json.loads((Path(src_dir) / "model.json").read_text())
    dst_dir.mkdir(parents=True, exist_ok=True)
    for name in {*meta["files"].values(), "model.json"}:
        shutil.copy2(Path(src_dir) / name, dst_dir / name)
