"""Process and measurement plumbing for the end-to-end benchmarks (``pipeline.py``, ``cameras.py``):
spawning and stopping real role processes, a pool of workers and the logger, a label reader that
timestamps arrivals, a sampler of backlog and memory, and exact-to-a-poll heartbeat snapshots."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks._common import cpu_seconds, delete_prefix, redis_client, rss_mb, unique_prefix
from fer_pipeline.settings import Settings
from fer_pipeline.transport import messages_held

STOP_TIMEOUT_S = 20.0
SAMPLE_EVERY_S = 0.5


# -- processes ----------------------------------------------------------------------------------------------
@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def tail(self, lines: int = 5) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def spawn(name: str, args: list[str], env: dict[str, str], log_dir: Path) -> Proc:
    """Start ``python -m fer_pipeline <args>`` in its own session (a terminal Ctrl-C reaches only us)."""
    log = log_dir / f"{name}.log"
    with log.open("ab") as fh:
        popen = subprocess.Popen([sys.executable, "-m", "fer_pipeline", *args], stdin=subprocess.DEVNULL,
                                 stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return Proc(name, popen, log)


def stop(procs: list[Proc], timeout_s: float = STOP_TIMEOUT_S) -> dict[str, int]:
    """SIGTERM (a warm stop: finish the batch, ack), then SIGKILL whoever is still there; exit codes."""
    for p in procs:
        if p.popen.poll() is None:
            p.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    codes = {}
    for p in procs:
        try:
            codes[p.name] = p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.popen.kill()
            codes[p.name] = p.popen.wait()
    return codes


def child_env(settings: Settings) -> dict[str, str]:
    from fer_pipeline.supervisor import settings_env

    env = settings_env(settings)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


# -- measurement --------------------------------------------------------------------------------------------------
@dataclass
class Observed:
    """One label seen by the reader."""

    camera_id: str
    captured_at: float
    published_at: float
    inferred_at: float
    received_at: float
    correct: bool | None
    frame_index: int = -1  # the crop's frame: the real-video run times each camera's frames by it


class LabelReader(threading.Thread):
    """Reads every new label (XREAD from "$"), keeping what latency and accuracy need."""

    def __init__(self, client, stream: str) -> None:
        super().__init__(daemon=True, name="label-reader")
        self.client = client
        self.stream = stream
        self.seen: list[Observed] = []
        self.stop_event = threading.Event()
        self.last_id = client.xinfo_stream(stream)["last-generated-id"] if client.exists(stream) else "0-0"
        self.lock = threading.Lock()

    def run(self) -> None:
        import msgpack

        from fer_pipeline import bundles

        while not self.stop_event.is_set():
            reply = self.client.xread({self.stream: self.last_id}, count=100, block=100)
            now = time.time()
            batch = []
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    self.last_id = entry_id
                    for payload in bundles.unpack(fields)[0]:  # a labels entry is a worker's batch
                        m = msgpack.unpackb(payload, raw=False)
                        truth = m.get("truth")
                        batch.append(Observed(m["camera_id"], m["captured_at"], m["published_at"], m["inferred_at"],
                                              now, None if truth is None else truth == m["emotion"],
                                              m.get("frame_index", -1)))
            if batch:
                with self.lock:
                    self.seen.extend(batch)

    def snapshot(self) -> list[Observed]:
        with self.lock:
            return list(self.seen)

    def close(self) -> None:
        self.stop_event.set()
        self.join(2)


@dataclass
class Samples:
    backlog: list[int] = field(default_factory=list)
    crops_memory_mb: list[float] = field(default_factory=list)
    labels_memory_mb: list[float] = field(default_factory=list)
    redis_used_mb: list[float] = field(default_factory=list)
    worker_rss_mb: list[float] = field(default_factory=list)
    producer_rss_mb: list[float] = field(default_factory=list)


class Sampler(threading.Thread):
    """Every ``SAMPLE_EVERY_S``: crops backlog, memory of the run's streams, Redis memory, RSS."""

    def __init__(self, client, keys, workers: list[Proc], producer: Proc | None) -> None:
        super().__init__(daemon=True, name="sampler")
        self.client, self.keys, self.workers, self.producer = client, keys, workers, producer
        self.samples = Samples()
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(SAMPLE_EVERY_S):
            s = self.samples
            pipe = self.client.pipeline(transaction=False)
            pipe.xlen(self.keys.crops)
            pipe.hget(self.keys.depth, self.keys.crops)  # crops held (the stream's entries are bundles)
            pipe.memory_usage(self.keys.crops, samples=0)
            pipe.memory_usage(self.keys.labels, samples=0)
            pipe.info("memory")
            entries, held, crops_mem, labels_mem, info = pipe.execute()
            s.backlog.append(messages_held(entries, held))
            s.crops_memory_mb.append((crops_mem or 0) / 2**20)
            s.labels_memory_mb.append((labels_mem or 0) / 2**20)
            s.redis_used_mb.append(info["used_memory"] / 2**20)
            s.worker_rss_mb.append(sum(rss_mb(w.popen.pid) or 0 for w in self.workers))
            if self.producer is not None:
                s.producer_rss_mb.append(rss_mb(self.producer.popen.pid) or 0)

    def close(self) -> Samples:
        self.stop_event.set()
        self.join(2)
        return self.samples


