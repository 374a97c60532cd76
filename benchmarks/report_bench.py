"""How fast `fer-pipeline report` summarises a large emotion log.

Generates a synthetic log with the logger's schema and its label blocks (4 cameras, people
coming and going, sustained emotions with flickers: see synth_log.py), then times the full
report (reading, smoothing, runs, episodes, per-track and per-camera tables), one camera,
and reading the report's columns alone with the same parts and threads (the floor that
everything after the read adds to). Each is timed twice in the same run: from the label
blocks (what the report does) and from the rows (``ReportOptions(blocks=False)``, as before
the blocks existed), and the two reports are compared (float equality). A kept log without
blocks (generated before they existed) gets them first, by the store's backfill, timed.

    python -m benchmarks report                                   # 2M labels; results in benchmarks/results/
    python -m benchmarks report --copies 10 --keep /tmp/day.sqlite   # 20M labels (or python -m benchmarks.report_bench)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

try:
    from benchmarks.synth_log import generate
except ImportError:  # run as a script: python benchmarks/report_bench.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.synth_log import generate

from fer_pipeline.analytics.episodes import Report, build_report  # noqa: E402
from fer_pipeline.analytics.options import ReportOptions  # noqa: E402
from fer_pipeline.analytics.runs import sqlite_parts  # noqa: E402
from fer_pipeline.emotion_log.reader import SqliteLog  # noqa: E402
from fer_pipeline.emotion_log.sqlite import SqliteStore  # noqa: E402


def read_only(path: Path, options: ReportOptions) -> tuple[float, int, int]:
    """(seconds, labels, threads) to read every part's columns as the report does, and nothing more."""
    from concurrent.futures import ThreadPoolExecutor

    t = time.perf_counter()
    parts, threads, has_blocks = sqlite_parts(path, options)

    def read(part) -> int:
        with SqliteLog(path, has_blocks=has_blocks) as log:
            return sum(len(chunk) for chunk in log.read(options, part))

    with ThreadPoolExecutor(threads) as pool:
        n = sum(pool.map(read, parts))
    return round(time.perf_counter() - t, 3), n, threads


def same_report(a: Report, b: Report) -> bool:
    """Every table and timeline equal, floats exactly."""
    return (a.labels_read == b.labels_read and a.tracks == b.tracks and a.cameras == b.cameras
            and a.episodes == b.episodes and a.transitions == b.transitions and list(a.timelines) == list(b.timelines)
            and all((a.timelines[k] == b.timelines[k]).all() for k in a.timelines))


def _blocks_info(path: Path) -> dict:
    import sqlite3

    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        n, labels = db.execute("SELECT COUNT(*), COALESCE(SUM(n), 0) FROM label_blocks").fetchone()
    finally:
        db.close()
    return {"blocks": n, "labels_per_block": round(labels / max(n, 1), 1)}


RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Timings:
    """The report timed from the label blocks and from the rows, in the same run."""

    report: Report  # the full report, from the blocks
    seconds: list[float]
    rows_seconds: list[float]
    one_camera_s: float
    one_camera_rows: int
    rows_one_camera_s: float
    read_only_s: float
    read_only_rows: int
    threads: int
    rows_read_only_s: float
    same_report: bool  # the two ways gave equal reports (full and one camera)


def run(*, rows: int = 2_000_000, cameras: int = 4, copies: int = 1, repeats: int = 2, keep: Path | None = None,
        out_dir: Path | None = None) -> dict:
    """Generate (or reuse ``keep``) a log, time the report on it, print and write ``report_<labels>.json``."""
    keep = Path(keep) if keep is not None else None
    tmp = tempfile.TemporaryDirectory(prefix="fer-report-bench-") if keep is None else None
    try:
        path = keep or Path(tmp.name) / "emotions.sqlite"
        generated = _log(path, kept=keep is not None, rows=rows, cameras=cameras, copies=copies)
        backfill = _backfill(path)
        reader = _rows_reader()
        load_at_start = os.getloadavg()
        t = time_reports(path, repeats)
        result = _result(path, t, reader=reader, backfill=backfill, generated=generated, load_at_start=load_at_start)
        _print_summary(result, t, reader)
        _write(result, Path(out_dir or RESULTS))
    finally:
        if tmp is not None:
            tmp.cleanup()
    return result


def _log(path: Path, *, kept: bool, rows: int, cameras: int, copies: int) -> dict:
    """Generate the log at ``path``, or reuse it when it is a kept one that exists; returns how
    it was generated (a kept log's ``.gen.json`` sidecar records that for later runs)."""
    sidecar = path.with_suffix(".gen.json")
    if kept and path.is_file():
        # How the kept log was generated, when this script generated it.
        return {"reused": str(path), **(json.loads(sidecar.read_text()) if sidecar.is_file() else {})}
    generated = generate(path, rows, cameras=cameras, copies=copies)
    if kept:
        sidecar.write_text(json.dumps(generated))
    print(f"generated {generated['rows']:,} labels, {generated['tracks']:,} tracks in {generated['seconds']}s "
          f"({generated['bytes'] / 1e6:,.0f} MB)")
    return generated


