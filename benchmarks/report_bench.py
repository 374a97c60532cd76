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


def run(*, rows: int = 2_000_000, cameras: int = 4, copies: int = 1, repeats: int = 2, keep: Path | None = None,
        out_dir: Path | None = None) -> dict:
    """Generate (or reuse ``keep``) a log, time the report on it, print and write ``report_<labels>.json``."""
    args = argparse.Namespace(rows=rows, cameras=cameras, copies=copies, repeats=repeats,
                              keep=Path(keep) if keep is not None else None, out=Path(out_dir or RESULTS))
    tmp = None
    sidecar = args.keep.with_suffix(".gen.json") if args.keep is not None else None
    if args.keep is not None and args.keep.is_file():
        path = args.keep
        # How the kept log was generated, when this script generated it.
        generated = {"reused": str(args.keep),
                     **(json.loads(sidecar.read_text()) if sidecar.is_file() else {})}
    else:
        if args.keep is None:
            tmp = tempfile.TemporaryDirectory(prefix="fer-report-bench-")
        path = args.keep or Path(tmp.name) / "emotions.sqlite"
        generated = generate(path, args.rows, cameras=args.cameras, copies=args.copies)
        if sidecar is not None:
            sidecar.write_text(json.dumps(generated))
        print(f"generated {generated['rows']:,} labels, {generated['tracks']:,} tracks in {generated['seconds']}s "
              f"({generated['bytes'] / 1e6:,.0f} MB)")
    backfill = None
    with SqliteLog(path) as log:
        has_blocks = log.blocks
    if not has_blocks:  # a log from before label blocks: what the logger does once when it starts
        before = path.stat().st_size
        t = time.perf_counter()
        with SqliteStore(path) as store:
            covered = store.backfill()
        backfill = {"seconds": round(time.perf_counter() - t, 1), "rows": covered, "bytes_before": before,
                    "bytes_after": path.stat().st_size}
        print(f"backfilled label blocks for {covered:,} rows in {backfill['seconds']}s "
              f"({before / 1e6:,.0f} -> {backfill['bytes_after'] / 1e6:,.0f} MB)")
    try:
        import adbc_driver_sqlite  # noqa: F401
        reader = "adbc (arrow)"
    except ImportError:
        reader = "sqlite3 (DB-API)"
    load_at_start = os.getloadavg()

    def timed(options: ReportOptions) -> tuple[float, Report]:
        t = time.perf_counter()
        rep = build_report(path, options)
        return round(time.perf_counter() - t, 3), rep

    # Blocks and rows alternate so that drifting machine speed hits both alike.
    timings, rows_timings = [], []
    for _ in range(args.repeats):
        s, rep = timed(ReportOptions())
        timings.append(s)
        s, rows_rep = timed(ReportOptions(blocks=False))
        rows_timings.append(s)
    equal = same_report(rep, rows_rep)
    one_camera, cam = timed(ReportOptions(cameras=("cam1",)))
    rows_one_camera, rows_cam = timed(ReportOptions(cameras=("cam1",), blocks=False))
    equal = equal and same_report(cam, rows_cam)
    read_s, read_rows, threads = read_only(path, ReportOptions())
    rows_read_s, _, _ = read_only(path, ReportOptions(blocks=False))
    best, rows_best = min(timings), min(rows_timings)
    result = {
        "benchmark": "report", "rows": rep.labels_read, "tracks": len(rep.tracks), "episodes": len(rep.episodes),
        "transitions": sum(t["count"] for t in rep.transitions), "seconds": timings, "best_s": best,
        "labels_per_s": round(rep.labels_read / best), "one_camera_s": one_camera, "one_camera_rows": cam.labels_read,
        "read_only_s": read_s, "read_only_rows": read_rows, "threads": threads,
        "reader": "label blocks (sqlite3)",
        "rows_path": {"reader": reader, "seconds": rows_timings, "best_s": rows_best, "one_camera_s": rows_one_camera,
                      "read_only_s": rows_read_s},
        "speedup": {"report": round(rows_best / best, 2), "one_camera": round(rows_one_camera / one_camera, 2),
                    "read_only": round(rows_read_s / max(read_s, 1e-9), 1)},
        "same_report": equal, **_blocks_info(path), "bytes": path.stat().st_size, "backfill": backfill,
        "generated": generated, "cpus": os.cpu_count(), "python": platform.python_version(),
        "load_avg_start": load_at_start, "load_avg": os.getloadavg(), "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    print(f"report over {rep.labels_read:,} labels from {result['blocks']:,} label blocks: best {best:.2f}s of "
          f"{timings} ({result['labels_per_s']:,} labels/s; one camera {one_camera:.2f}s; reading alone "
          f"{read_s:.2f}s)")
    print(f"  from the rows ({reader}): best {rows_best:.2f}s of {rows_timings} (one camera {rows_one_camera:.2f}s; "
          f"reading alone {rows_read_s:.2f}s); same report: {equal}")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"report_{rep.labels_read}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    if tmp is not None:
        tmp.cleanup()
    return result


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
