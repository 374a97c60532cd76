"""Fault-injection helpers: real role processes (`python -m fer_pipeline <role>`), waiting with
deadlines, reading the log and the stream counters, and a figures report.

Every process a test starts is killed in the fixture's teardown, whatever happened, and
every key lives under the test's unique prefix (removed by ``redis_settings``).
Set ``FER_FAULTS_REPORT=path.json`` to collect each test's figures (RELIABILITY.md quotes them).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from fer_pipeline.settings import Settings
from fer_pipeline.supervisor import settings_env

REPLAY = "fer2013_publictest.npz"
_FIGURES: dict[str, dict] = {}


def replay_spec(data_dir: Path, *, fps: float = 60, faces: int = 2, limit: int = 300) -> str:
    """A labelled replay source: exactly ``limit`` crops, ``faces`` per frame, at ``fps``."""
    return f"replay:{data_dir / REPLAY}?fps={fps:g}&faces={faces}&limit={limit}"


def wait_until(predicate: Callable[[], object], timeout_s: float, what: str, every_s: float = 0.1):
    """Poll ``predicate`` until it returns something truthy; fail the test with ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(every_s)


@dataclass
class Proc:
    """One role process; its stdout+stderr go to ``log_path``."""

    name: str
    args: list[str]
    log_path: Path
    popen: subprocess.Popen

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive:
            self.popen.send_signal(sig)

    def wait(self, timeout_s: float) -> int:
        return self.popen.wait(timeout=timeout_s)

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM (a warm stop) and the exit code."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout_s)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def counters(self) -> dict[str, float]:
        """The ``stopped ...: k=v ...`` line every service logs when it ends (the last one wins)."""
        lines = [ln for ln in self.log().splitlines() if " stopped after " in ln]
        if not lines:
            return {}
        return {k: float(v) for k, v in re.findall(r"(\w+)=(-?\d+(?:\.\d+)?)(?=\s|$)", lines[-1].split(" stopped after ", 1)[1])}


@dataclass
class Cluster:
    """Starts role processes for one test and kills whatever is left in teardown."""

    settings: Settings
    log_dir: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, role: str, *args: str, settings: Settings | None = None) -> Proc:
        s = settings or self.settings
        env = settings_env(s)
        env["FER_LOG_LEVEL"] = "INFO"
        argv = [sys.executable, "-m", "fer_pipeline", role, "--redis-url", s.redis.url, "--prefix", s.redis.prefix,
                *args]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as log:
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        proc = Proc(name, argv, log_path, popen)
        self.procs.append(proc)
        return proc

    def kill_all(self) -> None:
        for p in self.procs:
            if p.alive:
                p.popen.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(timeout=10)


@pytest.fixture
def cluster(redis_settings, tmp_path):
    c = Cluster(redis_settings, tmp_path / "logs")
    try:
        yield c
    finally:
        c.kill_all()


def client_for(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis.url, socket_timeout=5)


def stats(client: redis.Redis, prefix: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in client.hgetall(f"{prefix}:stats").items()}


def alive_roles(client: redis.Redis, prefix: str) -> set[str]:
    """``role:ident`` of every process whose heartbeat is live."""
    return {k.decode().split(":", 2)[2] for k in client.scan_iter(match=f"{prefix}:health:*", count=500)}


def wait_alive(client: redis.Redis, prefix: str, names: set[str], procs: list[Proc], timeout_s: float = 60) -> None:
    """Wait until every named process heartbeats; fail early with its log when one died."""
    def ready():
        for p in procs:
            if not p.alive:
                raise AssertionError(f"{p.name} exited with {p.popen.returncode}: {p.log()[-2000:]}")
        return names <= alive_roles(client, prefix)

    wait_until(ready, timeout_s, f"heartbeats of {sorted(names)}")


def log_rows(db: Path) -> list[tuple]:
    """(crop_id, camera_id, worker_id) of every row in the emotion log (empty when not created yet)."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return con.execute("SELECT crop_id, camera_id, worker_id FROM labels").fetchall()
    except sqlite3.OperationalError:  # the logger has not created the table yet
        return []


def group_info(client: redis.Redis, stream: str, group: str) -> dict:
    """XINFO GROUPS entry of ``group`` (pending, lag, last-delivered-id), {} when absent."""
    try:
        groups = client.xinfo_groups(stream)
    except redis.ResponseError:
        return {}
    for g in groups:
        name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
        if name == group:
            return g
    return {}


@pytest.fixture
def record(request):
    """Record a test's figures for the reliability report."""
    def _record(**figures) -> None:
        _FIGURES[request.node.name] = figures
    return _record


def pytest_sessionfinish(session, exitstatus):
    target = os.environ.get("FER_FAULTS_REPORT")
    if target and _FIGURES:
        Path(target).write_text(json.dumps(_FIGURES, indent=2, sort_keys=True) + "\n")
