"""Classification metrics and calibration on (probabilities, labels); numpy only."""

from __future__ import annotations

import numpy as np

from fer_pipeline.labels import EMOTIONS, NUM_CLASSES


def confusion(labels: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(cm, (labels, pred), 1)
    return cm


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    conf = probs.max(axis=1)
    right = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(right[m].mean() - conf[m].mean())
    return float(ece)


def report(probs: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support, confusion matrix, ECE, NLL."""
    pred = probs.argmax(axis=1)
    cm = confusion(labels, pred)
    tp = np.diag(cm).astype(np.float64)
    precision = np.divide(tp, cm.sum(axis=0), out=np.zeros(NUM_CLASSES), where=cm.sum(axis=0) > 0)
    recall = np.divide(tp, cm.sum(axis=1), out=np.zeros(NUM_CLASSES), where=cm.sum(axis=1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(NUM_CLASSES),
                   where=(precision + recall) > 0)
    nll = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)).mean()
    return {
        "n": int(len(labels)),
        "accuracy": float((pred == labels).mean()),
        "macro_f1": float(f1.mean()),
        "ece": expected_calibration_error(probs, labels),
        "nll": float(nll),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(cm[i].sum())}
            for i, name in enumerate(EMOTIONS)
        },
        "confusion": cm.tolist(),
    }


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature minimising validation NLL (a 1-D search over log T)."""
    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 400))
    idx = np.arange(len(labels))
    nll = [-np.log(np.clip(softmax(logits, t)[idx, labels], 1e-12, 1)).mean() for t in grid]
    return float(grid[int(np.argmin(nll))])
