"""Training loop: tf.data input, augmentation, mixed FER2013/FER+ targets, class balancing,
warmup + cosine learning rate, per-epoch checkpoints with ``--resume``, early stopping on a
validation split carved from Training (PublicTest is only ever reported, never tuned on).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fer_pipeline.errors import DataError
from fer_pipeline.labels import NUM_CLASSES
from fer_pipeline.trainer.data import FaceSet, stratified_split

log = logging.getLogger("fer.train")


@dataclass
class Recipe:
    """The hyperparameters of one training run; ``for_arch`` gives an architecture's defaults."""

    arch: str = "compact"
    epochs: int = 30
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.05
    ferplus_weight: float = 0.3     # target = (1-w) * FER2013 one-hot + w * FER+ vote distribution
    balance_power: float = 0.3      # class weight = (1/frequency)^power, normalised; 0 = off
    dropout: float = 0.3
    val_fraction: float = 0.1
    patience: int = 8
    drop_not_faces: bool = True     # FER+ says these rows are not faces
    augment: bool = True
    seed: int = 1337
    jit: bool = True
    quick: bool = False
    limit: int = 0                  # use at most this many training images (0 = all)
    notes: dict = field(default_factory=dict)

    @classmethod
    def for_arch(cls, arch: str, **kw) -> Recipe:
        if arch == "seed":
            # The tutorial's own recipe: adam at Keras defaults, batch 128, plain one-hot targets.
            base = dict(lr=1e-3, weight_decay=0.0, warmup_epochs=0.0, label_smoothing=0.0,
                        ferplus_weight=0.0, balance_power=0.0, augment=False, drop_not_faces=False)
            base.update(kw)
            return cls(arch=arch, **base)
        return cls(arch=arch, **kw)


def targets(fs: FaceSet, recipe: Recipe) -> np.ndarray:
    y = np.eye(NUM_CLASSES, dtype=np.float32)[fs.labels]
    if recipe.ferplus_weight > 0 and fs.soft is not None:
        has = fs.soft.sum(axis=1) > 0
        w = recipe.ferplus_weight
        y[has] = (1 - w) * y[has] + w * fs.soft[has]
    return y


def class_weights(labels: np.ndarray, power: float) -> np.ndarray:
    counts = np.bincount(labels, minlength=NUM_CLASSES).astype(np.float64)
    w = (counts.sum() / np.maximum(counts, 1)) ** power
    w /= (w[labels]).mean()  # mean sample weight 1 keeps the loss scale (and lr) unchanged
    return w.astype(np.float32)


def prepare(fs: FaceSet, recipe: Recipe) -> tuple[FaceSet, FaceSet]:
    """Clean and split Training into (train, val)."""
    if recipe.drop_not_faces and fs.not_face is not None:
        fs = fs.subset(np.flatnonzero(~fs.not_face))
    if recipe.limit and len(fs) > recipe.limit:
        idx = np.random.default_rng(recipe.seed).choice(len(fs), recipe.limit, replace=False)
        fs = fs.subset(np.sort(idx))
    if len(fs) < 50:
        raise DataError(f"only {len(fs)} training images: too few to train on")
    tr, va = stratified_split(fs.labels, recipe.val_fraction, recipe.seed)
    return fs.subset(tr), fs.subset(va)


def keras_backend() -> str:
    """The Keras backend this process uses, found the way Keras finds it (KERAS_BACKEND, then
    ``$KERAS_HOME/keras.json``) without importing Keras, which would import TensorFlow: the CLI
    must pin TF's threads before that."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    try:
        return json.loads((home / "keras.json").read_text()).get("backend", "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def device_name() -> str:
    """What the training ran on, for the run's record (epoch times mean little without it)."""
    name = keras_backend()
    try:
        if name == "jax":
            import jax

            dev = jax.devices()[0]
            return "cpu" if dev.platform == "cpu" else dev.device_kind
        if name == "torch":
            import torch

            return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "gpu") if gpus else "cpu"
    except Exception:  # a record only: never fail a run over it
        return "unknown"


def _dataset(fs: FaceSet, recipe: Recipe, *, training: bool, weights: np.ndarray | None = None,
             start_epoch: int = 0):
    y = targets(fs, recipe) if training else np.eye(NUM_CLASSES, dtype=np.float32)[fs.labels]
    w = weights[fs.labels] if weights is not None else np.ones(len(fs), np.float32)
    if keras_backend() != "tensorflow":
        if not training:
            return fs.images[..., None].astype(np.float32), y
        from fer_pipeline.trainer.batches import make_batches

        return make_batches(fs.images, y, w, batch_size=recipe.batch_size, seed=recipe.seed,
                            augment=recipe.augment, start_epoch=start_epoch)

    import tensorflow as tf

    from fer_pipeline.trainer.augment import make_augment

    x = fs.images[..., None].astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((x, y, w))
    if training:
        ds = ds.shuffle(len(fs), seed=recipe.seed, reshuffle_each_iteration=True)
    ds = ds.batch(recipe.batch_size, drop_remainder=training)
    if training and recipe.augment:
        ds = ds.map(make_augment(seed=recipe.seed), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _compile(model, recipe: Recipe, steps_per_epoch: int, optimizer=None):
    import keras

    if optimizer is None:
        total = max(1, recipe.epochs * steps_per_epoch)
        warm = int(recipe.warmup_epochs * steps_per_epoch)
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=recipe.lr if warm == 0 else recipe.lr * 0.05,
            decay_steps=max(1, total - warm), alpha=0.01,
            warmup_target=recipe.lr if warm else None, warmup_steps=warm,
        )
        if recipe.weight_decay:
            optimizer = keras.optimizers.AdamW(schedule, weight_decay=recipe.weight_decay)
        else:
            optimizer = keras.optimizers.Adam(schedule)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=recipe.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="acc")],
        jit_compile=_jit(recipe),
    )


