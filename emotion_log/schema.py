"""The emotion log's one table, described once for both dialects.

``COLUMNS`` is the single list of what a stored label holds: the SQLite and PostgreSQL
``CREATE TABLE``, the insert statements, ``label_row`` (a label as a row) and
``block_entry`` (a row as a label-block entry) are all derived from it, so adding a field
means adding it here (and to ``label_row``). A column added later goes at the end, nullable:
a store opening a log written before it adds it (``missing_columns``, ``add_column_sql``), so
old and new logs have one layout. The only text spliced into SQL is fixed: these column names
and the placeholders of the driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fer_pipeline.labels import EMOTIONS
from fer_pipeline.messages import Label

Dialect = Literal["sqlite", "postgres"]
Placeholder = Literal["?", "%s"]

PROB_COLUMNS: tuple[str, ...] = tuple(f"p_{e}" for e in EMOTIONS)

Column = tuple[str, str, bool]  # (name, kind, nullable); kinds map to each dialect's type below

_TABLE: tuple[Column, ...] = (
    ("crop_id", "key", False),
    ("camera_id", "text", False),
    ("run_id", "text", False),
    ("track_id", "bigint", False),
    ("frame_index", "bigint", False),
    ("face_index", "int", False),
    ("captured_at", "real", False),
    ("labelled_at", "real", False),
    ("latency_ms", "real", False),
    ("emotion", "text", False),
    ("confidence", "real", False),
    *((c, "real", False) for c in PROB_COLUMNS),
    ("model_id", "text", False),
    ("worker_id", "text", False),
    ("truth", "text", True),
    ("x", "int", False), ("y", "int", False), ("w", "int", False), ("h", "int", False),
    # Seconds into the video (file and replay sources; NULL for live cameras): where to find the
    # face in the file, which captured_at (when the frame was read) does not say for a replay
    # run faster than real time.
    ("position_s", "real", True),
)
COLUMNS: tuple[str, ...] = tuple(name for name, _, _ in _TABLE)

_TYPES: dict[Dialect, dict[str, str]] = {
    "sqlite": {"key": "TEXT PRIMARY KEY", "serial": "INTEGER PRIMARY KEY", "text": "TEXT", "bigint": "INTEGER",
               "int": "INTEGER", "real": "REAL", "blob": "BLOB"},
    "postgres": {"key": "TEXT PRIMARY KEY", "serial": "BIGSERIAL PRIMARY KEY", "text": "TEXT", "bigint": "BIGINT",
                 "int": "INTEGER", "real": "DOUBLE PRECISION", "blob": "BYTEA"},
}
_TABLES = ("labels", "label_blocks")  # the only names table_sql writes


def table_sql(table: str, columns: tuple[Column, ...], dialect: Dialect) -> str:
    """``CREATE TABLE IF NOT EXISTS`` for ``columns`` in ``dialect``'s types (one list, both dialects)."""
    if table not in _TABLES:
        raise ValueError(f"not a table of the emotion log: {table!r}")
    types = _TYPES[dialect]
    cols = ",\n    ".join(f"{name} {types[kind]}{'' if null or kind in ('key', 'serial') else ' NOT NULL'}"
                          for name, kind, null in columns)
    return f"CREATE TABLE IF NOT EXISTS {table} (\n    {cols}\n);\n"


def missing_columns(present: set[str]) -> list[str]:
    """The columns of ``labels`` that a log written by an older version lacks, given the
    names its table has; only nullable ones can be (rows stored before have no value)."""
    return [name for name, _, null in _TABLE if null and name not in present]


def add_column_sql(name: str, dialect: Dialect) -> str:
    """``ALTER TABLE labels ADD COLUMN`` of one of ``COLUMNS`` (nullable: old rows read NULL)."""
    kinds = {col: kind for col, kind, null in _TABLE if null}
    if name not in kinds:
        raise ValueError(f"not a nullable column of the emotion log: {name!r}")
    return f"ALTER TABLE labels ADD COLUMN {name} {_TYPES[dialect][kinds[name]]}"


def create_table(dialect: Dialect) -> str:
    """The ``labels`` table and its index, for ``dialect``."""
    return (table_sql("labels", _TABLE, dialect)
            + "CREATE INDEX IF NOT EXISTS labels_by_track ON labels (camera_id, track_id, captured_at);\n")


def _checked(placeholder: str) -> Placeholder:
    # The one value spliced into SQL besides the column names: only a driver's placeholder.
    if placeholder not in ("?", "%s"):
        raise ValueError(f"not a DB-API placeholder: {placeholder!r}")
    return "?" if placeholder == "?" else "%s"


def insert_sql(placeholder: Placeholder) -> str:
    """``INSERT INTO labels`` of every column (each dialect adds its own conflict clause)."""
    placeholder = _checked(placeholder)
    return f"INSERT INTO labels ({', '.join(COLUMNS)}) VALUES ({', '.join([placeholder] * len(COLUMNS))})"


ANY_ROW = "SELECT 1 FROM labels LIMIT 1"
# The cameras of a log by a loose index scan (one index seek per camera), in both dialects.
# Qualified names: labels has a column "x" (the face box) that would capture a bare one.
CAMERAS = ("WITH RECURSIVE cams(prev) AS (SELECT MIN(camera_id) FROM labels UNION ALL "
           "SELECT (SELECT MIN(labels.camera_id) FROM labels WHERE labels.camera_id > cams.prev) FROM cams "
           "WHERE cams.prev IS NOT NULL) SELECT prev FROM cams WHERE prev IS NOT NULL LIMIT 100000")


