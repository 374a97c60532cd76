"""The report benchmark's synthetic log: the logger's schema and its label blocks, copies
that are new people; the benchmark's block and row figures side by side."""

from __future__ import annotations

import sqlite3

from benchmarks.synth_log import generate
from fer_pipeline.analytics.episodes import build_report
from fer_pipeline.analytics.options import ReportOptions
from tests.logs import assert_invariant, same_report


def test_generated_log_has_the_schema_and_distinct_copies(tmp_path):
    path = tmp_path / "log.sqlite"
    info = generate(path, 6_000, cameras=2, copies=3, seed=1)
    assert info["rows"] == 18_000 and info["copies"] == 3
    with sqlite3.connect(path) as db:
        n, crops, cams = db.execute("SELECT COUNT(*), COUNT(DISTINCT crop_id), COUNT(DISTINCT camera_id) "
                                    "FROM labels").fetchone()
        per_track = db.execute("SELECT MAX(c) FROM (SELECT COUNT(*) c FROM labels GROUP BY camera_id, track_id)"
                               ).fetchone()[0]
    assert n == crops == 18_000 and cams == 2 and per_track < 6_000
    rep = build_report(path, ReportOptions())
    assert rep.labels_read == 18_000 and len(rep.tracks) == info["tracks"]
    # Sustained emotions with flickers: episodes exist, and far fewer than labels.
    assert 0 < len(rep.episodes) < 18_000 / 30
    # One block per track, every row in one of them: the report reads them, with the rows' numbers.
    assert info["blocks"] == info["tracks"]
    assert_invariant(path)
    assert same_report(rep, build_report(path, ReportOptions(blocks=False)))


def test_generated_log_without_blocks_is_an_old_log(tmp_path):
    path = tmp_path / "old.sqlite"
    info = generate(path, 3_000, cameras=2, seed=3, blocks=False)
    assert info["blocks"] == 0
    with sqlite3.connect(path) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"labels"}
    assert build_report(path, ReportOptions()).labels_read == 3_000


def test_read_only_reads_what_the_report_reads(tmp_path):
    from benchmarks.report_bench import read_only

    path = tmp_path / "log.sqlite"
    generate(path, 4_000, cameras=3, seed=2)
    for threads in (1, 2):
        for blocks in (True, False):
            seconds, rows, used = read_only(path, ReportOptions(threads=threads, blocks=blocks))
            assert rows == build_report(path, ReportOptions(threads=threads)).labels_read == 4_000
            assert used == threads and seconds >= 0


def test_bench_report_command_writes_its_json(tmp_path):
    """`python -m benchmarks report` end to end on a small generated log."""
    import json

    from typer.testing import CliRunner

    from benchmarks.__main__ import bench_app as app

    r = CliRunner().invoke(app, ["report", "--rows", "20000", "--repeats", "1", "--out-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "report_20000.json").read_text())
    assert result["rows"] == 20000 == result["read_only_rows"] and result["tracks"] > 0 and result["best_s"] > 0
    assert result["same_report"] is True and result["blocks"] == result["tracks"] and result["backfill"] is None
    assert result["rows_path"]["best_s"] > 0 and result["speedup"]["report"] > 0


def test_bench_backfills_a_kept_log_from_before_label_blocks(tmp_path):
    from benchmarks.report_bench import run

    keep = tmp_path / "old.sqlite"
    generate(keep, 6_000, cameras=2, seed=4, blocks=False)
    result = run(rows=6_000, cameras=2, repeats=1, keep=keep, out_dir=tmp_path)
    assert result["backfill"]["rows"] == 6_000 and result["same_report"] is True
    assert result["backfill"]["bytes_after"] >= result["backfill"]["bytes_before"]
    assert_invariant(keep)
