"""Stand-ins shared by the tests: a model, face detectors and a camera source that behave
deterministically (the fakeredis transport is the ``fake_transport`` fixture in conftest)."""

from __future__ import annotations

import numpy as np

from fer_pipeline.messages import decode
from fer_pipeline.producers.detection.base import Detection
from fer_pipeline.producers.sources import CapturedFrame, Source


class MeanPredictor:
    """Deterministic stand-in model: the class is the crop's mean brightness bucket."""

    model_id = "mean-test"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, crops: np.ndarray) -> np.ndarray:
        self.calls.append(len(crops))
        out = np.full((len(crops), 7), 0.01, np.float32)
        cls = (crops.reshape(len(crops), -1).mean(axis=1) // 37).astype(int).clip(0, 6)
        out[np.arange(len(crops)), cls] = 0.94
        return out


class NanPredictor(MeanPredictor):
    """A model gone wrong: every probability NaN."""

    def predict(self, crops):
        return np.full((len(crops), 7), np.nan, np.float32)


class ScriptedDetector:
    """A detector that returns what the test scripted for each call (then nothing), or with no
    script one fixed face per call; counts calls."""

    name = "scripted"

    def __init__(self, script: list[list[Detection]] | None = None) -> None:
        self.script = None if script is None else list(script)
        self.calls = 0

    def detect(self, image):
        self.calls += 1
        if self.script is None:
            return [Detection((10, 10, 40, 40))]
        return self.script.pop(0) if self.script else []


class BrokenSource(Source):
    """Yields a few frames, then fails like a driver error mid-run."""

    kind = "broken"

    def __init__(self, good_frames: int) -> None:
        super().__init__("broken", 30.0, finite=True)
        self.good_frames = good_frames

    def frames(self, stop):
        for i in range(self.good_frames):
            yield CapturedFrame(i, float(i), np.zeros((64, 64, 3), np.uint8))
        raise RuntimeError("device unplugged")


def stream_messages(transport, key: str) -> list:
    """Every message on a stream, decoded (bundles expanded)."""
    return [decode(e.payload) for e in transport.entries(key)]
