"""Emotion-log analytics: smoothed per-track states, sustained episodes, per-track and
per-camera summaries. Pure numpy over columns; nothing loops over rows in Python.

How a label becomes a state (one pass per track, in capture order):

1. **Unknown first**: a face smaller than ``min_face`` pixels is ``unknown``, never a guess,
   and its probabilities are left out of its neighbours' smoothing too.
2. **Smoothing**: the probabilities are averaged over a trailing window of ``window`` labels
   of the same track; the state is the argmax of that average, or ``unknown`` when the
   average's top probability is under ``min_confidence``. A one-frame flicker moves the
   average by 1/window and rarely changes the state.
3. **Runs**: consecutive labels in the same state. A label stands for the time until the
   next label of its track, capped at ``max_gap_s`` (a person out of view is not counted).
4. **Episodes** (hysteresis in time): an emotion must hold for ``min_dwell_s`` to start an
   episode, and an episode ends only when another state (``unknown`` included) holds for
   ``release_s``; anything shorter is absorbed into the episode around it. Transitions are
   counted between consecutive episodes of a track, so flickers never count as transitions.

Reading is the slow part of large logs (``logreader``): rows arrive in column batches ordered
by camera and track, and are processed in chunks of whole tracks, so memory stays bounded
whatever the log's size; a SQLite log is read one camera per thread.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from fer_pipeline.consumers.logreader import Chunk, merge_chunks, split_whole_tracks, camera_ids, read_batches
from fer_pipeline.errors import ConfigError
from fer_pipeline.labels import EMOTIONS

STATES: tuple[str, ...] = (*EMOTIONS, "unknown")
UNKNOWN = len(EMOTIONS)
K = len(EMOTIONS)


@dataclass(frozen=True)
class ReportOptions:
    """What to select from the log and how to turn labels into states and episodes."""

    cameras: tuple[str, ...] = ()
    tracks: tuple[int, ...] = ()
    run: str | None = None
    since: float | None = None  # epoch seconds, inclusive
    until: float | None = None  # epoch seconds, exclusive
    window: int = 5
    min_confidence: float = 0.4
    min_face: int = 40
    min_dwell_s: float = 1.0
    release_s: float | None = None  # None: same as min_dwell_s
    max_gap_s: float = 1.0
    chunk_rows: int = 1_000_000  # labels processed at a time (memory bound)
    threads: int = 0  # cameras read in parallel from a SQLite log; 0 = up to 4, by CPU count

    def __post_init__(self) -> None:
        if self.window < 1 or self.chunk_rows < 1 or self.threads < 0:
            raise ConfigError("the smoothing window and chunk size must be at least 1, threads at least 0")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ConfigError("min confidence must be between 0 and 1")
        if self.min_dwell_s < 0 or (self.release_s is not None and self.release_s < 0) or self.max_gap_s <= 0:
            raise ConfigError("dwell and release times must be >= 0 and the max gap > 0")
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise ConfigError("--until must be after --since")

    @property
    def release(self) -> float:
        return self.min_dwell_s if self.release_s is None else self.release_s


def parse_time(text: str, now: float | None = None) -> float:
    """Epoch seconds from ``1700000000``, an ISO date/time (local time unless it has an
    offset), or an age such as ``90s``, ``15m``, ``2h``, ``7d`` (that long before now)."""
    text = text.strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd])", text)
    if m:
        return (time.time() if now is None else now) - float(m.group(1)) * {"s": 1, "m": 60, "h": 3600,
                                                                            "d": 86400}[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ConfigError(f"cannot read time {text!r}: use epoch seconds, ISO 8601 or an age like 2h") from None


@dataclass
class Runs:
    """Runs of one state per track, the compact form everything else is computed from."""

    track_keys: list[tuple[str, str, int]] = field(default_factory=list)  # (camera, run, track) per track index
    track: list[np.ndarray] = field(default_factory=list)  # per run: index into track_keys
    state: list[np.ndarray] = field(default_factory=list)
    start: list[np.ndarray] = field(default_factory=list)  # time of the run's first label
    end: list[np.ndarray] = field(default_factory=list)  # last label's time + the time it stands for
    seconds: list[np.ndarray] = field(default_factory=list)  # time the run's labels stand for
    labels: list[np.ndarray] = field(default_factory=list)
    valid: list[np.ndarray] = field(default_factory=list)  # labels with a smoothed probability
    prob_sum: list[np.ndarray] = field(default_factory=list)  # (runs, K) summed smoothed probabilities

    def concat(self) -> dict[str, np.ndarray]:
        if not self.track:
            return {"track": np.zeros(0, np.int64), "state": np.zeros(0, np.int64), "start": np.zeros(0),
                    "end": np.zeros(0), "seconds": np.zeros(0), "labels": np.zeros(0, np.int64),
                    "valid": np.zeros(0, np.int64), "prob_sum": np.zeros((0, K))}
        return {name: np.concatenate(getattr(self, name)) for name in
                ("track", "state", "start", "end", "seconds", "labels", "valid", "prob_sum")}


def smooth_states(chunk: Chunk, options: ReportOptions) -> tuple:
    """Per label: (group index, state, seconds it stands for, smoothed probabilities or NaN,
    capture time), and the (camera, run, track) key of each group.

    Rows are re-ordered by (camera, run, track, time) with a stable sort; the returned
    arrays follow that order; the group index numbers the (camera, run, track) groups of the
    chunk in order of first appearance after sorting.
    """
    n = len(chunk)
    cam_codes, run_codes = chunk.camera, chunk.run
    # Rows come ordered by (camera, track, time); a stable sort on (camera, track, run) keeps
    # the time order inside each track and separates producer runs (track ids restart per run).
    order = np.lexsort((run_codes, chunk.track, cam_codes))
    cam_codes, run_codes = cam_codes[order], run_codes[order]
    track, t = chunk.track[order], chunk.t[order]
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = (cam_codes[1:] != cam_codes[:-1]) | (run_codes[1:] != run_codes[:-1]) | (track[1:] != track[:-1])
    group = np.cumsum(new_group) - 1
    group_start = np.flatnonzero(new_group)[group]  # row index where each row's group begins

    big = (chunk.w[order] >= options.min_face) & (chunk.h[order] >= options.min_face)
    probs = chunk.probs[order].astype(np.float64) * big[:, None]
    csum = np.zeros((n + 1, K))
    np.cumsum(probs, axis=0, out=csum[1:])
    ccount = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(big, out=ccount[1:])
    idx = np.arange(n)
    lo = np.maximum(idx - options.window + 1, group_start)
    counts = ccount[idx + 1] - ccount[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        smoothed = (csum[idx + 1] - csum[lo]) / counts[:, None]
    top = smoothed.max(axis=1)
    state = np.where(big & (counts > 0) & (top >= options.min_confidence),
                     np.argmax(np.nan_to_num(smoothed, nan=-1.0), axis=1), UNKNOWN)
    dt = np.zeros(n)
    same = ~new_group[1:]
    dt[:-1] = np.where(same, np.minimum(t[1:] - t[:-1], options.max_gap_s), 0.0)
    dt = np.maximum(dt, 0.0)
    heads = np.flatnonzero(new_group)
    keys = [(chunk.cameras[c], chunk.runs[r], int(k)) for c, r, k in
            zip(cam_codes[heads].tolist(), run_codes[heads].tolist(), track[heads].tolist())]
    return group, state, dt, smoothed, t, keys


def add_runs(runs: Runs, chunk: Chunk, options: ReportOptions) -> None:
    """Append the chunk's runs (the chunk must hold whole tracks)."""
    group, state, dt, smoothed, t, keys = smooth_states(chunk, options)
    n = len(state)
    if n == 0:
        return
    boundary = np.ones(n, dtype=bool)
    boundary[1:] = (state[1:] != state[:-1]) | (group[1:] != group[:-1])
    starts = np.flatnonzero(boundary)
    ends = np.append(starts[1:], n) - 1
    valid = ~np.isnan(smoothed[:, 0])
    offset = len(runs.track_keys)
    runs.track_keys.extend(keys)
    runs.track.append(group[starts] + offset)
    runs.state.append(state[starts])
    runs.start.append(t[starts])
    runs.end.append(t[ends] + dt[ends])
    runs.seconds.append(np.add.reduceat(dt, starts))
    runs.labels.append(ends - starts + 1)
    runs.valid.append(np.add.reduceat(valid.astype(np.int64), starts))
    runs.prob_sum.append(np.add.reduceat(np.nan_to_num(smoothed, nan=0.0), starts, axis=0))


