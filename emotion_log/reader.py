"""Reading the emotion log in column batches for the analytics (``fer_pipeline.analytics``).

A log whose label blocks cover every row (``blocks.py``) is read from them: a few thousand
BLOBs per day of labels instead of one value at a time, decoded with numpy into the same
batches the rows would give (same labels, same order, same batch boundaries). Otherwise
(a log written before the blocks, until its backfill; or ``Selection.blocks`` False)
the rows are read, as follows.

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

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import numpy as np

from fer_pipeline.emotion_log import blocks, schema
from fer_pipeline.emotion_log.schema import Dialect
from fer_pipeline.emotion_log.selection import Selection
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


def _filters(options: Selection, placeholder: str, part: Part | None, since_column: str, until_column: str
             ) -> tuple[list[str], list[str | int | float]]:
    where: list[str] = []
    params: list[str | int | float] = []
    if part is not None:
        where.append(f"camera_id = {placeholder}")
        params.append(part.camera)
        if part.lo is not None:
            assert part.hi is not None, "a part's track range has both ends"
            where.append(f"track_id >= {placeholder} AND track_id < {placeholder}")
            params += [int(part.lo), int(part.hi)]
    elif options.cameras:
        where.append(f"camera_id IN ({', '.join([placeholder] * len(options.cameras))})")
        params += list(options.cameras)
    if options.tracks:
        where.append(f"track_id IN ({', '.join([placeholder] * len(options.tracks))})")
        params += [int(t) for t in options.tracks]
    if options.runs:
        where.append(f"run_id IN ({', '.join([placeholder] * len(options.runs))})")
        params += list(options.runs)
    if options.since is not None:
        where.append(f"{since_column} >= {placeholder}")
        params.append(float(options.since))
    if options.until is not None:
        where.append(f"{until_column} < {placeholder}")
        params.append(float(options.until))
    return where, params


def select_sql(options: Selection, placeholder: str = "?", part: Part | None = None) -> tuple[str, list]:
    """The label query for ``options`` (a ``Selection``: cameras, tracks, run,
    since, until), restricted to ``part`` when given (its camera is then not selected);
    values travel as parameters only. ``placeholder`` ``%s`` means PostgreSQL."""
    where, params = _filters(options, placeholder, part, "captured_at", "captured_at")
    select = (_SELECT_PART if part is not None else _SELECT_ALL)[placeholder]
    order = " ORDER BY track_id, captured_at" if part is not None else " ORDER BY camera_id, track_id, captured_at"
    return select + (" WHERE " + " AND ".join(where) if where else "") + order, params


def select_blocks_sql(options: Selection, placeholder: str = "?", part: Part | None = None) -> tuple[str, list]:
    """The label-block query for the same selection: blocks with a label in [since, until)
    (the labels outside are cut off when decoding), ordered by (camera,) track, first time."""
    where, params = _filters(options, placeholder, part, "last_at", "first_at")
    sql = blocks.SQLITE if placeholder == "?" else blocks.POSTGRES
    select = sql.select_part if part is not None else sql.select_all
    order = blocks.BLOCK_ORDER_PART if part is not None else blocks.BLOCK_ORDER_ALL
    return select + (" WHERE " + " AND ".join(where) if where else "") + order, params


def run_times(query, options: Selection, placeholder: str, use_blocks: bool) -> dict[str, float]:
    """Each run id with labels in the selection (its ``runs`` left out: this is what resolves
    them) and the capture time of its newest such label; ``query(sql, params)`` returns the rows.

    From the label blocks, one GROUP BY over their small columns (no BLOB is read), exact:
    only the blocks that straddle ``until`` have their times decoded, to find their last label
    before it. From the rows, one GROUP BY over them (a scan: that path reads every row anyway).
    """
    from dataclasses import replace

    options = replace(options, runs=())
    if not use_blocks:
        where, params = _filters(options, placeholder, None, "captured_at", "captured_at")
        sql = "SELECT run_id, MAX(captured_at) FROM labels" + (" WHERE " + " AND ".join(where) if where else "")
        return {run: float(t) for run, t in query(sql + " GROUP BY run_id", params)}
    where, params = _filters(options, placeholder, None, "last_at", "first_at")
    if options.until is None:
        sql = "SELECT run_id, MAX(last_at) FROM label_blocks" + (" WHERE " + " AND ".join(where) if where else "")
        return {run: float(t) for run, t in query(sql + " GROUP BY run_id", params)}
    # `until` is among the filters, so `where` is never empty here.
    whole = query(f"SELECT run_id, MAX(last_at) FROM label_blocks WHERE {' AND '.join(where)} "
                  f"AND last_at < {placeholder} GROUP BY run_id", [*params, options.until])
    out = {run: float(t) for run, t in whole}
    for run, t in query(f"SELECT run_id, t FROM label_blocks WHERE {' AND '.join(where)} AND last_at >= {placeholder}",
                        [*params, options.until]):
        bt = np.frombuffer(t, "<f8")
        i = int(np.searchsorted(bt, options.until, side="left"))
        if i and (options.since is None or bt[i - 1] >= options.since):
            out[run] = max(out.get(run, -np.inf), float(bt[i - 1]))
    return out


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
        """Rows ``a`` to ``b`` (end excluded) as a chunk of views sharing the name lists."""
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


class _BlockDecoder:
    """Label blocks, ordered by (camera,) track and first time, into the batches a read of the
    rows would give: ``chunk_rows`` labels each (the last one shorter), ordered by (camera,)
    track then capture time.

    Blocks are decoded a few batches' worth at a time, whole tracks only (a track's blocks
    may overlap in time: two workers, a redelivery): one vectorised check finds the tracks
    whose labels are not in time order, and only those are sorted (stably: equal times keep
    the blocks' order). A block that reaches outside [since, until) is cut to it (its labels
    are in time order, so that is a slice). The one thing that may differ from the rows:
    labels of one track id with the very same capture time (two faces of one frame given one
    track id, or two producer runs' labels at the same instant) may come in another order,
    an order the rows' query leaves undefined too.
    """

    def __init__(self, options: Selection, camera: str | None) -> None:
        self.size = options.chunk_rows
        self.group = max(4 * options.chunk_rows, 1 << 16)  # labels decoded at a time, at least
        self.since, self.until = options.since, options.until
        self.camera = camera
        self.cams: dict[str, int] = {}
        self.runs: dict[str, int] = {}
        self.rest: dict[str, np.ndarray] | None = None  # decoded labels not yet in a batch

    def chunks(self, fetch) -> Iterator[Chunk]:
        """Batches from ``fetch()``, which returns the next block rows ([] at the end)."""
        held: list[tuple] = []
        held_n = 0
        one_camera = self.camera is not None  # rows: ([camera_id,] run_id, track_id, n, ...)
        while rows := fetch():
            for row in rows:
                # Cut only between tracks: a track's blocks are sorted together.
                if held_n >= self.group and (row[-7] != held[-1][-7] or not one_camera and row[0] != held[-1][0]):
                    yield from self._emit(self._decode(held), final=False)
                    held, held_n = [], 0
                held.append(row)
                held_n += row[-6]
        yield from self._emit(self._decode(held), final=True)

    def _decode(self, held: list[tuple]) -> dict[str, np.ndarray]:
        rest = self.rest
        r = 0 if rest is None else len(rest["t"])
        cap = r + sum(row[-6] for row in held)
        out = {"t": np.empty(cap), "size": np.empty(cap, dtype=np.int32), "probs": np.empty((K, cap), np.float32),
               "track": np.empty(cap, dtype=np.int64), "run": np.empty(cap, dtype=np.int64),
               "camera": np.zeros(cap, dtype=np.int64)}
        if rest is not None:
            for name, values in rest.items():
                out[name][..., :r] = values
        since, until = self.since, self.until
        counts, tracks, runs, cams = [], [], [], []
        at = r
        for row in held:
            run, track, n, first_at, last_at, t, size, probs = row[-8:]
            bt = np.frombuffer(t, "<f8")
            a, b = 0, n
            if since is not None and first_at < since:
                a = int(np.searchsorted(bt, since, side="left"))
            if until is not None and last_at >= until:
                b = int(np.searchsorted(bt, until, side="left"))
            m = b - a
            if m <= 0:
                continue
            out["t"][at:at + m] = bt[a:b]
            out["size"][at:at + m] = np.frombuffer(size, "<i4")[a:b]
            out["probs"][:, at:at + m] = np.frombuffer(probs, "<f4").reshape(K, n)[:, a:b]
            at += m
            counts.append(m)
            tracks.append(track)
            runs.append(self.runs.setdefault(run, len(self.runs)))
            if self.camera is None:
                cams.append(self.cams.setdefault(row[0], len(self.cams)))
        out = {name: values[..., :at] for name, values in out.items()}
        out["track"][r:] = np.repeat(np.asarray(tracks, dtype=np.int64), counts)
        out["run"][r:] = np.repeat(np.asarray(runs, dtype=np.int64), counts)
        if self.camera is None:
            out["camera"][r:] = np.repeat(np.asarray(cams, dtype=np.int64), counts)
        _sort_tracks(out, r)
        return out

    def _emit(self, cols: dict[str, np.ndarray], final: bool) -> Iterator[Chunk]:
        n, a = len(cols["t"]), 0
        cameras = [self.camera] if self.camera is not None else list(self.cams)
        runs = list(self.runs)
        while n - a >= self.size or (final and a < n):
            b = min(n, a + self.size)
            yield Chunk(camera=cols["camera"][a:b], cameras=cameras, run=cols["run"][a:b], runs=runs,
                        track=cols["track"][a:b], t=cols["t"][a:b], size=cols["size"][a:b],
                        probs=cols["probs"][:, a:b])
            a = b
        self.rest = {name: values[..., a:] for name, values in cols.items()} if a < n else None


def _sort_tracks(cols: dict[str, np.ndarray], start: int) -> None:
    """Put the labels from ``start`` on in time order within each (camera, track), in place,
    sorting only the tracks that are not (stably: equal times keep their order)."""
    t, track, camera = cols["t"][start:], cols["track"][start:], cols["camera"][start:]
    same = (track[1:] == track[:-1]) & (camera[1:] == camera[:-1])
    bad = np.flatnonzero(same & (t[1:] < t[:-1]))
    if not len(bad):
        return
    bounds = np.concatenate(([0], np.flatnonzero(~same) + 1, [len(t)]))
    for g in np.unique(np.searchsorted(bounds, bad, side="right") - 1).tolist():
        a, b = start + int(bounds[g]), start + int(bounds[g + 1])
        order = np.argsort(cols["t"][a:b], kind="stable") + a
        for name in ("t", "size", "run"):
            cols[name][a:b] = cols[name][order]
        cols["probs"][:, a:b] = cols["probs"][:, order]


class SqliteLog:
    """A connection to a SQLite log for reading: its label blocks when they cover the log,
    else the rows, through ADBC (Arrow batches) when installed, else sqlite3.

    ``has_blocks``: whether the blocks cover the log, when the caller has checked already
    (the report checks once, then opens one log per thread). Without it, opening checks.

    One SQLite library per file and process: ADBC bundles its own SQLite, and two libraries
    with the same file open release each other's POSIX locks (sqlite.org/howtocorrupt.html,
    2.2.1), so a log reading rows through ADBC closes its sqlite3 connection first, and the
    report's threads, told ``has_blocks``, never open one.
    """

    def __init__(self, path, *, has_blocks: bool | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"no emotion log at {self.path}")
        self._db: sqlite3.Connection | None = None
        self._adbc: Any = None  # opened at the first read of rows; False: not installed
        if has_blocks is None:
            import sqlite3

            try:
                has_blocks = blocks.covered(self._sqlite(), blocks.SQLITE)
            except sqlite3.DatabaseError as e:
                self.close()
                raise ConfigError(f"cannot read the emotion log {self.path}: {e}") from e
        self.blocks = has_blocks

    def _sqlite(self):
        if self._db is None:
            import sqlite3

            self._db = sqlite3.connect(_read_only_uri(self.path), uri=True, timeout=10.0)
        return self._db

    def close(self) -> None:
        """Close the ADBC and sqlite3 connections that are open."""
        if self._adbc:
            self._adbc.close()
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> SqliteLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _arrow(self):
        """The ADBC connection for reading rows, or None when ADBC is not installed."""
        if self._adbc is None:
            try:
                import adbc_driver_sqlite.dbapi as adbc
            except ImportError:
                self._adbc = False
                return None
            if self._db is not None:  # never both libraries on the file at once (class docstring)
                self._db.close()
                self._db = None
            conn = adbc.connect(str(self.path))
            try:
                with conn.cursor() as cur:
                    # Wait for a writer's lock (the logger, a concurrent open) instead of failing at once.
                    cur.execute("PRAGMA busy_timeout = 10000")
                    cur.fetchall()
            except Exception:
                conn.close()
                raise
            self._adbc = conn
        return self._adbc or None

    def read(self, options: Selection, part: Part) -> Iterator[Chunk]:
        """The labels of ``part`` that match ``options``, in column batches."""
        if options.blocks and self.blocks:
            sql, params = select_blocks_sql(options, part=part)
            cur = self._sqlite().execute(sql, params)
            try:
                yield from _BlockDecoder(options, part.camera).chunks(lambda: cur.fetchmany(256))
            finally:
                cur.close()
            return
        sql, params = select_sql(options, part=part)
        conn = self._arrow()
        if conn is None:
            yield from _rows_in_batches(self._sqlite(), sql, params, part.camera, options.chunk_rows)
            return
        from adbc_driver_sqlite import StatementOptions

        with conn.cursor() as cur:
            # Batches of chunk_rows (64k by default): far fewer Python round trips than ADBC's 1,024.
            cur.adbc_statement.set_options(**{StatementOptions.BATCH_ROWS.value: str(options.chunk_rows)})
            cur.execute(sql, params)
            for batch in cur.fetch_record_batch():
                if batch.num_rows:
                    yield _chunk_from_arrow(batch, part.camera)

    def run_times(self, options: Selection) -> dict[str, float]:
        """Each run id in the selection and its newest label's time (``run_times`` above)."""
        db = self._sqlite() if not self._adbc else None
        if db is None:  # the rows are being read through ADBC: never both libraries (class docstring)
            def query(sql, params):
                with self._adbc.cursor() as cur:
                    cur.execute(sql, params)
                    return cur.fetchall()
        else:
            def query(sql, params):
                return db.execute(sql, params).fetchall()
        return run_times(query, options, "?", options.blocks and self.blocks)

    def track_span(self, camera: str) -> tuple[int, int] | None:
        """(lowest, highest) track id of ``camera``: two index seeks."""
        q = "SELECT {}(track_id) FROM labels WHERE camera_id = ?"
        span = []
        for f in ("MIN", "MAX"):
            if self._adbc:
                with self._adbc.cursor() as cur:
                    cur.execute(q.format(f), (camera,))
                    span.append(cur.fetchone()[0])
            else:
                span.append(self._sqlite().execute(q.format(f), (camera,)).fetchone()[0])
        lo, hi = span
        return None if lo is None else (int(lo), int(hi))


