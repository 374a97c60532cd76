"""`fer-pipeline up`: the whole pipeline on one machine, one OS process per role.

Children are the same commands a multi-machine deployment runs (`fer-pipeline worker`, ...),
started in their own sessions so a terminal Ctrl-C reaches only the supervisor, which then
stops them in dependency order (frigate's ordered stop): producers first, then workers
once the crops stream is drained, then display and logger once they have read every label.
Settings travel to the children as JSON environment variables (``FER_<SECTION>``), so every
process runs with the one settings object the user built.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from fer_pipeline.run_ids import restarted
from fer_pipeline.service import PARENT_ENV
from fer_pipeline.settings import Settings
from fer_pipeline.streams import LOGGER_GROUP, WORKERS_GROUP
from fer_pipeline.transport import Transport

STOP_WAIT_S = 20.0
_STOPPED = re.compile(r" stopped after [0-9.]+s: (.*)$", re.M)
_FIELD = re.compile(r"(\w+)=(-?[0-9.]+)(?=\s|$)")
MAX_RESTARTS = 5  # a child that crashes more often is left down (and `up` stops, exit 1)
RESTART_BACKOFF_S = 1.0


@dataclass
class Child:
    """One child process of `up`: its name, role, CLI arguments, log file and, once started, its process."""

    name: str
    role: str
    args: list[str]
    log_path: Path
    popen: subprocess.Popen | None = None
    restarts: int = 0
    restart_at: float | None = None  # monotonic time of the next restart after a crash
    group: str | None = None  # a sink's consumer group on the labels stream (its backlog is drained at stop)
    # Settings of this child only, over the pipeline's (``Settings.with_updates`` sections): a
    # sink's target URL, the dashboard's token, which no other child needs to hold.
    settings_update: dict[str, dict] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        """Whether the process has been started and has not exited yet."""
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit status, or None before the start and while the process runs."""
        return None if self.popen is None else self.popen.poll()

    def final_counters(self) -> Counter[str] | None:
        """The counters of every run of this child, summed, from the ``stopped after`` line each
        run logs last (service.py); None when a run ended without one (it crashed)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return None
        runs = _STOPPED.findall(text)
        if len(runs) != 1 + self.restarts:
            return None
        total: Counter[str] = Counter()
        for fields in runs:
            for key, value in _FIELD.findall(fields):
                with contextlib.suppress(ValueError):
                    total[key] += int(float(value))
        return total

    def log_tail(self, lines: int = 3) -> str:
        """The last ``lines`` lines of the child's log joined by `` | ``; empty if the log is unreadable."""
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as environment variables a child's ``Settings()`` reads back unchanged."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FER_")}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        # Secrets travel as their values (a child must read back the same token), never in a log.
        env[f"FER_{name.upper()}"] = (value.model_dump_json(context={"reveal_secrets": True})
                                      if hasattr(value, "model_dump_json") else str(value))
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Supervisor:
    """The children of `up`: starts them, watches their backlog in Redis and stops them in
    dependency order."""

    settings: Settings
    transport: Transport
    log_dir: Path
    children: list[Child] = field(default_factory=list)
    stopping: bool = False

    def add(self, name: str, role: str, args: list[str], *, group: str | None = None,
            settings_update: dict[str, dict] | None = None) -> Child:
        """Register a child (not started yet) that logs to ``<log_dir>/<name>.log``; returns it.
        ``group``: a sink's consumer group on the labels stream, drained before it stops;
        ``settings_update``: settings of this child only (secrets travel in its environment,
        never in its arguments, which every local user can read)."""
        child = Child(name, role, args, self.log_dir / f"{name}.log", group=group,
                      settings_update=settings_update or {})
        self.children.append(child)
        return child

    def add_workers(self, n: int, ident_prefix: str) -> None:
        """``n`` inference workers with fixed consumer names (``<ident_prefix>-<i>``): a restarted
        worker takes its own pending crops back at once."""
        for i in range(n):
            self.add(f"worker-{i}", "worker", ["worker", "--ident", f"{ident_prefix}-{i}"])

    def add_producers(self, specs: list[str], camera_ids: list[str] | None = None) -> None:
        """One producer per source spec (with its camera id, when given). The source travels in
        the child's environment (FER_PRODUCER__SOURCES), not its arguments: a camera URL may
        hold a password, and every local user can read a process's arguments (ps)."""
        for i, spec in enumerate(specs):
            args = ["producer"] + (["--camera-id", camera_ids[i]] if camera_ids else [])
            self.add(f"producer-{i}", "producer", args, settings_update={"producer": {"sources": [spec]}})

    def start(self) -> None:
        """Start every child with the settings in its environment: consumers first, then workers,
        then producers, each in its own session with output appended to its log."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # A sink's group starts at the labels to come ("$", so that a new sink does not replay a
        # stream's history): made here, before any child starts, it takes every label of this
        # run even when the sink process is slower to start than the first labels are to come.
        for sink in self.role("sink"):
            if sink.group:
                self.transport.ensure_group(self.transport.keys.labels, sink.group, start="$")
        # Consumers first so they are in their groups before the first label exists.
        order = {"logger": 0, "display": 1, "sink": 1, "dashboard": 1, "worker": 2, "producer": 3}
        for child in sorted(self.children, key=lambda c: order.get(c.role, 9)):
            self._spawn(child)

    def child_settings(self, child: Child) -> Settings:
        """The settings ``child`` starts with: the pipeline's, except that a restarted producer
        continues the run under a run id of its own (``<run>~<n>``): its frame numbers start
        again, and the first start's run id would make its crop ids repeat (which the log
        would take for duplicates)."""
        settings = self.settings.with_updates(**child.settings_update) if child.settings_update else self.settings
        run_id = settings.producer.run_id
        if child.role == "producer" and run_id and child.restarts:
            return settings.with_updates(producer={"run_id": restarted(run_id, child.restarts)})
        return settings

    def _spawn(self, child: Child) -> None:
        env = settings_env(self.child_settings(child))
        # Each child watches for this process: if `up` dies, even by kill -9, they stop in
        # order by themselves (service.py) instead of running on unsupervised.
        env[PARENT_ENV] = str(os.getpid())
        log = child.log_path.open("ab")
        try:
            child.popen = subprocess.Popen(
                [sys.executable, "-m", "fer_pipeline", *child.args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )
        finally:
            log.close()

    def essential(self, children: list[Child]) -> list[Child]:
        """Those of ``children`` the pipeline cannot go on without: not the sinks or the
        dashboard, side outputs whose failure must not stop the cameras (each is reported)."""
        return [c for c in children if c.role not in OPTIONAL_ROLES]

    def restart_crashed(self) -> list[Child]:
        """Restart the children that crashed (nonzero exit), each after a backoff that doubles
        with its restarts (1 s to 30 s); returns those that crashed more than ``MAX_RESTARTS``
        times, which are left down. A producer that ended (exit 0) is done, not crashed."""
        given_up = []
        now = time.monotonic()
        for c in self.children:
            if self.stopping or c.returncode in (None, 0):
                continue
            if c.restarts >= MAX_RESTARTS:
                given_up.append(c)
            elif c.restart_at is None:
                c.restart_at = now + min(RESTART_BACKOFF_S * 2 ** c.restarts, 30.0)
            elif now >= c.restart_at:
                c.restarts += 1
                c.restart_at = None
                with c.log_path.open("a") as log:
                    log.write(f"\n[up] {c.name} exited with {c.returncode}; restart {c.restarts} of {MAX_RESTARTS}\n")
                self._spawn(c)
        return given_up

    def role(self, role: str) -> list[Child]:
        """The children that play ``role``."""
        return [c for c in self.children if c.role == role]

    def producers_done(self) -> bool:
        """Whether every producer has ended and none waits for a restart (a crash is restarted)."""
        return all(c.returncode == 0 or (c.returncode is not None and c.restarts >= MAX_RESTARTS)
                   for c in self.role("producer"))

    def failed(self) -> list[Child]:
        """The children that exited with a nonzero status."""
        return [c for c in self.children if c.returncode not in (None, 0)]

    def signal_role(self, role: str, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` (SIGTERM by default) to the running children of ``role``."""
        for c in self.role(role):
            if c.running and c.popen is not None:
                c.popen.send_signal(sig)

    def wait_role(self, role: str, timeout_s: float = STOP_WAIT_S) -> None:
        """Wait up to ``timeout_s`` in all for the children of ``role`` to exit; kill those still
        running at the deadline (their unacked work stays pending in Redis)."""
        deadline = time.monotonic() + timeout_s
        for c in self.role(role):
            if c.popen is None:
                continue
            try:
                c.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                c.popen.kill()  # did not honour SIGTERM in time: its work stays pending in Redis
                c.popen.wait()

    def final_counters(self) -> dict[str, list[Counter[str]]]:
        """Per role, each child's final counters, for the roles where every child logged them."""
        out: dict[str, list[Counter[str]]] = {}
        for role in {c.role for c in self.children}:
            counters = [c.final_counters() for c in self.role(role)]
            if all(x is not None for x in counters):
                out[role] = [x for x in counters if x is not None]
        return out

    def unaccounted(self) -> dict[str, int] | None:
        """What no process's own counters account for, from their final log lines: crops
        published but neither labelled nor dead-lettered by a worker, labels published but
        neither logged (or found duplicate) nor dead-lettered by the logger. These vanished
        inside Redis: lost with its memory on a restart without persistence, or trimmed. None
        when a process's final counters are missing (it crashed) or a stage did not run."""
        per_role: dict[str, Counter[str]] = {}
        for c in self.children:
            if c.role not in ("producer", "worker", "logger"):
                continue  # the display, sinks and dashboard read labels without accounting for them
            counters = c.final_counters()
            if counters is None:
                return None
            per_role.setdefault(c.role, Counter()).update(counters)
        if not {"producer", "worker", "logger"} <= set(per_role):
            return None
        p, w, lg = per_role["producer"], per_role["worker"], per_role["logger"]
        return {"crops": p["crops_published"] - w["crops_labelled"] - w["dead_letters"],
                "labels": w["crops_labelled"] - lg["labels_logged"] - lg["duplicates_ignored"] - lg["dead_letters"]}

    def backlog(self) -> dict[str, tuple[int, int]]:
        """(undelivered, pending) per stage: crops for workers, labels for each consumer."""
        keys = self.transport.keys
        out = {"workers": self.transport.backlog(keys.crops, WORKERS_GROUP)}
        if self.role("logger"):
            out["logger"] = self.transport.backlog(keys.labels, LOGGER_GROUP)
        for sink in self.role("sink"):
            if sink.group:
                out[sink.name] = self.transport.backlog(keys.labels, sink.group)
        if self.role("display"):
            group = self.transport.settings.consumer.display_group
            out["display"] = self.transport.backlog(keys.labels, group)
            for cam in self.transport.camera_ids():
                lag, pending = self.transport.backlog(keys.frames(cam), group)
                d = out["display"]
                out["display"] = (d[0] + lag, d[1] + pending)
        return out

    def wait_drained(self, stages: tuple[str, ...], *, idle_timeout_s: float, tick=None) -> bool:
        """Wait until the stages hold nothing; give up after ``idle_timeout_s`` without progress."""
        last, last_change = None, time.monotonic()
        while True:
            b = self.backlog()
            now = {s: b[s] for s in stages if s in b}
            if all(v == (0, 0) for v in now.values()):
                return True
            if now != last:
                last, last_change = now, time.monotonic()
            elif time.monotonic() - last_change > idle_timeout_s:
                return False
            if not any(c.running for s in stages for c in self._stage_children(s)):
                return False
            if tick:
                tick()
            time.sleep(0.2)

    def _stage_children(self, stage: str) -> list[Child]:
        """The children that empty ``stage``: a role's (``workers`` is the worker role's), or one sink's by name."""
        return [c for c in self.children if c.name == stage and c.role == "sink"] or self.role(_role_of(stage))

    def stop(self, *, drain: bool, tick=None) -> dict[str, bool]:
        """Ordered stop; returns whether each stage drained."""
        self.stopping = True
        drained = {}
        self.signal_role("producer")
        self.wait_role("producer")
        drained["workers"] = self.wait_drained(("workers",), idle_timeout_s=30 if drain else 5, tick=tick)
        self.signal_role("worker")
        self.wait_role("worker")
        consumers = ("logger", "display", *(c.name for c in self.role("sink")))
        drained["consumers"] = self.wait_drained(consumers, idle_timeout_s=30 if drain else 5, tick=tick)
        for role in ("display", "logger", "sink"):
            self.signal_role(role)
        for role in ("display", "logger", "sink"):
            self.wait_role(role)
        # The dashboard last: it shows the run ending.
        self.signal_role("dashboard")
        self.wait_role("dashboard")
        return drained

    def kill_all(self) -> None:
        """Kill every running child at once and reap it: no ordered stop, nothing drained."""
        for c in self.children:
            if c.running and c.popen is not None:
                c.popen.kill()
                c.popen.wait()


OPTIONAL_ROLES = ("sink", "dashboard")


def _role_of(stage: str) -> str:
    return "worker" if stage == "workers" else stage
