"""Small synthetic sources for the producer tests: a labelled npz and a short video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fer_pipeline.labels import FER2013_CODE_NAMES


def write_replay_npz(path: Path, n: int = 5) -> np.ndarray:
    """An npz shaped like the shared FER2013 files; returns its FER2013 label codes."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (n, 48, 48), dtype=np.uint8)
    codes = (np.arange(n) % 7).astype(np.uint8)
    np.savez_compressed(path, images=images, labels=codes, names=np.array(FER2013_CODE_NAMES))
    return codes


def write_video(path: Path, frames: int = 10, fps: float = 25.0) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((48, 64, 3), i * 20, np.uint8))
    writer.release()
    return path


@pytest.fixture
def replay_npz(tmp_path) -> Path:
    path = tmp_path / "faces.npz"
    write_replay_npz(path)
    return path


@pytest.fixture
def tiny_video(tmp_path) -> Path:
    return write_video(tmp_path / "tiny.avi")
