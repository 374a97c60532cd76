"""SIGTERM or Ctrl-C (SIGINT) to `fer-pipeline up` mid-run: producers stop, workers finish
and ack their batch, consumers flush; exit code 0 and nothing left pending."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fer_pipeline import health
from fer_pipeline.streams import DISPLAY_GROUP, LOGGER_GROUP, WORKERS_GROUP
from fer_pipeline.transport import Transport
from tests.faults.conftest import client_for, log_rows, replay_spec, stats, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(120)]

FACES = 600  # 300 frames at 30 fps: 10 s, interrupted long before the end


def children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_up_cleanly_with_nothing_pending(sig, redis_settings, data_dir, tmp_path, record):
    prefix, url = redis_settings.redis.prefix, redis_settings.redis.url
    out = tmp_path / "out"
    db = out / "emotions.sqlite"
    up = subprocess.Popen(
        [sys.executable, "-m", "fer_pipeline", "up", "--source", replay_spec(data_dir, fps=30, limit=FACES),
         "--camera-id", "replay", "--redis-url", url, "--prefix", prefix, "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_until(lambda: len(log_rows(db)) >= 20 or up.poll() is not None, 90, "the first rows in the log")
        assert up.poll() is None, up.communicate()
        children = children_of(up.pid)
        assert len(children) >= 4  # logger, display, worker, producer
        up.send_signal(sig)
        stdout, stderr = up.communicate(timeout=90)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        # `up` stops its children; one left behind would be a bug, and must not outlive the test.
        leftovers = [pid for pid in children if os.path.exists(f"/proc/{pid}")]
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
    assert not leftovers

    assert up.returncode == 0, stdout[-2000:] + stderr[-2000:]
    assert "stopped (interrupted)" in stdout
    assert "Traceback" not in stderr and "warning: not everything was drained" not in stderr
    r = client_for(redis_settings)
    figures = stats(r, prefix)
    published = figures[f"published:{prefix}:crops"]
    assert 0 < published < FACES  # the producer stopped early
    rows = log_rows(db)
    assert len(rows) == published and len({row[0] for row in rows}) == published
    t = Transport.connect(redis_settings)
    try:
        assert t.backlog(f"{prefix}:crops", WORKERS_GROUP) == (0, 0)
        assert t.backlog(f"{prefix}:labels", LOGGER_GROUP) == (0, 0)
        assert t.backlog(f"{prefix}:labels", DISPLAY_GROUP) == (0, 0)
        assert t.backlog(f"{prefix}:frames:replay", DISPLAY_GROUP) == (0, 0)
        assert not health.alive_processes(t)  # every process cleared its heartbeat on the way out
    finally:
        t.close()
    for log in (out / "logs").glob("*.log"):
        assert "Traceback" not in log.read_text(), log.read_text()[-2000:]
    record(signal=sig.name, faces_in_source=FACES, published=published,
           labels_published=figures[f"published:{prefix}:labels"], rows_in_log=len(rows),
           dead_letters=figures.get("dead_letters", 0), exit_code=up.returncode)


def test_kill_9_of_up_takes_its_children_and_its_broker_with_it(data_dir, tmp_path, record):
    """Nothing outlives `up`, even when it cannot stop them itself: every child notices its
    parent is gone and stops, and the embedded redis-server gets SIGTERM from the kernel."""
    out = tmp_path / "out"
    up = subprocess.Popen(
        [sys.executable, "-m", "fer_pipeline", "up", "--source", replay_spec(data_dir, fps=30, limit=FACES),
         "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_until(lambda: len(log_rows(out / "emotions.sqlite")) >= 20 or up.poll() is not None, 90,
                   "the first rows in the log")
        assert up.poll() is None, up.communicate()
        children = children_of(up.pid)
        assert len(children) >= 5  # redis-server, logger, display, worker, producer
        up.kill()
        up.communicate(timeout=10)
        wait_until(lambda: not any(os.path.exists(f"/proc/{pid}") and _alive(pid) for pid in children), 30,
                   "the children and the broker to stop")
    finally:
        leftovers = [pid for pid in children_of(up.pid) if _alive(pid)] if up.poll() is None else []
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
    record(children=len(children))


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited (its reaper is init now)


def test_a_crashed_child_is_restarted_with_backoff_and_given_up_on(tmp_path, monkeypatch, redis_settings):
    from fer_pipeline import supervisor as sup_module
    from fer_pipeline.supervisor import Supervisor

    monkeypatch.setattr(sup_module, "RESTART_BACKOFF_S", 0.01)
    t = Transport.connect(redis_settings)
    try:
        sup = Supervisor(redis_settings, t, tmp_path / "logs")
        crash = sup.add("worker-0", "worker", ["worker", "--model", str(tmp_path / "missing.json")])  # exits 1
        sup.start()
        wait_until(lambda: bool(sup.restart_crashed()), 120, "five restarts, then giving up")
        assert crash.restarts == sup_module.MAX_RESTARTS and crash.returncode == 1
        assert crash.log_path.read_text().count("[up] worker-0 exited with 1; restart") == sup_module.MAX_RESTARTS
    finally:
        t.close()
