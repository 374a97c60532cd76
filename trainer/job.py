"""A whole training job, as `fer-pipeline train` runs it: load data, train, calibrate on the
validation split, evaluate on the report split, export the shipped files."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from fer_pipeline.trainer import data as fdata
from fer_pipeline.trainer.train import Recipe

log = logging.getLogger("fer.train")


def configure_tf(threads: int) -> None:
    """Quiet TensorFlow's start-up noise and pin its thread pools (before importing it)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(max(1, threads))
        except RuntimeError:  # already initialised in this process (tests): keep as is
            pass


def logits_of(model, images: np.ndarray, batch: int = 512) -> np.ndarray:
    out = [np.asarray(model(images[i:i + batch, ..., None].astype(np.float32), training=False))
           for i in range(0, len(images), batch)]
    return np.concatenate(out)


def run(*, train_data: str | None, test_data: str | None, ferplus: str | None, recipe: Recipe, run_dir: Path,
        out_dir: Path, resume: bool, printer=None) -> dict:
    from fer_pipeline.trainer import metrics
    from fer_pipeline.trainer.architectures import macs
    from fer_pipeline.trainer.export import export
    from fer_pipeline.trainer.train import train

    data_dir = fdata.default_data_dir()
    if train_data:
        train_set = fdata.load(train_data, usage="Training")
        if ferplus and Path(train_data).suffix == ".npz":
            train_set.soft, train_set.not_face = fdata.load_ferplus(Path(ferplus), 0, len(train_set))
    else:
        train_set = fdata.shared_split("train", data_dir, ferplus=ferplus != "none")
    test_set = fdata.load(test_data, usage="PublicTest") if test_data else fdata.shared_split("publictest", data_dir)

    model, val, state = train(train_set, recipe, run_dir, resume=resume, printer=printer)
    val_logits = logits_of(model, val.images)
    temperature = metrics.fit_temperature(val_logits, val.labels)
    val_report = metrics.report(metrics.softmax(val_logits, temperature), val.labels)
    test_logits = logits_of(model, test_set.images)
    test_report = metrics.report(metrics.softmax(test_logits, temperature), test_set.labels)
    flip_logits = logits_of(model, test_set.images[:, :, ::-1])
    tta = metrics.softmax(test_logits, temperature) + metrics.softmax(flip_logits, temperature)
    training = {
        "data": train_data or str(data_dir / "fer2013_train.npz"),
        "ferplus": ferplus or "shared",
        "recipe": state["recipe"],
        "epochs_run": state["epoch"],
        "best_epoch": state["best_epoch"],
        "train_images": state["train_images"],
        "val_images": state["val_images"],
        "seconds": round(sum(h.get("seconds", 0) for h in state["history"]), 1),
    }
    meta = export(
        model, out_dir, temperature=temperature, arch=recipe.arch, macs=macs(model), training=training,
        check_images=test_set.images, check_labels=test_set.labels,
        extra={"metrics": {
            "val": _brief(val_report),
            "publictest": _brief(test_report),
            "publictest_flip_tta_accuracy": float((tta.argmax(1) == test_set.labels).mean()),
            "publictest_source": test_data or str(data_dir / "fer2013_publictest.npz"),
        }},
    )
    return {"meta": meta, "val": val_report, "test": test_report}


def _brief(r: dict) -> dict:
    return {k: r[k] for k in ("n", "accuracy", "macro_f1", "ece", "nll")} | {
        "per_class_f1": {k: round(v["f1"], 4) for k, v in r["per_class"].items()}}
