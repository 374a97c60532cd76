"""Capacity ingredients: message sizes, and per-crop CPU of every role and of Redis, measured on
a private Redis so that nothing else's commands are counted (BENCHMARKS.md, section 6).

    python -m benchmarks capacity      or      python -m benchmarks.capacity

Starts its own ``redis-server`` (the system one, on a free loopback port, no persistence,
removed afterwards), then runs real processes as the pipeline benchmark does (one replay
producer with K cameras, W workers, the SQLite logger) for each point, and reads over a
measured window: labels/s, CPU seconds of the producer, the workers, the logger and Redis
(``INFO cpu``), Redis's own time per command (``INFO commandstats``: calls, usec) and the
bytes Redis received and sent (``INFO stats``). Per crop, each is what the capacity model
multiplies by faces/s.

The first point is where the ingredients come from, the later ones check the model's
prediction (see ``predict``) against what was measured.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from benchmarks._common import cpu_seconds, data_dir, finish, machine_info, section, table  # noqa: E402
from benchmarks._harness import Pool, fresh_heartbeat, spawn, stop, wait_for  # noqa: E402
from fer_pipeline.settings import Settings  # noqa: E402

FPS = 30.0
# (cameras, faces per frame, workers). The first saturates one worker (full batches, as a pool
# sized for its load runs): its per-crop costs are the ingredients; the others check them.
POINTS = ((24, 8, 1), (16, 4, 1), (8, 2, 1))


# -- message sizes -------------------------------------------------------------------------------------------
def message_sizes() -> dict:
    """Bytes of a crop and of a label as the producer and the worker encode them, and of
    their bundles (64 a entry) per message."""
    from fer_pipeline import bundles
    from fer_pipeline.messages import FaceCrop, Label, decode

    pixels = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    now = time.time()
    crops = [FaceCrop.pack(pixels, camera_id=f"cam{i % 8}", run_id="20261203-191500-ab12cd", frame_index=100_000 + i,
                           face_index=i % 2, faces_in_frame=2, track_id=i % 2, bbox=(120, 80, 96, 96),
                           captured_at=now, published_at=now + 0.01) for i in range(64)]
    models = [decode(c, expect=FaceCrop) for c in crops]
    logits = np.random.default_rng(1).normal(size=(64, 7))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = Label.pack_batch(models, probs, model_id="compact-20261126-012200", worker_id="host-12345",
                              inferred_at=now + 0.02)
    crop_bundle = bundles.pack(crops)[0][0]
    label_bundle = bundles.pack(labels)[0][0]
    return {"crop_bytes": float(np.mean([len(c) for c in crops])), "label_bytes": float(np.mean([len(x) for x in labels])),
            "crop_bytes_in_bundle_of_64": len(crop_bundle) / 64, "label_bytes_in_bundle_of_64": len(label_bundle) / 64}


# -- a private Redis -----------------------------------------------------------------------------------------
class PrivateRedis:
    """``redis-server`` on a free loopback port, no persistence; stopped and removed on close."""

    def __init__(self, binary: str | None = None) -> None:
        binary = binary or shutil.which("redis-server", path="/usr/bin:/usr/local/bin") or shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server not found")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir = tempfile.mkdtemp(prefix="fer-bench-redis-")
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", self.dir, "--hz", "10"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        import redis

        self.client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.version = self.client.info("server")["redis_version"]

    def snapshot(self) -> dict:
        cpu = self.client.info("cpu")
        stats = self.client.info("stats")
        cmds = self.client.info("commandstats")
        return {"cpu_s": cpu["used_cpu_user"] + cpu["used_cpu_sys"],
                "cpu_main_s": cpu.get("used_cpu_user_main_thread", 0) + cpu.get("used_cpu_sys_main_thread", 0),
                "net_in": stats["total_net_input_bytes"], "net_out": stats["total_net_output_bytes"],
                "cmds": {k.removeprefix("cmdstat_"): (v["calls"], v["usec"]) for k, v in cmds.items()}}

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def diff(a: dict, b: dict) -> dict:
    cmds = {}
    for name, (calls, usec) in b["cmds"].items():
        c0, u0 = a["cmds"].get(name, (0, 0))
        if calls > c0:
            cmds[name] = {"calls": calls - c0, "usec": usec - u0}
    return {"cpu_s": b["cpu_s"] - a["cpu_s"], "cpu_main_s": b["cpu_main_s"] - a["cpu_main_s"],
            "net_in": b["net_in"] - a["net_in"], "net_out": b["net_out"] - a["net_out"], "cmds": cmds}


# -- one point ------------------------------------------------------------------------------------------------
def measure_point(base: Settings, redis: PrivateRedis, cameras: int, faces: int, workers: int, npz: Path,
                  log_dir: Path, window_s: float, warmup_s: float) -> dict:
    tag = f"cap{cameras}x{faces}w{workers}"
    pool = Pool(base, workers, log_dir, tag)
    try:
        ident = f"bench-producer-{tag}"
        args = ["producer", "--ident", ident, "--no-frames", "--realtime"]
        for i in range(cameras):
            args += ["--source", f"replay:{npz}?fps={FPS:g}&faces={faces}&loop=1", "--camera-id", f"{tag}-c{i}"]
        producer = spawn(f"{tag}-producer", args, pool.env, log_dir)
        try:
            wait_for(lambda: pool.client.exists(pool.keys.health("producer", ident)), 60, "the producer", [producer])
            time.sleep(warmup_s)
            p0, t0 = fresh_heartbeat(pool.client, pool.keys, "producer", ident)
            w0, r0 = pool.worker_totals(), redis.snapshot()
            cpu0 = {"producer": cpu_seconds(producer.popen.pid), "workers": pool.worker_cpu(),
                    "logger": cpu_seconds(pool.logger.popen.pid)}
            time.sleep(window_s)
            p1, t1 = fresh_heartbeat(pool.client, pool.keys, "producer", ident)
            w1, r1 = pool.worker_totals(), redis.snapshot()
            cpu1 = {"producer": cpu_seconds(producer.popen.pid), "workers": pool.worker_cpu(),
                    "logger": cpu_seconds(pool.logger.popen.pid)}
        finally:
            stop([producer])
        pool.drain()
    finally:
        closed = pool.close()
    span = t1 - t0
    labelled = w1.get("crops_labelled", 0) - w0.get("crops_labelled", 0)
    r = diff(r0, r1)
    cpu = {k: (cpu1[k] or 0) - (cpu0[k] or 0) for k in cpu0}
    cpu["redis"] = r["cpu_s"]
    per_crop = 1e6 / labelled if labelled else float("nan")
    return {
        "cameras": cameras, "faces_per_frame": faces, "workers": workers, "window_s": span,
        "offered_faces_per_s": cameras * faces * FPS, "frames_per_s": (p1.get("frames", 0) - p0.get("frames", 0)) / span,
        "labelled_per_s": labelled / span,
        "crops_dropped": p1.get("crops_dropped", 0) - p0.get("crops_dropped", 0),
        "mean_batch": labelled / max(1, w1.get("batches", 0) - w0.get("batches", 0)),
        "cores": {k: v / span for k, v in cpu.items()},
        "cpu_us_per_crop": {k: v * per_crop for k, v in cpu.items()},
        # commandstats: a command inside MULTI or a script is counted on its own and also in
        # EXEC's/EVAL's time, so these are per command, not a sum; Redis's CPU is in "cores".
        "redis_commands": {k: {**v, "usec_per_call": v["usec"] / v["calls"], "per_crop": v["calls"] / labelled}
                           for k, v in sorted(r["cmds"].items(), key=lambda kv: -kv[1]["usec"])},
        # Redis's CPU goes with round trips more than crops: every producer round and worker batch
        # is one MULTI ... EXEC (bundles), so per EXEC is the unit the model scales by.
        "redis_round_trips_per_s": r["cmds"].get("exec", {}).get("calls", 0) / span,
        "redis_cpu_us_per_round_trip": 1e6 * r["cpu_s"] / max(1, r["cmds"].get("exec", {}).get("calls", 0)),
        "producer_cpu_us_per_frame": 1e6 * cpu["producer"] / max(1.0, p1.get("frames", 0) - p0.get("frames", 0)),
        "redis_net_in_bytes_per_crop": r["net_in"] / labelled if labelled else None,
        "redis_net_out_bytes_per_crop": r["net_out"] / labelled if labelled else None,
        "labels_logged_equals_published": closed["labels_logged"] == closed["labels_published"],
    }


def predict(ingredients: dict, point: dict) -> dict:
    """Cores per role at ``point``'s rates from the first point's unit costs: the producer per
    frame, the workers and the logger per crop, Redis per round trip (MULTI/EXEC)."""
    per_crop = ingredients["cpu_us_per_crop"]
    crops = point["labelled_per_s"]
    return {"producer": ingredients["producer_cpu_us_per_frame"] * point["frames_per_s"] / 1e6,
            "workers": per_crop["workers"] * crops / 1e6, "logger": per_crop["logger"] * crops / 1e6,
            "redis": ingredients["redis_cpu_us_per_round_trip"] * point["redis_round_trips_per_s"] / 1e6}


def run(*, points=POINTS, window_s: float = 12.0, warmup_s: float = 3.0, npz: Path | None = None,
        out_dir: Path | None = None) -> dict:
    npz = Path(npz) if npz is not None else data_dir() / "fer2013_publictest.npz"
    if not npz.is_file():
        raise FileNotFoundError(f"replay data not found: {npz} (set FER_DATA_DIR)")
    results: dict = {"sizes": message_sizes(), "points": []}
    section("Message sizes (bytes)")
    print(table(["figure", "bytes"], [[k, v] for k, v in results["sizes"].items()]))
    redis = PrivateRedis()
    try:
        base = Settings(_env_file=None).with_updates(redis={"url": redis.url})
        machine = machine_info(base.worker.model)
        machine["private_redis_version"] = redis.version
        results["settings"] = {"points": [list(p) for p in points], "window_s": window_s, "warmup_s": warmup_s,
                               "fps": FPS, "replay": str(npz)}
        with tempfile.TemporaryDirectory(prefix="fer-bench-cap-") as tmp:
            for cameras, faces, workers in points:
                section(f"{cameras} replay cameras x {faces} faces at {FPS:g} fps, {workers} worker(s)")
                r = measure_point(base, redis, cameras, faces, workers, npz, Path(tmp), window_s, warmup_s)
                results["points"].append(r)
                print(table(["role", "cores", "CPU µs/crop"],
                            [[k, r["cores"][k], r["cpu_us_per_crop"][k]] for k in r["cores"]], digits=2))
                print(table(["Redis command", "calls per crop", "µs per call"],
                            [[k, v["per_crop"], v["usec_per_call"]] for k, v in list(r["redis_commands"].items())[:8]],
                            digits=2))
                print(f"labelled {r['labelled_per_s']:,.0f}/s of {r['offered_faces_per_s']:,.0f} offered, dropped "
                      f"{r['crops_dropped']}, mean batch {r['mean_batch']:.1f}; Redis net in/out "
                      f"{r['redis_net_in_bytes_per_crop']:,.0f}/{r['redis_net_out_bytes_per_crop']:,.0f} B/crop",
                      flush=True)
    finally:
        redis.close()
    first = results["points"][0]
    for p in results["points"][1:]:
        pred = predict(first, p)
        p["predicted_cores_from_first_point"] = pred
        p["prediction_error"] = {k: (pred[k] - p["cores"][k]) / p["cores"][k] if p["cores"][k] else None for k in pred}
        total_pred, total = sum(pred.values()), sum(p["cores"].values())
        p["prediction_error"]["total"] = (total_pred - total) / total if total else None
    results["headline"] = {
        "crop_bytes": results["sizes"]["crop_bytes"], "label_bytes": results["sizes"]["label_bytes"],
        **{f"p{i}_{k}_us_per_crop": v for i, p in enumerate(results["points"]) for k, v in p["cpu_us_per_crop"].items()},
        **{f"p{i}_total_error": p.get("prediction_error", {}).get("total") for i, p in enumerate(results["points"])
           if i},
    }
    finish("capacity", results, machine, out_dir)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--window", type=float, default=12.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--point", action="append", help="CAMERAS,FACES,WORKERS (repeatable; the first gives the "
                    "ingredients) [default: 8,2,1 and 24,4,1]")
    ap.add_argument("--npz", type=Path)
    ap.add_argument("--out-dir", type=Path)
    a = ap.parse_args(argv)
    points = tuple(tuple(int(v) for v in p.split(",")) for p in a.point) if a.point else POINTS
    run(points=points, window_s=a.window, warmup_s=a.warmup, npz=a.npz, out_dir=a.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
