"""The emotion log in PostgreSQL, for deployments where loggers and analysts sit on different
machines: the same table and the same guarantees as the SQLite store (``store.py``).

Selected by a ``postgresql://`` URL in ``FER_CONSUMER__DB`` / ``--db`` (see
``store.open_store``). ``INSERT ... ON CONFLICT (crop_id) DO NOTHING`` keeps redelivered
labels to one row; every value travels as a parameter. A schema other than ``public`` is
chosen the libpq way, in the URL: ``?options=-csearch_path%3Dmyschema``. Needs psycopg 3
(``pip install 'fer-pipeline[postgres]'``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from fer_pipeline.consumers.store import _COLUMNS, PROB_COLUMNS, TimelineRow, _row, erase_filter
from fer_pipeline.errors import ConfigError
from fer_pipeline.messages import Label
from fer_pipeline.transport import redact_url

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS labels (
    crop_id     TEXT PRIMARY KEY,
    camera_id   TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    track_id    BIGINT NOT NULL,
    frame_index BIGINT NOT NULL,
    face_index  INTEGER NOT NULL,
    captured_at DOUBLE PRECISION NOT NULL,
    labelled_at DOUBLE PRECISION NOT NULL,
    latency_ms  DOUBLE PRECISION NOT NULL,
    emotion     TEXT NOT NULL,
    confidence  DOUBLE PRECISION NOT NULL,
    {", ".join(f"{c} DOUBLE PRECISION NOT NULL" for c in PROB_COLUMNS)},
    model_id    TEXT NOT NULL,
    worker_id   TEXT NOT NULL,
    truth       TEXT,
    x INTEGER NOT NULL, y INTEGER NOT NULL, w INTEGER NOT NULL, h INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS labels_by_track ON labels (camera_id, track_id, captured_at);
"""

_INSERT = (f"INSERT INTO labels ({', '.join(_COLUMNS)}) VALUES ({', '.join(['%s'] * len(_COLUMNS))}) "
           "ON CONFLICT (crop_id) DO NOTHING")


def connect(url: str):
    """An autocommit psycopg connection, or a ConfigError naming the (redacted) URL."""
    try:
        import psycopg
    except ImportError:
        raise ConfigError("a postgresql:// emotion log needs psycopg: pip install 'fer-pipeline[postgres]'") from None
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.Error as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"cannot open the emotion database {redact_url(url)}: {first[:200]}") from e


class PgEmotionStore:
    """A PostgreSQL table of labels with the SQLite store's interface (add, count, timeline,
    prune, erase); safe to share between threads (one lock, one connection).

    Args:
        url: ``postgresql://user[:password]@host[:port]/database[?options=-csearch_path%3Dschema]``.

    Raises:
        ConfigError: psycopg is missing, or the database cannot be reached or written.
    """

    def __init__(self, url: str) -> None:
        import psycopg

        self.url = url
        self._lock = threading.Lock()
        self._db = connect(url)
        try:
            self._db.execute(_SCHEMA)
        except psycopg.Error as e:
            self._db.close()
            raise ConfigError(f"cannot create the labels table in {redact_url(url)}: {e}") from e

    def add(self, labels: Sequence[Label]) -> int:
        """Insert labels in one transaction; returns how many rows were new (duplicates are ignored)."""
        if not labels:
            return 0
        # Sorted by key so that two loggers inserting overlapping batches lock rows in one order.
        rows = sorted((_row(label) for label in labels), key=lambda r: r[0])
        with self._lock, self._db.transaction(), self._db.cursor() as cur:
            cur.executemany(_INSERT, rows)
            return max(cur.rowcount, 0)

    def count(self, camera_id: str | None = None) -> int:
        with self._lock:
            if camera_id is None:
                (n,) = self._db.execute("SELECT COUNT(*) FROM labels").fetchone()
            else:
                (n,) = self._db.execute("SELECT COUNT(*) FROM labels WHERE camera_id = %s", (camera_id,)).fetchone()
        return int(n)

    def timeline(self, camera_id: str, track_id: int, run_id: str | None = None) -> list[TimelineRow]:
        sql = (f"SELECT crop_id, run_id, frame_index, captured_at, labelled_at, latency_ms, emotion, confidence, "
               f"{', '.join(PROB_COLUMNS)}, truth FROM labels WHERE camera_id = %s AND track_id = %s")
        params: list = [camera_id, track_id]
        if run_id is not None:
            sql += " AND run_id = %s"
            params.append(run_id)
        sql += " ORDER BY captured_at, frame_index, face_index"
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        n = len(PROB_COLUMNS)
        return [TimelineRow(*r[:8], probabilities=tuple(r[8:8 + n]), truth=r[8 + n]) for r in rows]

    def prune(self, before: float, *, dry_run: bool = False) -> int:
        """Delete rows captured before ``before`` (epoch seconds). PostgreSQL frees the space
        at the next (auto)vacuum."""
        return self._delete("captured_at < %s", [float(before)], dry_run)

    def erase(self, camera_id: str, track_id: int | None = None, *, run_id: str | None = None,
              dry_run: bool = False) -> int:
        return self._delete(*erase_filter(camera_id, track_id, run_id, "%s"), dry_run)

    def _delete(self, where: str, params: list, dry_run: bool) -> int:
        with self._lock:
            if dry_run:
                (n,) = self._db.execute(f"SELECT COUNT(*) FROM labels WHERE {where}", params).fetchone()
                return int(n)
            return int(self._db.execute(f"DELETE FROM labels WHERE {where}", params).rowcount)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> PgEmotionStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
