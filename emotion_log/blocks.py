"""The label-blocks table: the emotion log's labels again, packed per track for the report.

Reading 20M label rows costs seconds per million (every value goes through SQLite one by
one); the report needs only six columns of them. So each store (``sqlite.py`` for SQLite,
``postgres.py`` for PostgreSQL) keeps, next to the ``labels`` rows, a ``label_blocks`` table:
one row per block of labels of one (camera, run, track), in capture order, its columns
packed as little-endian arrays:

- ``t``: capture times, float64 (the rows' ``captured_at``, bit for bit);
- ``size``: the face's smaller side in pixels, int32 (``min(w, h)``);
- ``probs``: the probabilities as float32 (what the report computes in), laid out (K, n),
  one emotion after the other in ``EMOTIONS`` order.

``first_at``/``last_at`` are the block's first and last capture time, ``n`` its labels.

**Invariant.** When ``log_meta`` holds ``blocks = FORMAT``, every row of ``labels`` is in
exactly one block and every block label is a row. Every write keeps it in the transaction
that changes the rows: ``add`` packs only the rows that were new (redelivered crop ids are
left out), ``prune`` deletes the blocks wholly before the cutoff and rewrites those that
straddle it, ``erase`` deletes the blocks of the erased camera/track/run. A log written
before this table existed has no marker: the report reads its rows until ``backfill``
(the logger at start, or ``fer-pipeline reindex``) has built the blocks. Rows inserted or
deleted by a writer that does not keep blocks (an older logger during an upgrade, a script,
a DELETE by hand) fire triggers stored in the database that drop the marker, so the report
reads rows again until a new backfill (``WRITER_KEEPS_BLOCKS`` below).

**Compaction.** The logger stores a batch (up to 256 labels, a few per track when it keeps
up with live traffic) per transaction, so a track's labels arrive in many tiny blocks.
Blocks are merged in ``add``'s transaction, size-tiered:

- a block's tier is ``floor(log8(n))``; a group's open blocks are kept in tiers that do not
  grow from old to new, and ``FANOUT`` (8) trailing blocks of one tier are merged into one
  (of a higher tier); a new block above the blocks before it takes them in. Each merge
  lifts every label it rewrites at least one tier, so a label is rewritten at most 4 times
  by merges (tiers 0-3 below ``LARGE``) and a live track has at most 28 open blocks;
- a block of ``LARGE`` (4096) labels or more is sealed: never merged again;
- a group none of whose labels is newer than ``QUIET_S`` (30 s) before the newest label of
  its camera in a batch has ended (or paused): its open blocks are merged into one sealed
  block, one more rewrite (looked for once per 5 s of a camera's capture time, at most
  ``SEALS_PER_ADD`` groups per transaction; the rest the next time).

Replaying the arrival pattern of the report benchmark's synthetic day through this policy
(4 cameras x 3 faces, tracks of 900 labels on average; the logger's batches of 4, 32 or 256
labels): each label is written into a block 3.2-4.4 times in all (its first write
included), and the blocks number 1.07-1.13 per track: about 24k for the 20M-label day
(21,780 tracks). At 40 bytes per label that is 130-180 bytes written per label, next to the
~210 of its row and indexes. ``store.add`` costs 1.7x (batches of 256) to 4.5x (batches of 4)
the CPU of the rows alone. Without the seal a finished track keeps up to 28 blocks (about 11
on average), which triples the read time; merging "8 blocks below 4096 labels into one"
without tiers rewrites the whole track so far every 7 batches: 123x at 4 labels per batch,
47x at 32, 7.5x at 256.

SQL text here is constant per dialect (``SQLITE``, ``POSTGRES``); values go in as parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from fer_pipeline.emotion_log import schema
from fer_pipeline.labels import EMOTIONS

K = len(EMOTIONS)
FORMAT = "1"        # log_meta "blocks": the block layout above; another value is not read
FANOUT = 8          # blocks of one tier merged at once; tiers grow by this factor
LARGE = 4096        # blocks this big are sealed at once and never merged again
BULK = 32_768       # most labels per block when blocks are built in bulk (backfill, generator)
QUIET_S = 30.0      # a group this long (capture time) behind its camera's newest label is sealed
SEALS_PER_ADD = 16  # groups sealed per transaction at most

META_BLOCKS = "blocks"

_T, _SIZE, _PROB = np.dtype("<f8"), np.dtype("<i4"), np.dtype("<f4")


@dataclass
class Labels:
    """One group's (or block's) label columns in capture order."""

    t: np.ndarray      # float64
    size: np.ndarray   # int32
    probs: np.ndarray  # (K, n) float32

    def __len__(self) -> int:
        return len(self.t)

    def part(self, a: int, b: int) -> Labels:
        """Labels ``a`` to ``b`` (end excluded) as views of these columns."""
        return Labels(self.t[a:b], self.size[a:b], self.probs[:, a:b])


def pack(lab: Labels) -> tuple[float, float, int, bytes, bytes, bytes]:
    """(first_at, last_at, n, t, size, probs) of a block, its columns as stored."""
    return (float(lab.t[0]), float(lab.t[-1]), len(lab), lab.t.astype(_T).tobytes(), lab.size.astype(_SIZE).tobytes(),
            np.ascontiguousarray(lab.probs, dtype=_PROB).tobytes())


def unpack(n: int, t: bytes, size: bytes, probs: bytes) -> Labels:
    """A stored block's columns as arrays (read-only views of the bytes)."""
    return Labels(np.frombuffer(t, _T), np.frombuffer(size, _SIZE), np.frombuffer(probs, _PROB).reshape(K, n))


