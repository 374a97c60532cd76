"""A large synthetic emotion log with the logger's schema, generated with numpy.

Cameras see people one after another on a few concurrent lanes (faces per frame); each
person (track) holds an emotion for a while, then changes, and the model output is noisy
around it with occasional one-frame flickers: what the report's smoothing must see through.

Rows are written with SQL (no Python object per label through the store), and the label
blocks the store would keep are packed straight from the same numpy arrays: one sealed
block per track, as the logger's compaction leaves a finished track (``consumers/blocks.py``).
``blocks=False`` leaves them out: a log as written before label blocks existed.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fer_pipeline.emotion_log import blocks as label_blocks
from fer_pipeline.emotion_log.sqlite import SqliteStore
from fer_pipeline.labels import EMOTIONS

K = len(EMOTIONS)
_NAMES = np.array(EMOTIONS, dtype=object)
_COLUMNS = ("crop_id, camera_id, run_id, track_id, frame_index, face_index, captured_at, labelled_at, latency_ms, "
            "emotion, confidence, " + ", ".join(f"p_{e}" for e in EMOTIONS) + ", model_id, worker_id, truth, x, y, w, h")
_INSERT = f"INSERT INTO labels ({_COLUMNS}) VALUES ({', '.join('?' * (len(_COLUMNS.split(','))))})"


@dataclass
class _Lane:
    """One lane of one camera: people one after another, as numpy columns (one entry per label)."""

    camera_id: str
    lane: int
    frame: np.ndarray
    track_id: np.ndarray
    tracks: int
    p: np.ndarray  # (n, K) model output
    captured: np.ndarray
    size: np.ndarray


class _BlockInput(NamedTuple):
    """What one lane's label blocks are packed from."""

    camera_id: str
    track_id: np.ndarray
    captured: np.ndarray
    size: np.ndarray  # int32
    probs: np.ndarray  # (K, n) float32


