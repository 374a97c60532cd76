"""The per-label export (`report --export FORMAT --labels`): one row per label of the report's
selection, with the smoothed state the report computed for it.

Columns (``COLUMNS``): camera_id, run_id, track_id, frame_index; captured_at (ISO 8601, UTC)
and captured_at_epoch (seconds); video_time_s (seconds since the run's first label on that
camera, restarts of the run included: where the label falls in that camera's video of the
run, on the capture clock); position_s (seconds into the video file for file and replay
sources, as the producer read it: unchanged by --fast; empty for live cameras and for
logs of earlier versions); emotion and confidence as labelled; the seven probabilities p_<emotion>; state (the
smoothed state: an emotion or unknown, as the report's tables count it).

It streams: rows come from the log ``chunk_rows`` at a time (``reader.export_rows``), ordered
by camera, track, run and time, and each batch is written out before the next is read. Only
the labels of the (camera, track, run) that a batch ends inside wait for the next batch, as
the smoothing of a label needs the labels before it. CSV and Parquet get ``labels.csv`` /
``labels.parquet``; JSON gets ``labels.jsonl``, one object per line (a single JSON document
of millions of labels could not be written or read in pieces).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from fer_pipeline.analytics.options import STATES, UNKNOWN, ReportOptions
from fer_pipeline.analytics.render import export_folder
from fer_pipeline.analytics.smoothing import smoothed_states
from fer_pipeline.emotion_log.reader import ConnectionLog, LogSource, export_rows, open_read_only, run_starts
from fer_pipeline.emotion_log.store import is_database_error
from fer_pipeline.errors import ConfigError, first_line
from fer_pipeline.labels import EMOTIONS
from fer_pipeline.run_ids import base_run

PROBS = tuple(f"p_{e}" for e in EMOTIONS)
COLUMNS = ("camera_id", "run_id", "track_id", "frame_index", "captured_at", "captured_at_epoch", "video_time_s",
           "position_s", "emotion", "confidence", *PROBS, "state")
FILE_NAMES = {"csv": "labels.csv", "json": "labels.jsonl", "parquet": "labels.parquet"}


def labelled_columns(batches: Iterator[list[tuple]], starts: dict[tuple[str, str], float],
                     options: ReportOptions) -> Iterator[dict[str, list]]:
    """Export columns (``COLUMNS``, as lists) from ``export_rows`` batches; ``starts``: each
    (camera, run id)'s first label time (``reader.run_starts``)."""
    pending: list[tuple] = []
    for rows in batches:
        rows = pending + rows if pending else rows
        # Keep the last (camera, track, run) back: it may go on in the next batch.
        last = rows[-1][:3]
        cut = len(rows)
        while cut > 0 and rows[cut - 1][:3] == last:
            cut -= 1
        if cut == 0:
            pending = rows
            continue
        pending = rows[cut:]
        yield _columns(rows[:cut], starts, options)
    if pending:
        yield _columns(pending, starts, options)


def _columns(rows: list[tuple], starts: dict[tuple[str, str], float], options: ReportOptions) -> dict[str, list]:
    camera, run, track, frame, t, emotion, confidence, size, position, *probs = zip(*rows)
    n = len(rows)
    keys = list(zip(camera, track, run))
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = [a != b for a, b in zip(keys[1:], keys[:-1])]
    heads = np.flatnonzero(new_group)
    pos = np.arange(n) - heads[np.cumsum(new_group) - 1]
    big = np.asarray(size) >= options.min_face
    state, _, _ = smoothed_states(np.asarray(probs, dtype=np.float32), big, pos, options.smooth,
                                  options.min_confidence, UNKNOWN)
    epoch = np.asarray(t, dtype=np.float64)
    # The run's start on the camera: its first label, restarts (<run>~n) folded into the run.
    origin: dict[tuple[str, str], float] = {}
    for (cam, run_id), t0 in starts.items():
        key = (cam, base_run(run_id))
        origin[key] = min(origin.get(key, t0), t0)
    start = np.array([origin.get((c, base_run(r)), np.nan) for c, r in zip(camera, run)])
    iso = np.datetime_as_string(np.round(epoch * 1000).astype(np.int64).astype("datetime64[ms]"), unit="ms",
                                timezone="UTC")
    cols: dict[str, list] = {
        "camera_id": list(camera), "run_id": list(run), "track_id": list(track), "frame_index": list(frame),
        "captured_at": iso.tolist(), "captured_at_epoch": epoch.tolist(),
        "video_time_s": np.round(epoch - start, 3).tolist(), "position_s": list(position),
        "emotion": list(emotion), "confidence": list(confidence)}
    cols.update(zip(PROBS, (list(p) for p in probs)))
    cols["state"] = [STATES[s] for s in state.tolist()]
    return cols


@contextmanager
def _connection(source: Path | str | LogSource):
    """(connection, dialect) to read the rows from: a read-only sqlite3 connection for a path,
    or the connection an open ``ConnectionLog`` holds."""
    if isinstance(source, (str, Path)):
        conn = open_read_only(source)
        try:
            yield conn, "sqlite"
        finally:
            conn.close()
    elif isinstance(source, ConnectionLog):
        yield source.conn, source.dialect
    else:
        raise ConfigError("the per-label export reads a SQLite path or a ConnectionLog")


def export_labels(source: Path | str | LogSource, options: ReportOptions, fmt: str, out: Path) -> tuple[Path, int]:
    """Write the per-label file of ``options``' selection (its runs resolved: pass the options of
    the built ``Report``) under ``out``; returns (path, labels written)."""
    export_folder(fmt, out)
    path = out / FILE_NAMES[fmt]
    with _connection(source) as (conn, dialect):
        try:
            starts = run_starts(conn, options, dialect)
            batches = labelled_columns(export_rows(conn, options, dialect), starts, options)
            n = _WRITERS[fmt](batches, path)
        except Exception as e:
            if not is_database_error(e):
                raise
            raise ConfigError(f"cannot read the emotion log: {first_line(e)}") from e
    return path, n


def _write_csv(batches: Iterator[dict[str, list]], path: Path) -> int:
    n = 0
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for cols in batches:
            w.writerows(zip(*(cols[c] for c in COLUMNS)))
            n += len(cols["state"])
    return n


def _write_jsonl(batches: Iterator[dict[str, list]], path: Path) -> int:
    n = 0
    with path.open("w") as f:
        for cols in batches:
            f.writelines(json.dumps(dict(zip(COLUMNS, row))) + "\n" for row in zip(*(cols[c] for c in COLUMNS)))
            n += len(cols["state"])
    return n


def _write_parquet(batches: Iterator[dict[str, list]], path: Path) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("Parquet export needs pyarrow: pip install 'fer-pipeline[report]'") from None
    types = {"camera_id": pa.string(), "run_id": pa.string(), "track_id": pa.int64(), "frame_index": pa.int64(),
             "captured_at": pa.string(), "captured_at_epoch": pa.float64(), "video_time_s": pa.float64(),
             "position_s": pa.float64(),
             "emotion": pa.string(), "confidence": pa.float64(), **{p: pa.float64() for p in PROBS},
             "state": pa.string()}
    schema = pa.schema([(c, types[c]) for c in COLUMNS])
    n = 0
    with pq.ParquetWriter(path, schema) as writer:
        for cols in batches:
            writer.write_table(pa.table({c: pa.array(cols[c], type=types[c]) for c in COLUMNS}, schema=schema))
            n += len(cols["state"])
    return n


_WRITERS = {"csv": _write_csv, "json": _write_jsonl, "parquet": _write_parquet}
