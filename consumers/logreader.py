"""Reading the emotion log in column batches for the analytics (``analytics.py``).

Rows come ordered by the logger's ``(camera_id, track_id, captured_at)`` index so that each
(camera, track) is contiguous: Arrow record batches through ADBC when ``adbc-driver-sqlite``
is installed (the SQLite engine fills the columns, no Python object per value), else the
DB-API (sqlite3, or psycopg for PostgreSQL through a server-side cursor). Filters are SQL
parameters only.

Reading dominates on large logs, and its cost grows with every value read (0.05–0.1 µs per
value through ADBC), so only what the report uses is selected: the face size comes as one
``min(w, h)`` column, the camera is left out when a query reads one camera. A SQLite log is
read in parts (one camera, a range of track ids: see ``plan_parts``) that threads read at
the same time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fer_pipeline.errors import ConfigError
from fer_pipeline.labels import EMOTIONS

K = len(EMOTIONS)
_PROBS = ", ".join(f"p_{e}" for e in EMOTIONS)


@dataclass(frozen=True)
class Part:
    """One camera's labels, or those with track ids in ``[lo, hi)``; parts are read independently."""

    camera: str
    lo: int | None = None
    hi: int | None = None


# The face's smaller side in one column; the SQL text is constant per dialect (values travel as
# parameters), keyed by the dialect's placeholder.
_COLS_SQLITE = f"run_id, track_id, captured_at, min(w, h) AS size, {_PROBS}"
_COLS_PG = f"run_id, track_id, captured_at, LEAST(w, h) AS size, {_PROBS}"
_SELECT_PART = {"?": f"SELECT {_COLS_SQLITE} FROM labels", "%s": f"SELECT {_COLS_PG} FROM labels"}
_SELECT_ALL = {"?": f"SELECT camera_id, {_COLS_SQLITE} FROM labels", "%s": f"SELECT camera_id, {_COLS_PG} FROM labels"}


def select_sql(options, placeholder: str = "?", part: Part | None = None) -> tuple[str, list]:
    """The label query for ``options`` (an ``analytics.ReportOptions``: cameras, tracks, run,
    since, until), restricted to ``part`` when given (its camera is then not selected);
    values travel as parameters only. ``placeholder`` ``%s`` means PostgreSQL."""
    where, params = [], []
    if part is not None:
        where.append(f"camera_id = {placeholder}")
        params.append(part.camera)
        if part.lo is not None:
            where.append(f"track_id >= {placeholder} AND track_id < {placeholder}")
            params += [int(part.lo), int(part.hi)]
    elif options.cameras:
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
    select = (_SELECT_PART if part is not None else _SELECT_ALL)[placeholder]
    order = " ORDER BY track_id, captured_at" if part is not None else " ORDER BY camera_id, track_id, captured_at"
    return select + (" WHERE " + " AND ".join(where) if where else "") + order, params


@dataclass
class Chunk:
    """Label columns of whole (camera, track) groups, ordered by camera, track, time.

    Cameras and runs are small integer codes into ``cameras`` / ``runs`` (dictionary
    encoding: millions of rows share a handful of names). ``size`` is the face's smaller
    side in pixels; ``probs`` holds one row per emotion (each contiguous, as numpy likes).
    """

    camera: np.ndarray
    cameras: list[str]
    run: np.ndarray
    runs: list[str]
    track: np.ndarray
    t: np.ndarray
    size: np.ndarray
    probs: np.ndarray  # (K, n) float32

    def __len__(self) -> int:
        return len(self.t)

    def part(self, a: int, b: int) -> Chunk:
        return Chunk(camera=self.camera[a:b], cameras=self.cameras, run=self.run[a:b], runs=self.runs,
                     track=self.track[a:b], t=self.t[a:b], size=self.size[a:b], probs=self.probs[:, a:b])


def _dict_encode(column) -> tuple[np.ndarray, list[str]]:
    import pyarrow.compute as pc

    first = column[0]
    if pc.all(pc.equal(column, first)).as_py():  # one name in the batch, the usual case: 4x cheaper than encoding
        return np.zeros(len(column), dtype=np.int64), [first.as_py()]
    enc = column.dictionary_encode()
    return enc.indices.to_numpy(zero_copy_only=False).astype(np.int64), enc.dictionary.to_pylist()