def read_rows(conn, options: Selection, part: Part) -> Iterator[Chunk]:
    """The rows of ``part`` through an open sqlite3 connection, in its current transaction
    (the store's backfill: its blocks are rebuilt from exactly what it reads)."""
    sql, params = select_sql(options, part=part)
    yield from _rows_in_batches(conn, sql, params, part.camera, options.chunk_rows)


def _rows_in_batches(conn, sql: str, params: list, camera: str | None, rows_per_batch: int) -> Iterator[Chunk]:
    cur = conn.cursor()
    try:
        cur.execute(sql, params)
        while rows := cur.fetchmany(rows_per_batch):
            yield _chunk_from_rows(rows, camera)
    finally:
        cur.close()


def plan_parts(log: SqliteLog, options: Selection, cameras: list[str], pieces: int) -> list[Part]:
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


def _read_only_uri(path: Path | str) -> str:
    """A SQLite URI opening ``path`` read-only. The path is percent-encoded: a raw ``#`` or ``?``
    would end it early, drop ``mode=ro`` and create a stray file at the cut."""
    return f"file:{quote(str(Path(path).resolve()))}?mode=ro"


class LogSource(Protocol):
    """An open emotion log that gives the selected labels in column batches, ordered by
    camera and track (the analytics read any such source; a SQLite path is also read in
    parallel parts, see ``analytics.runs``)."""

    def batches(self, selection: Selection) -> Iterator[Chunk]:
        """The selected labels, batch by batch (about ``selection.chunk_rows`` each)."""
        ...

    def run_times(self, selection: Selection) -> dict[str, float]:
        """Each run id in the selection (its ``runs`` aside) and its newest label's capture time."""
        ...


