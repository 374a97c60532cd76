"""Emotions of the faces in one image, in this process: ``analyze(image)`` and ``Analyzer``.

No Redis, no roles: the same code the pipeline runs on a frame, called directly. The faces
are found by the producer's ``FaceFinder`` (the configured detector, the FER2013 framing,
the eye-line alignment, the 48x48 crop), and classified by the model the workers serve
(``model.load_predictor``: LiteRT, int8 where the CPU has fast int8). A frame analysed here
gets the boxes and probabilities the pipeline gives the first frame of a camera.

Each call is one still image: there is no tracking between calls (use ``Pipeline`` for
video, where the tracker carries faces between detections).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np

from fer_pipeline.api_settings import api_settings
from fer_pipeline.errors import ModelError, SourceError
from fer_pipeline.images import read_image_file
from fer_pipeline.labels import EMOTIONS
from fer_pipeline.settings import Settings

__all__ = ["Analyzer", "FaceResult", "analyze"]

Image = np.ndarray | str | PathLike


@dataclass(frozen=True)
class FaceResult:
    """One face of an analysed image.

    Attributes:
        box: (x, y, w, h) in the source image's pixels: the square the crop was cut from (the
            classifier's framing, a little larger than the detector's box), clipped to the image.
        emotion: The most probable emotion (one of ``fer_pipeline.labels.EMOTIONS``).
        confidence: Its probability.
        probabilities: Every emotion's calibrated probability, in ``EMOTIONS`` order.
        score: The detector's confidence in the face (1.0 for ``haar``, which has none).
        crop: The 48x48 uint8 gray crop the model saw (not compared or shown in ``repr``).
    """

    box: tuple[int, int, int, int]
    emotion: str
    confidence: float
    probabilities: Mapping[str, float]
    score: float | None
    crop: np.ndarray = field(repr=False, compare=False)


class Analyzer:
    """A detector and a model, loaded once, for analysing many images.

    Args:
        detector: Face detector name (``blazeface``, ``blazeface-full``, ``blazeface-short``,
            ``res10``, ``haar``); None keeps the settings' (``FER_PRODUCER__DETECTOR``).
        model: ``model.json`` of the model to serve, or its folder; None: the shipped model
            (or ``FER_WORKER__MODEL``).
        settings: Every other knob (detection score, alignment, minimum face, int8, runtime,
            threads); by default read from the ``FER_*`` environment as the CLI does.

    Raises:
        ConfigError: an unknown detector (or another bad setting), or its model files are missing.
        ModelError: the model cannot be loaded or disagrees with its metadata.

    Calls are serialised by a lock (the detector keeps scratch buffers): share one Analyzer
    between threads, or make one per thread to run them in parallel.
    """

    def __init__(self, *, detector: str | None = None, model: str | PathLike | None = None,
                 settings: Settings | None = None) -> None:
        from fer_pipeline.model import load_predictor
        from fer_pipeline.producers.detection import build_detector

        self.settings = api_settings(settings, producer={"detector": detector},
                                     worker={"model": Path(model) if model is not None else None})
        # Both load now, so a bad name or file fails here, in one line, not on the first image.
        self._detector = build_detector(self.settings.producer)
        w = self.settings.worker
        self.predictor = load_predictor(w.model, w.runtime, threads=w.threads, int8=w.int8)
        self._lock = threading.Lock()

    @property
    def detector(self) -> str:
        """The detector's name."""
        return self._detector.name

    @property
    def model_id(self) -> str:
        """The served model's id (``-int8`` appended when the int8 file is served)."""
        return self.predictor.model_id

    def analyze(self, image: Image) -> list[FaceResult]:
        """The faces in ``image`` with their emotions, in the detector's order (most confident first).

        Args:
            image: A BGR ``uint8`` array as OpenCV reads it (H, W, 3), BGRA (H, W, 4), gray
                (H, W) or (H, W, 1), or the path of an image file (PNG, JPEG, BMP, ...).

        Raises:
            ValueError: an array that is not an 8-bit image of one of those shapes.
            SourceError: a file that cannot be read or decoded, or is larger than
                ``producer.max_image_pixels``.
        """
        from fer_pipeline.producers.faces import FaceFinder

        frame = self._frame(image)
        with self._lock:
            # A fresh finder per image: its tracker starts empty, as a camera's does, so the
            # faces are this image's detections (scored at least ``track_score``), framed,
            # aligned and cropped by the producer's own code. The detector stays loaded.
            finder = FaceFinder(self.settings.producer, detector_factory=lambda: self._detector)
            faces = finder.find(frame)
            if not faces:
                return []
            detected = finder.detected  # track id -> the detection that started it
            crops = np.stack([f.crop for f in faces])
            probs = self.predictor.predict(crops)
        _check(probs, len(faces))
        out = []
        for face, row in zip(faces, probs.tolist()):
            best = int(np.argmax(row))
            hit = detected.get(face.track_id)
            score = hit.score if hit is not None else None
            out.append(FaceResult(box=tuple(int(v) for v in face.box), emotion=EMOTIONS[best],  # type: ignore[arg-type]
                                  confidence=row[best], probabilities=dict(zip(EMOTIONS, row)), score=score,
                                  crop=face.crop))
        return out

    __call__ = analyze

    def _frame(self, image: Image) -> np.ndarray:
        if isinstance(image, (str, PathLike)):
            path = Path(image)
            try:
                return read_image_file(path, self.settings.producer.max_image_pixels)
            except SourceError as e:
                raise SourceError(f"image {path}: {e}") from e
        return as_frame(image)


def as_frame(image: np.ndarray) -> np.ndarray:
    """An array as a frame the producer's code takes: (H, W) gray or (H, W, 3) BGR uint8.

    Raises:
        ValueError: not a uint8 array of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4).
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected a numpy image or a path, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected an 8-bit image (uint8), got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 4:
        from fer_pipeline.producers.detection.base import as_bgr

        image = as_bgr(image)
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)) or min(image.shape[:2]) < 1:
        raise ValueError(f"expected an image of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}")
    return np.ascontiguousarray(image)


def _check(probs: np.ndarray, n: int) -> None:
    # The worker dead-letters such outputs; here there is no one else to tell.
    from fer_pipeline.messages import valid_probabilities

    if probs.shape[0] != n or not valid_probabilities(probs).all():
        raise ModelError("the model returned values that are not probabilities (non-finite, or not summing to 1)")


@functools.lru_cache(maxsize=4)
def _default(detector: str | None, model: str | None) -> Analyzer:
    return Analyzer(detector=detector, model=model)


def analyze(image: Image, *, detector: str | None = None, model: str | PathLike | None = None) -> list[FaceResult]:
    """The faces in ``image`` with their emotions (see ``Analyzer.analyze``).

    The detector and model load on the first call and stay loaded for the next ones with the
    same ``detector`` and ``model`` (an ``Analyzer`` each, cached); ``detector=None`` keeps
    ``FER_PRODUCER__DETECTOR`` (``blazeface`` unless set), and other settings come from the
    ``FER_*`` environment too. Thread-safe.

    Example:
        >>> import fer_pipeline
        >>> for face in fer_pipeline.analyze("photo.jpg"):  # doctest: +SKIP
        ...     print(face.box, face.emotion, round(face.confidence, 2))
    """
    return _default(detector, str(model) if model is not None else None).analyze(image)