def _chunk_from_arrow(batch, camera: str | None) -> Chunk:
    cols = {name: batch.column(i) for i, name in enumerate(batch.schema.names)}
    n = batch.num_rows
    probs = np.empty((K, n), dtype=np.float32)
    for k, e in enumerate(EMOTIONS):
        probs[k] = cols[f"p_{e}"].to_numpy(zero_copy_only=False)
    if camera is None:
        cam, cameras = _dict_encode(cols["camera_id"])
    else:
        cam, cameras = np.zeros(n, dtype=np.int64), [camera]
    run, runs = _dict_encode(cols["run_id"])
    return Chunk(camera=cam, cameras=cameras, run=run, runs=runs,
                 track=cols["track_id"].to_numpy(zero_copy_only=False).astype(np.int64),
                 t=cols["captured_at"].to_numpy(zero_copy_only=False).astype(np.float64),
                 size=cols["size"].to_numpy(zero_copy_only=False), probs=probs)


def _codes(values) -> tuple[np.ndarray, list[str]]:
    names: dict[str, int] = {}
    codes = np.fromiter((names.setdefault(v, len(names)) for v in values), dtype=np.int64, count=len(values))
    return codes, list(names)


def _chunk_from_rows(rows: list[tuple], camera: str | None) -> Chunk:
    if camera is None:
        cam, run, track, t, size, *probs = zip(*rows)
        camera_codes, cameras = _codes(cam)
    else:
        run, track, t, size, *probs = zip(*rows)
        camera_codes, cameras = np.zeros(len(rows), dtype=np.int64), [camera]
    run_codes, runs = _codes(run)
    return Chunk(camera=camera_codes, cameras=cameras, run=run_codes, runs=runs,
                 track=np.asarray(track, dtype=np.int64), t=np.asarray(t, dtype=np.float64),
                 size=np.asarray(size), probs=np.asarray(probs, dtype=np.float32))


class SqliteLog:
    """A connection to a SQLite log for reading: ADBC (Arrow batches) when installed, else sqlite3."""

    def __init__(self, path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"no emotion log at {self.path}")
        try:
            import adbc_driver_sqlite.dbapi as adbc
        except ImportError:
            adbc = None
        if adbc is not None:
            self._conn = adbc.connect(str(self.path))
            self.arrow = True
            try:
                with self._conn.cursor() as cur:
                    # Wait for a writer's lock (the logger, a concurrent open) instead of failing at once.
                    cur.execute("PRAGMA busy_timeout = 10000")
                    cur.fetchall()
            except Exception:
                self._conn.close()
                raise
        else:
            import sqlite3

            self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10.0)
            self.arrow = False

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> SqliteLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def read(self, options, part: Part) -> Iterator[Chunk]:
        """The labels of ``part`` that match ``options``, in column batches."""
        sql, params = select_sql(options, part=part)
        if not self.arrow:
            yield from _rows_in_batches(self._conn, sql, params, part.camera, options.chunk_rows)
            return
        from adbc_driver_sqlite import StatementOptions

        with self._conn.cursor() as cur:
            # Batches of chunk_rows (64k by default): far fewer Python round trips than ADBC's 1,024.
            cur.adbc_statement.set_options(**{StatementOptions.BATCH_ROWS.value: str(options.chunk_rows)})
            cur.execute(sql, params)
            for batch in cur.fetch_record_batch():
                if batch.num_rows:
                    yield _chunk_from_arrow(batch, part.camera)

    def track_span(self, camera: str) -> tuple[int, int] | None:
        """(lowest, highest) track id of ``camera``: two index seeks."""
        q = "SELECT {}(track_id) FROM labels WHERE camera_id = ?"
        lo, hi = (self._one(q.format(f), (camera,)) for f in ("MIN", "MAX"))
        return None if lo is None else (int(lo), int(hi))

    def _one(self, sql: str, params: tuple):
        if not self.arrow:
            return self._conn.execute(sql, params).fetchone()[0]
        with self._conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchone()[0]


def _rows_in_batches(conn, sql: str, params: list, camera: str | None, rows_per_batch: int) -> Iterator[Chunk]:
    cur = conn.cursor()
    try:
        cur.execute(sql, params)
        while rows := cur.fetchmany(rows_per_batch):
            yield _chunk_from_rows(rows, camera)
    finally:
        cur.close()


