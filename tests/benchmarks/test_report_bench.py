"""The report benchmark's synthetic log: the logger's schema, copies that are new people."""

from __future__ import annotations

import sqlite3

from benchmarks.synth_log import generate
from fer_pipeline.consumers.analytics import ReportOptions
from fer_pipeline.consumers.episodes import build_report


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


def test_read_only_reads_what_the_report_reads(tmp_path):
    from benchmarks.report_bench import read_only

    path = tmp_path / "log.sqlite"
    generate(path, 4_000, cameras=3, seed=2)
    for threads in (1, 2):
        seconds, rows, used = read_only(path, ReportOptions(threads=threads))
        assert rows == build_report(path, ReportOptions(threads=threads)).labels_read == 4_000
        assert used == threads and seconds >= 0


def test_bench_report_command_writes_its_json(tmp_path):
    """`fer-pipeline bench report` end to end on a small generated log."""
    import json

    from typer.testing import CliRunner

    from fer_pipeline.cli import app

    r = CliRunner().invoke(app, ["bench", "report", "--rows", "20000", "--repeats", "1", "--out-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "report_20000.json").read_text())
    assert result["rows"] == 20000 == result["read_only_rows"] and result["tracks"] > 0 and result["best_s"] > 0