def merge(parts: Sequence[Labels]) -> Labels:
    """Blocks (each in capture order) as one, in capture order; equal times keep the parts' order."""
    t = np.concatenate([p.t for p in parts])
    size = np.concatenate([p.size for p in parts])
    probs = np.concatenate([p.probs for p in parts], axis=1)
    if len(t) > 1 and (t[1:] < t[:-1]).any():
        order = np.argsort(t, kind="stable")
        t, size, probs = t[order], size[order], probs[:, order]
    return Labels(t, size.astype(np.int32, copy=False), probs)


Key = tuple[str, str, int]  # camera, run, track


def group(entries: Iterable[tuple[str, str, int, float, int, Sequence[float]]]) -> dict[Key, Labels]:
    """New labels ``(camera, run, track, captured_at, size, probabilities)`` as one block per
    (camera, run, track), each in capture order (equal times: in the order given)."""
    entries = list(entries)
    if not entries:
        return {}
    cameras, runs, tracks, t_in, size_in, probs_in = zip(*entries)
    t = np.array(t_in, dtype=np.float64)
    size = np.array(size_in, dtype=np.int32)
    probs = np.array(probs_in, dtype=np.float32).T  # (K, n)
    at: dict[Key, list[int]] = {}
    for i, key in enumerate(zip(cameras, runs, tracks)):
        at.setdefault(key, []).append(i)
    out = {}
    for (camera, run, track), idx in at.items():
        if len(idx) == len(t):
            lab = Labels(t, size, np.ascontiguousarray(probs))
        else:
            lab = Labels(t[idx], size[idx], probs[:, idx])
        if len(idx) > 1 and (lab.t[1:] < lab.t[:-1]).any():
            order = np.argsort(lab.t, kind="stable")
            lab = Labels(lab.t[order], lab.size[order], lab.probs[:, order])
        out[(camera, run, int(track))] = lab
    return out


_SHIFT = FANOUT.bit_length() - 1  # FANOUT is a power of two


def tier(n: int) -> int:
    """floor(log_FANOUT(n)): 1-7 labels tier 0, 8-63 tier 1, ..."""
    return (int(n).bit_length() - 1) // _SHIFT


def plan_merge(sizes: Sequence[int]) -> int:
    """How many trailing blocks of a group's open blocks (``sizes``, oldest first, the last
    one new) to merge into one: 0 for none, else at least 2.

    The tiers of open blocks do not grow from old to new: a new block of a higher tier than
    the blocks just before it takes them in, and FANOUT trailing blocks of one tier merge.
    """
    last, k = tier(sizes[-1]), 1
    while k < len(sizes) and tier(sizes[-k - 1]) < last:
        k += 1
    if k > 1:
        return k
    while k < len(sizes) and tier(sizes[-k - 1]) == last:
        k += 1
    return k if k >= FANOUT else 0


@dataclass(frozen=True)
class Dialect:
    """The block SQL of one database (placeholders ``?`` or ``%s``)."""

    schema: str
    insert: str
    open_blocks: str
    load_from: str
    delete_from: str
    seal: str
    cold: str
    prune_whole: str
    prune_whole_range: str
    straddling_range: str
    straddling: str
    rewrite: str
    get_meta: str
    set_meta: str
    del_meta: str
    count_rows: str
    count_labels: str
    lock: str | None  # PostgreSQL: serialises block maintenance between concurrent writers
    has_meta: str
    select_part: str
    select_all: str


