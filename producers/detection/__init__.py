"""Face detectors, chosen by name (``--detector`` / ``FER_PRODUCER__DETECTOR``).

| name | model | runtime |
| --- | --- | --- |
| ``blazeface`` | MediaPipe BlazeFace, full range (192x192) and short range for close-ups | LiteRT |
| ``blazeface-full`` | full range alone | LiteRT |
| ``blazeface-short`` | short range alone (128x128): faces near the camera | LiteRT |
| ``res10`` | OpenCV's res10 SSD (Caffe) | cv2.dnn |
| ``haar`` | OpenCV's frontal-face Haar cascade (the tutorial's) | OpenCV |

README's detector table gives each one's recall, false boxes, cost and license.
"""

from __future__ import annotations

from collections.abc import Callable

from fer_pipeline.errors import ConfigError
from fer_pipeline.producers.detection.base import Detection, Detector
from fer_pipeline.settings import DETECTORS, ProducerSettings

__all__ = ["DETECTORS", "Detection", "Detector", "build_detector"]

# Each detector's own score threshold where the settings leave it unset (detect_score 0).
# BlazeFace's combined default is lower than MediaPipe's 0.5 because weak boxes only continue
# tracked faces (ProducerSettings.track_score); alone, each model keeps MediaPipe's 0.5.
DEFAULT_SCORES = {"blazeface": 0.4, "blazeface-full": 0.5, "blazeface-short": 0.5, "res10": 0.5}


def build_detector(settings: ProducerSettings) -> Detector:
    """The detector ``settings.detector`` names, configured by the producer settings.

    Raises:
        ConfigError: an unknown name, or its model files are missing.
    """
    builders: dict[str, Callable[[float], Detector]] = {
        "haar": lambda _: _haar(settings),
        "blazeface": _blazeface_both,
        "blazeface-full": _blazeface_full,
        "blazeface-short": _blazeface_short,
        "res10": _res10,
    }
    name = settings.detector
    if name not in builders:
        raise ConfigError(f"unknown face detector {name!r}: use one of {', '.join(DETECTORS)}")
    score = settings.detect_score or DEFAULT_SCORES.get(name, 0.0)
    return builders[name](score)


def _haar(settings: ProducerSettings) -> Detector:
    from fer_pipeline.producers.detection.haar import HaarDetector

    return HaarDetector(settings)


def _blazeface_both(score: float) -> Detector:
    from fer_pipeline.producers.detection.blazeface import BlazeFaceBothRanges
    from fer_pipeline.producers.detection.framing import framing_for

    return BlazeFaceBothRanges(score, {"full": framing_for("blazeface-full"), "short": framing_for("blazeface-short")})


def _blazeface_full(score: float) -> Detector:
    from fer_pipeline.producers.detection.blazeface import FULL_RANGE, BlazeFaceDetector

    return BlazeFaceDetector(FULL_RANGE, score, name="blazeface-full")


def _blazeface_short(score: float) -> Detector:
    from fer_pipeline.producers.detection.blazeface import SHORT_RANGE, BlazeFaceDetector

    return BlazeFaceDetector(SHORT_RANGE, score, name="blazeface-short")


def _res10(score: float) -> Detector:
    from fer_pipeline.producers.detection.res10 import Res10Detector

    return Res10Detector(score)