def plan_parts(log: SqliteLog, options, cameras: list[str], pieces: int) -> list[Part]:
    """The parts to read, in report order (camera, then track): each camera whole, or cut into
    ``pieces`` equal ranges of track ids so that several threads share even one camera.
    Tracks never span parts: a track is one camera's one id (all its producer runs included)."""
    parts = []
    for camera in cameras:
        span = log.track_span(camera) if pieces > 1 and not options.tracks else None
        if span is None or span[1] - span[0] + 1 < pieces:
            parts.append(Part(camera))
            continue
        cuts = np.linspace(span[0], span[1] + 1, pieces + 1).round().astype(np.int64).tolist()
        parts += [Part(camera, a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]
    return parts


def read_batches(conn, options) -> Iterator[Chunk]:
    """Label batches from an open connection: sqlite3, or psycopg (PostgreSQL, read through a
    server-side cursor)."""
    if type(conn).__module__.startswith("psycopg"):
        sql, params = select_sql(options, "%s")
        # psycopg loads a whole result client-side unless the cursor is named (server-side),
        # and a server-side cursor lives in a transaction.
        with conn.transaction(), conn.cursor(name="fer_report") as cur:
            cur.itersize = options.chunk_rows
            cur.execute(sql, params)
            while rows := cur.fetchmany(options.chunk_rows):
                yield _chunk_from_rows(rows, None)
        return
    sql, params = select_sql(options)
    yield from _rows_in_batches(conn, sql, params, None, options.chunk_rows)


def camera_ids(path) -> list[str]:
    """The cameras in a SQLite log, by a loose index scan (one index seek per camera)."""
    import sqlite3

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    try:
        rows = conn.execute(
            # Qualified names: labels has a column "x" (the face box) that would capture a bare one.
            "WITH RECURSIVE cams(prev) AS (SELECT MIN(camera_id) FROM labels UNION ALL "
            "SELECT (SELECT MIN(labels.camera_id) FROM labels WHERE labels.camera_id > cams.prev) FROM cams "
            "WHERE cams.prev IS NOT NULL) SELECT prev FROM cams WHERE prev IS NOT NULL LIMIT 100000").fetchall()
    finally:
        conn.close()
    return [r[0] for r in rows]


def _recode(codes: np.ndarray, names: list[str], into: dict[str, int]) -> np.ndarray:
    table = np.array([into.setdefault(n, len(into)) for n in names], dtype=np.int64)
    return table[codes] if len(codes) else codes


def merge_chunks(chunks: list[Chunk]) -> Chunk:
    """One chunk from consecutive ones, their camera and run names coded into one dictionary."""
    if len(chunks) == 1:
        return chunks[0]
    cams: dict[str, int] = {}
    runs: dict[str, int] = {}
    camera = np.concatenate([_recode(c.camera, c.cameras, cams) for c in chunks])
    run = np.concatenate([_recode(c.run, c.runs, runs) for c in chunks])
    return Chunk(camera=camera, cameras=list(cams), run=run, runs=list(runs),
                 track=np.concatenate([c.track for c in chunks]), t=np.concatenate([c.t for c in chunks]),
                 size=np.concatenate([c.size for c in chunks]), probs=np.concatenate([c.probs for c in chunks], axis=1))


def continuing_rows(before: Chunk, chunk: Chunk) -> int:
    """How many leading rows of ``chunk`` belong to the (camera, track) of ``before``'s last row."""
    camera = before.cameras[before.camera[-1]]
    if camera not in chunk.cameras:
        return 0
    same = (chunk.camera == chunk.cameras.index(camera)) & (chunk.track == before.track[-1])
    return len(same) if same.all() else int(np.argmin(same))


def split_whole_tracks(chunk: Chunk) -> tuple[Chunk, Chunk]:
    """(rows before the last (camera, track) group, that group): the group may go on in the
    next batch. Rows are ordered by camera then track, so that group is the trailing block."""
    other = np.flatnonzero((chunk.camera != chunk.camera[-1]) | (chunk.track != chunk.track[-1]))
    i = int(other[-1]) + 1 if len(other) else 0
    return chunk.part(0, i), chunk.part(i, len(chunk))
