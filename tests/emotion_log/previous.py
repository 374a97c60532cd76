"""An emotion log as the version before ``position_s`` wrote it (commit 401e21e): its
``labels`` table, verbatim, and rows stored through it. The tests open such a log with this
version's stores, which must add the new column and keep every old row."""

from __future__ import annotations

from fer_pipeline.emotion_log.schema import COLUMNS, label_row
from fer_pipeline.messages import Label

# (name, SQLite type, PostgreSQL type, NOT NULL) of the previous labels table, in its order.
_OLD_TABLE = (
    ("crop_id", "TEXT PRIMARY KEY", "TEXT PRIMARY KEY", False),
    ("camera_id", "TEXT", "TEXT", True), ("run_id", "TEXT", "TEXT", True),
    ("track_id", "INTEGER", "BIGINT", True), ("frame_index", "INTEGER", "BIGINT", True),
    ("face_index", "INTEGER", "INTEGER", True), ("captured_at", "REAL", "DOUBLE PRECISION", True),
    ("labelled_at", "REAL", "DOUBLE PRECISION", True), ("latency_ms", "REAL", "DOUBLE PRECISION", True),
    ("emotion", "TEXT", "TEXT", True), ("confidence", "REAL", "DOUBLE PRECISION", True),
    *((f"p_{e}", "REAL", "DOUBLE PRECISION", True)
      for e in ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")),
    ("model_id", "TEXT", "TEXT", True), ("worker_id", "TEXT", "TEXT", True), ("truth", "TEXT", "TEXT", False),
    ("x", "INTEGER", "INTEGER", True), ("y", "INTEGER", "INTEGER", True), ("w", "INTEGER", "INTEGER", True),
    ("h", "INTEGER", "INTEGER", True),
)
OLD_COLUMNS = tuple(c[0] for c in _OLD_TABLE)


def old_schema(dialect: str) -> str:
    """The previous version's ``CREATE TABLE labels`` and its index."""
    kind = 1 if dialect == "sqlite" else 2
    cols = ",\n    ".join(f"{c[0]} {c[kind]}{' NOT NULL' if c[3] else ''}" for c in _OLD_TABLE)
    return (f"CREATE TABLE IF NOT EXISTS labels (\n    {cols}\n);\n"
            "CREATE INDEX IF NOT EXISTS labels_by_track ON labels (camera_id, track_id, captured_at);\n")


def old_insert(placeholder: str) -> str:
    return f"INSERT INTO labels ({', '.join(OLD_COLUMNS)}) VALUES ({', '.join([placeholder] * len(OLD_COLUMNS))})"


def old_row(label: Label) -> tuple:
    """``label`` as the previous version stored it (no position)."""
    row = dict(zip(COLUMNS, label_row(label)))
    return tuple(row[c] for c in OLD_COLUMNS)