def generate(path: Path, rows: int, *, cameras: int = 4, lanes: int = 3, fps: float = 30.0, start: float = 1.7e9,
             mean_track: int = 900, mean_segment: int = 240, flicker: float = 0.05, seed: int = 0,
             chunk: int = 500_000, copies: int = 1, blocks: bool = True) -> dict:
    """Write ``rows`` labels to a fresh SQLite log at ``path`` (``copies`` times over, each
    copy later in the day), with their label blocks unless ``blocks`` is False; returns what
    was generated."""
    rng = np.random.default_rng(seed)
    path = Path(path)
    db = _fresh_log(path)
    per_lane = -(-rows // (cameras * lanes))
    t0 = time.perf_counter()
    written, tracks, lanes_data = _write_lanes(db, rng, rows, per_lane, cameras=cameras, lanes=lanes, chunk=chunk,
                                               keep_blocks=blocks, fps=fps, start=start, mean_track=mean_track,
                                               mean_segment=mean_segment, flicker=flicker)
    base_seconds = time.perf_counter() - t0
    span, track_span = _copy_rows(db, copies, written, per_lane, fps)
    rows_seconds = time.perf_counter() - t0
    n_blocks = _write_blocks(db, lanes_data if blocks else None, copies, span, track_span)
    db.close()
    return {"rows": written * copies, "cameras": cameras, "tracks": tracks * copies, "copies": copies,
            "blocks": n_blocks, "base_seconds": round(base_seconds, 1), "rows_seconds": round(rows_seconds, 1),
            "seconds": round(time.perf_counter() - t0, 1), "bytes": path.stat().st_size}


def _fresh_log(path: Path) -> sqlite3.Connection:
    """An empty log at ``path`` with the logger's schema, open for fast bulk writes."""
    if path.exists():
        path.unlink()
    SqliteStore(path).close()  # the schema, exactly as the logger creates it
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    return db


def _write_lanes(db: sqlite3.Connection, rng: np.random.Generator, rows: int, per_lane: int, *, cameras: int,
                 lanes: int, chunk: int, keep_blocks: bool, **shape: float) -> tuple[int, int, list[_BlockInput]]:
    """Simulate and insert every camera's lanes (``per_lane`` labels each, until ``rows``) in one
    transaction; returns (labels, tracks, each lane's block input when ``keep_blocks``)."""
    written = tracks = 0
    lanes_data = []
    db.execute("BEGIN")
    for cam in range(cameras):
        for lane in range(lanes):
            n = min(per_lane, rows - written)
            if n <= 0:
                break
            ln = _simulate_lane(rng, f"cam{cam}", lane, n, lanes=lanes, **shape)
            _insert_lane(db, ln, chunk)
            tracks += ln.tracks
            if keep_blocks:  # compact copies only: the lane's float64 columns are let go
                lanes_data.append(_BlockInput(ln.camera_id, ln.track_id, ln.captured, ln.size.astype(np.int32),
                                              ln.p.T.astype(np.float32)))
            written += n
    db.execute("COMMIT")
    return written, tracks, lanes_data


def _simulate_lane(rng: np.random.Generator, camera_id: str, lane: int, n: int, *, lanes: int, fps: float,
                   start: float, mean_track: float, mean_segment: float, flicker: float) -> _Lane:
    """``n`` frames of one lane: tracks that hold an emotion for a while, then change, seen
    through a noisy model with occasional one-frame flickers."""
    frame = np.arange(n, dtype=np.int64)
    new_track = rng.random(n) < 1.0 / mean_track
    new_track[0] = True
    track_no = np.cumsum(new_track) - 1
    new_seg = (rng.random(n) < 1.0 / mean_segment) | new_track
    seg = np.cumsum(new_seg) - 1
    true = rng.integers(0, K, seg[-1] + 1)[seg]
    flick = rng.random(n) < flicker
    shown = np.where(flick, rng.integers(0, K, n), true)
    logits = rng.normal(0.0, 0.6, (n, K))
    logits[np.arange(n), shown] += rng.uniform(1.0, 3.0, n)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    captured = start + frame / fps
    size = rng.integers(30, 140, n)
    return _Lane(camera_id, lane, frame, track_no * lanes + lane, int(track_no[-1]) + 1, p, captured, size)


def _insert_lane(db: sqlite3.Connection, ln: _Lane, chunk: int) -> None:
    """One lane's rows, ``chunk`` at a time, straight from its numpy columns."""
    n = len(ln.frame)
    arg = ln.p.argmax(axis=1)
    conf = ln.p[np.arange(n), arg]
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        ids = [f"{ln.camera_id}-{ln.lane}-{i}" for i in range(a, b)]
        data = zip(ids, [ln.camera_id] * (b - a), ["run1"] * (b - a), ln.track_id[a:b].tolist(),
                   ln.frame[a:b].tolist(), [ln.lane] * (b - a), ln.captured[a:b].tolist(),
                   (ln.captured[a:b] + 0.04).tolist(), [40.0] * (b - a), _NAMES[arg[a:b]].tolist(),
                   conf[a:b].tolist(), *(ln.p[a:b, k].tolist() for k in range(K)), ["m1"] * (b - a),
                   ["w1"] * (b - a), [None] * (b - a), [10] * (b - a), [10] * (b - a), ln.size[a:b].tolist(),
                   ln.size[a:b].tolist())
        db.executemany(_INSERT, data)


def _copy_rows(db: sqlite3.Connection, copies: int, written: int, per_lane: int, fps: float) -> tuple[float, int]:
    """Larger logs: copies of the generated block later in the day, inside SQLite (no Python
    per row), with new crop ids and track ids so every copy is new people; returns the
    (time span, track id span) one copy is shifted by."""
    span = float(per_lane) / fps + 60.0
    track_span = int(db.execute("SELECT MAX(track_id) FROM labels").fetchone()[0]) + 1
    cols_list = [c.strip() for c in _COLUMNS.split(",")]
    shifted = {"crop_id": "crop_id || '#{k}'", "track_id": f"track_id + {{k}} * {track_span}",
               "frame_index": f"frame_index + {{k}} * {per_lane}", "captured_at": f"captured_at + {{k}} * {span!r}",
               "labelled_at": f"labelled_at + {{k}} * {span!r}"}
    for k in range(1, copies):
        select = ", ".join(shifted.get(c, c).format(k=k) for c in cols_list)
        db.execute("BEGIN")
        db.execute(f"INSERT INTO labels ({_COLUMNS}) SELECT {select} FROM labels WHERE rowid <= ?", (written,))
        db.execute("COMMIT")
    return span, track_span


def _write_blocks(db: sqlite3.Connection, lanes_data: list[_BlockInput] | None, copies: int, span: float,
                  track_span: int) -> int:
    """The label blocks of every lane and copy, or (``lanes_data`` None) a log as written before
    label blocks: no block table, no marker; returns the number of blocks."""
    n_blocks = 0
    db.execute("BEGIN")
    if lanes_data is not None:
        for k in range(copies):
            for camera_id, track_id, captured, size, probs in lanes_data:
                # The same arithmetic as the SQL copy, so times match the rows bit for bit.
                n_blocks += _insert_blocks(db, camera_id, track_id + k * track_span, captured + k * span, size, probs)
        label_blocks.mark_covered(db, label_blocks.SQLITE)
    else:
        db.execute("DROP TABLE label_blocks")
        db.execute("DROP TABLE log_meta")
    db.execute("COMMIT")
    return n_blocks


def _insert_blocks(db, camera_id: str, track_id: np.ndarray, t: np.ndarray, size: np.ndarray,
                   probs: np.ndarray) -> int:
    """One lane's label blocks (its tracks follow one another, each in time order)."""
    starts = np.flatnonzero(np.r_[True, track_id[1:] != track_id[:-1]]).tolist() + [len(t)]
    params = []
    for a, b in zip(starts[:-1], starts[1:]):
        lab = label_blocks.Labels(t[a:b], size[a:b], probs[:, a:b])
        params += label_blocks.bulk(camera_id, "run1", int(track_id[a]), lab)
    db.executemany(label_blocks.SQLITE.insert, params)
    return len(params)
