"""A whole training job, as `fer-pipeline train` runs it: load data, train, calibrate on the
validation split, evaluate on the report split, export the shipped files.

The pieces are public so `fer-pipeline export` can redo the last three from a checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from fer_pipeline.errors import DataError, ModelError
from fer_pipeline.trainer import data as fdata
from fer_pipeline.trainer.train import Recipe, keras_backend

log = logging.getLogger("fer.train")

FERPLUS_FILE = "ferplus_train_publictest.csv"


def configure_tf(threads: int) -> None:
    """Quiet TensorFlow's start-up noise and pin its thread pools (before importing it).

    Nothing to do when Keras runs on another backend (JAX or PyTorch, e.g. on a GPU).
    """
    if keras_backend() != "tensorflow":
        return
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
    return np.concatenate(out) if out else np.zeros((0, 7), np.float32)


def load_training_set(train_data: str | None, ferplus: str | None, data_dir: Path | None = None) -> fdata.FaceSet:
    """The Training split with FER+ soft targets attached where they apply.

    Args:
        train_data: npz/csv/folder, or None for the shared ``fer2013_train.npz``.
        ferplus: ``"shared"`` (or None): the shared FER+ votes, used only when the rows are
            FER2013 Training in its original order (the votes are matched by row); ``"none"``:
            hard labels only; anything else: a FER+ csv path that must line up with the data.
        data_dir: where the shared files live (default ``fdata.default_data_dir()``).
    """
    data_dir = Path(data_dir or fdata.default_data_dir())
    choice = ferplus or "shared"
    fs = fdata.shared_split("train", data_dir) if not train_data else fdata.load(train_data, usage="Training")
    if choice == "none":
        return fs
    votes = data_dir / FERPLUS_FILE if choice == "shared" else Path(choice)
    # Votes are matched to images by row; a folder tree has no row order to match.
    ordered = not train_data or Path(train_data).suffix in (".npz", ".csv")
    if choice == "shared" and train_data:
        if not ordered or len(fs) != fdata.FER2013_TRAIN_ROWS or not votes.is_file():
            log.info("FER+ votes not used: %s is not FER2013 Training in its original row order", train_data)
            return fs
    elif not ordered:
        raise DataError(f"{train_data}: FER+ votes need npz/csv data in FER2013 row order, not a folder")
    fs.soft, fs.not_face = fdata.load_ferplus(votes, 0, len(fs))
    return fs


def load_report_set(test_data: str | None, data_dir: Path | None = None, *, limit: int = 0,
                    usage: str = "PublicTest") -> fdata.FaceSet:
    """The split metrics are reported on (shared PublicTest by default); ``limit`` keeps the first N."""
    fs = fdata.load(test_data, usage=usage) if test_data else fdata.shared_split("publictest", data_dir)
    if limit and len(fs) > limit:
        fs = fs.subset(np.arange(limit))
    return fs


def training_info(state: dict, *, train_data: str | None, ferplus: str | None, data_dir: Path | None = None) -> dict:
    """The ``training`` block of ``model.json``, from a run's ``state.json``."""
    data_dir = Path(data_dir or fdata.default_data_dir())
    return {
        "data": train_data or str(data_dir / "fer2013_train.npz"),
        "ferplus": ferplus or "shared",
        "recipe": state["recipe"],
        "epochs_run": state["epoch"],
        "best_epoch": state["best_epoch"],
        "train_images": state["train_images"],
        "val_images": state["val_images"],
        "seconds": round(sum(h.get("seconds", 0) for h in state["history"]), 1),
        "backend": state.get("backend", "tensorflow"),
        "device": state.get("device", "unknown"),
    }


def calibrate_and_report(model, *, val: fdata.FaceSet, test_set: fdata.FaceSet, printer=None) -> dict:
    """Fit the temperature on ``val`` and score ``test_set`` (plain and flip-TTA).

    Returns:
        ``{"val": report, "test": report, "temperature": T, "tta_accuracy": float}``.
    """
    from fer_pipeline.trainer import metrics

    stage = _stage(printer)
    stage({"stage": "calibrate", "images": len(val)}, False)
    val_logits = logits_of(model, val.images)
    temperature = metrics.fit_temperature(val_logits, val.labels)
    val_report = metrics.report(metrics.softmax(val_logits, temperature), val.labels)
    stage({"stage": "report", "images": len(test_set)}, False)
    test_logits = logits_of(model, test_set.images)
    test_report = metrics.report(metrics.softmax(test_logits, temperature), test_set.labels)
    flip_logits = logits_of(model, test_set.images[:, :, ::-1])
    tta = metrics.softmax(test_logits, temperature) + metrics.softmax(flip_logits, temperature)
    return {"val": val_report, "test": test_report, "temperature": temperature,
            "tta_accuracy": float((tta.argmax(1) == test_set.labels).mean())}


