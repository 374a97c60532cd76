"""The vectorised trailing-window smoothing against a straightforward per-track loop."""

from __future__ import annotations

import numpy as np
import pytest

from fer_pipeline.analytics.smoothing import DIRECT_MAX, smoothed_states, trailing_sums

K, UNKNOWN = 7, 7


def random_groups(rng, n_groups: int, longest: int) -> np.ndarray:
    """Position of each row within its group, for groups of 1..longest rows (one-row groups included)."""
    sizes = rng.integers(1, longest + 1, n_groups)
    sizes[::5] = 1
    return np.concatenate([np.arange(s) for s in sizes])


def reference(probs, big, pos, window, min_confidence):
    """One row at a time: the mean of the big faces' probabilities over the trailing window
    of the row's own group, summed oldest first; the argmax (first on ties) or unknown."""
    n = probs.shape[1]
    state = np.full(n, UNKNOWN)
    smoothed = np.zeros((K, n))
    valid = np.zeros(n, dtype=bool)
    for i in range(n):
        rows = [j for j in range(i - min(pos[i], window - 1), i + 1) if big[j]]
        sums = [0.0] * K
        for j in rows:
            for k in range(K):
                sums[k] += float(probs[k, j])
        mean = [s / max(len(rows), 1) for s in sums]
        smoothed[:, i] = mean
        valid[i] = bool(rows)
        if big[i] and max(mean) >= min_confidence:
            state[i] = mean.index(max(mean))
    return state, smoothed, valid


@pytest.mark.parametrize("window", [1, 2, 5, 9, DIRECT_MAX, DIRECT_MAX + 1, 60])
def test_states_equal_the_per_track_loop(window):
    rng = np.random.default_rng(window)
    pos = random_groups(rng, 60, 3 * window + 2)
    n = len(pos)
    logits = rng.normal(0.0, 1.0, (K, n))
    probs = (np.exp(logits) / np.exp(logits).sum(axis=0)).astype(np.float32)
    big = rng.random(n) > 0.15
    big[rng.random(n) < 0.02] = False
    state, smoothed, valid = smoothed_states(probs, big, pos, window, 0.3, UNKNOWN)
    want_state, want_smoothed, want_valid = reference(probs, big, pos, window, 0.3)
    assert (valid == want_valid).all() and (state == want_state).all()
    if window <= DIRECT_MAX:  # summed term by term, oldest first: exactly the loop's numbers
        assert (smoothed == want_smoothed).all()
    else:  # differences of cumulative sums
        np.testing.assert_allclose(smoothed, want_smoothed, rtol=0, atol=1e-12)


def test_ties_and_thresholds_are_exact():
    # Two emotions exactly level: the first wins, as np.argmax; a mean exactly at the bar counts.
    probs = np.zeros((K, 4), dtype=np.float32)
    probs[2], probs[5] = 0.5, 0.5
    big = np.ones(4, dtype=bool)
    state, _, _ = smoothed_states(probs, big, np.arange(4), 3, 0.5, UNKNOWN)
    assert state.tolist() == [2, 2, 2, 2]
    assert smoothed_states(probs, big, np.arange(4), 3, 0.51, UNKNOWN)[0].tolist() == [UNKNOWN] * 4


def test_small_faces_and_group_starts():
    # Group 1: [big, small, big]; group 2 starts at row 3 and must not see group 1's rows.
    probs = np.zeros((K, 5), dtype=np.float32)
    probs[0, :3] = 1.0  # group 1: angry
    probs[3, 3:] = 1.0  # group 2: happy
    big = np.array([True, False, True, False, True])
    pos = np.array([0, 1, 2, 0, 1])
    state, smoothed, valid = smoothed_states(probs, big, pos, 5, 0.4, UNKNOWN)
    assert state.tolist() == [0, UNKNOWN, 0, UNKNOWN, 3]
    # A small face has no state of its own but its window still has a mean (from row 0).
    assert valid.tolist() == [True, True, True, False, True]
    assert smoothed[0, 1] == 1.0 and smoothed[:, 3].sum() == 0.0 and smoothed[3, 4] == 1.0


@pytest.mark.parametrize("window", [1, 3, DIRECT_MAX + 5])
def test_trailing_sums_of_counts_and_tiny_inputs(window):
    for n in (0, 1, 2, 7):
        pos = np.arange(n)
        ones = np.ones((1, n), dtype=np.int32)
        assert trailing_sums(ones, pos, window)[0].tolist() == [min(i + 1, window) for i in range(n)]
    pos = np.array([0, 0, 1, 0, 1, 2, 3])  # groups of 1, 2 and 4 rows
    got = trailing_sums(np.ones((1, 7), dtype=np.int32), pos, window)[0]
    assert got.tolist() == [min(p + 1, window) for p in pos]