def _backfill(path: Path) -> dict | None:
    """A log from before label blocks gets them, as the logger does once when it starts; returns
    that backfill's time and sizes, or None when the log has its blocks already."""
    with SqliteLog(path) as log:
        if log.blocks:
            return None
    before = path.stat().st_size
    t = time.perf_counter()
    with SqliteStore(path) as store:
        covered = store.backfill()
    backfill = {"seconds": round(time.perf_counter() - t, 1), "rows": covered, "bytes_before": before,
                "bytes_after": path.stat().st_size}
    print(f"backfilled label blocks for {covered:,} rows in {backfill['seconds']}s "
          f"({before / 1e6:,.0f} -> {backfill['bytes_after'] / 1e6:,.0f} MB)")
    return backfill


def _rows_reader() -> str:
    """What reads the rows here: ADBC (Arrow) when installed, else the DB-API driver."""
    try:
        import adbc_driver_sqlite  # noqa: F401
        return "adbc (arrow)"
    except ImportError:
        return "sqlite3 (DB-API)"


def _timed(path: Path, options: ReportOptions) -> tuple[float, Report]:
    """(seconds, report) of one full report with ``options``."""
    t = time.perf_counter()
    rep = build_report(path, options)
    return round(time.perf_counter() - t, 3), rep


def time_reports(path: Path, repeats: int) -> Timings:
    """The full report ``repeats`` times from the blocks and from the rows, then one camera and the
    read alone, both ways."""
    # Blocks and rows alternate so that drifting machine speed hits both alike.
    timings, rows_timings = [], []
    for _ in range(repeats):
        s, rep = _timed(path, ReportOptions())
        timings.append(s)
        s, rows_rep = _timed(path, ReportOptions(blocks=False))
        rows_timings.append(s)
    equal = same_report(rep, rows_rep)
    one_camera, cam = _timed(path, ReportOptions(cameras=("cam1",)))
    rows_one_camera, rows_cam = _timed(path, ReportOptions(cameras=("cam1",), blocks=False))
    equal = equal and same_report(cam, rows_cam)
    read_s, read_rows, threads = read_only(path, ReportOptions())
    rows_read_s, _, _ = read_only(path, ReportOptions(blocks=False))
    return Timings(rep, timings, rows_timings, one_camera, cam.labels_read, rows_one_camera, read_s, read_rows,
                   threads, rows_read_s, equal)


def _result(path: Path, t: Timings, *, reader: str, backfill: dict | None, generated: dict,
            load_at_start: tuple[float, float, float]) -> dict:
    """The JSON written: the figures both ways, their speedups, the log and the machine."""
    rep, best, rows_best = t.report, min(t.seconds), min(t.rows_seconds)
    return {
        "benchmark": "report", "rows": rep.labels_read, "tracks": len(rep.tracks), "episodes": len(rep.episodes),
        "transitions": sum(tr["count"] for tr in rep.transitions), "seconds": t.seconds, "best_s": best,
        "labels_per_s": round(rep.labels_read / best), "one_camera_s": t.one_camera_s,
        "one_camera_rows": t.one_camera_rows, "read_only_s": t.read_only_s, "read_only_rows": t.read_only_rows,
        "threads": t.threads, "reader": "label blocks (sqlite3)",
        "rows_path": {"reader": reader, "seconds": t.rows_seconds, "best_s": rows_best,
                      "one_camera_s": t.rows_one_camera_s, "read_only_s": t.rows_read_only_s},
        "speedup": {"report": round(rows_best / best, 2), "one_camera": round(t.rows_one_camera_s / t.one_camera_s, 2),
                    "read_only": round(t.rows_read_only_s / max(t.read_only_s, 1e-9), 1)},
        "same_report": t.same_report, **_blocks_info(path), "bytes": path.stat().st_size, "backfill": backfill,
        "generated": generated, "cpus": os.cpu_count(), "python": platform.python_version(),
        "load_avg_start": load_at_start, "load_avg": os.getloadavg(), "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _print_summary(result: dict, t: Timings, reader: str) -> None:
    """Two lines: the report from the label blocks, then from the rows."""
    print(f"report over {result['rows']:,} labels from {result['blocks']:,} label blocks: best {result['best_s']:.2f}s "
          f"of {t.seconds} ({result['labels_per_s']:,} labels/s; one camera {t.one_camera_s:.2f}s; reading alone "
          f"{t.read_only_s:.2f}s)")
    print(f"  from the rows ({reader}): best {min(t.rows_seconds):.2f}s of {t.rows_seconds} (one camera "
          f"{t.rows_one_camera_s:.2f}s; reading alone {t.rows_read_only_s:.2f}s); same report: {t.same_report}")


def _write(result: dict, out_dir: Path) -> None:
    """``report_<labels>.json`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"report_{result['rows']}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--copies", type=int, default=1, help="Generate --rows, then copy them this many times over "
                    "inside SQLite (fast large logs: --rows 2000000 --copies 10 is 20M labels).")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--keep", type=Path, help="Keep (or reuse, when it exists) the generated log here.")
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args()
    run(rows=a.rows, cameras=a.cameras, copies=a.copies, repeats=a.repeats, keep=a.keep, out_dir=a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