def _jit(recipe: Recipe) -> bool:
    """XLA where it pays: TensorFlow per the recipe (a --quick run skips the compile); JAX
    always (unjitted JAX is op-by-op and far slower); never torch.compile on these small nets."""
    name = keras_backend()
    return recipe.jit if name == "tensorflow" else name == "jax"


class _EpochLog:
    """Checkpoint and report after every epoch; stop early; stop on request."""

    def __new__(cls, *a, **k):  # defined lazily so importing this module needs no keras
        import keras

        class EpochLog(keras.callbacks.Callback):
            def __init__(self, run_dir: Path, state: dict, recipe: Recipe, printer, deadline: float | None):
                super().__init__()
                self.run_dir, self.state, self.recipe, self.printer = run_dir, state, recipe, printer
                self.deadline = deadline
                self.t0 = time.time()

            def on_epoch_begin(self, epoch, logs=None):
                self.t0 = time.time()

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                secs = time.time() - self.t0
                rec = {"epoch": epoch + 1, "seconds": round(secs, 1),
                       **{k: round(float(v), 4) for k, v in logs.items()}}
                self.state["history"].append(rec)
                self.state["epoch"] = epoch + 1
                val = float(logs.get("val_acc", 0.0))
                improved = val > self.state["best_val_acc"]
                if improved:
                    self.state["best_val_acc"] = val
                    self.state["best_epoch"] = epoch + 1
                    self.model.save(self.run_dir / "best.keras")
                self.model.save(self.run_dir / "last.keras")
                _write_json(self.run_dir / "state.json", self.state)
                self.printer(rec, improved)
                if epoch + 1 - self.state["best_epoch"] >= self.recipe.patience:
                    self.printer({"early_stop": epoch + 1}, False)
                    self.model.stop_training = True
                if (self.run_dir / "STOP").exists():
                    self.printer({"stop_requested": epoch + 1}, False)
                    self.model.stop_training = True
                if self.deadline is not None and time.time() + secs > self.deadline:
                    self.printer({"time_limit": epoch + 1}, False)
                    self.model.stop_training = True

        return EpochLog(*a, **k)


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


def train(train_set: FaceSet, recipe: Recipe, run_dir: Path, *, resume: bool = False, printer=None,
          deadline: float | None = None):
    """Train into ``run_dir`` (best.keras, last.keras, state.json); returns (best model, val set, state).

    ``deadline`` (a ``time.time()`` value) ends training after the last epoch that fits before
    it, judged by the previous epoch's duration; the best checkpoint so far is kept.
    """
    import keras

    from fer_pipeline.trainer.architectures import build

    printer = printer or (lambda rec, improved: log.info("%s%s", rec, " *" if improved else ""))
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state_file = run_dir / "state.json"
    keras.utils.set_random_seed(recipe.seed)
    tr, va = prepare(train_set, recipe)
    weights = class_weights(tr.labels, recipe.balance_power) if recipe.balance_power else None
    steps = len(tr) // recipe.batch_size
    if steps == 0:
        raise DataError(f"{len(tr)} training images are fewer than one batch of {recipe.batch_size}")

    if resume and state_file.exists() and (run_dir / "last.keras").exists():
        state = json.loads(state_file.read_text())
        if state["recipe"] != asdict(recipe):
            raise DataError(f"{run_dir}: --resume with a different recipe than the checkpoint's; "
                            "use the same options or a new --run-dir")
        model = keras.saving.load_model(run_dir / "last.keras", safe_mode=True)
        _compile(model, recipe, steps, optimizer=model.optimizer)
        initial = state["epoch"]
    else:
        state = {"recipe": asdict(recipe), "epoch": 0, "best_val_acc": 0.0, "best_epoch": 0, "history": [],
                 "train_images": len(tr), "val_images": len(va), "started": time.time(),
                 "backend": keras_backend(), "device": device_name()}
        model = build(recipe.arch, dropout=recipe.dropout)
        _compile(model, recipe, steps)
        initial = 0

    if initial < recipe.epochs and initial - state["best_epoch"] < recipe.patience:
        model.fit(
            _dataset(tr, recipe, training=True, weights=weights, start_epoch=initial),
            validation_data=_dataset(va, recipe, training=False),
            epochs=recipe.epochs, initial_epoch=initial, verbose=0,
            shuffle=False,  # the dataset shuffles itself (Keras ignores this for datasets, and warns)
            callbacks=[_EpochLog(run_dir, state, recipe, printer, deadline)],
        )
    state["finished"] = time.time()
    _write_json(state_file, state)
    best = keras.saving.load_model(run_dir / "best.keras", safe_mode=True, compile=False)
    return best, va, state