def erase_filter(camera_id: str, track_id: int | None, run_id: str | None,
                 placeholder: Placeholder = "?") -> tuple[str, list[str | int]]:
    """WHERE text and parameters selecting one camera's rows (optionally one track/run).

    The text holds only fixed column names and the driver's placeholder; values go in as
    parameters.
    """
    where = f"camera_id = {placeholder}"
    params: list[str | int] = [camera_id]
    if track_id is not None:
        where += f" AND track_id = {placeholder}"
        params.append(int(track_id))
    if run_id is not None:
        where += f" AND run_id = {placeholder}"
        params.append(run_id)
    return where, params


@dataclass(frozen=True)
class TimelineRow:
    """One observation of a person (a track) in time order."""

    crop_id: str
    run_id: str
    frame_index: int
    captured_at: float
    labelled_at: float
    latency_ms: float
    emotion: str
    confidence: float
    probabilities: tuple[float, ...]  # EMOTIONS order
    truth: str | None
    position_s: float | None = None  # seconds into the video; None for live cameras


def timeline_sql(placeholder: Placeholder, run_id: str | None) -> str:
    """One track's rows, as ``TimelineRow`` fields, in capture order."""
    placeholder = _checked(placeholder)
    sql = (f"SELECT crop_id, run_id, frame_index, captured_at, labelled_at, latency_ms, emotion, confidence, "
           f"{', '.join(PROB_COLUMNS)}, truth, position_s FROM labels "
           f"WHERE camera_id = {placeholder} AND track_id = {placeholder}")
    if run_id is not None:
        sql += f" AND run_id = {placeholder}"
    return sql + " ORDER BY captured_at, frame_index, face_index"


def timeline_rows(rows: list[tuple]) -> list[TimelineRow]:
    """``timeline_sql``'s rows as ``TimelineRow``s, the probability columns gathered into a tuple."""
    n = len(PROB_COLUMNS)
    return [TimelineRow(r[0], r[1], int(r[2]), float(r[3]), float(r[4]), float(r[5]), r[6], float(r[7]),
                        probabilities=tuple(r[8:8 + n]), truth=r[8 + n],
                        position_s=None if r[9 + n] is None else float(r[9 + n])) for r in rows]


@dataclass(frozen=True)
class TrackSummary:
    """How one track (a person seen by one camera run) was labelled overall."""

    camera_id: str
    run_id: str
    track_id: int
    labels: int
    dominant: str  # the most frequent emotion (ties: higher mean confidence)
    dominant_share: float
    first_at: float
    last_at: float
    mean_latency_ms: float


SUMMARY_SQL = ("SELECT camera_id, run_id, track_id, emotion, COUNT(*), AVG(confidence), MIN(captured_at), "
               "MAX(captured_at), SUM(latency_ms) FROM labels "
               "GROUP BY camera_id, run_id, track_id, emotion ORDER BY camera_id, run_id, track_id")


def track_summaries(rows: list[tuple]) -> list[TrackSummary]:
    """``SUMMARY_SQL``'s rows (per track and emotion) folded into one summary per track."""
    tracks: dict[tuple[str, str, int], list[tuple]] = {}
    for r in rows:
        tracks.setdefault((r[0], r[1], r[2]), []).append(r[3:])
    out = []
    for (camera_id, run_id, track_id), groups in tracks.items():
        total = sum(g[1] for g in groups)
        emotion, n, *_ = max(groups, key=lambda g: (g[1], g[2]))
        out.append(TrackSummary(
            camera_id=camera_id, run_id=run_id, track_id=int(track_id), labels=int(total), dominant=emotion,
            dominant_share=n / total, first_at=min(g[3] for g in groups), last_at=max(g[4] for g in groups),
            mean_latency_ms=sum(g[5] for g in groups) / total,
        ))
    return out


_I_CAMERA, _I_RUN, _I_TRACK, _I_T, _I_W, _I_H = (
    COLUMNS.index(c) for c in ("camera_id", "run_id", "track_id", "captured_at", "w", "h"))
_I_PROBS = COLUMNS.index(PROB_COLUMNS[0])


def block_entry(row: tuple) -> tuple:
    """A stored row as a label-block entry: (camera, run, track, captured_at, min(w, h), probabilities)."""
    return (row[_I_CAMERA], row[_I_RUN], row[_I_TRACK], row[_I_T], min(row[_I_W], row[_I_H]),
            row[_I_PROBS:_I_PROBS + len(PROB_COLUMNS)])


def label_row(label: Label) -> tuple:
    """A label as a row of ``COLUMNS``."""
    b = label.bbox
    return (
        label.crop_id, label.camera_id, label.run_id, label.track_id, label.frame_index, label.face_index,
        label.captured_at, label.labelled_at, (label.labelled_at - label.captured_at) * 1000.0,
        label.emotion, label.confidence, *label.probabilities, label.model_id, label.worker_id, label.truth,
        b.x, b.y, b.w, b.h, label.position_s,
    )
