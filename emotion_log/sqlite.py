"""Per-person emotion timelines in SQLite (stdlib sqlite3, WAL).

One row per label, keyed by ``crop_id``: a label redelivered after a crash (inserted, not
yet acked) is never stored twice. Next to the rows, the ``label_blocks`` table holds the
same labels packed per track for the report (``blocks.py``), kept in the same transaction
by every write. All values go through SQL parameters; the only text spliced into SQL is
fixed: the column list built from ``EMOTIONS`` below and the delete conditions written in
``prune``/``erase``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from fer_pipeline.emotion_log import blocks, schema
from fer_pipeline.emotion_log.queries import TRACK_END, StoreBase
from fer_pipeline.emotion_log.reader import Part, merge_chunks, read_rows
from fer_pipeline.emotion_log.schema import Placeholder
from fer_pipeline.emotion_log.selection import Selection
from fer_pipeline.errors import ConfigError
from fer_pipeline.messages import Label

log = logging.getLogger("fer.store")

_SCHEMA = schema.create_table("sqlite")
_INSERT = schema.insert_sql("?").replace("INSERT", "INSERT OR IGNORE", 1)
# Which of a batch's crop ids are stored already: one parameter, a JSON array of the ids.
_EXISTING = "SELECT crop_id FROM labels WHERE crop_id IN (SELECT value FROM json_each(?))"
_EXISTS_ONE = "SELECT 1 FROM labels WHERE crop_id = ?"
_COLUMNS_PRESENT = "SELECT name FROM pragma_table_info('labels')"
_CLEAR_RANGE = "DELETE FROM label_blocks WHERE camera_id = ? AND track_id >= ? AND track_id < ?"
_BLOCK_CAMERAS = "SELECT DISTINCT camera_id FROM label_blocks"
_CLEAR_CAMERA = "DELETE FROM label_blocks WHERE camera_id = ?"
_PRUNE_RANGE = "DELETE FROM labels WHERE camera_id = ? AND track_id >= ? AND track_id < ? AND captured_at < ?"
BACKFILL_ROWS = 65_536  # per transaction: ~1 s of the write lock on 2 cores, so a live logger hardly waits


class SqliteStore(StoreBase):
    """A SQLite table of labels (and its label blocks); safe to share between threads (one
    lock, one connection).

    Args:
        path: database file (parent folders are created) or ``":memory:"``.

    Raises:
        ConfigError: the file cannot be created or opened for writing.
    """

    _placeholder: Placeholder = "?"

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path) if str(path) != ":memory:" else None
        self._lock = threading.Lock()
        self._seal_checks: dict[str, float] = {}  # see blocks.add
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
            # Every delete on this connection zeroes what it frees: blocks merged away by
            # compaction as well as erased rows, so no stale copy of an erased label's
            # values is left in free pages for a later erase to miss.
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.executescript(_SCHEMA)
            self._db.executescript(blocks.SQLITE.schema)
            self._add_missing_columns()
            try:
                self._db.execute("SELECT value FROM json_each('[]')").fetchall()
                self._json = True
            except sqlite3.OperationalError:
                self._json = False
            with self._transaction():
                # A new (empty) log is covered by its (no) blocks from the start.
                if blocks.get_meta(self._db, blocks.SQLITE, blocks.META_BLOCKS) is None and \
                        self._db.execute(schema.ANY_ROW).fetchone() is None:
                    self._mark_covered()
        except (OSError, sqlite3.Error) as e:
            raise ConfigError(f"cannot open the emotion database {path}: {e}") from e

    def _transaction(self):
        return _Transaction(self._db)

    def _add_missing_columns(self) -> None:
        # A log written by an older version lacks the columns added since (position_s): they
        # are added on open, its old rows reading NULL. Checked again under the write lock, so
        # that two loggers opening the same old log add each column once.
        if not schema.missing_columns({r[0] for r in self._db.execute(_COLUMNS_PRESENT)}):
            return
        with self._transaction():
            for name in schema.missing_columns({r[0] for r in self._db.execute(_COLUMNS_PRESENT)}):
                self._db.execute(schema.add_column_sql(name, "sqlite"))
                log.info("emotion log %s: added column %s (rows stored before have none)", self.path, name)

    def add(self, labels: Sequence[Label]) -> int:
        """Insert labels in one transaction; returns how many rows were new (duplicates are ignored).

        Only the new rows go into label blocks: the ids already stored are looked up in the
        transaction (``BEGIN IMMEDIATE``: no other writer in between), and a crop id seen twice
        in the batch counts once, as ``INSERT OR IGNORE`` keeps its first label.
        """
        if not labels:
            return 0
        rows = [schema.label_row(label) for label in labels]
        with self._lock, self._transaction():
            if self._json:
                seen = {r[0] for r in self._db.execute(_EXISTING, (json.dumps([r[0] for r in rows]),))}
            else:  # a SQLite built without JSON functions: one lookup per id
                seen = {r[0] for r in rows if self._db.execute(_EXISTS_ONE, (r[0],)).fetchone()}
            new = []
            for r in rows:
                if r[0] not in seen:
                    seen.add(r[0])
                    new.append(r)
            if new:
                self._db.executemany(_INSERT, new)
                blocks.add(self._db, blocks.SQLITE, map(schema.block_entry, new), self._seal_checks)
            return len(new)

    def prune(self, before: float, *, dry_run: bool = False) -> int:
        """Retention: delete rows captured before ``before`` (epoch seconds); returns how many.
        Blocks wholly before it are deleted, and those that straddle it rewritten.

        Works one camera's range of about ``BACKFILL_ROWS`` rows (whole tracks) per
        transaction, rows and blocks together, as the backfill does: the log stays
        consistent after each, and a logger writing meanwhile waits one range (about a
        second), not the whole prune (a 1M-row prune held the lock 9.4 s in one transaction,
        past the logger's 5 s busy timeout)."""
        before = float(before)
        if dry_run:
            return self._delete("captured_at < ?", [before], True, lambda: None)
        deleted = 0
        for camera in self._cameras():
            for lo, hi in self._track_ranges(camera, BACKFILL_ROWS):
                with self._lock, self._transaction():
                    deleted += self._db.execute(_PRUNE_RANGE, (camera, lo, hi, before)).rowcount
                    blocks.prune(self._db, blocks.SQLITE, before, (camera, lo, hi))
        with self._lock:
            # secure_delete zeroed the freed pages; the checkpoint empties the WAL of them too.
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return deleted

    def erase(self, camera_id: str, track_id: int | None = None, *, run_id: str | None = None,
              dry_run: bool = False) -> int:
        """Erase a person's rows (one camera's track; every run unless ``run_id``), or a whole
        camera's when ``track_id`` is None, and their blocks; returns how many rows.

        A whole camera (or run) goes one range of about ``BACKFILL_ROWS`` rows per
        transaction, as ``prune`` does, so a logger writing meanwhile never waits long."""
        where, params = schema.erase_filter(camera_id, track_id, run_id)
        if dry_run or track_id is not None:
            return self._delete(where, params, dry_run, lambda: blocks.erase(self._db, blocks.SQLITE, where, params))
        deleted = 0
        where += " AND track_id >= ? AND track_id < ?"
        for lo, hi in self._track_ranges(camera_id, BACKFILL_ROWS):
            with self._lock, self._transaction():
                deleted += self._db.execute(f"DELETE FROM labels WHERE {where}", [*params, lo, hi]).rowcount
                blocks.erase(self._db, blocks.SQLITE, where, [*params, lo, hi])
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return deleted

    def _delete(self, where: str, params: list, dry_run: bool, on_blocks: Callable[[], None]) -> int:
        with self._lock:
            if dry_run:
                (n,) = self._db.execute(f"SELECT COUNT(*) FROM labels WHERE {where}", params).fetchone()
                return int(n)
            # secure_delete (on for this connection) overwrites the freed pages, and the
            # checkpoint empties the WAL, so erased rows and blocks do not linger in the files.
            with self._transaction():
                n = self._db.execute(f"DELETE FROM labels WHERE {where}", params).rowcount
                on_blocks()
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return int(n)

    # -- label blocks -----------------------------------------------------------------------
    def has_blocks(self) -> bool:
        """Whether every row is in a block (the report then reads the blocks)."""
        with self._lock:
            return blocks.get_meta(self._db, blocks.SQLITE, blocks.META_BLOCKS) == blocks.FORMAT

    def backfill(self, *, force: bool = False, on_start: Callable[[int], None] | None = None,
                 stop: threading.Event | None = None) -> int:
        """Build the label blocks of a log written before they existed; returns the rows
        covered (0: the log has its blocks already).

        Works one camera's range of about ``BACKFILL_ROWS`` rows (whole tracks) per
        transaction: its blocks are rebuilt from its rows, so other writers (loggers of this
        version keep blocks for what they add) wait at most one batch, memory stays bounded,
        and an interrupted backfill is simply run again. The marker is set at the end, after
        checking that the blocks hold as many labels as there are rows.

        Args:
            force: rebuild even when the log is marked as covered.
            on_start: called with the row count before the work starts (for a log line).
            stop: checked between ranges; when set, returns 0 with the log still unmarked
                (the next backfill starts over; the ranges done meanwhile are simply redone).
        """
        with self._lock:
            if self.path is None:
                return 0
            if force:
                with self._transaction():
                    self._db.execute(blocks.SQLITE.del_meta, (blocks.META_BLOCKS,))
            elif blocks.get_meta(self._db, blocks.SQLITE, blocks.META_BLOCKS) == blocks.FORMAT:
                return 0
            (rows,) = self._db.execute(blocks.SQLITE.count_rows).fetchone()
        if on_start is not None:
            on_start(int(rows))
        options = Selection(blocks=False)
        with self._lock, self._transaction():
            # Under the write lock: a camera that appears later is this version's (it keeps blocks).
            cameras = [r[0] for r in self._db.execute(schema.CAMERAS).fetchall()]
            for (camera,) in self._db.execute(_BLOCK_CAMERAS).fetchall():
                if camera not in cameras:
                    self._db.execute(_CLEAR_CAMERA, (camera,))
        for camera in cameras:
            lo = -TRACK_END
            while lo < TRACK_END:
                if stop is not None and stop.is_set():
                    return 0
                # The rows are read on this connection, inside the range's write transaction:
                # what they say is what the blocks are rebuilt from, whatever other writers do
                # between ranges (a second connection, or ADBC's own SQLite, would not see the
                # same snapshot, and two SQLite libraries on one file corrupt each other's locks).
                with self._lock, self._transaction():
                    hi = self._range_end(camera, lo, BACKFILL_ROWS)
                    self._db.execute(_CLEAR_RANGE, (camera, lo, hi))
                    chunks = list(read_rows(self._db, options, Part(camera, lo, hi)))
                    if chunks:
                        c = merge_chunks(chunks)
                        self._db.executemany(blocks.SQLITE.insert, blocks.bulk_from_columns(
                            c.cameras, c.camera, c.runs, c.run, c.track, c.t, c.size, c.probs))
                lo = hi
        with self._lock, self._transaction():
            (rows,) = self._db.execute(blocks.SQLITE.count_rows).fetchone()
            (covered,) = self._db.execute(blocks.SQLITE.count_labels).fetchone()
            if rows != covered:
                log.warning("label blocks hold %d labels for %d rows: a writer that does not keep blocks (an older "
                            "logger?) changed the log; the report reads rows until `fer-pipeline reindex` runs again",
                            covered, rows)
                return int(covered)
            self._mark_covered()
        return int(rows)

    def _mark_covered(self) -> None:
        blocks.mark_covered(self._db, blocks.SQLITE)



class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` on any exception; inside, this
    store's writes are marked as keeping the label blocks (``blocks.WRITER_KEEPS_BLOCKS``),
    so the database's triggers leave the coverage marker alone."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute(blocks.WRITER_KEEPS_BLOCKS["?"])

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._db.execute("ROLLBACK")
            return
        self._db.execute(blocks.WRITER_DONE)
        self._db.execute("COMMIT")
