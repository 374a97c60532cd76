"""What every emotion-log backend offers (``LabelStore``) and ``open_store``, which picks
one from a setting: a ``postgresql://`` URL opens PostgreSQL, anything else a SQLite file."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol

from fer_pipeline.emotion_log.schema import TimelineRow, TrackSummary
from fer_pipeline.messages import Label


class LabelStore(Protocol):
    """A table of labels and its label blocks, safe to share between threads.

    Every write keeps the blocks in the same transaction; a label stored twice (redelivered
    after a crash) is one row.
    """

    def add(self, labels: Sequence[Label]) -> int:
        """Store labels in one transaction; returns how many were new."""
        ...

    def count(self, camera_id: str | None = None, *, run_id: str | None = None) -> int:
        """Rows stored (of one camera, of one run with its restarts)."""
        ...

    def timeline(self, camera_id: str, track_id: int, run_id: str | None = None) -> list[TimelineRow]:
        """One track's labels in capture order."""
        ...

    def summary(self) -> list[TrackSummary]:
        """Per camera run and track: label count, dominant emotion, time span, mean latency."""
        ...

    def prune(self, before: float, *, dry_run: bool = False) -> int:
        """Delete rows captured before ``before`` (epoch seconds); returns how many."""
        ...

    def erase(self, camera_id: str, track_id: int | None = None, *, run_id: str | None = None,
              dry_run: bool = False) -> int:
        """Delete one camera's rows (optionally one track or run); returns how many."""
        ...

    def has_blocks(self) -> bool:
        """Whether the label blocks cover every row (the report then reads them)."""
        ...

    def backfill(self, *, force: bool = False, on_start: Callable[[int], None] | None = None,
                 stop: threading.Event | None = None) -> int:
        """Build the label blocks of a log written before they existed; returns the rows covered."""
        ...

    def close(self) -> None:
        """Release the connection; the store is unusable afterwards."""
        ...

    def __enter__(self) -> LabelStore: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class StoreUnavailable(Exception):
    """The database cannot take writes for now (locked, disk full, connection lost, damaged
    file): the writer keeps its messages and retries, it never drops them for this."""


def is_unavailable(err: BaseException) -> bool:
    """Whether a store error is the database's condition (retry later) rather than something
    about the values written (then only the message that carries them fails)."""
    if isinstance(err, (sqlite3.OperationalError, OSError)) or type(err) is sqlite3.DatabaseError:
        return True  # locked, busy, disk full or I/O; "database disk image is malformed"
    try:
        import psycopg  # only installed with the postgres extra; imported on an error only
    except ImportError:
        return False
    return isinstance(err, (psycopg.OperationalError, psycopg.InterfaceError))


def is_database_error(err: BaseException) -> bool:
    """Whether ``err`` is the database's own (SQLite's or psycopg's), as opposed to a bug: a
    reader turns it into one line for the user."""
    if isinstance(err, sqlite3.DatabaseError):
        return True
    try:
        import psycopg  # only installed with the postgres extra; imported on an error only
    except ImportError:
        return False
    return isinstance(err, psycopg.Error)


def is_postgres_url(target: Path | str) -> bool:
    """Whether a log setting names a PostgreSQL database (else it is a SQLite file)."""
    return str(target).startswith(("postgresql://", "postgres://"))


def open_store(target: Path | str) -> LabelStore:
    """The emotion log named by a setting: a ``postgresql://`` URL opens the PostgreSQL store
    (psycopg is imported only then), anything else is a SQLite file."""
    text = str(target)
    if is_postgres_url(text):
        from fer_pipeline.emotion_log.postgres import PostgresStore

        return PostgresStore(text)
    from fer_pipeline.emotion_log.sqlite import SqliteStore

    return SqliteStore(target)
