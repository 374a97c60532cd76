"""Trainer fixtures: tiny learnable synthetic faces in every data form, and one quick-trained
model shared by the whole session (TensorFlow is slow here; train once)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from fer_pipeline.labels import FER2013_CODE_NAMES, NUM_CLASSES

TRAIN_IMAGES = 300
TEST_IMAGES = 140


def synthetic_faces(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, 48, 48) uint8, FER2013 codes): a bright bar whose height encodes the class,
    on a noisy dark background. Mirror-symmetric, so the trainer's flip augmentation keeps
    the class, and a small net learns it in a few steps."""
    rng = np.random.default_rng(seed)
    codes = np.arange(n) % NUM_CLASSES
    rng.shuffle(codes)
    images = rng.integers(0, 60, (n, 48, 48)).astype(np.uint8)
    for img, c in zip(images, codes):
        top = 2 + 6 * int(c) + int(rng.integers(-1, 2))
        img[top:top + 4, 8:40] = rng.integers(200, 256)
    return images, codes.astype(np.uint8)


def write_npz(path: Path, images: np.ndarray, codes: np.ndarray) -> Path:
    np.savez_compressed(path, images=images, labels=codes, names=np.array(FER2013_CODE_NAMES))
    return path


@dataclass
class QuickRun:
    train_npz: Path
    test_npz: Path
    run_dir: Path
    out_dir: Path
    output: str


@pytest.fixture(scope="session")
def tf_one_thread() -> None:
    """One TensorFlow thread: the machine's cores belong to the real training run.
    Must run before TensorFlow executes its first op (pools are fixed after that)."""
    from fer_pipeline.trainer.job import configure_tf

    configure_tf(1)


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory, tf_one_thread) -> QuickRun:
    """`fer-pipeline train --quick` on synthetic data, once per session, one TF thread."""
    from typer.testing import CliRunner

    from fer_pipeline.cli import app

    root = tmp_path_factory.mktemp("quick")
    train_npz = write_npz(root / "train.npz", *synthetic_faces(TRAIN_IMAGES, seed=1))
    test_npz = write_npz(root / "test.npz", *synthetic_faces(TEST_IMAGES, seed=2))
    run_dir, out_dir = root / "run", root / "export"
    result = CliRunner().invoke(app, [
        "train", "--quick", "--threads", "1", "--batch-size", "32", "--lr", "0.003",
        "--data", str(train_npz), "--test-data", str(test_npz), "--run-dir", str(run_dir), "--out", str(out_dir),
    ])
    if result.exit_code != 0:
        raise AssertionError(f"train --quick failed ({result.exit_code}):\n{result.output}") from result.exception
    return QuickRun(train_npz, test_npz, run_dir, out_dir, result.output)
