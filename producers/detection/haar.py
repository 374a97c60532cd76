"""The tutorial's detector: OpenCV's frontal-face Haar cascade, kept as an option."""

from __future__ import annotations

import numpy as np

from fer_pipeline.errors import ConfigError
from fer_pipeline.producers.detection.base import Detection, as_gray, clip_box
from fer_pipeline.settings import ProducerSettings

CASCADE_FILE = "haarcascade_frontalface_default.xml"
# The cascade's own window is 24x24: asking for smaller faces after a downscale is pointless.
CASCADE_WINDOW = 24


class HaarDetector:
    """Frontal faces by cascade (scaleFactor 1.3, minNeighbors 5 by default, as the tutorial)."""

    name = "haar"

    def __init__(self, settings: ProducerSettings) -> None:
        import cv2

        path = cv2.data.haarcascades + CASCADE_FILE
        cascade = cv2.CascadeClassifier(path)
        if cascade.empty():
            raise ConfigError(f"cannot load the Haar cascade {path}: reinstall opencv-python")
        self._cascade = cascade
        self.scale_factor = settings.scale_factor
        self.min_neighbors = settings.min_neighbors
        self.min_face = settings.min_face
        self.detect_width = settings.detect_width

    def detect(self, image: np.ndarray) -> list[Detection]:
        import cv2

        gray = as_gray(image)
        h, w = gray.shape[:2]
        scale = 1.0
        small = gray
        if self.detect_width and w > self.detect_width:
            # Haar cost grows with pixels; faces big enough to classify survive this.
            scale = self.detect_width / w
            small = cv2.resize(gray, (self.detect_width, max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        min_size = max(CASCADE_WINDOW, round(self.min_face * scale))
        found = self._cascade.detectMultiScale(
            small, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(min_size, min_size))
        out: list[Detection] = []
        for x, y, bw, bh in np.asarray(found).reshape(-1, 4):
            box = clip_box((x / scale, y / scale, bw / scale, bh / scale), w, h)
            if box is not None:
                out.append(Detection(box))
        return out
