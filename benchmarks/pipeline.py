"""End-to-end benchmark: K labelled replay cameras through the real Redis and W worker
processes, then an overload run (producers faster than the workers).

    python -m benchmarks pipeline [--quick]      or      python -m benchmarks.pipeline

Real processes are spawned (``python -m fer_pipeline producer|worker|logger``) under a
unique key prefix whose keys are deleted afterwards. A reader thread in this process takes
every label off the labels stream (plain XREAD, outside the consumer groups) and measures
capture->label latency as (arrival here) - (the crop's capture time).

Per configuration: sustained labelled faces/s, latency p50/p95/p99, frames the producer
could not make on time, crops dropped by the backlog policy or trimmed unread, Redis memory
of the run's keys, worker RSS and CPU, accuracy against the replayed truth labels.

Real video, N producers with real detection: ``cameras.py`` (``--real-video`` here forwards to it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (  # noqa: E402
    DEFAULT_REDIS_URL,
    data_dir,
    finish,
    int_list,
    machine_info,
    ratio,
    section,
    summarize_latencies,
    table,
)
from benchmarks._harness import (  # noqa: E402
    Pool,
    Sampler,
    Samples,
    child_env,
    final_counters,
    fresh_heartbeat,
    spawn,
    stop,
    wait_for,
)
from fer_pipeline.settings import Settings  # noqa: E402

FPS = 30.0


# -- one pool of workers, several camera counts ----------------------------------------------------------------------
@dataclass
class Config:
    workers: int
    cameras: int
    faces: int
    fps: float = FPS
    window_s: float = 10.0
    warmup_s: float = 3.0

    @property
    def offered(self) -> float:
        return self.cameras * self.fps * self.faces


class ReplayPool(Pool):
    """The shared pool, measured with one replay producer at a time."""

    def measure(self, cfg: Config, npz: Path, *, fast: bool = False, max_crop_backlog: int | None = None) -> dict:
        """Start a producer with ``cfg.cameras`` replay cameras, measure a window, stop it, drain.

        ``max_crop_backlog`` overrides the producer's drop threshold for this run only.
        """
        tag = f"k{cfg.cameras}f{cfg.faces}{'x' if fast else ''}{f'b{max_crop_backlog}' if max_crop_backlog else ''}"
        env = self.env
        if max_crop_backlog:
            env = child_env(self.settings.with_updates(streams={"max_crop_backlog": max_crop_backlog}))
        ident = f"bench-producer-{tag}"
        spec = f"replay:{npz}?fps={cfg.fps:g}&faces={cfg.faces}&loop=1"
        args = ["producer", "--ident", ident, "--no-frames", "--fast" if fast else "--realtime"]
        for i in range(cfg.cameras):
            args += ["--source", spec, "--camera-id", f"{tag}-c{i}"]
        stats_before = self.transport.stats()
        producer = spawn(f"producer-{tag}-w{len(self.workers)}", args, env, self.log_dir)
        sampler: Sampler | None = None
        try:
            wait_for(lambda: self.client.exists(self.keys.health("producer", ident)), 60, "the producer", [producer])
            time.sleep(cfg.warmup_s)
            sampler = Sampler(self.client, self.keys, self.workers, producer)
            sampler.start()
            p0, t0 = fresh_heartbeat(self.client, self.keys, "producer", ident)
            w0, c0 = self.worker_totals(), self.worker_cpu()
            time.sleep(max(0.0, cfg.window_s - 0.5))
            p1, t1 = fresh_heartbeat(self.client, self.keys, "producer", ident)
            w1, c1 = self.worker_totals(), self.worker_cpu()
            time.sleep(1.0)  # let labels of crops captured at the end of the window arrive
            samples = sampler.close()
        finally:
            if sampler is not None and sampler.is_alive():
                sampler.close()
            code = stop([producer])[producer.name]
        drain_s = self.drain()
        stats_after = self.transport.stats()
        result = self._summarise(cfg, tag, fast, producer, code, (p0, p1), (w0, w1), (c0, c1), (t0, t1), samples,
                               stats_before, stats_after, drain_s)
        result["max_crop_backlog"] = max_crop_backlog or self.settings.streams.max_crop_backlog
        result["accounting"] = accounting(final_counters(producer), stats_before, stats_after, self.keys.crops)
        return result

    def _summarise(self, cfg, tag, fast, producer, code, p, w, c, t, samples: Samples, before, after, drain_s) -> dict:
        (p0, p1), (w0, w1), (c0, c1), (t0, t1) = p, w, c, t
        span = t1 - t0
        mine = [o for o in self.reader.snapshot() if o.camera_id.startswith(f"{tag}-")]
        in_window = [o for o in mine if t0 <= o.captured_at < t1]
        received_in_window = sum(t0 <= o.received_at < t1 for o in mine)
        judged = [o.correct for o in in_window if o.correct is not None]
        frames = p1.get("frames", 0) - p0.get("frames", 0)
        faces = p1.get("faces", 0) - p0.get("faces", 0)
        dropped = p1.get("crops_dropped", 0) - p0.get("crops_dropped", 0)
        trimmed = sum(after.get(k, 0) - before.get(k, 0) for k in after if k.startswith("trimmed_unread:"))
        labelled = w1.get("crops_labelled", 0) - w0.get("crops_labelled", 0)
        batches = w1.get("batches", 0) - w0.get("batches", 0)
        lat = summarize_latencies([o.received_at - o.captured_at for o in in_window])
        queue = summarize_latencies([o.inferred_at - o.published_at for o in in_window])
        expected_frames = cfg.cameras * cfg.fps * span
        return {
            "workers": len(self.workers), "cameras": cfg.cameras, "faces_per_frame": cfg.faces,
            "fps_per_camera": None if fast else cfg.fps, "offered_faces_per_s": None if fast else cfg.offered,
            "window_s": span, "producer_exit_code": code,
            "frames_per_s": frames / span,
            "frames_late_or_skipped": None if fast else max(0, round(expected_frames - frames)),
            "faces_per_s_produced": faces / span,
            "labelled_faces_per_s": received_in_window / span,
            "worker_labelled_per_s": labelled / span,
            "mean_batch": labelled / batches if batches else None,
            "crops_dropped": int(dropped), "crops_trimmed_unread": int(trimmed),
            "labels_captured_in_window": len(in_window),
            "latency": lat, "queue_and_inference": queue,
            "accuracy": sum(judged) / len(judged) if judged else None,
            "backlog_max": max(samples.backlog, default=0),
            "backlog_end": samples.backlog[-1] if samples.backlog else None,
            # The crops stream is the backlog; the labels stream is capped by labels_maxlen and
            # accumulates over a pool's runs (every consumer group keeps its history).
            "crops_stream_mb_max": max(samples.crops_memory_mb, default=None),
            "labels_stream_mb_max": max(samples.labels_memory_mb, default=None),
            "redis_used_mb_max": max(samples.redis_used_mb, default=None),
            "worker_rss_mb_max": max(samples.worker_rss_mb, default=None),
            "producer_rss_mb_max": max(samples.producer_rss_mb, default=None),
            "worker_cpu_util": (c1 - c0) / span / len(self.workers),
            "drain_s": drain_s,
        }


def accounting(final: dict | None, before: dict, after: dict, crops_key: str) -> dict:
    """Every face the producer saw is either published or counted as dropped, and what it
    published is what the broker counted (the drop policy hides nothing)."""
    published = after.get(f"published:{crops_key}", 0) - before.get(f"published:{crops_key}", 0)
    if not final:
        return {"ok": None, "broker_published": published}
    faces, sent, dropped = final.get("faces", 0), final.get("crops_published", 0), final.get("crops_dropped", 0)
    return {"ok": faces == sent + dropped and sent == published, "faces": faces, "crops_published": sent,
            "crops_dropped": dropped, "broker_published": published}


# -- verdicts --------------------------------------------------------------------------------------------------------
def holds(r: dict, p99_ms: float) -> bool:
    """A configuration is sustained: nothing dropped, the producer on time, labels keep up, p99 under the bound."""
    p99 = r["latency"]["p99_ms"]
    offered = r["offered_faces_per_s"] or 0
    return (r["crops_dropped"] == 0 and r["crops_trimmed_unread"] == 0 and p99 is not None and p99 < p99_ms
            and r["labelled_faces_per_s"] >= 0.95 * offered and r["frames_per_s"] >= 0.95 * r["cameras"] * FPS)


def sweep_rows(results: list[dict]) -> list[list]:
    return [[r["workers"], r["cameras"], r["offered_faces_per_s"], r["labelled_faces_per_s"], r["latency"]["p50_ms"],
             r["latency"]["p95_ms"], r["latency"]["p99_ms"], r["frames_late_or_skipped"],
             r["crops_dropped"] + r["crops_trimmed_unread"], r["mean_batch"], r["worker_cpu_util"] * 100,
             r["worker_rss_mb_max"], r["crops_stream_mb_max"], r["accuracy"]] for r in results]


OVERLOAD_HEADERS = ["W", "backlog limit", "offered/s", "labelled/s", "dropped", "trimmed", "backlog max", "p50 ms",
                    "p99 ms", "max ms", "crops MB", "labels MB", "workers RSS MB", "drain s", "producer exit"]


def overload_rows(results: list[dict]) -> list[list]:
    return [[r["workers"], r["max_crop_backlog"], r["offered_faces_per_s"], r["labelled_faces_per_s"],
             r["crops_dropped"], r["crops_trimmed_unread"], r["backlog_max"], r["latency"]["p50_ms"],
             r["latency"]["p99_ms"], r["latency"]["max_ms"], r["crops_stream_mb_max"], r["labels_stream_mb_max"],
             r["worker_rss_mb_max"],
             r["drain_s"], r["producer_exit_code"]] for r in results]


SWEEP_HEADERS = ["W", "K", "offered/s", "labelled/s", "p50 ms", "p95 ms", "p99 ms", "frames late", "dropped",
                 "batch", "worker CPU %", "workers RSS MB", "crops MB", "acc"]


# -- the run ------------------------------------------------------------------------------------------------
def run(*, workers=(1, 2), cameras=(1, 2, 4, 8, 12, 16, 24), faces: int = 2, window_s: float = 10.0,
        warmup_s: float = 3.0, overload_cameras: int = 16, overload_faces: int = 6, overload_backlog: int = 500,
        quick: bool = False, redis_url: str = DEFAULT_REDIS_URL, npz: Path | None = None,
        out_dir: Path | None = None) -> dict:
    """Sweep cameras x workers, then overload each worker count; print tables, write ``pipeline.json``."""
    npz = Path(npz) if npz is not None else data_dir() / "fer2013_publictest.npz"
    if not npz.is_file():
        raise FileNotFoundError(f"replay data not found: {npz} (set FER_DATA_DIR)")
    if quick:
        cameras, window_s, warmup_s = tuple(c for c in cameras if c <= 4)[:2] or (1,), min(window_s, 3.0), 1.0
        overload_cameras, overload_faces = 8, 4
    base = Settings(_env_file=None).with_updates(redis={"url": redis_url})
    machine = machine_info(base.worker.model)
    print(f"model {machine['model'].get('model_id')}; load {machine['load_avg_1_5_15']}; busy: "
          f"{machine['busy_processes'] or 'none'}", flush=True)
    results: dict = {"settings": {"workers": list(workers), "cameras": list(cameras), "faces_per_frame": faces,
                                  "fps": FPS, "window_s": window_s, "warmup_s": warmup_s, "quick": quick,
                                  "replay": str(npz), "worker": base.worker.model_dump(mode="json"),
                                  "streams": base.streams.model_dump(mode="json")},
                     "sweep": [], "overload": [], "pools": []}
    with tempfile.TemporaryDirectory(prefix="fer-bench-") as tmp:
        log_dir = Path(tmp)
        for w in workers:
            section(f"Sweep: {w} worker(s), replay cameras at {FPS:g} fps x {faces} faces")
            pool = ReplayPool(base, w, log_dir, f"w{w}")
            try:
                for k in cameras:
                    r = pool.measure(Config(w, k, faces, window_s=window_s, warmup_s=warmup_s), npz)
                    r["holds_p99_100ms"], r["holds_p99_250ms"] = holds(r, 100), holds(r, 250)
                    results["sweep"].append(r)
                    print(table(SWEEP_HEADERS, sweep_rows([r]), digits=1).split("\n", 2)[-1] if k != cameras[0]
                          else table(SWEEP_HEADERS, sweep_rows([r]), digits=1), flush=True)
                    if not r["holds_p99_250ms"] and r["labelled_faces_per_s"] < 0.9 * r["offered_faces_per_s"]:
                        print(f"(saturated at K={k}: stopping this sweep)")
                        break
                backlogs = [None] + ([overload_backlog] if overload_backlog and w == max(workers) else [])
                for limit in backlogs:
                    section(f"Overload: {w} worker(s), {overload_cameras} cameras x {overload_faces} faces at "
                            f"{FPS:g} fps, max_crop_backlog {limit or base.streams.max_crop_backlog}")
                    r = pool.measure(Config(w, overload_cameras, overload_faces, window_s=window_s,
                                            warmup_s=warmup_s), npz, max_crop_backlog=limit)
                    results["overload"].append(r)
                    print(table(OVERLOAD_HEADERS, overload_rows([r])), flush=True)
            finally:
                closed = pool.close()
            closed["workers"] = w
            results["pools"].append(closed)
            print(f"pool closed: exit codes {closed['exit_codes']}; labels published {closed['labels_published']}, "
                  f"logged {closed['labels_logged']}", flush=True)

    results["headline"] = headline(results)
    finish("pipeline", results, machine, out_dir)
    return results


def headline(results: dict) -> dict:
    out: dict = {}
    for w in sorted({r["workers"] for r in results["sweep"]}):
        rs = [r for r in results["sweep"] if r["workers"] == w]
        out[f"max_cameras_p99_under_250ms_w{w}"] = max((r["cameras"] for r in rs if r["holds_p99_250ms"]), default=0)
        out[f"max_cameras_p99_under_100ms_w{w}"] = max((r["cameras"] for r in rs if r["holds_p99_100ms"]), default=0)
        k8 = next((r for r in rs if r["cameras"] == 8), None)
        if k8 is not None:
            out[f"k8_w{w}_labelled_per_s"] = k8["labelled_faces_per_s"]
            out[f"k8_w{w}_p99_ms"] = k8["latency"]["p99_ms"]
            out[f"k8_w{w}_dropped"] = k8["crops_dropped"] + k8["crops_trimmed_unread"]
            out[f"target_k8_zero_drops_p99_under_100ms_w{w}"] = k8["holds_p99_100ms"]
    default_limit = results["settings"]["streams"]["max_crop_backlog"]
    sat = {r["workers"]: r["labelled_faces_per_s"] for r in results["overload"]
           if r["max_crop_backlog"] == default_limit}
    for w, v in sorted(sat.items()):
        out[f"saturated_labelled_per_s_w{w}"] = v
    if 1 in sat and 2 in sat:
        out["second_worker_throughput_ratio"] = ratio(sat[2], sat[1])
        out["target_second_worker_raises_throughput"] = sat[2] > 1.05 * sat[1]
    for r in results["overload"]:
        tag = f"overload_w{r['workers']}_backlog{r['max_crop_backlog']}"
        out[f"{tag}_backlog_max"] = r["backlog_max"]
        out[f"{tag}_p99_ms"] = r["latency"]["p99_ms"]
        # What the drop policy promises: nothing waits longer than a full backlog takes to drain.
        rate = r["labelled_faces_per_s"]
        out[f"{tag}_latency_bound_ms"] = 1000 * r["max_crop_backlog"] / rate if rate else None
        out[f"{tag}_dropped"] = r["crops_dropped"]
    out["overload_all_exit_codes_zero"] = (all(r["producer_exit_code"] == 0 for r in results["overload"])
                                           and all(c == 0 for p in results["pools"] for c in p["exit_codes"].values()))
    runs = results["sweep"] + results["overload"]
    out["every_face_published_or_counted_dropped"] = all(r["accounting"]["ok"] for r in runs)
    out["labels_logged_equals_published"] = all(p["labels_logged"] == p["labels_published"] for p in results["pools"])
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--real-video" in argv:
        return real_video(argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="--real-video [OPTIONS]: run benchmarks.cameras instead (see its --help; "
                                        "--cameras-real N is its --cameras N).")
    ap.add_argument("--workers", type=int_list, default=(1, 2), help="comma-separated worker counts (default 1,2)")
    ap.add_argument("--cameras", type=int_list, default=(1, 2, 4, 8, 12, 16, 24),
                    help="comma-separated camera counts, ascending (default 1,2,4,8,12,16,24)")
    ap.add_argument("--faces", type=int, default=2, help="faces per frame")
    ap.add_argument("--window", type=float, default=10.0, help="measurement window per configuration, seconds")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds after the producer starts before measuring")
    ap.add_argument("--overload-cameras", type=int, default=16)
    ap.add_argument("--overload-faces", type=int, default=6)
    ap.add_argument("--overload-backlog", type=int, default=500,
                    help="also overload the largest pool with this max_crop_backlog (0: skip)")
    ap.add_argument("--quick", action="store_true", help="two small configurations and a short overload (smoke run)")
    ap.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    ap.add_argument("--npz", type=Path, help="labelled faces to replay (default ../shared/data/fer2013_publictest.npz)")
    ap.add_argument("--out-dir", type=Path, help="where to write pipeline.json (default benchmarks/results)")
    a = ap.parse_args(argv)
    run(workers=a.workers, cameras=a.cameras, faces=a.faces, window_s=a.window, warmup_s=a.warmup,
        overload_cameras=a.overload_cameras, overload_faces=a.overload_faces,
        overload_backlog=a.overload_backlog, quick=a.quick, redis_url=a.redis_url,
        npz=a.npz, out_dir=a.out_dir)
    return 0


def real_video(argv: list[str]) -> int:
    """The real-video scenario moved to ``cameras.py``; its documented ``--real-video`` command still
    runs it, with ``--cameras-real`` (named so beside the sweep's ``--cameras``) as its ``--cameras``."""
    from benchmarks import cameras

    forwarded = []
    for arg in argv:
        name, sep, value = arg.partition("=")
        if name == "--cameras-real":
            arg = f"--cameras{sep}{value}"
        if arg != "--real-video":
            forwarded.append(arg)
    return cameras.main(forwarded)


if __name__ == "__main__":
    raise SystemExit(main())
