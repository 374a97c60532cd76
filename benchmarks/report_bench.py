"""How fast `fer-pipeline report` summarises a large emotion log.

Generates a synthetic log with the logger's schema (4 cameras, people coming and going,
sustained emotions with flickers: see synth_log.py), then times the full report (reading,
smoothing, runs, episodes, per-track and per-camera tables) and prints and saves the numbers.
It also times reading the report's columns alone, with the same parts and threads: the
floor that everything after the read adds to.

    fer-pipeline bench report                                   # 2M labels; results in benchmarks/results/
    fer-pipeline bench report --copies 10 --keep /tmp/day.sqlite   # 20M labels (or python -m benchmarks.report_bench)
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

from fer_pipeline.consumers.analytics import ReportOptions, sqlite_parts  # noqa: E402
from fer_pipeline.consumers.episodes import build_report  # noqa: E402
from fer_pipeline.consumers.logreader import SqliteLog  # noqa: E402


def read_only(path: Path, options: ReportOptions) -> tuple[float, int, int]:
    """(seconds, labels, threads) to read every part's columns as the report does, and nothing more."""
    from concurrent.futures import ThreadPoolExecutor

    t = time.perf_counter()
    parts, threads = sqlite_parts(path, options)

    def read(part) -> int:
        with SqliteLog(path) as log:
            return sum(len(chunk) for chunk in log.read(options, part))

    with ThreadPoolExecutor(threads) as pool:
        n = sum(pool.map(read, parts))
    return round(time.perf_counter() - t, 3), n, threads


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
    try:
        import adbc_driver_sqlite  # noqa: F401
        reader = "adbc (arrow)"
    except ImportError:
        reader = "sqlite3 (DB-API)"
    load_at_start = os.getloadavg()
    timings = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        rep = build_report(path, ReportOptions())
        timings.append(round(time.perf_counter() - t, 3))
    one_camera_t = time.perf_counter()
    cam = build_report(path, ReportOptions(cameras=("cam1",)))
    one_camera = round(time.perf_counter() - one_camera_t, 3)
    read_s, read_rows, threads = read_only(path, ReportOptions())
    best = min(timings)
    result = {
        "benchmark": "report", "rows": rep.labels_read, "tracks": len(rep.tracks), "episodes": len(rep.episodes),
        "transitions": sum(t["count"] for t in rep.transitions), "seconds": timings, "best_s": best,
        "labels_per_s": round(rep.labels_read / best), "one_camera_s": one_camera, "one_camera_rows": cam.labels_read,
        "read_only_s": read_s, "read_only_rows": read_rows, "threads": threads,
        "reader": reader, "generated": generated, "cpus": os.cpu_count(), "python": platform.python_version(),
        "load_avg_start": load_at_start, "load_avg": os.getloadavg(), "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    print(f"report over {rep.labels_read:,} labels: best {best:.2f}s of {timings} "
          f"({result['labels_per_s']:,} labels/s; one camera {one_camera:.2f}s; reading alone {read_s:.2f}s), "
          f"reader {reader}")
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
