"""`report --run`: latest (the default of the CLI), all, or one run with its restarts; the same
choice from the label blocks and from the rows, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fer_pipeline.analytics.episodes import build_report
from fer_pipeline.analytics.options import ReportOptions
from fer_pipeline.analytics.scope import resolve
from fer_pipeline.cli import app
from fer_pipeline.emotion_log.reader import ConnectionLog, SqliteLog
from fer_pipeline.emotion_log.sqlite import SqliteStore
from fer_pipeline.emotion_log.store import open_store
from fer_pipeline.errors import ConfigError
from fer_pipeline.run_ids import base_run
from tests.conftest import pg_schema
from tests.logs import NEW, OLD, T0, same_report, track_labels, two_demo_runs


def test_resolve_folds_restarts_into_their_run():
    times = {"a": 10.0, "b": 20.0, "a~1": 30.0, "a~2": 25.0, "c~x": 5.0}
    assert base_run("a~12") == "a" and base_run("c~x") == "c~x" and base_run("~1") == "~1"
    latest = resolve("latest", times)
    # a's restart has the newest label, so run a (all three ids) is the latest of three runs.
    assert latest.chosen == "a" and latest.run_ids == ("a", "a~1", "a~2") and latest.runs == ("a", "b", "c~x")
    assert latest.describe() == "run a with 2 restarts (latest of 3; --run all for every run)"
    everything = resolve("all", times)
    assert everything.run_ids == () and everything.chosen is None and everything.describe() == "all 3 runs"
    assert resolve("b", times).run_ids == ("b",) and resolve("b", times).describe() == (
        "run b (one of 3 runs; --run all for every run)")
    assert resolve("a~1", times).run_ids == ("a~1",)  # one restart alone, when asked by its id
    assert resolve("latest", {"x": 1.0}).describe() == "run x (the only run)"
    # Equal newest times: the greater id, so the choice never depends on the query's row order.
    assert resolve("latest", {"r1": 5.0, "r2": 5.0}).chosen == "r2"
    assert resolve("latest", {}).nothing and resolve("all", {}).describe() == "no run has labels in the selection"
    with pytest.raises(ConfigError, match="no run 'zz'.*newest first: a, b, c~x"):
        resolve("zz", times)


@pytest.mark.parametrize("blocks", [True, False])
def test_latest_all_and_one_run(log, blocks):
    def keys(run, **kw):
        rep = build_report(log, ReportOptions(run=run, blocks=blocks, **kw))
        return sorted((t["camera_id"], t["run_id"], t["track_id"], t["labels"]) for t in rep.tracks), rep

    latest, rep = keys("latest")
    # Every track once: the second demo run only, its restart included.
    assert latest == [("cam0", NEW, 1, 60), ("cam0", f"{NEW}~1", 1, 30), ("cam1", NEW, 1, 45)]
    assert rep.scope.describe() == f"run {NEW} with 1 restart (latest of 2; --run all for every run)"
    everything, rep = keys("all")
    assert len(everything) == 5 and rep.labels_read == 2 * 105 + 30 and rep.scope.describe() == "all 2 runs"
    assert keys(OLD)[0] == [("cam0", OLD, 1, 60), ("cam1", OLD, 1, 45)]
    assert keys(NEW)[0] == latest
    # The latest within the other filters: before the second run started, the first is the latest.
    assert keys("latest", until=T0 + 1000)[0] == keys(OLD)[0]
    assert keys("latest", cameras=("cam1",))[0] == [("cam1", NEW, 1, 45)]
    with pytest.raises(ConfigError, match="no run 'nope'"):
        keys("nope")


def test_latest_with_until_inside_a_block_is_exact(tmp_path):
    """``until`` cuts through the two runs' blocks: the newest label before it decides, not the
    blocks' ends (run b's block ends later, but run a has the last label before ``until``)."""
    path = tmp_path / "log.sqlite"
    with SqliteStore(path) as s:
        s.add(track_labels(["happy"] * 100, run_id="a", start=T0 + 0.01))  # labels at T0 + 0.01 + i/30
        s.add(track_labels(["sad"] * 300, run_id="b", track_id=2, start=T0))  # labels at T0 + i/30
    with SqliteLog(path) as log:
        assert log.blocks
    until = T0 + 2.0
    for blocks in (True, False):
        rep = build_report(path, ReportOptions(run="latest", until=until, blocks=blocks))
        assert rep.scope.chosen == "a", blocks
    assert build_report(path, ReportOptions(run="latest")).scope.chosen == "b"


def test_reports_from_blocks_and_rows_agree_per_run(log):
    for run in ("latest", "all", OLD):
        assert same_report(build_report(log, ReportOptions(run=run)),
                           build_report(log, ReportOptions(run=run, blocks=False))), run


def test_cli_defaults_to_the_latest_run_and_says_so(log, tmp_path):
    r = CliRunner().invoke(app, ["report", "--db", str(log), "--export", "json", "--export-dir", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert f"run {NEW} with 1 restart (latest of 2; --run all for every run)" in r.output
    assert "135 labels, 3 tracks" in r.output
    doc = json.loads((tmp_path / "o" / "report.json").read_text())
    assert doc["runs"]["chosen"] == NEW and doc["runs"]["run_ids"] == [NEW, f"{NEW}~1"]
    assert len(doc["tracks"]) == 3
    r = CliRunner().invoke(app, ["report", "--db", str(log), "--run", "all"])
    assert r.exit_code == 0 and "all 2 runs" in r.output and "240 labels, 5 tracks" in r.output
    r = CliRunner().invoke(app, ["report", "--db", str(log), "--run", "missing"])
    assert r.exit_code != 0 and "no run 'missing'" in str(r.exception)


def test_postgres_chooses_the_same_runs(log):
    psycopg = pytest.importorskip("psycopg", reason="psycopg (the postgres extra) not installed")
    with pg_schema("fer_scope") as url:
        with open_store(url) as s:
            s.add(two_demo_runs())
        conn = psycopg.connect(url)
        try:
            for run in ("latest", "all", OLD):
                for blocks in (True, False):
                    pg = build_report(ConnectionLog(conn, "postgres"), ReportOptions(run=run, blocks=blocks))
                    lite = build_report(log, ReportOptions(run=run))
                    assert pg.scope == lite.scope and pg.tracks == lite.tracks, (run, blocks)
            until = build_report(ConnectionLog(conn, "postgres"), ReportOptions(run="latest", until=T0 + 1000))
            assert until.scope.chosen == OLD
        finally:
            conn.close()
