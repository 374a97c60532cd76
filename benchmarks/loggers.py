"""Loggers: labels/s into the emotion log, end to end and the database's own limit, side by side.

    python -m benchmarks loggers [--quick]      or      python -m benchmarks.loggers

A labels stream on the real Redis is filled beforehand with worker-shaped bundles (64 labels
an entry, ``Label.pack_batch`` as the worker encodes them; 8 cameras x 2 faces at 30 fps,
tracks of 10 s), under a unique key prefix. Then, per configuration, K real logger
processes (``python -m fer_pipeline logger --db ...``) in the one logger group start, and
only once every one of them is up is the group pointed at the start of the stream
(``XGROUP SETID``): the clock runs from there until the log holds every label. Start-up
(imports, opening the log) is outside the measurement; the first read may wait out one
``block_ms`` (500 ms by default), which is inside it.

PostgreSQL: each configuration writes into its own fresh schema (``?options=-csearch_path``)
that is dropped afterwards. SQLite: one logger into a fresh file (one writer is what SQLite
allows). The database's own limit: ``store.add`` in this process with no Redis, the same
labels already decoded, in batches of the logger's size (``label_logger.BATCH``).

Every PostgreSQL writer takes the label blocks' advisory lock for its whole insert
transaction (``emotion_log/postgres.py``), so several loggers share the stream's reading
and decoding but take turns at the database. On a 2-core machine (PostgreSQL, Redis and the
loggers on the same two cores), 4 loggers measure contention, not scaling.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from benchmarks._common import (  # noqa: E402
    DEFAULT_REDIS_URL,
    cpu_seconds,
    delete_prefix,
    finish,
    int_list,
    machine_info,
    redis_client,
    section,
    table,
    unique_prefix,
)
from benchmarks._harness import Proc, child_env, spawn, stop, wait_for  # noqa: E402
from fer_pipeline.settings import Settings  # noqa: E402

DEFAULT_PG_URL = os.environ.get("FER_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
CAMERAS = 8
FACES = 2
FPS = 30.0
TRACK_S = 10.0  # a face keeps its track id this long (the label blocks group by track)
WORKER_BATCH = 64  # labels per stream entry, as a worker publishes a full batch
POLL_S = 0.2


# -- labels ------------------------------------------------------------------------------------------------------
def make_payloads(n: int, *, cameras: int = CAMERAS, faces: int = FACES, seed: int = 0) -> list[bytes]:
    """``n`` label messages as workers publish them: ``cameras`` cameras at 30 fps with ``faces``
    faces a frame, in capture order, random probabilities, unique crop ids (a fresh run id)."""
    from fer_pipeline.messages import BBox, FaceCrop, Label

    rng = np.random.default_rng(seed)
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    t0 = time.time() - n / (cameras * faces * FPS)
    crops = []
    for i in range(n):
        frame, rest = divmod(i, cameras * faces)
        camera, face = divmod(rest, faces)
        captured = t0 + frame / FPS
        # model_construct: pack_batch reads fields only, and these are valid by construction.
        crops.append(FaceCrop.model_construct(
            camera_id=f"cam{camera}", run_id=run_id, frame_index=frame, face_index=face, faces_in_frame=faces,
            track_id=face + faces * int(frame / FPS // TRACK_S), bbox=BBox(x=40 + face * 80, y=30, w=60, h=60),
            captured_at=captured, position_s=None, published_at=captured + 0.01, crop=b"", truth=None))
    out: list[bytes] = []
    for i in range(0, n, WORKER_BATCH):
        chunk = crops[i:i + WORKER_BATCH]
        logits = rng.normal(size=(len(chunk), 7))
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        out += Label.pack_batch(chunk, probs, model_id="bench", worker_id="bench-w0",
                                inferred_at=chunk[0].captured_at + 0.02)
    return out


# -- pure helpers (tested) ---------------------------------------------------------------------------------------
def steady_rate(series: Sequence[tuple[float, int]], total: int, lo: float = 0.1, hi: float = 0.9) -> float | None:
    """Rows/s between the polls where the log first held ``lo`` and ``hi`` of ``total`` rows
    (start-up and the last partial batches left out); None when the series is too short."""
    a = next(((t, n) for t, n in series if n >= lo * total), None)
    b = next(((t, n) for t, n in series if n >= hi * total), None)
    if a is None or b is None or b[0] <= a[0]:
        return None
    return (b[1] - a[1]) / (b[0] - a[0])


def pg_schema_url(url: str, schema: str) -> str:
    """``url`` selecting ``schema`` the libpq way (the store's documented way)."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


# -- databases ---------------------------------------------------------------------------------------------------
class PgSchemas:
    """Fresh schemas in one PostgreSQL, each dropped on close (never the public schema)."""

    def __init__(self, url: str) -> None:
        from fer_pipeline.emotion_log.postgres import connect

        self.url, self.admin = url, connect(url)
        self.made: list[str] = []

    def new(self, tag: str) -> str:
        name = f"bench_{tag}_{uuid.uuid4().hex[:8]}"
        self.admin.execute(f'CREATE SCHEMA "{name}"')
        self.made.append(name)
        return pg_schema_url(self.url, name)

    def count(self, url: str) -> int:
        schema = url.rsplit("%3D", 1)[1]
        try:
            return int(self.admin.execute(f'SELECT COUNT(*) FROM "{schema}".labels').fetchone()[0])
        except Exception:  # noqa: BLE001 - the table is not created yet
            return 0

    def close(self) -> None:
        for name in self.made:
            self.admin.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        self.admin.close()


def sqlite_count(path: Path) -> int:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM labels").fetchone()[0])
    except sqlite3.Error:
        return 0


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (/proc/stat), for a busy fraction."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / tick, sum(fields) / tick


# -- end to end: K logger processes ------------------------------------------------------------------------------
def run_loggers(base: Settings, payloads: list[bytes], k: int, db: str, count: Callable[[], int], log_dir: Path,
                tag: str, timeout_s: float) -> dict:
    """Fill a labels stream, start ``k`` loggers, release the stream to them, time until logged."""
    from fer_pipeline.streams import LOGGER_GROUP
    from fer_pipeline.transport import Transport

    settings = base.with_updates(redis={"prefix": unique_prefix(f"log-{tag}")})
    transport = Transport.connect(settings)
    client, keys = redis_client(settings), transport.keys
    procs: list[Proc] = []
    n = len(payloads)
    try:
        for i in range(0, n, WORKER_BATCH * 16):
            transport.publish(keys.labels, payloads[i:i + WORKER_BATCH * 16], n + 1)
        # The group exists before the loggers, at the end of the filled stream ("$" on an empty
        # stream would be its start): they start with nothing to read until the release.
        transport.ensure_group(keys.labels, LOGGER_GROUP, start="$")
        env = child_env(settings)
        idents = [f"bench-l{i}" for i in range(k)]
        procs = [spawn(f"{tag}-{ident}", ["logger", "--redis-url", str(settings.redis.url), "--prefix",
                                          settings.redis.prefix, "--db", db, "--ident", ident], env, log_dir)
                 for ident in idents]
        wait_for(lambda: all(client.exists(keys.health("logger", i)) for i in idents), 90,
                 f"{k} logger(s) to start", procs)
        cpu0 = [cpu_seconds(p.popen.pid) or 0.0 for p in procs]
        busy0, total0 = machine_busy_seconds()
        client.xgroup_setid(keys.labels, LOGGER_GROUP, "0")  # the release
        t0 = time.monotonic()
        series: list[tuple[float, int]] = [(0.0, 0)]
        while series[-1][1] < n:
            if time.monotonic() - t0 > timeout_s:
                raise RuntimeError(f"{tag}: {series[-1][1]:,} of {n:,} labels logged after {timeout_s:.0f}s")
            dead = [p for p in procs if p.popen.poll() is not None]
            if dead:
                raise RuntimeError(f"{dead[0].name} exited with {dead[0].popen.returncode}:\n{dead[0].tail()}")
            time.sleep(POLL_S)
            series.append((time.monotonic() - t0, count()))
        elapsed = series[-1][0]
        cpu1 = [cpu_seconds(p.popen.pid) or 0.0 for p in procs]
        busy1, total1 = machine_busy_seconds()
    finally:
        codes = stop(procs) if procs else {}
        delete_prefix(client, settings.redis.prefix)
        transport.close()
    logged = series[-1][1]
    cpu = [b - a for a, b in zip(cpu0, cpu1)]
    return {"loggers": k, "labels": n, "logged": logged, "seconds": elapsed, "labels_per_s": logged / elapsed,
            "steady_labels_per_s": steady_rate(series, n), "logger_cpu_s": cpu,
            "logger_cpu_per_label_us": 1e6 * sum(cpu) / logged if logged else None,
            "machine_busy": (busy1 - busy0) / (total1 - total0) if total1 > total0 else None,
            "exit_codes": codes, "series": series}


# -- the database alone --------------------------------------------------------------------------------------------
def store_rate(db: str, labels: list, batch: int) -> dict:
    """``store.add`` of every label in this process, ``batch`` at a time (decoded beforehand)."""
    from fer_pipeline.emotion_log.store import open_store

    store = open_store(db)
    try:
        cpu0, t0 = time.process_time(), time.perf_counter()
        inserted = sum(store.add(labels[i:i + batch]) for i in range(0, len(labels), batch))
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        store.close()
    return {"labels": len(labels), "inserted": inserted, "batch": batch, "seconds": elapsed,
            "labels_per_s": inserted / elapsed, "client_cpu_per_label_us": 1e6 * cpu / max(1, inserted)}


# -- the run -----------------------------------------------------------------------------------------------------
HEADERS = ["log", "writers", "labels", "seconds", "labels/s", "steady labels/s", "logger CPU µs/label",
           "machine busy %"]


def rows(results: dict) -> list[list]:
    out = []
    for r in results["store"]:
        out.append([r["db"], "store.add, no Redis", r["labels"], r["seconds"], r["labels_per_s"], None,
                    r["client_cpu_per_label_us"], None])
    for r in results["end_to_end"]:
        out.append([r["db"], f"{r['loggers']} logger process(es)", r["labels"], r["seconds"], r["labels_per_s"],
                    r["steady_labels_per_s"], r["logger_cpu_per_label_us"],
                    None if r["machine_busy"] is None else 100 * r["machine_busy"]])
    return out


def run(*, loggers: Sequence[int] = (1, 2, 4), labels: int = 60_000, quick: bool = False,
        redis_url: str = DEFAULT_REDIS_URL, pg_url: str = DEFAULT_PG_URL, sqlite: bool = True,
        out_dir: Path | None = None) -> dict:
    """Store rates and K-logger end-to-end rates, PostgreSQL and SQLite; write ``loggers.json``."""
    from fer_pipeline.consumers.label_logger import BATCH
    from fer_pipeline.messages import Label, decode

    if quick:
        labels, loggers = min(labels, 6_000), tuple(k for k in loggers if k <= 2) or (1,)
    base = Settings(_env_file=None).with_updates(redis={"url": redis_url})
    machine = machine_info()
    print(f"load {machine['load_avg_1_5_15']}; busy: {machine['busy_processes'] or 'none'}; "
          f"{machine['logical_cpus']} CPUs (PostgreSQL, Redis and the loggers share them)", flush=True)
    payloads = make_payloads(labels)
    decoded = [decode(p, expect=Label) for p in payloads]
    results: dict = {"settings": {"loggers": list(loggers), "labels": labels, "cameras": CAMERAS, "faces": FACES,
                                  "labels_per_entry": WORKER_BATCH, "logger_batch": BATCH, "quick": quick,
                                  "block_ms": base.streams.block_ms,
                                  "label_bytes_mean": sum(map(len, payloads)) / len(payloads)},
                     "store": [], "end_to_end": []}
    schemas = PgSchemas(pg_url)
    try:
        with tempfile.TemporaryDirectory(prefix="fer-bench-loggers-") as tmp:
            log_dir = Path(tmp)
            section("The database alone: store.add in this process, no Redis")
            r = store_rate(schemas.new("store"), decoded, BATCH)
            results["store"].append({"db": "postgresql", **r})
            if sqlite:
                r = store_rate(str(log_dir / "store.sqlite"), decoded, BATCH)
                results["store"].append({"db": "sqlite", **r})
            print(table(HEADERS, rows(results)), flush=True)
            section(f"End to end: K logger processes, one group, a pre-filled labels stream of {labels:,}")
            for k in loggers:
                url = schemas.new(f"k{k}")
                r = run_loggers(base, payloads, k, url, functools.partial(schemas.count, url), log_dir, f"pg{k}",
                                timeout_s=max(120.0, labels / 200))
                results["end_to_end"].append({"db": "postgresql", **r})
                print(table(HEADERS, rows({"store": [], "end_to_end": [results["end_to_end"][-1]]})), flush=True)
            if sqlite:
                path = log_dir / "e2e.sqlite"
                r = run_loggers(base, payloads, 1, str(path), lambda: sqlite_count(path), log_dir, "sqlite1",
                                timeout_s=max(120.0, labels / 200))
                results["end_to_end"].append({"db": "sqlite", **r})
    finally:
        schemas.close()
    section("All, side by side")
    print(table(HEADERS, rows(results)))
    results["headline"] = headline(results)
    finish("loggers", results, machine, out_dir)
    return results


def headline(results: dict) -> dict:
    out: dict = {}
    for r in results["store"]:
        out[f"{r['db']}_store_add_labels_per_s"] = r["labels_per_s"]
    for r in results["end_to_end"]:
        out[f"{r['db']}_{r['loggers']}_loggers_labels_per_s"] = r["labels_per_s"]
    one = next((r for r in results["end_to_end"] if r["db"] == "postgresql" and r["loggers"] == 1), None)
    for r in results["end_to_end"]:
        if one is not None and r["db"] == "postgresql" and r["loggers"] > 1:
            out[f"postgresql_{r['loggers']}_loggers_vs_1"] = r["labels_per_s"] / one["labels_per_s"]
    out["every_label_logged_once"] = all(r["logged"] == r["labels"] for r in results["end_to_end"])
    out["every_exit_code_zero"] = all(c == 0 for r in results["end_to_end"] for c in r["exit_codes"].values())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loggers", type=int_list, default=(1, 2, 4), help="comma-separated PostgreSQL logger counts")
    ap.add_argument("--labels", type=int, default=60_000, help="labels in the pre-filled stream (and per store run)")
    ap.add_argument("--no-sqlite", action="store_true", help="skip the SQLite reference")
    ap.add_argument("--quick", action="store_true", help="a smoke run (figures not comparable)")
    ap.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    ap.add_argument("--pg-url", default=DEFAULT_PG_URL, help="a PostgreSQL database (schemas made and dropped)")
    ap.add_argument("--out-dir", type=Path, help="where to write loggers.json (default benchmarks/results)")
    a = ap.parse_args(argv)
    run(loggers=a.loggers, labels=a.labels, quick=a.quick, redis_url=a.redis_url, pg_url=a.pg_url,
        sqlite=not a.no_sqlite, out_dir=a.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
