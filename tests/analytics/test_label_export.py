"""`report --export FORMAT --labels`: one row per label of the report's selection, its smoothed
state the one the report counted, written in batches."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest
from typer.testing import CliRunner

from fer_pipeline.analytics.episodes import build_report
from fer_pipeline.analytics.label_export import COLUMNS, export_labels
from fer_pipeline.analytics.options import STATES, ReportOptions
from fer_pipeline.cli import app
from fer_pipeline.emotion_log.reader import ConnectionLog
from fer_pipeline.emotion_log.sqlite import SqliteStore
from fer_pipeline.emotion_log.store import open_store
from fer_pipeline.errors import ConfigError
from tests.conftest import pg_schema
from tests.logs import NEW, T0, random_log, two_demo_runs


def read_csv(path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def states_per_track(rows) -> Counter:
    return Counter((r["camera_id"], r["run_id"], int(r["track_id"]), r["state"]) for r in rows)


def report_states(rep) -> Counter:
    return Counter({(t["camera_id"], t["run_id"], t["track_id"], s): t[f"n_{s}"] for t in rep.tracks
                    for s in STATES if t[f"n_{s}"]})


def test_csv_rows_of_the_latest_run(log, tmp_path):
    rep = build_report(log, ReportOptions(run="latest"))
    path, n = export_labels(log, rep.options, "csv", tmp_path / "x")
    rows = read_csv(path)
    assert path.name == "labels.csv" and n == len(rows) == rep.labels_read == 135
    assert list(rows[0]) == list(COLUMNS)
    assert {r["run_id"] for r in rows} == {NEW, f"{NEW}~1"}
    assert states_per_track(rows) == report_states(rep)
    first = rows[0]
    assert (first["camera_id"], first["frame_index"], first["emotion"]) == ("cam0", "0", "happy")
    assert float(first["captured_at_epoch"]) == T0 + 3600 and first["captured_at"] == "2023-11-14T23:13:20.000Z"
    # Seconds since the run's first label on the camera, the restart counted in the run.
    restart = [r for r in rows if r["run_id"] == f"{NEW}~1"]
    assert float(restart[0]["video_time_s"]) == 100.0 and restart[0]["frame_index"] == "1000"
    assert [float(r["video_time_s"]) for r in rows if r["camera_id"] == "cam1"][:2] == [0.0, pytest.approx(1 / 30,
                                                                                                         abs=1e-3)]
    assert sum(float(r[f"p_{e}"]) for e in STATES[:-1] for r in rows[:1]) == pytest.approx(1.0, abs=1e-5)


def test_batches_rows_path_and_formats_give_the_same_rows(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow (the report extra) not installed")
    path = tmp_path / "log.sqlite"
    random_log(path)  # two runs interleaving inside track ids, gaps, small faces
    rep = build_report(path, ReportOptions(run="all"))
    whole, n = export_labels(path, rep.options, "csv", tmp_path / "a")
    rows = read_csv(whole)
    assert n == rep.labels_read and states_per_track(rows) == report_states(rep)
    from dataclasses import replace

    for options, where in ((replace(rep.options, chunk_rows=1), "b"), (replace(rep.options, chunk_rows=7), "c"),
                           (replace(rep.options, blocks=False, chunk_rows=100), "d")):
        assert read_csv(export_labels(path, options, "csv", tmp_path / where)[0]) == rows, where
    lines = export_labels(path, rep.options, "json", tmp_path / "j")[0].read_text().splitlines()
    assert [json.loads(x)["state"] for x in lines] == [r["state"] for r in rows]
    table = pq.read_table(export_labels(path, rep.options, "parquet", tmp_path / "p")[0])
    assert table.column_names == list(COLUMNS) and table.num_rows == len(rows)
    assert table.column("video_time_s").to_pylist() == [float(r["video_time_s"]) for r in rows]


def test_cli_labels_export(log, tmp_path):
    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["report", "--db", str(log), "--export", "csv", "--labels", "--export-dir", str(out),
                                 "--smooth", "1"])
    assert r.exit_code == 0, r.output
    assert f"wrote {out / 'labels.csv'} (135 labels)" in r.output.replace("\n", "")
    assert {p.name for p in out.iterdir()} == {"cameras.csv", "tracks.csv", "episodes.csv", "transitions.csv",
                                               "labels.csv"}
    bad = CliRunner().invoke(app, ["report", "--db", str(log), "--labels"])
    assert bad.exit_code != 0 and "--labels writes a file of --export's format" in str(bad.exception)
    with pytest.raises(ConfigError):
        export_labels(log, ReportOptions(), "xlsx", tmp_path / "x")


def test_help_shows_each_default_once_the_typer_way():
    r = CliRunner().invoke(app, ["report", "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    text = " ".join(r.output.split())
    for default in ("[default: latest]", "[default: 5]", "[default: out/report]", "[default: --min-dwell]",
                    "[default: FER_CONSUMER__DB, or out/emotions.sqlite]", "[default: every camera]"):
        assert default in text, default
    assert "--window" not in text and "--out " not in text and "(default:" not in text


def test_postgres_export_equals_sqlite(log, tmp_path):
    psycopg = pytest.importorskip("psycopg", reason="psycopg (the postgres extra) not installed")
    want = read_csv(export_labels(log, build_report(log, ReportOptions(run="latest")).options, "csv",
                                  tmp_path / "s")[0])
    with pg_schema("fer_export") as url:
        with open_store(url) as s:
            s.add(two_demo_runs())
        conn = psycopg.connect(url)
        try:
            source = ConnectionLog(conn, "postgres")
            rep = build_report(source, ReportOptions(run="latest", chunk_rows=16))
            got = read_csv(export_labels(source, rep.options, "csv", tmp_path / "p")[0])
        finally:
            conn.close()
    assert got == want


def test_the_video_position_is_exported_and_empty_where_the_log_has_none(tmp_path):
    import sqlite3

    from tests.emotion_log.previous import old_insert, old_row, old_schema
    from tests.factories import make_label

    labels = [make_label(frame_index=i, captured_at=T0 + i / 10, position_s=i / 30) for i in range(6)]
    with SqliteStore(tmp_path / "new.sqlite") as s:
        s.add(labels)
    path, _ = export_labels(tmp_path / "new.sqlite", ReportOptions(run="all"), "csv", tmp_path / "new")
    assert [float(r["position_s"]) for r in read_csv(path)] == pytest.approx([i / 30 for i in range(6)])
    # A log of the version before position_s, never written by this one (report reads it read-only).
    with sqlite3.connect(tmp_path / "old.sqlite") as con:
        con.executescript(old_schema("sqlite"))
        con.executemany(old_insert("?"), [old_row(label) for label in labels])
    path, n = export_labels(tmp_path / "old.sqlite", ReportOptions(run="all"), "csv", tmp_path / "old")
    assert n == 6 and {r["position_s"] for r in read_csv(path)} == {""}


def test_a_postgres_error_while_exporting_is_one_line(tmp_path):
    with pg_schema("fer_export_err") as url:
        from fer_pipeline.emotion_log.postgres import connect

        conn = connect(url)  # an empty schema: no labels table to read
        try:
            with pytest.raises(ConfigError, match="cannot read the emotion log: relation \"labels\" does not exist"):
                export_labels(ConnectionLog(conn, "postgres"), ReportOptions(run="all"), "csv", tmp_path)
        finally:
            conn.close()
