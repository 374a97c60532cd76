"""Per-person emotion timelines in SQLite (stdlib sqlite3, WAL).

One row per label, keyed by ``crop_id``: ``INSERT OR IGNORE`` makes writes idempotent, so
a label redelivered after a crash (inserted, not yet acked) is never stored twice. All
values go through SQL parameters; the only text spliced into SQL is fixed: the column list
built from ``EMOTIONS`` below and the delete conditions written in ``prune``/``erase``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fer_pipeline.errors import ConfigError
from fer_pipeline.labels import EMOTIONS
from fer_pipeline.messages import Label

PROB_COLUMNS: tuple[str, ...] = tuple(f"p_{e}" for e in EMOTIONS)

_COLUMNS: tuple[str, ...] = (
    "crop_id", "camera_id", "run_id", "track_id", "frame_index", "face_index", "captured_at", "labelled_at",
    "latency_ms", "emotion", "confidence", *PROB_COLUMNS, "model_id", "worker_id", "truth", "x", "y", "w", "h",
)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS labels (
    crop_id     TEXT PRIMARY KEY,
    camera_id   TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    track_id    INTEGER NOT NULL,
    frame_index INTEGER NOT NULL,
    face_index  INTEGER NOT NULL,
    captured_at REAL NOT NULL,
    labelled_at REAL NOT NULL,
    latency_ms  REAL NOT NULL,
    emotion     TEXT NOT NULL,
    confidence  REAL NOT NULL,
    {", ".join(f"{c} REAL NOT NULL" for c in PROB_COLUMNS)},
    model_id    TEXT NOT NULL,
    worker_id   TEXT NOT NULL,
    truth       TEXT,
    x INTEGER NOT NULL, y INTEGER NOT NULL, w INTEGER NOT NULL, h INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS labels_by_track ON labels (camera_id, track_id, captured_at);
"""

_INSERT = f"INSERT OR IGNORE INTO labels ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"


def erase_filter(camera_id: str, track_id: int | None, run_id: str | None,
                 placeholder: str = "?") -> tuple[str, list]:
    """WHERE text and parameters selecting one camera's rows (optionally one track/run).

    The text holds only fixed column names and the driver's placeholder; values go in as
    parameters. Shared by the SQLite and PostgreSQL stores.
    """
    where, params = f"camera_id = {placeholder}", [camera_id]
    if track_id is not None:
        where += f" AND track_id = {placeholder}"
        params.append(int(track_id))
    if run_id is not None:
        where += f" AND run_id = {placeholder}"
        params.append(run_id)
    return where, params


@dataclass(frozen=True)
class TimelineRow:
    """One observation of a person (a track) in time order."""

    crop_id: str
    run_id: str
    frame_index: int
    captured_at: float
    labelled_at: float
    latency_ms: float
    emotion: str
    confidence: float
    probabilities: tuple[float, ...]  # EMOTIONS order
    truth: str | None


@dataclass(frozen=True)
class TrackSummary:
    """How one track (a person seen by one camera run) was labelled overall."""

    camera_id: str
    run_id: str
    track_id: int
    labels: int
    dominant: str  # the most frequent emotion (ties: higher mean confidence)
    dominant_share: float
    first_at: float
    last_at: float
    mean_latency_ms: float


