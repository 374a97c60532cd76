"""The emotion log in PostgreSQL, for deployments where loggers and analysts sit on different
machines: the same tables and the same guarantees as the SQLite store (``sqlite.py``), both
built from one column list (``schema.py``).

Selected by a ``postgresql://`` URL in ``FER_CONSUMER__DB`` / ``--db`` (see
``store.open_store``). ``INSERT ... ON CONFLICT (crop_id) DO NOTHING`` keeps redelivered
labels to one row, and its ``RETURNING`` tells which rows were new, so that only those go
into the label blocks (``blocks.py``), in the same transaction; writers take turns at their
block work under a transaction-scoped advisory lock. Every value travels as a parameter. A
schema other than ``public`` is chosen the libpq way, in the URL:
``?options=-csearch_path%3Dmyschema``. Needs psycopg 3 (``pip install 'fer-pipeline[postgres]'``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from fer_pipeline.emotion_log import blocks, schema
from fer_pipeline.emotion_log.queries import StoreBase
from fer_pipeline.emotion_log.reader import Chunk, merge_chunks, read_batches, split_whole_tracks
from fer_pipeline.emotion_log.schema import Placeholder
from fer_pipeline.emotion_log.selection import Selection
from fer_pipeline.errors import ConfigError
from fer_pipeline.messages import Label
from fer_pipeline.urls import redact_url

_SCHEMA = schema.create_table("postgres")
_HAS_TRIGGER = ("SELECT 1 FROM pg_trigger WHERE tgname = 'labels_changed_without_blocks' "
                "AND tgrelid = 'labels'::regclass")
_COLUMNS_PRESENT = ("SELECT attname FROM pg_attribute WHERE attrelid = 'labels'::regclass "
                    "AND attnum > 0 AND NOT attisdropped")
_INSERT = (schema.insert_sql("%s") + " ON CONFLICT (crop_id) DO NOTHING RETURNING crop_id")
_CLEAR_BLOCKS = "DELETE FROM label_blocks"
ROWS_PER_TRANSACTION = 65_536  # prune and erase: the rows one transaction deletes, about

log = logging.getLogger("fer.store")


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


# The advisory lock key under which a store creates the log's tables (any constant; "fer-log").
_SCHEMA_LOCK = int.from_bytes(b"fer-log", "big")


class PostgresStore(StoreBase):
    """A PostgreSQL table of labels (and its label blocks) with the SQLite store's interface
    (add, count, timeline, prune, erase, backfill); safe to share between threads (one lock,
    one connection).

    Args:
        url: ``postgresql://user[:password]@host[:port]/database[?options=-csearch_path%3Dschema]``.

    Raises:
        ConfigError: psycopg is missing, or the database cannot be reached or written.
    """

    _placeholder: Placeholder = "%s"

    def __init__(self, url: str) -> None:
        import psycopg

        self.url = url
        self._lock = threading.Lock()
        self._seal_checks: dict[str, float] = {}  # see blocks.add
        self._db = connect(url)
        try:
            with self._db.transaction():
                # CREATE ... IF NOT EXISTS is not safe against itself in PostgreSQL: two loggers
                # creating one table at the same moment, one fails on the catalog's unique index.
                # One creator at a time (an advisory lock held to the commit) makes it so.
                self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                self._db.execute(_SCHEMA)
                self._db.execute(blocks.POSTGRES.schema)
            with self._db.transaction(), self._db.cursor() as cur:
                cur.execute(blocks.POSTGRES.lock)  # also keeps two loggers' CREATE OR REPLACE apart
                # A log written by an older version lacks the columns added since (position_s):
                # added here, under the lock every writer takes first (so no two openers add one
                # twice, and no lock-order deadlock with a logger's insert); old rows read NULL.
                for name in schema.missing_columns({r[0] for r in cur.execute(_COLUMNS_PRESENT).fetchall()}):
                    cur.execute(schema.add_column_sql(name, "postgres"))
                    log.info("emotion log %s: added column %s (rows stored before have none)", redact_url(url), name)
                if cur.execute(_HAS_TRIGGER).fetchone() is None:
                    cur.execute(blocks.PG_TRIGGERS)
                # A new (empty) log is covered by its (no) blocks from the start.
                if blocks.get_meta(cur, blocks.POSTGRES, blocks.META_BLOCKS) is None and \
                        cur.execute(schema.ANY_ROW).fetchone() is None:
                    blocks.mark_covered(cur, blocks.POSTGRES)
        except psycopg.Error as e:
            self._db.close()
            raise ConfigError(f"cannot create the labels table in {redact_url(url)}: {e}") from e

    def add(self, labels: Sequence[Label]) -> int:
        """Insert labels in one transaction; returns how many rows were new (duplicates are ignored).

        ``RETURNING`` names the rows this transaction inserted: a crop id already stored, or
        being stored by a concurrent logger (which then waits for the first to commit), or
        seen twice in the batch, is not among them, so each label goes into one block.
        """
        if not labels:
            return 0
        # Sorted by key (stable: a crop id's first label first) so that two loggers inserting
        # overlapping batches lock rows in one order.
        rows = sorted((schema.label_row(label) for label in labels), key=lambda r: r[0])
        with self._lock, self._db.transaction(), self._db.cursor() as cur:
            cur.execute(blocks.WRITER_KEEPS_BLOCKS["%s"])
            # The block lock before the rows' lock, as every writer here takes them (opening a
            # store creates the trigger under it): two orders would deadlock.
            cur.execute(blocks.POSTGRES.lock)
            cur.executemany(_INSERT, rows, returning=True)
            inserted: set[str] = set()
            while True:
                inserted.update(r[0] for r in cur.fetchall())
                if not cur.nextset():
                    break
            new = []
            for r in rows:
                if r[0] in inserted:
                    inserted.discard(r[0])
                    new.append(r)
            if new:
                blocks.add(cur, blocks.POSTGRES, map(schema.block_entry, new), self._seal_checks)
            return len(new)

    def prune(self, before: float, *, dry_run: bool = False) -> int:
        """Delete rows captured before ``before`` (epoch seconds), and drop them from the label
        blocks. PostgreSQL frees the space at the next (auto)vacuum.

        One camera's range of about ``ROWS_PER_TRANSACTION`` rows (whole tracks) per
        transaction, rows and blocks together: loggers wait for the block lock one range at a
        time, not for the whole prune."""
        before = float(before)
        if dry_run:
            return self._delete("captured_at < %s", [before], True, lambda cur: None)
        deleted = 0
        for camera in self._cameras():
            for lo, hi in self._track_ranges(camera, ROWS_PER_TRANSACTION):
                deleted += self._delete(
                    "camera_id = %s AND track_id >= %s AND track_id < %s AND captured_at < %s",
                    [camera, lo, hi, before], False,
                    lambda cur, tracks=(camera, lo, hi): blocks.prune(cur, blocks.POSTGRES, before, tracks))
        return deleted

    def erase(self, camera_id: str, track_id: int | None = None, *, run_id: str | None = None,
              dry_run: bool = False) -> int:
        """Delete one camera's rows (optionally one track or run) and drop them from the label
        blocks; returns how many (with ``dry_run``, only counts them). A whole camera (or run)
        goes range by range, as ``prune`` does."""
        where, params = schema.erase_filter(camera_id, track_id, run_id, "%s")
        if dry_run or track_id is not None:
            return self._delete(where, params, dry_run, lambda cur: blocks.erase(cur, blocks.POSTGRES, where, params))
        where += " AND track_id >= %s AND track_id < %s"
        return sum(self._delete(where, [*params, lo, hi], False,
                                lambda cur, ps=[*params, lo, hi]: blocks.erase(cur, blocks.POSTGRES, where, ps))
                   for lo, hi in self._track_ranges(camera_id, ROWS_PER_TRANSACTION))

    def _delete(self, where: str, params: list, dry_run: bool, on_blocks: Callable) -> int:
        with self._lock:
            if dry_run:
                (n,) = self._db.execute(f"SELECT COUNT(*) FROM labels WHERE {where}", params).fetchone()
                return int(n)
            with self._db.transaction(), self._db.cursor() as cur:
                cur.execute(blocks.WRITER_KEEPS_BLOCKS["%s"])
                # The block lock first: a logger's rows committed after this delete get their
                # blocks after it too, and those committed before are deleted with theirs.
                cur.execute(blocks.POSTGRES.lock)
                n = cur.execute(f"DELETE FROM labels WHERE {where}", params).rowcount
                on_blocks(cur)
                return int(n)

    def has_blocks(self) -> bool:
        """Whether every row is in a block (the report then reads the blocks)."""
        with self._lock:
            return blocks.get_meta(self._db, blocks.POSTGRES, blocks.META_BLOCKS) == blocks.FORMAT

    def backfill(self, *, force: bool = False, on_start: Callable[[int], None] | None = None,
                 stop: threading.Event | None = None) -> int:
        """Build the label blocks of a log written before they existed, in one transaction
        that holds the block lock (loggers wait for it before storing their blocks); rows are
        streamed through a server-side cursor. Returns the rows covered (0: nothing to do, or
        ``stop`` was set before it began: one transaction cannot stop half way)."""
        with self._lock:
            if not force and blocks.get_meta(self._db, blocks.POSTGRES, blocks.META_BLOCKS) == blocks.FORMAT:
                return 0
            (rows,) = self._db.execute(blocks.POSTGRES.count_rows).fetchone()
        if stop is not None and stop.is_set():
            return 0
        if on_start is not None:
            on_start(int(rows))
        with self._lock, self._db.transaction(), self._db.cursor() as cur:
            cur.execute(blocks.WRITER_KEEPS_BLOCKS["%s"])
            cur.execute(blocks.POSTGRES.lock)
            # Two loggers starting together: the second finds the first one's work done.
            if not force and blocks.get_meta(cur, blocks.POSTGRES, blocks.META_BLOCKS) == blocks.FORMAT:
                return 0
            cur.execute(blocks.POSTGRES.del_meta, (blocks.META_BLOCKS,))
            cur.execute(_CLEAR_BLOCKS)

            def store(c) -> None:
                if len(c):
                    cur.executemany(blocks.POSTGRES.insert, list(blocks.bulk_from_columns(
                        c.cameras, c.camera, c.runs, c.run, c.track, c.t, c.size, c.probs)))

            pending: list[Chunk] = []
            for batch in read_batches(self._db, Selection(blocks=False), "postgres"):
                whole, rest = split_whole_tracks(merge_chunks([*pending, batch]))
                store(whole)
                pending = [rest]
            if pending:
                store(pending[0])
            (rows,) = cur.execute(blocks.POSTGRES.count_rows).fetchone()
            (covered,) = cur.execute(blocks.POSTGRES.count_labels).fetchone()
            if rows != covered:
                log.warning("label blocks hold %d labels for %d rows: a writer that does not keep blocks (an older "
                            "logger?) changed the log; the report reads rows until `fer-pipeline reindex` runs again",
                            covered, rows)
                return int(covered)
            blocks.mark_covered(cur, blocks.POSTGRES)
        return int(rows)

