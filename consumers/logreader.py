"""Reading the emotion log in column batches for the analytics (``analytics.py``).

Rows come ordered by the logger's ``(camera_id, track_id, captured_at)`` index so that each
(camera, track) is contiguous: Arrow record batches through ADBC when ``adbc-driver-sqlite``
is installed (the SQLite engine fills the columns, no Python object per value), else the
DB-API (sqlite3, or psycopg for PostgreSQL through a server-side cursor). Filters are SQL
parameters only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from fer_pipeline.errors import ConfigError
from fer_pipeline.labels import EMOTIONS

K = len(EMOTIONS)
_PROBS = ", ".join(f"p_{e}" for e in EMOTIONS)
_SELECT = f"SELECT camera_id, run_id, track_id, captured_at, w, h, {_PROBS} FROM labels"
_ORDER = " ORDER BY camera_id, track_id, captured_at"


def select_sql(options, placeholder: str = "?") -> tuple[str, list]:
    """The label query for ``options`` (an ``analytics.ReportOptions``: cameras, tracks, run,
    since, until); values travel as parameters only."""
    where, params = [], []
    if options.cameras:
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
    return _SELECT + (" WHERE " + " AND ".join(where) if where else "") + _ORDER, params


@dataclass
class Chunk:
    """Label columns of whole (camera, track) groups, ordered by camera, track, time.

    Cameras and runs are small integer codes into ``cameras`` / ``runs`` (dictionary
    encoding: millions of rows share a handful of names).
    """

    camera: np.ndarray
    cameras: list[str]
    run: np.ndarray
    runs: list[str]
    track: np.ndarray
    t: np.ndarray
    w: np.ndarray
    h: np.ndarray
    probs: np.ndarray  # (n, K) float32

    def __len__(self) -> int:
        return len(self.t)

    def part(self, a: int, b: int) -> Chunk:
        return Chunk(camera=self.camera[a:b], cameras=self.cameras, run=self.run[a:b], runs=self.runs,
                     track=self.track[a:b], t=self.t[a:b], w=self.w[a:b], h=self.h[a:b], probs=self.probs[a:b])


def _dict_encode(column) -> tuple[np.ndarray, list[str]]:
    enc = column.dictionary_encode()
    return enc.indices.to_numpy(zero_copy_only=False).astype(np.int64), enc.dictionary.to_pylist()


def _chunk_from_arrow(batch) -> Chunk:
    cols = {name: batch.column(i) for i, name in enumerate(batch.schema.names)}
    probs = np.empty((batch.num_rows, K), dtype=np.float32)
    for k, e in enumerate(EMOTIONS):
        probs[:, k] = cols[f"p_{e}"].to_numpy(zero_copy_only=False)
    camera, cameras = _dict_encode(cols["camera_id"])
    run, runs = _dict_encode(cols["run_id"])
    return Chunk(camera=camera, cameras=cameras, run=run, runs=runs,
                 track=cols["track_id"].to_numpy(zero_copy_only=False).astype(np.int64),
                 t=cols["captured_at"].to_numpy(zero_copy_only=False).astype(np.float64),
                 w=cols["w"].to_numpy(zero_copy_only=False), h=cols["h"].to_numpy(zero_copy_only=False), probs=probs)


def _codes(values) -> tuple[np.ndarray, list[str]]:
    names: dict[str, int] = {}
    codes = np.fromiter((names.setdefault(v, len(names)) for v in values), dtype=np.int64, count=len(values))
    return codes, list(names)


def _chunk_from_rows(rows: list[tuple]) -> Chunk:
    cam, run, track, t, w, h, *probs = zip(*rows)
    camera, cameras = _codes(cam)
    run_codes, runs = _codes(run)
    return Chunk(camera=camera, cameras=cameras, run=run_codes, runs=runs, track=np.asarray(track, dtype=np.int64),
                 t=np.asarray(t, dtype=np.float64), w=np.asarray(w), h=np.asarray(h),
                 probs=np.asarray(probs, dtype=np.float32).T.copy())


def read_batches(source, options) -> Iterator[Chunk]:
    """Label batches from a SQLite path (Arrow/ADBC when installed, else sqlite3), or an open
    connection: sqlite3, or psycopg (PostgreSQL, read through a server-side cursor)."""
    import sqlite3
    from pathlib import Path

    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"no emotion log at {path}")
        try:
            import adbc_driver_sqlite.dbapi as adbc
        except ImportError:
            adbc = None
        if adbc is not None:
            sql, params = select_sql(options)
            with adbc.connect(str(path)) as conn, conn.cursor() as cur:
                # Wait for a writer's lock (the logger, a concurrent open) instead of failing at once.
                cur.execute("PRAGMA busy_timeout = 10000")
                cur.fetchall()
                cur.execute(sql, params)
                for batch in cur.fetch_record_batch():
                    if batch.num_rows:
                        yield _chunk_from_arrow(batch)
            return
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
        try:
            yield from read_batches(conn, options)
        finally:
            conn.close()
        return
    if type(source).__module__.startswith("psycopg"):
        sql, params = select_sql(options, "%s")
        # psycopg loads a whole result client-side unless the cursor is named (server-side),
        # and a server-side cursor lives in a transaction.
        with source.transaction(), source.cursor(name="fer_report") as cur:
            cur.itersize = 65_536
            cur.execute(sql, params)
            while rows := cur.fetchmany(65_536):
                yield _chunk_from_rows(rows)
        return
    sql, params = select_sql(options)
    cur = source.cursor()
    try:
        cur.execute(sql, params)
        while rows := cur.fetchmany(65_536):
            yield _chunk_from_rows(rows)
    finally:
        cur.close()


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
                 w=np.concatenate([c.w for c in chunks]), h=np.concatenate([c.h for c in chunks]),
                 probs=np.concatenate([c.probs for c in chunks]))


def split_whole_tracks(chunk: Chunk) -> tuple[Chunk, Chunk]:
    """(rows before the last (camera, track) group, that group): the group may go on in the
    next batch. Rows are ordered by camera then track, so that group is the trailing block."""
    other = np.flatnonzero((chunk.camera != chunk.camera[-1]) | (chunk.track != chunk.track[-1]))
    i = int(other[-1]) + 1 if len(other) else 0
    return chunk.part(0, i), chunk.part(i, len(chunk))