def calibrate_and_export(model, *, val: fdata.FaceSet, test_set: fdata.FaceSet, arch: str, training: dict,
                         out_dir: Path, test_source: str, printer=None) -> dict:
    """Fit the temperature on ``val``, report on ``test_set``, write the shipped files to ``out_dir``.

    Returns:
        ``{"meta": model.json contents, "val": report, "test": report, "temperature": T}``.
    """
    from fer_pipeline.trainer.architectures import macs
    from fer_pipeline.trainer.export import export

    scored = calibrate_and_report(model, val=val, test_set=test_set, printer=printer)
    _stage(printer)({"stage": "export", "out": str(out_dir)}, False)
    meta = export(
        model, out_dir, temperature=scored["temperature"], arch=arch, macs=macs(model), training=training,
        check_images=test_set.images, check_labels=test_set.labels,
        extra={"metrics": _metrics(scored, test_source)},
    )
    return {"meta": meta, **scored}


def run(*, train_data: str | None, test_data: str | None, ferplus: str | None, recipe: Recipe, run_dir: Path,
        out_dir: Path, resume: bool, printer=None, report_limit: int = 0, deadline: float | None = None) -> dict:
    """Train ``recipe`` into ``run_dir``, then calibrate, report and export into ``out_dir``.

    ``report_limit`` caps the report split (quick runs); see ``load_training_set`` for ``ferplus``.
    On a backend other than TensorFlow (no TFLite converter), the scores go to
    ``run_dir/report.json`` and ``meta`` is None: `fer-pipeline export` finishes the job
    where TensorFlow is installed.
    """
    from fer_pipeline.trainer.train import train

    data_dir = fdata.default_data_dir()
    train_set = load_training_set(train_data, ferplus, data_dir)
    test_set = load_report_set(test_data, data_dir, limit=report_limit)
    model, val, state = train(train_set, recipe, run_dir, resume=resume, printer=printer, deadline=deadline)
    training = training_info(state, train_data=train_data, ferplus=ferplus, data_dir=data_dir)
    test_source = test_data or str(data_dir / "fer2013_publictest.npz")
    if keras_backend() != "tensorflow":
        from fer_pipeline.trainer.architectures import macs

        scored = calibrate_and_report(model, val=val, test_set=test_set, printer=printer)
        report = {"backend": keras_backend(), "architecture": recipe.arch, "macs_per_face": macs(model),
                  "parameters": int(model.count_params()), "training": training,
                  "temperature": scored["temperature"], **_metrics(scored, test_source)}
        Path(run_dir, "report.json").write_text(json.dumps(report, indent=2) + "\n")
        return {"meta": None, **scored}
    return calibrate_and_export(
        model, val=val, test_set=test_set, arch=recipe.arch, training=training, out_dir=out_dir,
        test_source=test_source, printer=printer)


def reexport(checkpoint: Path, out_dir: Path, *, train_data: str | None = None, test_data: str | None = None,
             ferplus: str | None = None, report_limit: int = 0, printer=None) -> dict:
    """Export a logits checkpoint (``best.keras``/``last.keras``, or its run dir) again.

    The temperature is refitted on the same validation split the run held out, so the run's
    ``state.json`` must sit beside the checkpoint; its recipe (seed, limit, fraction) and the
    data it names recreate the split. ``train_data``/``ferplus``/``test_data`` override them.
    """
    import keras

    from fer_pipeline.trainer.train import prepare

    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        checkpoint = checkpoint / "best.keras"
    if not checkpoint.is_file():
        raise ModelError(f"checkpoint not found: {checkpoint}")
    state_file = checkpoint.parent / "state.json"
    if not state_file.is_file():
        raise ModelError(f"{state_file} not found: it records the recipe that recreates the validation split")
    try:
        state = json.loads(state_file.read_text())
        recipe = Recipe(**state["recipe"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{state_file}: unreadable run state ({e})") from e
    notes = recipe.notes or {}
    train_data = train_data or notes.get("data")
    ferplus = ferplus or notes.get("ferplus")

    data_dir = fdata.default_data_dir()
    _, val = prepare(load_training_set(train_data, ferplus, data_dir), recipe)
    if len(val) != state.get("val_images", len(val)):
        raise DataError(f"validation split has {len(val)} images, the run held out {state['val_images']}: "
                        "pass the --data/--ferplus it was trained with")
    try:
        model = keras.saving.load_model(checkpoint, safe_mode=True, compile=False)
    except Exception as e:  # keras raises many types for corrupt or unsafe files
        raise ModelError(f"{checkpoint}: cannot load Keras model ({type(e).__name__}: {e})") from e
    training = training_info(state, train_data=train_data, ferplus=ferplus, data_dir=data_dir)
    training["checkpoint"] = str(checkpoint)
    return calibrate_and_export(
        model, val=val, test_set=load_report_set(test_data, data_dir, limit=report_limit), arch=recipe.arch,
        training=training, out_dir=out_dir, test_source=test_data or str(data_dir / "fer2013_publictest.npz"),
        printer=printer)


def _stage(printer):
    return printer or (lambda rec, improved: log.info("%s", rec))


def _metrics(scored: dict, test_source: str) -> dict:
    """The metrics block of model.json (and of a non-TensorFlow run's report.json)."""
    return {"val": _brief(scored["val"]), "publictest": _brief(scored["test"]),
            "publictest_flip_tta_accuracy": scored["tta_accuracy"], "publictest_source": test_source}


def _brief(r: dict) -> dict:
    return {k: r[k] for k in ("n", "accuracy", "macro_f1", "ece", "nll")} | {
        "per_class_f1": {k: round(v["f1"], 4) for k, v in r["per_class"].items()}}