class EmotionStore:
    """A SQLite table of labels; safe to share between threads (one lock, one connection).

    Args:
        path: database file (parent folders are created) or ``":memory:"``.

    Raises:
        ConfigError: the file cannot be created or opened for writing.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path) if str(path) != ":memory:" else None
        self._lock = threading.Lock()
        try:
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            # check_same_thread off: the lock serialises access, and services may hand the
            # store to a test or status thread.
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable across application crashes in WAL mode; only an OS crash
            # may lose the last transactions, which redelivery does not cover anyway.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise ConfigError(f"cannot open the emotion database {path}: {e}") from e

    def add(self, labels: Sequence[Label]) -> int:
        """Insert labels in one transaction; returns how many rows were new (duplicates are ignored)."""
        if not labels:
            return 0
        rows = [_row(label) for label in labels]
        with self._lock:
            before = self._db.total_changes
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(_INSERT, rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return self._db.total_changes - before

    def count(self, camera_id: str | None = None) -> int:
        """Rows stored, for one camera or all."""
        with self._lock:
            if camera_id is None:
                (n,) = self._db.execute("SELECT COUNT(*) FROM labels").fetchone()
            else:
                (n,) = self._db.execute("SELECT COUNT(*) FROM labels WHERE camera_id = ?", (camera_id,)).fetchone()
        return int(n)

    def timeline(self, camera_id: str, track_id: int, run_id: str | None = None) -> list[TimelineRow]:
        """One track's labels ordered by capture time (then frame, face).

        Track ids restart with each producer run; pass ``run_id`` to keep to one run.
        """
        sql = (f"SELECT crop_id, run_id, frame_index, captured_at, labelled_at, latency_ms, emotion, confidence, "
               f"{', '.join(PROB_COLUMNS)}, truth FROM labels WHERE camera_id = ? AND track_id = ?")
        params: list = [camera_id, track_id]
        if run_id is not None:
            sql += " AND run_id = ?"
            params.append(run_id)
        sql += " ORDER BY captured_at, frame_index, face_index"
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        n = len(PROB_COLUMNS)
        return [TimelineRow(*r[:8], probabilities=tuple(r[8:8 + n]), truth=r[8 + n]) for r in rows]

    def summary(self) -> list[TrackSummary]:
        """Per camera run and track: label count, dominant emotion, time span, mean latency."""
        with self._lock:
            rows = self._db.execute(
                "SELECT camera_id, run_id, track_id, emotion, COUNT(*), AVG(confidence), MIN(captured_at), "
                "MAX(captured_at), SUM(latency_ms) FROM labels "
                "GROUP BY camera_id, run_id, track_id, emotion ORDER BY camera_id, run_id, track_id"
            ).fetchall()
        tracks: dict[tuple[str, str, int], list[tuple]] = {}
        for r in rows:
            tracks.setdefault((r[0], r[1], r[2]), []).append(r[3:])
        out = []
        for (camera_id, run_id, track_id), groups in tracks.items():
            total = sum(g[1] for g in groups)
            emotion, n, *_ = max(groups, key=lambda g: (g[1], g[2]))
            out.append(TrackSummary(
                camera_id=camera_id, run_id=run_id, track_id=track_id, labels=total, dominant=emotion,
                dominant_share=n / total, first_at=min(g[3] for g in groups), last_at=max(g[4] for g in groups),
                mean_latency_ms=sum(g[5] for g in groups) / total,
            ))
        return out

    def prune(self, before: float, *, dry_run: bool = False) -> int:
        """Retention: delete rows captured before ``before`` (epoch seconds); returns how many."""
        return self._delete("captured_at < ?", [float(before)], dry_run)

    def erase(self, camera_id: str, track_id: int | None = None, *, run_id: str | None = None,
              dry_run: bool = False) -> int:
        """Erase a person's rows (one camera's track; every run unless ``run_id``), or a whole
        camera's when ``track_id`` is None; returns how many."""
        return self._delete(*erase_filter(camera_id, track_id, run_id), dry_run)

    def _delete(self, where: str, params: list, dry_run: bool) -> int:
        with self._lock:
            if dry_run:
                (n,) = self._db.execute(f"SELECT COUNT(*) FROM labels WHERE {where}", params).fetchone()
                return int(n)
            # secure_delete overwrites the freed pages, and the checkpoint empties the WAL, so
            # erased rows do not linger in the files.
            self._db.execute("PRAGMA secure_delete=ON")
            try:
                n = self._db.execute(f"DELETE FROM labels WHERE {where}", params).rowcount
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._db.execute("PRAGMA secure_delete=OFF")
            return int(n)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> EmotionStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_store(target: Path | str):
    """The emotion log named by a setting: a ``postgresql://`` URL opens the PostgreSQL store,
    anything else is a SQLite file."""
    text = str(target)
    if text.startswith(("postgresql://", "postgres://")):
        from fer_pipeline.consumers.pgstore import PgEmotionStore

        return PgEmotionStore(text)
    return EmotionStore(target)


def _row(label: Label) -> tuple:
    b = label.bbox
    return (
        label.crop_id, label.camera_id, label.run_id, label.track_id, label.frame_index, label.face_index,
        label.captured_at, label.labelled_at, (label.labelled_at - label.captured_at) * 1000.0,
        label.emotion, label.confidence, *label.probabilities, label.model_id, label.worker_id, label.truth,
        b.x, b.y, b.w, b.h,
    )