class ConnectionLog:
    """A ``LogSource`` over an open connection the caller owns: sqlite3, or psycopg for PostgreSQL."""

    def __init__(self, conn: Any, dialect: Dialect) -> None:
        self.conn = conn
        self.dialect: Dialect = dialect

    def batches(self, selection: Selection) -> Iterator[Chunk]:
        """The selected labels from the label blocks when they cover the log, else from the rows."""
        return read_batches(self.conn, selection, self.dialect)

    def run_times(self, selection: Selection) -> dict[str, float]:
        """Each run id in the selection (its ``runs`` aside) and its newest label's capture time."""
        if self.dialect == "postgres":
            use_blocks = selection.blocks and blocks.covered(self.conn, blocks.POSTGRES)
            with self.conn.transaction():
                return run_times(lambda sql, params: self.conn.execute(sql, params).fetchall(), selection, "%s",
                                 use_blocks)
        use_blocks = selection.blocks and blocks.covered(self.conn, blocks.SQLITE)
        return run_times(lambda sql, params: self.conn.execute(sql, params).fetchall(), selection, "?", use_blocks)


def read_batches(conn, options: Selection, dialect: Dialect) -> Iterator[Chunk]:
    """Label batches from an open connection: sqlite3, or psycopg (``dialect`` "postgres",
    read through a server-side cursor); from the label blocks when they cover the log."""
    if dialect == "postgres":
        use_blocks = options.blocks and blocks.covered(conn, blocks.POSTGRES)
        sql, params = (select_blocks_sql if use_blocks else select_sql)(options, "%s")
        # psycopg loads a whole result client-side unless the cursor is named (server-side),
        # and a server-side cursor lives in a transaction.
        with conn.transaction(), conn.cursor(name="fer_report") as cur:
            if use_blocks:
                cur.itersize = 256
                cur.execute(sql, params)
                yield from _BlockDecoder(options, None).chunks(lambda: cur.fetchmany(256))
                return
            cur.itersize = options.chunk_rows
            cur.execute(sql, params)
            while rows := cur.fetchmany(options.chunk_rows):
                yield _chunk_from_rows(rows, None)
        return
    if options.blocks and blocks.covered(conn, blocks.SQLITE):
        sql, params = select_blocks_sql(options)
        cur = conn.execute(sql, params)
        try:
            yield from _BlockDecoder(options, None).chunks(lambda: cur.fetchmany(256))
        finally:
            cur.close()
        return
    sql, params = select_sql(options)
    yield from _rows_in_batches(conn, sql, params, None, options.chunk_rows)


