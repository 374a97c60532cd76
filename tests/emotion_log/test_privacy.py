"""Privacy controls on the emotion log: retention pruning and per-track erasure."""

from __future__ import annotations

import time

import pytest
from typer.testing import CliRunner

from fer_pipeline.cli import app
from fer_pipeline.emotion_log.sqlite import SqliteStore
from fer_pipeline.emotion_log.store import open_store
from tests.factories import make_label

NOW = time.time()


@pytest.fixture
def log(tmp_path):
    path = tmp_path / "log.sqlite"
    with SqliteStore(path) as s:
        # Three days ago, one hour ago: two runs of camera "door" and one of "hall".
        s.add([make_label(camera_id="door", track_id=1, frame_index=i, captured_at=NOW - 3 * 86400 + i)
               for i in range(4)])
        s.add([make_label(camera_id="door", track_id=2, frame_index=10 + i, captured_at=NOW - 3600 + i)
               for i in range(3)])
        s.add([make_label(camera_id="door", run_id="r2", track_id=1, frame_index=i, captured_at=NOW - 60 + i)
               for i in range(2)])
        s.add([make_label(camera_id="hall-secret-name", track_id=1, frame_index=i, captured_at=NOW - 60 + i)
               for i in range(5)])
    return path


def test_prune_deletes_only_old_rows(log):
    with SqliteStore(log) as s:
        assert s.prune(NOW - 86400, dry_run=True) == 4 and s.count() == 14
        assert s.prune(NOW - 86400) == 4
        assert s.count() == 10 and s.timeline("door", 1, run_id="r1") == []
        assert s.prune(NOW - 86400) == 0


def test_erase_a_track_a_run_or_a_camera(log):
    with SqliteStore(log) as s:
        assert s.erase("door", 1, dry_run=True) == 6
        assert s.erase("door", 1, run_id="r2") == 2 and len(s.timeline("door", 1)) == 4
        assert s.erase("door", 1) == 4 and s.count("door") == 3
        assert s.erase("door'; DELETE FROM labels; --") == 0 and s.count() == 8
        assert s.erase("hall-secret-name") == 5 and s.count() == 3


def test_erased_values_do_not_linger_in_the_files(log):
    with SqliteStore(log) as s:
        s.erase("hall-secret-name")
    data = b"".join(p.read_bytes() for p in log.parent.glob("log.sqlite*"))
    assert b"hall-secret-name" not in data


def test_open_store_picks_sqlite_for_paths(log):
    with open_store(log) as s:
        assert isinstance(s, SqliteStore) and s.count() == 14


@pytest.mark.parametrize("command", [["prune", "--older-than", "1"], ["erase", "--camera", "door"], ["reindex"]])
def test_commands_that_change_the_log_refuse_a_missing_one(command, tmp_path):
    """A mistyped --db is an error, not a new empty log (and directories) reported as done."""
    missing = tmp_path / "no" / "such.sqlite"
    r = CliRunner().invoke(app, [*command, "--db", str(missing)])
    assert r.exit_code != 0 and "no emotion log at" in str(r.exception)
    assert not missing.parent.exists()


def test_prune_and_erase_commands(log, monkeypatch):
    runner = CliRunner()
    r = runner.invoke(app, ["prune", "--older-than", "1", "--db", str(log), "--dry-run"])
    assert r.exit_code == 0 and "would delete 4 rows" in r.output
    r = runner.invoke(app, ["prune", "--older-than", "1", "--db", str(log)])
    assert r.exit_code == 0 and "deleted 4 rows" in r.output
    r = runner.invoke(app, ["erase", "--camera", "door", "--track", "2", "--db", str(log)])
    assert r.exit_code == 0 and "erased 3 rows of camera 'door' track 2" in r.output
    # The retention default comes from the settings.
    monkeypatch.setenv("FER_CONSUMER__LOG_RETENTION_DAYS", "0.0001")
    r = runner.invoke(app, ["prune", "--db", str(log)])
    assert r.exit_code == 0 and "deleted 7 rows" in r.output
    monkeypatch.delenv("FER_CONSUMER__LOG_RETENTION_DAYS")
    r = runner.invoke(app, ["prune", "--db", str(log)])
    assert r.exit_code != 0 and "--older-than" in str(r.exception)
