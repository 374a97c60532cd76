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

Reading is the slow part of large logs: rows arrive from the database in column batches
(Arrow through ADBC when ``adbc-driver-sqlite`` is installed, the DB-API otherwise), ordered by
the logger's ``(camera_id, track_id, captured_at)`` index, and are processed in chunks of whole
tracks, so memory stays bounded whatever the log's size.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from fer_pipeline.errors import ConfigError
from fer_pipeline.labels import EMOTIONS

STATES: tuple[str, ...] = (*EMOTIONS, "unknown")
UNKNOWN = len(EMOTIONS)
K = len(EMOTIONS)
_PROBS = ", ".join(f"p_{e}" for e in EMOTIONS)
_SELECT = f"SELECT camera_id, run_id, track_id, captured_at, w, h, {_PROBS} FROM labels"
_ORDER = " ORDER BY camera_id, track_id, captured_at"


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
    chunk_rows: int = 1_000_000

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ConfigError("the smoothing window must be at least 1 label")
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


def select_sql(options: ReportOptions, placeholder: str = "?") -> tuple[str, list]:
    """The label query for the options' filters; values travel as parameters only."""
    where, params = [], []
    if options.cameras:
        where.append(f"camera_id IN ({', '.join([placeholder] * len(options.cameras))})")
        params += list(options.cameras)
    if options.tracks:
        where.append(f"track_id IN ({', '.join([placeholder] * len(options.tracks))})")
        params += [int(t) for t in options.tracks]
    if options.run is not None:
        where.append(f"run_id = {placeholder}")
        params.append(options.run)
    if options.since is not None:
        where.append(f"captured_at >= {placeholder}")
        params.append(float(options.since))
    if options.until is not None:
        where.append(f"captured_at < {placeholder}")
        params.append(float(options.until))
    return _SELECT + (" WHERE " + " AND ".join(where) if where else "") + _ORDER, params


@dataclass
class Chunk:
    """Label columns of whole (camera, track) groups, ordered by camera, track, time."""

    camera: list[str]  # one per row (or codes + names, see ``keys``)
    run: list[str]
    track: np.ndarray
    t: np.ndarray
    w: np.ndarray
    h: np.ndarray
    probs: np.ndarray  # (n, K) float32

    def __len__(self) -> int:
        return len(self.t)


def _chunk_from_arrow(batch) -> Chunk:
    cols = {name: batch.column(i) for i, name in enumerate(batch.schema.names)}
    probs = np.empty((batch.num_rows, K), dtype=np.float32)
    for k, e in enumerate(EMOTIONS):
        probs[:, k] = cols[f"p_{e}"].to_numpy(zero_copy_only=False)
    return Chunk(camera=cols["camera_id"].to_pylist(), run=cols["run_id"].to_pylist(),
                 track=cols["track_id"].to_numpy(zero_copy_only=False).astype(np.int64),
                 t=cols["captured_at"].to_numpy(zero_copy_only=False).astype(np.float64),
                 w=cols["w"].to_numpy(zero_copy_only=False), h=cols["h"].to_numpy(zero_copy_only=False), probs=probs)


def _chunk_from_rows(rows: list[tuple]) -> Chunk:
    cam, run, track, t, w, h, *probs = zip(*rows)
    return Chunk(camera=list(cam), run=list(run), track=np.asarray(track, dtype=np.int64),
                 t=np.asarray(t, dtype=np.float64), w=np.asarray(w), h=np.asarray(h),
                 probs=np.asarray(probs, dtype=np.float32).T.copy())


def read_batches(source, options: ReportOptions) -> Iterator[Chunk]:
    """Label batches from a SQLite path (Arrow/ADBC when installed, else sqlite3) or an
    open DB-API connection (``source.paramstyle``-aware: ``%s`` for psycopg)."""
    import sqlite3
    from pathlib import Path

    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"no emotion log at {path}")
        try:
            import adbc_driver_sqlite.dbapi as adbc
        except ImportError:
            adbc = None
        if adbc is not None:
            sql, params = select_sql(options)
            with adbc.connect(str(path)) as conn, conn.cursor() as cur:
                cur.execute(sql, params)
                for batch in cur.fetch_record_batch():
                    if batch.num_rows:
                        yield _chunk_from_arrow(batch)
            return
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            yield from read_batches(conn, options)
        finally:
            conn.close()
        return
    placeholder = "%s" if getattr(source, "paramstyle", None) == "format" or "psycopg" in type(source).__module__ \
        else "?"
    sql, params = select_sql(options, placeholder)
    cur = source.cursor()
    try:
        cur.execute(sql, params)
        while rows := cur.fetchmany(65_536):
            yield _chunk_from_rows(rows)
    finally:
        cur.close()


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


def smooth_states(chunk: Chunk, options: ReportOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per label: (group index, state, seconds it stands for, smoothed probabilities or NaN).

    Rows are re-ordered by (camera, run, track, time) with a stable sort; the returned
    arrays follow that order; the group index numbers the (camera, run, track) groups of the
    chunk in order of first appearance after sorting.
    """
    n = len(chunk)
    cam_codes, _ = _codes(chunk.camera)
    run_codes, _ = _codes(chunk.run)
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
    keys = [(chunk.camera[i], chunk.run[i], int(chunk.track[i])) for i in order[np.flatnonzero(new_group)]]
    return group, state, dt, smoothed, t, keys


def _codes(values: list[str]) -> tuple[np.ndarray, list[str]]:
    names: dict[str, int] = {}
    codes = np.fromiter((names.setdefault(v, len(names)) for v in values), dtype=np.int64, count=len(values))
    return codes, list(names)


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
    """Stream the selected labels into runs; returns (runs, labels read)."""
    runs = Runs()
    pending: list[Chunk] = []
    pending_rows = total = 0
    for batch in read_batches(source, options):
        total += len(batch)
        pending.append(batch)
        pending_rows += len(batch)
        if pending_rows >= options.chunk_rows:
            whole, rest = _split_whole_tracks(_merge(pending))
            add_runs(runs, whole, options)
            pending, pending_rows = ([rest], len(rest)) if len(rest) else ([], 0)
    if pending:
        add_runs(runs, _merge(pending), options)
    return runs, total


def _merge(chunks: list[Chunk]) -> Chunk:
    if len(chunks) == 1:
        return chunks[0]
    return Chunk(camera=[c for ch in chunks for c in ch.camera], run=[r for ch in chunks for r in ch.run],
                 track=np.concatenate([c.track for c in chunks]), t=np.concatenate([c.t for c in chunks]),
                 w=np.concatenate([c.w for c in chunks]), h=np.concatenate([c.h for c in chunks]),
                 probs=np.concatenate([c.probs for c in chunks]))


def _split_whole_tracks(chunk: Chunk) -> tuple[Chunk, Chunk]:
    """(rows before the last (camera, track) group, that group): the group may go on in the next batch."""
    last_cam, last_track = chunk.camera[-1], chunk.track[-1]
    i = len(chunk) - 1
    same = chunk.track == last_track
    # Walk back over the trailing block of the same track id, checking the camera too.
    head = np.flatnonzero(~same)
    i = int(head[-1]) + 1 if len(head) else 0
    while i < len(chunk) and chunk.camera[i] != last_cam:
        i += 1

    def part(a: int, b: int) -> Chunk:
        return Chunk(camera=chunk.camera[a:b], run=chunk.run[a:b], track=chunk.track[a:b], t=chunk.t[a:b],
                     w=chunk.w[a:b], h=chunk.h[a:b], probs=chunk.probs[a:b])

    return part(0, i), part(i, len(chunk))