# One row per label for a per-label export: what a person reads (frame, emotion as labelled,
# confidence) and what the report's smoothing needs (size, probabilities), ordered so that each
# (camera, track, run) is contiguous and in time order: the report's smoothing groups.
_EXPORT_COLUMNS = ("camera_id, run_id, track_id, frame_index, captured_at, emotion, confidence, {size} AS size, "
                   "{position} AS position_s, " + _PROBS)
# The export's SELECT per (placeholder, whether the log has position_s): built from constants only.
_EXPORT_SELECT = {(p, pos): "SELECT " + _EXPORT_COLUMNS.format(size=size, position="position_s" if pos else "NULL")
                  for p, size in (("?", "min(w, h)"), ("%s", "LEAST(w, h)")) for pos in (True, False)}
_EXPORT_ORDER = " ORDER BY camera_id, track_id, run_id, captured_at"


def export_sql(options: Selection, placeholder: str = "?", *, with_position: bool = True) -> tuple[str, list]:
    """The per-label export's query for ``options``: columns ``camera_id, run_id, track_id,
    frame_index, captured_at, emotion, confidence, size, position_s, p_<emotion>...``.
    ``with_position=False`` for a log of a version before ``position_s`` (read-only, so not
    migrated): the column is then NULL."""
    where, params = _filters(options, placeholder, None, "captured_at", "captured_at")
    return (_EXPORT_SELECT[placeholder, with_position] + " FROM labels"
            + (" WHERE " + " AND ".join(where) if where else "") + _EXPORT_ORDER, params)