# -- a pool of workers and the logger -----------------------------------------------------------------------------
class Pool:
    """A logger and W workers on one prefix; producers come and go per measurement."""

    def __init__(self, base: Settings, workers: int, log_dir: Path, tag: str) -> None:
        from fer_pipeline.transport import Transport

        self.settings = base.with_updates(redis={"prefix": unique_prefix(tag)},
                                          consumer={"db": log_dir / f"{tag}.sqlite"},
                                          producer={"publish_frames": False, "realtime": True})
        self.env = child_env(self.settings)
        self.transport = Transport.connect(self.settings)
        self.client, self.keys = redis_client(self.settings), self.transport.keys
        self.log_dir = log_dir
        self.logger = spawn(f"{tag}-logger", ["logger", "--ident", "bench-logger"], self.env, log_dir)
        self.workers = [spawn(f"{tag}-worker{i}", ["worker", "--ident", f"bench-w{i}"], self.env, log_dir)
                        for i in range(workers)]
        try:
            wait_for(lambda: all(self.client.exists(self.keys.health("worker", f"bench-w{i}"))
                                 for i in range(workers))
                     and self.client.exists(self.keys.health("logger", "bench-logger")),
                     90, f"{workers} worker(s) and the logger to start", [self.logger, *self.workers])
        except BaseException:
            stop([*self.workers, self.logger])
            delete_prefix(self.client, self.settings.redis.prefix)
            self.transport.close()
            raise
        self.reader = LabelReader(self.client, self.keys.labels)
        self.reader.start()

    def worker_totals(self) -> dict[str, float]:
        tot: Counter[str] = Counter()
        for i in range(len(self.workers)):
            hb = heartbeat(self.client, self.keys, "worker", f"bench-w{i}")
            tot.update({k: hb.get(k, 0.0) for k in ("crops_labelled", "batches", "infer_ms")})
        return dict(tot)

    def worker_cpu(self) -> float:
        return sum(cpu_seconds(w.popen.pid) or 0.0 for w in self.workers)

    def drain(self, timeout_s: float = 60.0) -> float | None:
        """Seconds until the workers have labelled every queued crop (None: gave up)."""
        from fer_pipeline.streams import WORKERS_GROUP

        t = time.monotonic()
        while time.monotonic() - t < timeout_s:
            lag, pending = self.transport.backlog(self.keys.crops, WORKERS_GROUP)
            if lag == 0 and pending == 0:
                return time.monotonic() - t
            time.sleep(0.1)
        return None

    def close(self) -> dict:
        self.reader.close()
        codes = stop([*self.workers])
        # The logger stops after the workers so it reads every label first.
        time.sleep(0.5)
        codes.update(stop([self.logger]))
        logged = count_rows(self.settings.consumer.db)
        published = self.transport.stats().get(f"published:{self.keys.labels}", 0)
        delete_prefix(self.client, self.settings.redis.prefix)
        self.transport.close()
        return {"exit_codes": codes, "labels_published": published, "labels_logged": logged}


def heartbeat(client, keys, role: str, ident: str) -> dict[str, float]:
    raw = client.hgetall(keys.health(role, ident))
    out = {}
    for k, v in raw.items():
        with contextlib.suppress(ValueError):
            out[k.decode()] = float(v)
    return out


def fresh_heartbeat(client, keys, role: str, ident: str, timeout_s: float = 3.0) -> tuple[dict[str, float], float]:
    """The next heartbeat a process writes and when it appeared (heartbeats come about once a
    second, so a window bounded by fresh ones is exact to a poll interval, not to a second)."""
    first = heartbeat(client, keys, role, ident)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.01)
        now = heartbeat(client, keys, role, ident)
        if now and now != first:  # empty: caught between the heartbeat's DEL and HSET
            return now, time.time()
    return heartbeat(client, keys, role, ident), time.time()


def wait_for(cond, timeout_s: float, what: str, procs: list[Proc]) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        dead = [p for p in procs if p.popen.poll() is not None]
        if dead:
            raise RuntimeError(f"{dead[0].name} exited with {dead[0].popen.returncode} while waiting for {what}:\n"
                               f"{dead[0].tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.1)


def count_rows(db: Path) -> int | None:
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
    except sqlite3.Error:
        return None


def producer_finished(line: str) -> tuple[bool, dict | None]:
    """Whether a log line is a producer's "producer run X finished: {...}", and its counters
    (None when they do not parse)."""
    import ast

    head, sep, tail = line.partition(" finished: ")
    if not (sep and "producer run" in head):
        return False, None
    try:
        value = ast.literal_eval(tail.strip())
    except (ValueError, SyntaxError):
        return True, None
    return True, value if isinstance(value, dict) else None


def final_counters(proc: Proc) -> dict[str, int] | None:
    """The counters a producer logs when it ends: "producer run X finished: {...}" or the
    service's "producer ID stopped after Ns: k=v k=v" line, whichever comes last."""

    try:
        lines = proc.log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        is_finished, value = producer_finished(line)
        if is_finished:
            return value
        head, sep, tail = line.partition(" stopped after ")
        if sep and "producer" in head and ": " in tail:
            out = {}
            for pair in tail.split(": ", 1)[1].split():
                key, _, value = pair.partition("=")
                try:
                    out[key] = int(value)
                except ValueError:
                    continue
            return out
    return None
