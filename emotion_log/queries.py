"""What both emotion-log backends share: the read queries (only the driver's placeholder
differs) and the connection's lifetime, written once here and inherited by each store."""

from __future__ import annotations

import threading
from typing import Any

from typing_extensions import Self

from fer_pipeline.emotion_log import schema
from fer_pipeline.emotion_log.schema import Placeholder, TimelineRow, TrackSummary


class StoreBase:
    """``count``, ``timeline``, ``summary`` and closing, over a store's connection (``_db``), under its lock."""

    _placeholder: Placeholder
    _lock: threading.Lock
    _db: Any

    def count(self, camera_id: str | None = None) -> int:
        """Rows stored, for one camera or all."""
        with self._lock:
            if camera_id is None:
                (n,) = self._db.execute("SELECT COUNT(*) FROM labels").fetchone()
            else:
                placeholder = self._placeholder
                sql = f"SELECT COUNT(*) FROM labels WHERE camera_id = {placeholder}"
                (n,) = self._db.execute(sql, (camera_id,)).fetchone()
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

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
