"""Score a shipped model (``model.json`` + its files) on labelled faces, and draw its
confusion matrix. The served model already applies its temperature, so its outputs are
the calibrated probabilities whose ECE is reported.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fer_pipeline.errors import DataError
from fer_pipeline.labels import EMOTIONS, NUM_CLASSES
from fer_pipeline.trainer import data as fdata
from fer_pipeline.trainer import metrics


def predict_all(predictor, images: np.ndarray, *, tta: bool = False, batch: int = 256) -> np.ndarray:
    """Probabilities (N, 7) for uint8 images (N, 48, 48), in fixed-size chunks.

    ``tta`` averages each face with its mirror image (faces are left/right symmetric in label).
    """
    def run(x: np.ndarray) -> np.ndarray:
        parts = [np.asarray(predictor.predict(x[i:i + batch]), np.float32) for i in range(0, len(x), batch)]
        return np.concatenate(parts) if parts else np.zeros((0, NUM_CLASSES), np.float32)

    probs = run(images)
    if tta:
        probs = 0.5 * (probs + run(np.ascontiguousarray(images[:, :, ::-1])))
    return probs


def evaluate_predictor(predictor, faces: fdata.FaceSet, *, tta: bool = False) -> dict:
    """``metrics.report`` of ``predictor`` on ``faces`` (accuracy, macro-F1, per class, confusion, ECE)."""
    if len(faces) == 0:
        raise DataError(f"{faces.source}: no images to evaluate")
    return metrics.report(predict_all(predictor, faces.images, tta=tta), faces.labels)


def evaluate(model: Path, data: str | None = None, *, runtime: str = "litert", int8: bool = False,
             tta: bool = False, limit: int = 0, usage: str = "PublicTest", threads: int = 1) -> dict:
    """Load a shipped model and report on ``data`` (default: the shared PublicTest split).

    Args:
        model: a ``model.json`` or the directory holding it.
        data: npz/csv/folder; a csv is filtered to rows whose Usage is ``usage``.
        runtime: ``litert`` or ``keras``.
        int8: use the LiteRT dynamic-range (int8) model.
        tta: average with horizontally flipped faces.
        limit: evaluate only the first ``limit`` faces (0 = all).
        usage: the csv rows to keep (their Usage column).
        threads: LiteRT interpreter threads.

    Returns:
        The metrics report plus ``model`` (id, architecture, temperature, file) and ``data``.
    """
    from fer_pipeline.model import load_predictor, read_info
    from fer_pipeline.trainer.job import load_report_set

    info = read_info(Path(model))
    predictor = load_predictor(info.path, runtime, threads=threads, int8=int8)
    faces = load_report_set(data, limit=limit, usage=usage)
    out = evaluate_predictor(predictor, faces, tta=tta)
    file_key = "keras" if runtime == "keras" else ("tflite_int8" if int8 else "tflite")
    out["model"] = {"path": str(info.path), "model_id": predictor.model_id, "runtime": runtime,
                    "file": info.files.get(file_key), "architecture": info.raw.get("architecture"),
                    "temperature": info.raw.get("temperature")}
    out["data"] = {"source": faces.source, "images": len(faces), "tta": tta}
    return out


def draw_confusion(confusion: np.ndarray | list, path: Path, *, labels: tuple[str, ...] = EMOTIONS,
                   cell: int = 72) -> Path:
    """Write the confusion matrix as an image: cells shaded by row-normalised rate (recall),
    each showing its count and percentage; rows are true classes, columns predictions."""
    import cv2

    cm = np.asarray(confusion, dtype=np.int64)
    n = len(labels)
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    left, top, pad = 120, 110, 20
    h, w = top + n * cell + pad + 30, left + n * cell + pad
    img = np.full((h, w, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    # White -> blue ramp; text flips to white on dark cells so it stays readable.
    for i in range(n):
        for j in range(n):
            r = float(rates[i, j])
            colour = (255, int(255 - 190 * r), int(255 - 230 * r))  # BGR
            x0, y0 = left + j * cell, top + i * cell
            cv2.rectangle(img, (x0, y0), (x0 + cell, y0 + cell), colour, -1)
            cv2.rectangle(img, (x0, y0), (x0 + cell, y0 + cell), (160, 160, 160), 1)
            ink = (255, 255, 255) if r > 0.55 else (20, 20, 20)
            _centred(img, str(cm[i, j]), (x0 + cell // 2, y0 + cell // 2 - 4), font, 0.55, ink, 2 if i == j else 1)
            _centred(img, f"{100 * r:.0f}%", (x0 + cell // 2, y0 + cell // 2 + 18), font, 0.4, ink, 1)
    for k, name in enumerate(labels):
        (tw, th), _ = cv2.getTextSize(name, font, 0.5, 1)
        cv2.putText(img, name, (left - 10 - tw, top + k * cell + cell // 2 + th // 2), font, 0.5, (0, 0, 0), 1,
                    cv2.LINE_AA)
        # Column names written upwards so long ones do not collide.
        label = np.full((th + 8, tw + 4, 3), 255, np.uint8)
        cv2.putText(label, name, (2, th + 2), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        label = cv2.rotate(label, cv2.ROTATE_90_COUNTERCLOCKWISE)
        x0 = left + k * cell + (cell - label.shape[1]) // 2
        img[top - 8 - label.shape[0]:top - 8, x0:x0 + label.shape[1]] = label
    cv2.putText(img, "true \\ predicted", (8, 24), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    acc = np.trace(cm) / max(cm.sum(), 1)
    cv2.putText(img, f"n={cm.sum()}  accuracy={100 * acc:.1f}%", (left, h - 14), font, 0.5, (0, 0, 0), 1,
                cv2.LINE_AA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise DataError(f"cannot write image {path} (use a .png or .jpg name in a writable folder)")
    return path


def _centred(img, text, centre, font, scale, colour, thick) -> None:
    import cv2

    (tw, th), _ = cv2.getTextSize(text, font, scale, thick)
    cv2.putText(img, text, (centre[0] - tw // 2, centre[1] + th // 2), font, scale, colour, thick, cv2.LINE_AA)
