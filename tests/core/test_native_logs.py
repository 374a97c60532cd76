"""What native libraries print on fd 2: LiteRT's delegate line is kept out, anything else passes."""

from __future__ import annotations

import os

import numpy as np

from fer_pipeline.model import load_predictor
from fer_pipeline.native_logs import quiet_native_stderr
from fer_pipeline.settings import Settings


def test_known_chatter_is_dropped_and_every_other_line_written_back_in_order(capfd):
    with quiet_native_stderr():
        os.write(2, b"before\nINFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"ERROR: something real\n")
    assert capfd.readouterr().err == "before\nERROR: something real\n"


def test_a_litert_worker_model_loads_and_predicts_without_the_delegate_line(capfd):
    predictor = load_predictor(Settings().worker.model, "litert", threads=1, int8="auto")
    for n in (1, 7, 64):
        assert predictor.predict(np.zeros((n, 48, 48), np.uint8)).shape == (n, 7)
    assert "XNNPACK" not in capfd.readouterr().err
