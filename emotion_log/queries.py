"""What both emotion-log backends share: the read queries (only the driver's placeholder
differs), the track-id ranges that prune, erase and backfill work through one transaction
at a time, and the connection's lifetime, written once here and inherited by each store."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from typing_extensions import Self

from fer_pipeline.emotion_log import schema
from fer_pipeline.emotion_log.schema import Placeholder, TimelineRow, TrackSummary
from fer_pipeline.run_ids import RESTART_MARK

TRACK_END = 2 ** 62  # beyond any track id (bounded to 2**53 by the schema)


class StoreBase:
    """``count``, ``timeline``, ``summary`` and closing, over a store's connection (``_db``), under its lock."""

    _placeholder: Placeholder
    _lock: threading.Lock
    _db: Any

    def count(self, camera_id: str | None = None, *, run_id: str | None = None) -> int:
        """Rows stored, for one camera or all, of one run (its restarts ``<run>~n`` included) or all."""
        where: list[str] = []
        params: list[object] = []
        p = self._placeholder
        if camera_id is not None:
            where.append(f"camera_id = {p}")
            params.append(camera_id)
        if run_id is not None:
            # A prefix compare, not LIKE, in which the run id's "_" would be a wildcard.
            where.append(f"(run_id = {p} OR substr(run_id, 1, {p}) = {p})")
            params += [run_id, len(run_id) + 1, f"{run_id}{RESTART_MARK}"]
        sql = "SELECT COUNT(*) FROM labels" + (" WHERE " + " AND ".join(where) if where else "")
        with self._lock:
            (n,) = self._db.execute(sql, params).fetchone()
        return int(n)

    def timeline(self, camera_id: str, track_id: int, run_id: str | None = None) -> list[TimelineRow]:
        """One track's labels ordered by capture time (then frame, face).

        Track ids restart with each producer run; pass ``run_id`` to keep to one run.
        """
        params: list = [camera_id, track_id] + ([] if run_id is None else [run_id])
        with self._lock:
            rows = self._db.execute(schema.timeline_sql(self._placeholder, run_id), params).fetchall()
        return schema.timeline_rows(rows)

    def summary(self) -> list[TrackSummary]:
        """Per camera run and track: label count, dominant emotion, time span, mean latency."""
        with self._lock:
            rows = self._db.execute(schema.SUMMARY_SQL).fetchall()
        return schema.track_summaries(rows)

    def _cameras(self) -> list[str]:
        """The cameras in the log."""
        with self._lock:
            return [r[0] for r in self._db.execute(schema.CAMERAS).fetchall()]

    def _track_ranges(self, camera: str, rows: int) -> Iterator[tuple[int, int]]:
        """Track-id ranges ``[lo, hi)`` of ``camera`` that cover every id, each holding about
        ``rows`` rows (whole tracks; a longer track alone): one transaction's work each."""
        lo = -TRACK_END
        while lo < TRACK_END:
            with self._lock:
                hi = self._range_end(camera, lo, rows)
            yield lo, hi
            lo = hi

    def _range_end(self, camera: str, lo: int, rows: int) -> int:
        """The end (exclusive) of the range from ``lo`` (the caller holds the lock)."""
        placeholder = self._placeholder
        first_sql = f"SELECT MIN(track_id) FROM labels WHERE camera_id = {placeholder} AND track_id >= {placeholder}"
        (first,) = self._db.execute(first_sql, (camera, lo)).fetchone()
        if first is None:
            return TRACK_END
        end_sql = (f"SELECT track_id FROM labels WHERE camera_id = {placeholder} AND track_id >= {placeholder} "
                   f"ORDER BY track_id LIMIT 1 OFFSET {placeholder}")
        row = self._db.execute(end_sql, (camera, lo, rows)).fetchone()
        if row is None:
            return TRACK_END
        if row[0] == first:  # one track of more than ``rows`` rows: that track alone
            next_sql = f"SELECT MIN(track_id) FROM labels WHERE camera_id = {placeholder} AND track_id > {placeholder}"
            (nxt,) = self._db.execute(next_sql, (camera, first)).fetchone()
            return TRACK_END if nxt is None else int(nxt)
        return int(row[0])

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
