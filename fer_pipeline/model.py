"""Loading a shipped model for serving: ``model.json`` metadata plus a .tflite or .keras file.

Workers serve through LiteRT (``ai-edge-litert``) by default: it starts in a fraction of a
second with a small footprint and never imports TensorFlow. Keras (safe mode) stays
available as ``runtime="keras"``. Every predictor takes a uint8 batch (N, 48, 48) and
returns calibrated probabilities (N, 7) in ``EMOTIONS`` order.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from fer_pipeline.errors import ModelError
from fer_pipeline.labels import EMOTIONS, NUM_CLASSES
from fer_pipeline.native_logs import quiet_native_stderr

METADATA_FORMAT = 1


@dataclass(frozen=True)
class ModelInfo:
    """A checked ``model.json``: its path, model id, labels, model files by kind and the raw metadata."""

    path: Path  # the model.json
    model_id: str
    labels: tuple[str, ...]
    files: dict[str, str]
    raw: dict

    def file(self, key: str) -> Path:
        """The path of the model file listed under ``key`` (``tflite``, ``tflite_int8``, ``keras``);
        ``ModelError`` if it is not listed or not on disk."""
        name = self.files.get(key)
        if not name:
            raise ModelError(f"{self.path}: metadata lists no {key!r} model file")
        f = self.path.parent / name
        if not f.is_file():
            raise ModelError(f"model file not found: {f}")
        return f


def read_info(path: Path) -> ModelInfo:
    """Read and check ``model.json`` (a directory holding one is accepted too)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.json"
    if not path.is_file():
        raise ModelError(f"model metadata not found: {path} (train one with `fer-pipeline train`)")
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: unreadable model metadata ({e})") from e
    if raw.get("format") != METADATA_FORMAT:
        raise ModelError(f"{path}: unsupported metadata format {raw.get('format')!r}")
    labels = tuple(raw.get("labels", ()))
    if labels != EMOTIONS:
        raise ModelError(f"{path}: labels {list(labels)} differ from this build's {list(EMOTIONS)}")
    shape = raw.get("input", {}).get("shape")
    if shape is None or list(shape[1:]) != [48, 48, 1]:
        raise ModelError(f"{path}: input shape {shape} is not [N, 48, 48, 1]")
    return ModelInfo(path, str(raw.get("model_id", path.parent.name)), labels, dict(raw.get("files", {})), raw)


class Predictor(Protocol):
    """What workers serve through: a ``model_id`` and ``predict``."""

    model_id: str

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """(N, 48, 48) uint8 -> (N, 7) float32 probabilities."""


def _as_input(crops: np.ndarray) -> np.ndarray:
    if crops.ndim != 3 or crops.shape[1:] != (48, 48):
        raise ModelError(f"expected crops of shape (N, 48, 48), got {crops.shape}")
    return crops.astype(np.float32, copy=False)[..., None]


class LiteRTPredictor:
    """TFLite model through LiteRT. The input is resized to each batch's exact size:
    re-allocating costs microseconds once the arena has grown, while padding to
    power-of-two buckets wasted up to half of every call (benchmarks/inference.py)."""

    def __init__(self, info: ModelInfo, *, int8: bool = False, threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        path = info.file("tflite_int8" if int8 else "tflite")
        try:
            # LiteRT announces its CPU delegate on stderr at the first allocation: done here,
            # with that line kept out of the worker's log (native_logs.py).
            with quiet_native_stderr():
                self._interp = Interpreter(model_path=str(path), num_threads=threads)
                self._in = self._interp.get_input_details()[0]["index"]
                self._out = self._interp.get_output_details()[0]["index"]
                self._size = 0
                self._resize(1)
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"{path}: cannot load TFLite model ({e})") from e
        self.model_id = info.model_id + ("-int8" if int8 else "")

    def _resize(self, n: int) -> None:
        if n != self._size:
            self._interp.resize_tensor_input(self._in, [n, 48, 48, 1], strict=False)
            self._interp.allocate_tensors()
            self._size = n

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """(N, 48, 48) uint8 -> (N, 7) float32 probabilities, in one interpreter call."""
        if crops.ndim != 3 or crops.shape[1:] != (48, 48):
            raise ModelError(f"expected crops of shape (N, 48, 48), got {crops.shape}")
        n = len(crops)
        if n == 0:
            return np.zeros((0, NUM_CLASSES), np.float32)
        self._resize(n)
        # Convert the uint8 crops straight into the interpreter's input buffer (no float32
        # batch copy). The view must be released before invoke(), so it is never named.
        self._interp.tensor(self._in)()[..., 0] = crops
        self._interp.invoke()
        return np.array(self._interp.get_tensor(self._out), dtype=np.float32)

    def predict_many(self, crops: np.ndarray, batch: int = 256) -> np.ndarray:
        """Predict an arbitrarily long array in fixed-size chunks (evaluation, export checks)."""
        parts = [self.predict(crops[i:i + batch]) for i in range(0, len(crops), batch)]
        return np.concatenate(parts) if parts else np.zeros((0, NUM_CLASSES), np.float32)


class KerasPredictor:
    """The .keras file in Keras safe mode (imports TensorFlow: slower start, more memory)."""

    def __init__(self, info: ModelInfo) -> None:
        import keras

        path = info.file("keras")
        try:
            self._model = keras.saving.load_model(path, safe_mode=True, compile=False)
        except Exception as e:  # keras raises many types for corrupt or unsafe files
            raise ModelError(f"{path}: cannot load Keras model ({type(e).__name__}: {e})") from e
        self.model_id = info.model_id

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """(N, 48, 48) uint8 -> (N, 7) float32 probabilities, in one model call."""
        x = _as_input(crops)
        if len(x) == 0:
            return np.zeros((0, NUM_CLASSES), np.float32)
        return np.asarray(self._model(x, training=False), dtype=np.float32)


INT8_CPU_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"}  # x86 VNNI/AMX, Arm dotprod


@functools.cache
def cpu_has_fast_int8(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU has int8 dot-product instructions (Linux; elsewhere: assume not)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    return any(line.split(":", 1)[0].strip() in ("flags", "Features") and INT8_CPU_FLAGS & set(line.split())
               for line in text.splitlines())


def resolve_int8(choice: bool | str, info: ModelInfo) -> bool:
    """``worker.int8`` to a decision: ``"auto"`` means int8 where it is shipped and fast here."""
    if choice == "auto":
        return "tflite_int8" in info.files and cpu_has_fast_int8()
    return bool(choice)


def load_predictor(path: Path, runtime: str = "litert", *, threads: int = 1, int8: bool | str = False) -> Predictor:
    """Load and self-check a model: its output must match the metadata's 7 classes."""
    info = read_info(path)
    if runtime == "litert":
        pred: Predictor = LiteRTPredictor(info, int8=resolve_int8(int8, info), threads=threads)
    elif runtime == "keras":
        pred = KerasPredictor(info)
    else:
        raise ModelError(f"unknown runtime {runtime!r} (litert or keras)")
    probe = pred.predict(np.full((2, 48, 48), 128, np.uint8))
    if probe.shape != (2, NUM_CLASSES):
        raise ModelError(f"{info.path}: model outputs shape {probe.shape[1:]}, metadata says {NUM_CLASSES} classes")
    if not np.all(np.isfinite(probe)) or np.abs(probe.sum(axis=1) - 1).max() > 1e-3:
        raise ModelError(f"{info.path}: model does not output probabilities (finite, summing to 1)")
    return pred
