"""The training loop's stop rules and run record, on tiny synthetic faces."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from fer_pipeline.labels import FER2013_CODE_TO_INDEX
from fer_pipeline.trainer.data import FaceSet
from fer_pipeline.trainer.train import Recipe, train

from .conftest import synthetic_faces

pytestmark = pytest.mark.slow


def test_a_passed_deadline_stops_after_one_epoch_and_keeps_the_checkpoint(tmp_path, tf_one_thread):
    images, codes = synthetic_faces(200, seed=3)
    fs = FaceSet(images, np.asarray(FER2013_CODE_TO_INDEX)[codes], "synthetic")
    events = []
    recipe = Recipe(epochs=5, batch_size=32, jit=False, patience=99)
    model, val, state = train(fs, recipe, tmp_path, printer=lambda rec, improved: events.append(rec),
                              deadline=time.time())
    assert state["epoch"] == 1 and {"time_limit": 1} in events
    assert (tmp_path / "best.keras").is_file() and model is not None
    saved = json.loads((tmp_path / "state.json").read_text())
    # The run records what it ran on: epoch times mean little without it.
    assert saved["backend"] == "tensorflow" and saved["device"] == "cpu"