def export_rows(conn, options: Selection, dialect: Dialect) -> Iterator[list[tuple]]:
    """The rows of ``export_sql``, ``options.chunk_rows`` at a time (never the whole selection in
    memory): sqlite3, or psycopg through a server-side cursor."""
    with_position = "position_s" in _label_columns(conn, dialect)
    if dialect == "postgres":
        sql, params = export_sql(options, "%s", with_position=with_position)
        with conn.transaction(), conn.cursor(name="fer_export") as cur:
            cur.itersize = options.chunk_rows
            cur.execute(sql, params)
            while rows := cur.fetchmany(options.chunk_rows):
                yield rows
        return
    sql, params = export_sql(options, with_position=with_position)
    cur = conn.execute(sql, params)
    try:
        while rows := cur.fetchmany(options.chunk_rows):
            yield rows
    finally:
        cur.close()


def _label_columns(conn, dialect: Dialect) -> set[str]:
    """The columns the log's ``labels`` table has (an older version's lacks the newer ones)."""
    if dialect == "postgres":
        with conn.transaction():
            rows = conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'labels' "
                                "AND table_schema = current_schema()").fetchall()
        return {r[0] for r in rows}
    return {r[1] for r in conn.execute("PRAGMA table_info(labels)").fetchall()}


_RUN_STARTS = {True: "SELECT camera_id, run_id, MIN(first_at) FROM label_blocks",
               False: "SELECT camera_id, run_id, MIN(captured_at) FROM labels"}