# Small columns first: a scan of the metadata never reads the BLOBs' overflow pages.
_TABLE: tuple[schema.Column, ...] = (
    ("id", "serial", False), ("camera_id", "text", False), ("run_id", "text", False), ("track_id", "bigint", False),
    ("first_at", "real", False), ("last_at", "real", False), ("n", "int", False), ("sealed", "int", False),
    ("t", "blob", False), ("size", "blob", False), ("probs", "blob", False),
)
_COLUMNS = ", ".join(name for name, _, _ in _TABLE[1:])  # all but the id
_INDEXES = """CREATE INDEX IF NOT EXISTS label_blocks_by_track ON label_blocks (camera_id, track_id, first_at);
CREATE INDEX IF NOT EXISTS label_blocks_open ON label_blocks (camera_id, run_id, track_id, last_at) WHERE sealed = 0;
CREATE TABLE IF NOT EXISTS log_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_SQLITE_TRIGGERS = """CREATE TRIGGER IF NOT EXISTS labels_inserted_without_blocks AFTER INSERT ON labels
WHEN NOT EXISTS (SELECT 1 FROM log_meta WHERE key = 'writer_keeps_blocks')
BEGIN DELETE FROM log_meta WHERE key = 'blocks'; END;
CREATE TRIGGER IF NOT EXISTS labels_deleted_without_blocks AFTER DELETE ON labels
WHEN NOT EXISTS (SELECT 1 FROM log_meta WHERE key = 'writer_keeps_blocks')
BEGIN DELETE FROM log_meta WHERE key = 'blocks'; END;
"""
_SQLITE_SCHEMA = schema.table_sql("label_blocks", _TABLE, "sqlite") + _INDEXES + _SQLITE_TRIGGERS
_PG_SCHEMA = schema.table_sql("label_blocks", _TABLE, "postgres") + _INDEXES
# The writers that do not keep blocks (an older version of this program, a script, psql) are
# caught by triggers in the database itself, which they fire too: a row inserted or deleted
# by anyone but a writer that says it keeps blocks drops the marker, so the report reads rows
# (and an erase elsewhere cannot leave a person in the report) until a reindex. SQLite has one
# writer at a time, so a meta row that exists only inside a keeping writer's transaction says
# so; PostgreSQL writers set a transaction-local setting.
WRITER_KEEPS_BLOCKS = {"?": "INSERT OR REPLACE INTO log_meta (key, value) VALUES ('writer_keeps_blocks', '1')",
                       "%s": "SET LOCAL fer.writer_keeps_blocks = 'on'"}
WRITER_DONE = "DELETE FROM log_meta WHERE key = 'writer_keeps_blocks'"
PG_TRIGGERS = """
CREATE OR REPLACE FUNCTION fer_labels_changed_without_blocks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('fer.writer_keeps_blocks', true) IS DISTINCT FROM 'on' THEN
    DELETE FROM log_meta WHERE key = 'blocks';
  END IF;
  RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER labels_changed_without_blocks AFTER INSERT OR DELETE ON labels