def collect_runs(source, options: ReportOptions) -> tuple[Runs, int]:
    """Stream the selected labels into runs; returns (runs, labels read).

    A SQLite log with several cameras is read one camera per thread (``options.threads``):
    reading and numpy both release the GIL, and tracks never span cameras.
    """
    import os
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import replace
    from pathlib import Path

    threads = options.threads or min(4, os.cpu_count() or 1)
    if threads > 1 and isinstance(source, (str, Path)) and Path(source).is_file():
        cams = sorted(set(options.cameras)) if options.cameras else camera_ids(source)
        if len(cams) > 1:
            with ThreadPoolExecutor(min(threads, len(cams))) as pool:
                parts = list(pool.map(lambda c: _collect(source, replace(options, cameras=(c,))), cams))
            runs = Runs()
            for part, _ in parts:
                offset = len(runs.track_keys)
                runs.track_keys.extend(part.track_keys)
                runs.track.extend(t + offset for t in part.track)
                for name in ("state", "start", "end", "seconds", "labels", "valid", "prob_sum"):
                    getattr(runs, name).extend(getattr(part, name))
            return runs, sum(n for _, n in parts)
    return _collect(source, options)


def _collect(source, options: ReportOptions) -> tuple[Runs, int]:
    runs = Runs()
    pending: list[Chunk] = []
    pending_rows = total = 0
    for batch in read_batches(source, options):
        total += len(batch)
        pending.append(batch)
        pending_rows += len(batch)
        if pending_rows >= options.chunk_rows:
            whole, rest = split_whole_tracks(merge_chunks(pending))
            add_runs(runs, whole, options)
            pending, pending_rows = ([rest], len(rest)) if len(rest) else ([], 0)
    if pending:
        add_runs(runs, merge_chunks(pending), options)
    return runs, total