def run_starts(conn, options: Selection, dialect: Dialect) -> dict[tuple[str, str], float]:
    """(camera, run id) -> the capture time of that run's first label on that camera, over the
    whole log (``options``' cameras and runs only: not its tracks or times). From the label
    blocks when they cover the log (one GROUP BY of their small columns), else from the rows."""
    from dataclasses import replace

    placeholder, sql_of = ("%s", blocks.POSTGRES) if dialect == "postgres" else ("?", blocks.SQLITE)
    use_blocks = options.blocks and blocks.covered(conn, sql_of)
    narrowed = replace(options, tracks=(), since=None, until=None)
    where, params = _filters(narrowed, placeholder, None, "captured_at", "captured_at")
    sql = (_RUN_STARTS[use_blocks] + (" WHERE " + " AND ".join(where) if where else "")
           + " GROUP BY camera_id, run_id")
    if dialect == "postgres":
        with conn.transaction():
            rows = conn.execute(sql, params).fetchall()
    else:
        rows = conn.execute(sql, params).fetchall()
    return {(camera, run): float(t) for camera, run, t in rows}


def open_read_only(path) -> sqlite3.Connection:
    """A sqlite3 connection that only reads the log at ``path`` (which must exist)."""
    if not Path(path).is_file():
        raise ConfigError(f"no emotion log at {path}")
    return sqlite3.connect(_read_only_uri(path), uri=True, timeout=10.0)


def camera_ids(path) -> list[str]:
    """The cameras in a SQLite log, by a loose index scan (one index seek per camera)."""
    import sqlite3

    conn = sqlite3.connect(_read_only_uri(path), uri=True, timeout=10.0)
    try:
        rows = conn.execute(schema.CAMERAS).fetchall()
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