FOR EACH STATEMENT EXECUTE FUNCTION fer_labels_changed_without_blocks();
"""
_GROUP = "camera_id = ? AND run_id = ? AND track_id = ? AND sealed = 0"
_RANGE = "camera_id = ? AND track_id >= ? AND track_id < ?"
_READ_COLUMNS = "run_id, track_id, n, first_at, last_at, t, size, probs"

_COMMON = {
    "insert": f"INSERT INTO label_blocks ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "open_blocks": f"SELECT id, n FROM label_blocks WHERE {_GROUP} ORDER BY id",
    "load_from": f"SELECT n, t, size, probs FROM label_blocks WHERE {_GROUP} AND id >= ? ORDER BY id",
    "delete_from": f"DELETE FROM label_blocks WHERE {_GROUP} AND id >= ?",
    "seal": "UPDATE label_blocks SET sealed = 1 WHERE id = ?",
    "cold": "SELECT run_id, track_id FROM label_blocks WHERE camera_id = ? AND sealed = 0 GROUP BY run_id, track_id "
            "HAVING MAX(last_at) < ? ORDER BY run_id, track_id LIMIT ?",
    "prune_whole": "DELETE FROM label_blocks WHERE last_at < ?",
    # The same for one camera's range of track ids (a prune in small transactions).
    "prune_whole_range": f"DELETE FROM label_blocks WHERE {_RANGE} AND last_at < ?",
    "straddling_range": f"SELECT id, n, t, size, probs FROM label_blocks WHERE {_RANGE} AND first_at < ? "
                        "AND last_at >= ? ORDER BY id",
    "straddling": "SELECT id, n, t, size, probs FROM label_blocks WHERE first_at < ? AND last_at >= ? ORDER BY id",
    "rewrite": "UPDATE label_blocks SET first_at = ?, last_at = ?, n = ?, t = ?, size = ?, probs = ? WHERE id = ?",
    "get_meta": "SELECT value FROM log_meta WHERE key = ?",
    "del_meta": "DELETE FROM log_meta WHERE key = ?",
    "count_rows": "SELECT COUNT(*) FROM labels",
    "count_labels": "SELECT COALESCE(SUM(n), 0) FROM label_blocks",
    # Ordered as the index (camera, track, first_at, then id): blocks of one track in time order.
    "select_part": f"SELECT {_READ_COLUMNS} FROM label_blocks",
    "select_all": f"SELECT camera_id, {_READ_COLUMNS} FROM label_blocks",
}

SQLITE = Dialect(
    schema=_SQLITE_SCHEMA, lock=None, set_meta="INSERT OR REPLACE INTO log_meta (key, value) VALUES (?, ?)",
    has_meta="SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'log_meta'",
    **_COMMON)
POSTGRES = Dialect(
    # A transaction-scoped advisory lock keyed by this schema's table: writers take turns at
    # their block work, while readers and (auto)vacuum go on unhindered.
    schema=_PG_SCHEMA, lock="SELECT pg_advisory_xact_lock('label_blocks'::regclass::oid::bigint)",
    set_meta="INSERT INTO log_meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
    has_meta="SELECT to_regclass('log_meta') IS NOT NULL",
    **{k: v.replace("?", "%s") for k, v in _COMMON.items()})
BLOCK_ORDER_PART = " ORDER BY track_id, first_at, id"
BLOCK_ORDER_ALL = " ORDER BY camera_id, track_id, first_at, id"


# -- keeping the table in step with the rows (inside the caller's transaction) -------------
# On PostgreSQL the caller holds ``sql.lock`` already: the store takes it first in every
# writing transaction, before the rows' locks (one order for all writers, no deadlock).

def add(cur, sql: Dialect, entries: Iterable[tuple[str, str, int, float, int, Sequence[float]]],
        seal_checks: dict[str, float] | None = None) -> None:
    """Blocks for newly stored labels ``(camera, run, track, captured_at, size, probabilities)``,
    then the merges and seals they call for. ``cur``: a cursor in the rows' transaction.

    ``seal_checks`` (the caller's, kept between calls) spaces the look for ended groups to
    once per ``QUIET_S / 6`` of a camera's capture time; without it, every call looks.
    """
    groups = group(entries)
    if not groups:
        return
    newest: dict[str, float] = {}
    for key in sorted(groups):
        lab = groups[key]
        _append(cur, sql, key, lab)
        newest[key[0]] = max(newest.get(key[0], -np.inf), float(lab.t[-1]))
    for camera in sorted(newest):
        if seal_checks is not None:
            if newest[camera] < seal_checks.get(camera, -np.inf):
                continue
            seal_checks[camera] = newest[camera] + QUIET_S / 6
        for run, track in cur.execute(sql.cold, (camera, newest[camera] - QUIET_S, SEALS_PER_ADD)).fetchall():
            seal(cur, sql, (camera, run, int(track)))


def _insert(cur, sql: Dialect, key: Key, lab: Labels, sealed: bool) -> None:
    cur.execute(sql.insert, (*key, *_with_sealed(pack(lab), sealed)))


def _with_sealed(packed: tuple, sealed: bool) -> tuple:
    first, last, n, t, size, probs = packed
    return first, last, n, int(sealed), t, size, probs


def _append(cur, sql: Dialect, key: Key, lab: Labels) -> None:
    if len(lab) >= LARGE:
        _insert(cur, sql, key, lab, True)
        return
    rows = cur.execute(sql.open_blocks, key).fetchall()
    ids = [r[0] for r in rows]
    sizes = [int(r[1]) for r in rows] + [len(lab)]
    k = plan_merge(sizes)
    while k > 1:  # the last k blocks: k - 1 stored ones and the new one (``lab``)
        first = ids[len(ids) - (k - 1)]
        old = [unpack(*r) for r in cur.execute(sql.load_from, (*key, first)).fetchall()]
        cur.execute(sql.delete_from, (*key, first))
        lab = merge([*old, lab])
        del ids[len(ids) - (k - 1):]
        sizes = sizes[:len(sizes) - k] + [len(lab)]
        if len(lab) >= LARGE:
            break
        k = plan_merge(sizes)
    _insert(cur, sql, key, lab, len(lab) >= LARGE)


def seal(cur, sql: Dialect, key: Key) -> None:
    """Merge a group's open blocks into one sealed block."""
    rows = cur.execute(sql.open_blocks, key).fetchall()
    if len(rows) == 1:
        cur.execute(sql.seal, (rows[0][0],))
    elif rows:
        old = [unpack(*r) for r in cur.execute(sql.load_from, (*key, rows[0][0])).fetchall()]
        cur.execute(sql.delete_from, (*key, rows[0][0]))
        _insert(cur, sql, key, merge(old), True)


def prune(cur, sql: Dialect, before: float, tracks: tuple[str, int, int] | None = None) -> None:
    """Retention: drop the labels captured before ``before`` from the blocks (of one camera's
    track ids ``[lo, hi)`` when ``tracks`` is ``(camera, lo, hi)``)."""
    if tracks is None:
        cur.execute(sql.prune_whole, (before,))
        straddling = cur.execute(sql.straddling, (before, before)).fetchall()
    else:
        cur.execute(sql.prune_whole_range, (*tracks, before))
        straddling = cur.execute(sql.straddling_range, (*tracks, before, before)).fetchall()
    for block_id, n, t, size, probs in straddling:
        lab = unpack(n, bytes(t), bytes(size), bytes(probs))
        kept = lab.part(int(np.searchsorted(lab.t, before, side="left")), len(lab))
        cur.execute(sql.rewrite, (*pack(kept), block_id))


def erase(cur, sql: Dialect, where: str, params: list) -> None:
    """Drop the blocks selected by ``store.erase_filter``'s text (camera, track, run columns)."""
    cur.execute(f"DELETE FROM label_blocks WHERE {where}", params)


def get_meta(cur, sql: Dialect, key: str) -> str | None:
    """The ``log_meta`` value stored under ``key``, or None if there is none."""
    row = cur.execute(sql.get_meta, (key,)).fetchone()
    return None if row is None else row[0]


def mark_covered(cur, sql: Dialect) -> None:
    """Set the marker: every row is in one block."""
    cur.execute(sql.set_meta, (META_BLOCKS, FORMAT))


def covered(cur, sql: Dialect) -> bool:
    """Whether the report may read the blocks: the marker of this format is set (a writer
    that does not keep blocks has not inserted or deleted rows since: its trigger drops it)."""
    return bool(cur.execute(sql.has_meta).fetchone()[0]) and get_meta(cur, sql, META_BLOCKS) == FORMAT


def bulk(camera: str, run: str, track: int, lab: Labels) -> Iterator[tuple]:
    """Insert parameters of sealed blocks of at most BULK labels for one group in capture order."""
    for a in range(0, len(lab), BULK):
        yield (camera, run, int(track), *_with_sealed(pack(lab.part(a, min(len(lab), a + BULK))), True))


def bulk_from_columns(cameras: Sequence[str], camera: np.ndarray, runs: Sequence[str], run: np.ndarray,
                      track: np.ndarray, t: np.ndarray, size: np.ndarray, probs: np.ndarray) -> Iterator[tuple]:
    """Sealed blocks' insert parameters from label columns of whole groups (codes into
    ``cameras``/``runs``), ordered by time within each (camera, track); runs may interleave."""
    n = len(t)
    if not n:
        return
    order = np.lexsort((run, track, camera))  # stable: time order kept within each group
    camera, run, track = camera[order], run[order], track[order]
    t, size, probs = t[order], size[order], probs[:, order]
    new = np.ones(n, dtype=bool)
    new[1:] = (camera[1:] != camera[:-1]) | (run[1:] != run[:-1]) | (track[1:] != track[:-1])
    starts = np.flatnonzero(new).tolist() + [n]
    for a, b in zip(starts[:-1], starts[1:]):
        lab = merge([Labels(t[a:b], size[a:b], probs[:, a:b])])
        yield from bulk(cameras[camera[a]], runs[run[a]], int(track[a]), lab)
