"""`fer-pipeline report`: terminal tables, CSV/JSON/Parquet exports and the PNG plot."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from fer_pipeline.analytics.episodes import build_report
from fer_pipeline.analytics.options import ReportOptions
from fer_pipeline.analytics.render import export, plot, render
from fer_pipeline.cli import app
from fer_pipeline.emotion_log.sqlite import SqliteStore
from fer_pipeline.errors import ConfigError
from tests.logs import T0, track_labels


@pytest.fixture
def log(tmp_path):
    path = tmp_path / "log.sqlite"
    with SqliteStore(path) as s:
        s.add(track_labels(["happy"] * 60 + ["sad"] * 60, camera_id="door", track_id=1))
        s.add(track_labels(["angry"] * 45, camera_id="hall", track_id=4, start=T0 + 30))
    return path


def test_json_and_csv_exports_hold_every_table(log, tmp_path):
    rep = build_report(log, ReportOptions())
    (path,) = export(rep, "json", tmp_path / "j")
    doc = json.loads(path.read_text())
    assert doc["labels_read"] == 165 and doc["options"]["smooth"] == 5 and doc["options"]["release_s"] == 1.0
    assert [e["emotion"] for e in doc["episodes"]] == ["happy", "sad", "angry"]
    assert doc["transitions"] == [{"camera_id": "door", "from": "happy", "to": "sad", "count": 1}]
    files = export(rep, "csv", tmp_path / "c")
    assert sorted(p.name for p in files) == ["cameras.csv", "episodes.csv", "tracks.csv", "transitions.csv"]
    with (tmp_path / "c" / "tracks.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {(r["camera_id"], r["dominant"]) for r in rows} == {("door", "happy"), ("hall", "angry")}
    with pytest.raises(ConfigError):
        export(rep, "xlsx", tmp_path / "x")


def test_parquet_export(log, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow (the report extra) not installed")
    rep = build_report(log, ReportOptions())
    export(rep, "parquet", tmp_path / "p")
    table = pq.read_table(tmp_path / "p" / "episodes.parquet")
    assert table.num_rows == 3 and table.column("emotion").to_pylist() == ["happy", "sad", "angry"]


def test_plot_writes_a_png(log, tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib (the report extra) not installed")
    rep = build_report(log, ReportOptions())
    out = plot(rep, tmp_path / "plots" / "report.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    # An empty selection still gives a (blank) figure rather than an error.
    empty = build_report(log, ReportOptions(cameras=("nobody",)))
    assert plot(empty, tmp_path / "empty.png").is_file()


def test_render_tables(log):
    from rich.console import Console

    console = Console(record=True, width=200)
    for part in render(build_report(log, ReportOptions()), episodes=True):
        console.print(part)
    text = console.export_text()
    assert "165 labels, 2 tracks, 3 episodes" in text
    assert "door" in text and "hall" in text and "happy" in text and "transitions between episodes" in text


def test_report_cli(log, tmp_path):
    r = CliRunner().invoke(app, ["report", "--db", str(log), "--camera", "door", "--export", "json",
                                 "--export-dir", str(tmp_path / "out"), "--min-dwell", "0.5"])
    assert r.exit_code == 0, r.output
    assert "door" in r.output and "hall" not in r.output and "summarised in" in r.output
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {t["camera_id"] for t in doc["tracks"]} == {"door"} and doc["options"]["min_dwell_s"] == 0.5
    bad = CliRunner().invoke(app, ["report", "--db", str(log), "--export", "xml"])
    assert bad.exit_code != 0 and "--export must be one of" in str(bad.exception)
