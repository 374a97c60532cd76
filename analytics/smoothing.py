"""Trailing-window smoothing of label probabilities, vectorised over many tracks at once.

Rows are grouped (one group per camera, run and track, in time order) and every sum stops
at its group's first row. Probabilities are held one emotion per row, shape (K, n), so
that each pass below is a long contiguous loop.
"""

from __future__ import annotations

import numpy as np

# Windows up to this many labels are summed term by term, oldest first: the numbers of a
# plain loop over each window, whatever the batching. Longer ones by differences of
# cumulative sums, O(1) per label whatever the window (rounding of the order of 1e-12).
DIRECT_MAX = 32


def trailing_sums(values: np.ndarray, pos: np.ndarray, window: int) -> np.ndarray:
    """Per column i of ``values`` (k, n): the sum of columns ``max(i - window + 1, i - pos[i])``
    through ``i``, where ``pos[i]`` is column i's position within its group."""
    k, n = values.shape
    w = min(window, n)
    if w > DIRECT_MAX:
        csum = np.zeros((k, n + 1), dtype=values.dtype)
        np.cumsum(values, axis=1, out=csum[:, 1:])
        idx = np.arange(n)
        return csum[:, 1:] - csum[:, np.maximum(idx - w + 1, idx - pos)]
    out = np.empty_like(values)  # oldest first: out[:, i] = values[:, i - w + 1] + ... + values[:, i]
    out[:, :w - 1] = 0
    out[:, w - 1:] = values[:, :n - w + 1]
    for j in range(w - 2, -1, -1):
        out[:, j:] += values[:, :n - j]
    # Columns near their group's start also took columns of the group before: sum them again.
    near = np.flatnonzero(pos < w - 1)
    if len(near):
        fix = np.zeros((k, len(near)), dtype=values.dtype)
        near_pos = pos[near]
        for j in range(w - 1, -1, -1):
            sel = near_pos >= j
            fix[:, sel] += values[:, near[sel] - j]
        out[:, near] = fix
    return out


def smoothed_states(probs: np.ndarray, big: np.ndarray, pos: np.ndarray, window: int, min_confidence: float,
                    unknown: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(state, smoothed, valid) per label from ``probs`` (K, n) in group order.

    ``smoothed`` (K, n) is the mean of the probabilities of the big-enough faces in the
    label's trailing window (0 where there is none: ``valid`` is False there); the state is
    its argmax (first on ties), or ``unknown`` for a small face or a mean whose top
    probability is under ``min_confidence``.
    """
    values = np.multiply(probs, big, dtype=np.float64)  # small faces add nothing to any window
    counts = trailing_sums(big[None, :].astype(np.int32), pos, window)[0]
    smoothed = trailing_sums(values, pos, window)
    smoothed /= np.maximum(counts, 1)
    top = smoothed[0].copy()
    arg = np.zeros(len(top), dtype=np.int64)
    for k in range(1, len(smoothed)):
        np.copyto(arg, k, where=smoothed[k] > top)
        np.maximum(top, smoothed[k], out=top)
    state = np.where(big & (top >= min_confidence), arg, unknown)
    return state, smoothed, counts > 0
