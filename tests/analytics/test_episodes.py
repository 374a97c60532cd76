"""Absorbing short runs: the rounds that decide on (track, state, seconds) alone, with the
other columns summed once at the end, against merging every column every round."""

from __future__ import annotations

import numpy as np
import pytest

from fer_pipeline.analytics.episodes import MAX_ROUNDS, absorb_short

K, S = 7, 8


def merge_all(r):
    new = np.ones(len(r["state"]), dtype=bool)
    new[1:] = (r["track"][1:] != r["track"][:-1]) | (r["state"][1:] != r["state"][:-1])
    if new.all():
        return r
    at = np.flatnonzero(new)
    out = {"track": r["track"][at], "state": r["state"][at], "start": r["start"][at],
           "end": np.maximum.reduceat(r["end"], at)}
    for name in ("seconds", "labels", "valid"):
        out[name] = np.add.reduceat(r[name], at)
    out["prob_sum"] = np.add.reduceat(r["prob_sum"], at, axis=1)
    return out


def reference(r, shorter_than):
    """Every column merged in every round (the implementation before the deferred sums)."""
    r = merge_all(r)
    for round_no in range(MAX_ROUNDS + 1):
        n = len(r["state"])
        sec, track = r["seconds"], r["track"]
        has_left, has_right = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        has_left[1:] = track[1:] == track[:-1]
        has_right[:-1] = track[:-1] == track[1:]
        left = np.where(has_left, np.roll(sec, 1), np.inf)
        right = np.where(has_right, np.roll(sec, -1), np.inf)
        short = (sec < shorter_than) & (has_left | has_right)
        if round_no < MAX_ROUNDS:
            short &= (sec <= left) & (sec < right)
        if not short.any():
            return r
        take_left = has_left & (~has_right | (left >= right))
        state = r["state"].copy()
        idx = np.flatnonzero(short)
        state[idx] = np.where(take_left[idx], r["state"][idx - 1], r["state"][np.minimum(idx + 1, n - 1)])
        if round_no == MAX_ROUNDS:
            for i in idx.tolist():
                state[i] = state[i - 1] if has_left[i] else state[i + 1]
        r = merge_all({**r, "state": state})
    return r


def random_runs(rng, n, tracks, states=S):
    track = np.sort(rng.integers(0, tracks, n))
    labels = rng.integers(1, 40, n)
    seconds = labels / 30.0  # many exact ties, as real runs of whole frames have
    start = np.cumsum(seconds) + track * 1000.0
    return {"track": track, "state": rng.integers(0, states, n), "start": start, "end": start + seconds,
            "seconds": seconds, "labels": labels, "valid": labels - rng.integers(0, 2, n),
            "prob_sum": rng.random((K, n)) * labels}


@pytest.mark.parametrize("seed", range(6))
def test_absorbing_equals_merging_every_column_every_round(seed):
    rng = np.random.default_rng(seed)
    r = random_runs(rng, 3000, 40, states=3 if seed % 2 else S)
    for shorter_than in (0.2, 1.0, 3.0):
        got, want = absorb_short(r, shorter_than), reference(r, shorter_than)
        for name in ("track", "state", "seconds", "start", "end", "labels", "valid"):
            assert np.array_equal(got[name], want[name]), name
        np.testing.assert_allclose(got["prob_sum"], want["prob_sum"], rtol=1e-13)


def test_a_staircase_longer_than_the_round_limit():
    n = 3 * MAX_ROUNDS
    seconds = np.linspace(0.01, 0.9, n)  # every run is the shortest of its neighbours in turn
    r = {"track": np.zeros(n, dtype=np.int64), "state": np.arange(n) % 2, "start": np.cumsum(seconds),
         "end": np.cumsum(seconds) + seconds, "seconds": seconds, "labels": np.ones(n, dtype=np.int64),
         "valid": np.ones(n, dtype=np.int64), "prob_sum": np.ones((K, n))}
    got, want = absorb_short(r, 1.0), reference(r, 1.0)
    for name in ("track", "state", "seconds", "start", "end", "labels", "valid", "prob_sum"):
        assert np.array_equal(got[name], want[name]), name
    assert len(got["state"]) < n
