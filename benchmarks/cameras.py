"""Real-video benchmark: N cameras of 640x480 at 30 fps (the two shared clips, letterboxed) as N
producer processes with real face detection, at native rate, one worker and the logger.

Per camera, how far behind real time it ended; and a per-stage CPU profile of one camera's frame
(``pipeline_cameras.json``):

    python -m benchmarks cameras --cameras 8 --detect-every 1,2,3
    python -m benchmarks.cameras --cameras 8 --detect-every 1,2,3

Real processes are spawned (``python -m fer_pipeline producer|worker|logger``) under a unique
key prefix whose keys are deleted afterwards. A reader thread in this process takes every label
off the labels stream (plain XREAD, outside the consumer groups); a camera's lag comes from the
capture times of its labelled frames.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (  # noqa: E402
    DEFAULT_REDIS_URL,
    REPO_ROOT,
    busy_processes,
    cpu_seconds,
    data_dir,
    delete_prefix,
    finish,
    int_list,
    letterbox,
    machine_info,
    ratio,
    redis_client,
    section,
    table,
    unique_prefix,
    write_result,
)
from benchmarks._harness import Pool, Proc, producer_finished, spawn, stop  # noqa: E402
from fer_pipeline.settings import ProducerSettings, Settings  # noqa: E402

# The target: "8 cameras of 640x480 at 30 fps replayed at native rate on this 2-core machine with one worker
# and the logger, with no camera falling behind real time." One producer process per camera, as `fer-pipeline up`
# runs them.
REAL_SIZE = (640, 480)
REAL_FPS = 30.0
CLIPS = ("woman2.mp4", "short_hamilton_clip.mp4")  # cameras alternate between them
ON_TIME_LAG_S = 0.5  # a camera keeps real time when it ends less than this behind its video
# Measured from the last camera's first frame: by then every process has imported and loaded its
# detector, so lag that grows after it is steady-state cost, not start-up.
SETTLE_S = 2.0
DEFAULT_DETECTOR = ProducerSettings.model_fields["detector"].default


@dataclass(frozen=True)
class RealConfig:
    cameras: int
    detector: str
    detect_every: int
    frames: bool  # producers publish JPEG frames too (no display reads them: their cost is the producer's)
    seconds: float
    workers: int = 1

    @property
    def tag(self) -> str:
        return f"rv{self.cameras}e{self.detect_every}{'f' if self.frames else ''}"

    @property
    def expected_frames(self) -> int:
        return round(self.seconds * REAL_FPS)


@dataclass
class Camera:
    camera_id: str
    clip: Path
    proc: Proc
    spawned_at: float
    ended_at: float | None = None
    code: int | None = None
    cpu_s: float | None = None  # the whole process's user + system time, from wait4
    cpu_samples: list[tuple[float, float]] = field(default_factory=list)  # (time, CPU s) while it runs


# -- inputs ----------------------------------------------------------------------------------------------------------
def make_camera_videos(src_dir: Path, out_dir: Path, seconds: float) -> list[Path]:
    """Each clip letterboxed to 640x480 at 30 fps, ``seconds`` long (repeated as needed)."""
    out = []
    for name in CLIPS:
        src = Path(src_dir) / name
        if not src.is_file():
            raise FileNotFoundError(f"video not found: {src} (set FER_DATA_DIR)")
        dst = Path(out_dir) / f"{src.stem}_640x480.mp4"
        write_letterboxed(src, dst, round(seconds * REAL_FPS))
        out.append(dst)
    return out


def write_letterboxed(src: Path, dst: Path, frames: int) -> int:
    import cv2

    w, h = REAL_SIZE
    writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), REAL_FPS, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {dst} with OpenCV's mp4v encoder")
    written = 0
    try:
        while written < frames:
            # From the clip's start again: a jump cut, like a camera switching scenes.
            cap = cv2.VideoCapture(str(src))
            got = 0
            while written < frames:
                ok, image = cap.read()
                if not ok:
                    break
                writer.write(letterbox(image, w, h)[0])
                written, got = written + 1, got + 1
            cap.release()
            if not got:
                raise RuntimeError(f"{src} yields no frames")
    finally:
        writer.release()
    return written


# -- pure helpers (unit-tested) ------------------------------------------------------------------------------------
def parse_finished(text: str) -> dict | None:
    """The counters of the last "producer run X finished: {...}" line of a producer's log
    (floats kept: detect_ms is one; ``final_counters`` keeps the service line's ints only)."""
    for line in reversed(text.splitlines()):
        is_finished, value = producer_finished(line)
        if is_finished:
            return value
    return None


def lag_profile(points: dict[int, float], fps: float, settle_at: float | None = None) -> dict:
    """How far behind its video a camera ran, from frame index -> capture time.

    The lag at frame i is (t_i - t_first) - (i - i_first) / fps. The producer's pacer never
    catches up (a late frame moves the schedule), so lag only grows: the last frame's lag is
    what the camera ended with. ``settle_at`` (a wall time) splits off the start-up part.
    """
    if not points:
        return {"frames_seen": 0, "wall_s": None, "lag_s": None, "max_lag_s": None, "lag_at_settle_s": None,
                "lag_growth_s": None, "fps_after_settle": None, "first_at": None}
    idx = sorted(points)
    i0, t0 = idx[0], points[idx[0]]
    lags = [(points[i] - t0) - (i - i0) / fps for i in idx]
    out = {"frames_seen": len(idx), "first_frame_seen": i0, "last_frame_seen": idx[-1],
           "first_at": t0 - i0 / fps, "wall_s": points[idx[-1]] - t0, "lag_s": lags[-1], "max_lag_s": max(lags),
           "lag_at_settle_s": None, "lag_growth_s": None, "fps_after_settle": None}
    j = next((k for k, i in enumerate(idx) if settle_at is not None and points[i] >= settle_at), None)
    if j is not None:
        out["lag_at_settle_s"], out["lag_growth_s"] = lags[j], lags[-1] - lags[j]
        out["settle_frame"], out["settle_at"] = idx[j], points[idx[j]]
        span = points[idx[-1]] - points[idx[j]]
        out["fps_after_settle"] = (idx[-1] - idx[j]) / span if span > 0 else None
    return out


def cpu_share(before: dict[str, int], after: dict[str, int]) -> dict[str, float | None]:
    """Busy, steal and idle fractions of the whole machine between two /proc/stat readings."""
    d = {k: after[k] - before[k] for k in before}
    total = sum(d.values())
    if total <= 0:
        return {"busy": None, "steal": None, "idle": None}
    idle = d.get("idle", 0) + d.get("iowait", 0)
    steal = d.get("steal", 0)
    return {"busy": (total - idle - steal) / total, "steal": steal / total, "idle": idle / total}


def frames_by_camera(observed) -> dict[str, dict[int, float]]:
    """camera id -> {frame index: capture time}, from the labels (one per face; a frame counts once)."""
    out: dict[str, dict[int, float]] = {}
    for o in observed:
        if o.frame_index >= 0:
            out.setdefault(o.camera_id, {}).setdefault(o.frame_index, o.captured_at)
    return out


# -- machine readings ------------------------------------------------------------------------------------------------
def machine_jiffies() -> dict[str, int]:
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:1 + len(names)]
    return dict(zip(names, map(int, fields)))


def usage(pool: Pool) -> dict:
    """CPU seconds so far of the worker(s), the logger, Redis and this process, and the machine's jiffies."""
    info = pool.client.info("cpu")
    me = os.times()
    return {"t": time.time(), "jiffies": machine_jiffies(), "worker_cpu_s": pool.worker_cpu(),
            "logger_cpu_s": cpu_seconds(pool.logger.popen.pid) or 0.0,
            "redis_cpu_s": float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
            "bench_cpu_s": me.user + me.system, "worker": pool.worker_totals()}


# -- one configuration -----------------------------------------------------------------------------------------------
def start_cameras(pool: Pool, cfg: RealConfig, clips: list[Path]) -> list[Camera]:
    """One producer process per camera, the command `fer-pipeline up` runs for each source."""
    cams = []
    for i in range(cfg.cameras):
        cid, clip = f"{cfg.tag}-c{i}", clips[i % len(clips)]
        args = ["producer", "--ident", f"bench-{cid}", "--source", str(clip), "--camera-id", cid, "--realtime",
                "--no-loop", "--detector", cfg.detector, "--detect-every", str(cfg.detect_every),
                "--frames" if cfg.frames else "--no-frames"]
        cams.append(Camera(cid, clip, spawn(f"producer-{cid}", args, pool.env, pool.log_dir), time.time()))
    return cams


def reap(cam: Camera) -> bool:
    """Collect an ended producer with wait4, which also gives its exact CPU time; False while it runs."""
    if cam.code is not None:
        return True
    try:
        pid, status, ru = os.wait4(cam.proc.popen.pid, os.WNOHANG)
    except ChildProcessError:  # reaped elsewhere (stop()): its CPU time is lost
        cam.code, cam.ended_at = cam.proc.popen.returncode, time.time()
        return True
    if pid == 0:
        return False
    cam.code = os.waitstatus_to_exitcode(status)
    cam.proc.popen.returncode = cam.code  # Popen must not wait for it again
    cam.cpu_s, cam.ended_at = ru.ru_utime + ru.ru_stime, time.time()
    return True


def watch(cams: list[Camera], timeout_s: float, sample_every_s: float = 0.5) -> bool:
    """Wait for every (finite) camera to end, sampling the running ones' CPU time (to split
    start-up from steady state); False when some were still running at the timeout."""
    deadline = time.monotonic() + timeout_s
    next_sample = 0.0
    while not all(reap(c) for c in cams):
        if time.monotonic() > deadline:
            return False
        if time.monotonic() >= next_sample:
            next_sample = time.monotonic() + sample_every_s
            for c in cams:
                cpu = cpu_seconds(c.proc.popen.pid) if c.code is None else None
                if cpu is not None:
                    c.cpu_samples.append((time.time(), cpu))
        time.sleep(0.05)
    return True


def cpu_at(samples: list[tuple[float, float]], at: float) -> float | None:
    """A process's CPU seconds at wall time ``at``, interpolated between samples (None outside them)."""
    for (t0, c0), (t1, c1) in zip(samples, samples[1:]):
        if t0 <= at <= t1:
            return c0 + (c1 - c0) * ((at - t0) / (t1 - t0) if t1 > t0 else 0.0)
    return None


def wait_for_quiet(max_s: float) -> list[str]:
    """Wait (up to ``max_s``) until no other process uses a lot of CPU: this machine is shared,
    and a camera's lag measures what the cores had left. Returns who was still busy."""
    deadline = time.monotonic() + max_s
    busy = busy_processes()
    while busy and time.monotonic() < deadline:
        print(f"waiting for a quiet machine: {'; '.join(busy)}", flush=True)
        time.sleep(10)
        busy = busy_processes()
    return busy


def run_real_config(base: Settings, cfg: RealConfig, clips: list[Path], log_dir: Path,
                    quiet_s: float = 0.0) -> dict:
    """A fresh worker pool and logger, N producers until their files end, drain, stop; the figures."""
    busy = wait_for_quiet(quiet_s)
    pool = Pool(base, cfg.workers, log_dir, cfg.tag)
    cams: list[Camera] = []
    try:
        u0 = usage(pool)
        cams = start_cameras(pool, cfg, clips)
        finished = watch(cams, cfg.seconds * 4 + 60)
        u1 = usage(pool)
        drain_s = pool.drain()
        u2 = usage(pool)
    finally:
        stop([c.proc for c in cams if c.code is None])
        for c in cams:
            reap(c)
        observed = pool.reader.snapshot()
        closed = pool.close()
    result = summarise_real(cfg, cams, observed, (u0, u1, u2), closed, drain_s)
    result["all_cameras_ended"] = finished
    result["busy_processes_before"] = busy
    return result


# -- figures ---------------------------------------------------------------------------------------------------------
def summarise_real(cfg: RealConfig, cams: list[Camera], observed, u: tuple[dict, dict, dict], closed: dict,
                   drain_s: float | None) -> dict:
    u0, u1, u2 = u
    points = frames_by_camera(observed)
    firsts = [p for p in (lag_profile(points.get(c.camera_id, {}), REAL_FPS)["first_at"] for c in cams) if p]
    settle = max(firsts) + SETTLE_S if firsts else None
    per_camera = [camera_figures(cfg, c, points.get(c.camera_id, {}), settle) for c in cams]
    span = u1["t"] - u0["t"]
    # From one (possibly a second old) heartbeat: a ratio, not a count; the count is the broker's.
    work = (u2["worker"].get("crops_labelled", 0) - u0["worker"].get("crops_labelled", 0))
    infer_ms = u2["worker"].get("infer_ms", 0) - u0["worker"].get("infer_ms", 0)
    producers_cpu = sum(c["cpu_s"] or 0 for c in per_camera)
    frames = sum(c["frames"] or 0 for c in per_camera)
    return {
        "cameras": cfg.cameras, "detector": cfg.detector, "detect_every": cfg.detect_every,
        "publish_frames": cfg.frames, "workers": cfg.workers, "seconds_per_camera": cfg.seconds,
        "run_s": span, "drain_s": drain_s,
        "cameras_on_time": sum(c["on_time"] for c in per_camera),
        "cameras_steady": sum(c["steady"] for c in per_camera),
        "worst_lag_s": _max(c["lag_s"] for c in per_camera),
        "worst_lag_growth_s": _max(c["lag_growth_s"] for c in per_camera),
        "frames": frames, "faces": sum(c["faces"] or 0 for c in per_camera),
        "crops_published": sum(c["crops_published"] or 0 for c in per_camera),
        "crops_dropped": sum(c["crops_dropped"] or 0 for c in per_camera),
        "worker_infer_ms_per_label": ratio(infer_ms, work),
        "labels_published": closed["labels_published"], "labels_logged": closed["labels_logged"],
        "exit_codes": {**closed["exit_codes"], **{c.proc.name: c.code for c in cams}},
        "cpu": cpu_figures(u0, u1, producers_cpu, frames, os.cpu_count() or 1),
        # All the machine's CPU per camera frame at this load, for everything (producers, worker, logger, Redis).
        "budget_cpu_ms_per_frame": 1000 * (os.cpu_count() or 1) / (cfg.cameras * REAL_FPS),
        "per_camera": per_camera,
    }


def camera_figures(cfg: RealConfig, cam: Camera, points: dict[int, float], settle: float | None) -> dict:
    c = parse_finished(cam.proc.log.read_text(errors="replace")) if cam.proc.log.exists() else None
    c = c or {}
    timing = lag_profile(points, REAL_FPS, settle)
    frames = c.get("frames")
    dropped = c.get("crops_dropped")
    lag = timing["lag_s"]
    on_time = (cam.code == 0 and frames == cfg.expected_frames and dropped == 0 and lag is not None
               and lag < ON_TIME_LAG_S)
    growth = timing["lag_growth_s"]
    return {
        "camera": cam.camera_id, "clip": cam.clip.name, "exit_code": cam.code, "frames": frames,
        "duration_s": frames / REAL_FPS if frames else None, **timing,
        "start_s": timing["first_at"] - cam.spawned_at if timing["first_at"] else None,
        "faces": c.get("faces"), "crops_published": c.get("crops_published"), "crops_dropped": dropped,
        "publish_errors": c.get("publish_errors"), "frames_published": c.get("frames_published"),
        "detect_ms_per_frame": ratio(c.get("detect_ms"), frames), "cpu_s": cam.cpu_s,
        "cpu_ms_per_frame": ratio(1000 * cam.cpu_s if cam.cpu_s is not None else None, frames),
        "steady_cpu_ms_per_frame": steady_cpu_ms(cam, timing, frames),
        "on_time": on_time,
        # Whatever the start-up cost, it holds the pace once every camera runs.
        "steady": cam.code == 0 and dropped == 0 and growth is not None and growth < ON_TIME_LAG_S,
    }


def cpu_figures(u0: dict, u1: dict, producers_cpu: float, frames: int, ncpu: int) -> dict:
    """Per role: CPU seconds and share of one core over the run (first producer start to last
    end); what the machine used beside them is other people's work on this shared machine."""
    span = u1["t"] - u0["t"]
    out = {"producers_cpu_s": producers_cpu, "producer_cpu_ms_per_frame": ratio(1000 * producers_cpu, frames)}
    for role in ("worker", "logger", "redis", "bench"):
        out[f"{role}_cpu_s"] = u1[f"{role}_cpu_s"] - u0[f"{role}_cpu_s"]
    ours = producers_cpu + sum(out[f"{r}_cpu_s"] for r in ("worker", "logger", "redis", "bench"))
    for role in ("producers", "worker", "logger", "redis", "bench"):
        out[f"{role}_core_share"] = ratio(out[f"{role}_cpu_s"], span)
    machine = cpu_share(u0["jiffies"], u1["jiffies"])
    out.update({f"machine_{k}": v for k, v in machine.items()})
    busy_cores = machine["busy"] * ncpu if machine["busy"] is not None else None
    out["others_core_share"] = None if busy_cores is None or not span else max(0.0, busy_cores - ours / span)
    return out


def steady_cpu_ms(cam: Camera, timing: dict, frames: int | None) -> float | None:
    """CPU ms per frame after the settle point (imports and the detector load excluded)."""
    at, first = timing.get("settle_at"), timing.get("settle_frame")
    if at is None or cam.cpu_s is None or not frames:
        return None
    cpu = cpu_at(cam.cpu_samples, at)
    after = frames - first
    return ratio(1000 * (cam.cpu_s - cpu), after) if cpu is not None and after > 0 else None


def _max(values) -> float | None:
    vals = [v for v in values if v is not None]
    return max(vals) if vals else None


# -- where one camera's time goes ------------------------------------------------------------------------------------
class StageTimer:
    """Wall and thread-CPU milliseconds per named stage, summed over calls (thread-safe enough:
    each stage is timed from one thread)."""

    def __init__(self) -> None:
        self.wall: Counter[str] = Counter()
        self.cpu: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            w, c = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.wall[name] += (time.perf_counter() - w) * 1000
                self.cpu[name] += (time.thread_time() - c) * 1000
                self.calls[name] += 1
        return timed


def profile_camera(base: Settings, clip: Path, detector: str, detect_every: int, frames: bool, n_frames: int) -> dict:
    """One camera in this process through the product's own CameraProducer, as fast as it goes
    (no pacing), against the real Redis, with each stage of its per-frame work timed: decode,
    detection, track + frame + crop, message packing, JPEG, hand-over, and the publisher
    thread's round trips. Per frame, in ms; "cpu" is the thread's CPU, "wall" includes waits
    for the GIL and the other cores."""
    import threading

    from fer_pipeline.producers.camera import BacklogGauge, CameraProducer
    from fer_pipeline.producers.publisher import Publisher
    from fer_pipeline.producers.sources import VideoFileSource
    from fer_pipeline.transport import Transport

    s = base.with_updates(redis={"prefix": unique_prefix("prof")},
                          producer={"detector": detector, "detect_every": detect_every, "publish_frames": frames,
                                    "realtime": False, "loop": False})
    transport = Transport.connect(s)
    source = VideoFileSource(clip, s)
    publisher = Publisher(transport, s, ["prof"])
    cam = CameraProducer("prof", source, s, transport, run_id="prof", stop=threading.Event(),
                         backlog=BacklogGauge(transport, publisher), publisher=publisher)
    try:
        t0 = time.perf_counter()
        det = cam._finder.detector  # built on first use in the product: time it apart, it is start-up
        load_ms = (time.perf_counter() - t0) * 1000
        timer = instrument(cam, det, publisher)
        publisher.start()
        done, wall_s, cpu_s = _profile_loop(cam, source, timer, n_frames)
        publisher.close(10)
        decode_ms = decode_cost(clip, done)
    finally:
        source.close()
        delete_prefix(redis_client(s), s.redis.prefix)
        transport.close()
    fig = profile_figures(clip, detector, detect_every, frames, timer, done, wall_s, cpu_s, load_ms, cam)
    fig["decode_process_cpu_ms"] = decode_ms
    return fig


def decode_cost(clip: Path, n_frames: int) -> float | None:
    """Process CPU ms per frame of reading the file alone: FFmpeg decodes on helper threads, so
    the camera thread's CPU time shows only part of it."""
    import cv2

    cap = cv2.VideoCapture(str(clip))
    n, c0 = 0, time.process_time()
    while n < n_frames and cap.read()[0]:
        n += 1
    cap.release()
    return 1000 * (time.process_time() - c0) / n if n else None


def safe_profile(base: Settings, clip: Path, detector: str, detect_every: int, frames: bool, n: int) -> dict:
    """The profile reaches into the producer's internals: a change there costs this row, not the run."""
    try:
        return profile_camera(base, clip, detector, detect_every, frames, n)
    except Exception as e:  # noqa: BLE001 - recorded in the results instead
        print(f"profile of {clip.name} every {detect_every} failed: {type(e).__name__}: {e}", flush=True)
        return {"clip": clip.name, "detect_every": detect_every, "error": f"{type(e).__name__}: {e}"}


def source_fingerprint() -> str:
    """A hash of the product's sources: others edit them between configurations of a long run."""
    import hashlib

    h = hashlib.sha1()
    for path in sorted([*REPO_ROOT.glob("producers/**/*.py"), *REPO_ROOT.glob("fer_pipeline/*.py"),
                        *REPO_ROOT.glob("workers/*.py"), *REPO_ROOT.glob("consumers/*.py")]):
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def instrument(cam, det, publisher) -> StageTimer:
    """Wrap the stages CameraProducer.process goes through (instance attributes shadow the methods)."""
    timer = StageTimer()
    det.detect = timer.wrap("detect", det.detect)
    for interp in interpreters(det):  # the networks apart from their pre- and post-processing
        interp.invoke = timer.wrap("invoke", interp.invoke)
    cam._faces = timer.wrap("faces", cam._faces)  # detect + track + framing + crop
    cam._crop_payloads = timer.wrap("pack", cam._crop_payloads)  # backlog check + FaceCrop.pack
    cam._frame_payload = timer.wrap("jpeg", cam._frame_payload)
    publisher.submit = timer.wrap("submit", publisher.submit)
    publisher._send = timer.wrap("send", publisher._send)  # the publisher thread
    return timer


def interpreters(det) -> list:
    """The LiteRT interpreters of a detector: its own (BlazeFace) or its parts' (both ranges)."""
    found = []
    for obj in (det, *vars(det).values()):
        interp = getattr(obj, "_interp", None)
        if interp is not None and hasattr(interp, "invoke") and interp not in found:
            found.append(interp)
    return found


def _profile_loop(cam, source, timer: StageTimer, n_frames: int) -> tuple[int, float, float]:
    import threading

    stop = threading.Event()
    frames = source.frames(stop)
    read = timer.wrap("decode", lambda: next(frames, None))
    process = timer.wrap("process", cam.process)
    done = 0
    w0, c0 = time.perf_counter(), time.process_time()
    while done < n_frames:
        frame = read()
        if frame is None:
            break
        process(frame)
        done += 1
    return done, time.perf_counter() - w0, time.process_time() - c0


def profile_figures(clip, detector, detect_every, frames, timer: StageTimer, n: int, wall_s: float, cpu_s: float,
                    load_ms: float, cam) -> dict:
    def per(counter: Counter, name: str) -> float:
        return counter[name] / n if n else 0.0

    stages = {}
    for name in ("decode", "detect", "invoke", "faces", "pack", "jpeg", "submit", "send"):
        stages[name] = {"wall_ms": per(timer.wall, name), "cpu_ms": per(timer.cpu, name), "calls": timer.calls[name]}
    # Tracking, FER framing and the 48x48 crop are what _faces does besides detecting.
    stages["track_frame_crop"] = {k: stages["faces"][k] - stages["detect"][k] for k in ("wall_ms", "cpu_ms")}
    # The detector's own resize, letterbox, float conversion and box decoding around the network.
    stages["detect_pre_post"] = {k: stages["detect"][k] - stages["invoke"][k] for k in ("wall_ms", "cpu_ms")}
    camera_cpu = per(timer.cpu, "decode") + per(timer.cpu, "process")
    stages["other"] = {"cpu_ms": (1000 * cpu_s / n - camera_cpu - per(timer.cpu, "send")) if n else 0.0}
    return {
        "clip": clip.name, "detector": detector, "detect_every": detect_every, "publish_frames": frames, "frames": n,
        "faces_per_frame": cam.stats["faces"] / n if n else None, "detector_load_ms": load_ms, "stages": stages,
        "camera_thread_cpu_ms": camera_cpu, "process_cpu_ms": 1000 * cpu_s / n if n else None,
        "wall_ms": 1000 * wall_s / n if n else None, "max_fps_one_core": 1000 * n / (1000 * cpu_s) if cpu_s else None,
    }


# -- tables ----------------------------------------------------------------------------------------------------------
REAL_HEADERS = ["K", "every", "JPEG", "on time", "steady", "worst lag s", "worst growth s", "frames read",
                "faces pub", "dropped", "labelled", "logged", "prod ms/frame", "budget ms/frame", "producers %core",
                "worker %", "logger %", "redis %", "bench %", "others %", "machine busy %", "steal %"]


def real_rows(runs: list[dict]) -> list[list]:
    return [[r["cameras"], r["detect_every"], r["publish_frames"], f"{r['cameras_on_time']}/{r['cameras']}",
             f"{r['cameras_steady']}/{r['cameras']}", r["worst_lag_s"], r["worst_lag_growth_s"], r["frames"],
             r["crops_published"], r["crops_dropped"], r["labels_published"], r["labels_logged"],
             r["cpu"]["producer_cpu_ms_per_frame"], r["budget_cpu_ms_per_frame"],
             _pct(r["cpu"]["producers_core_share"]), _pct(r["cpu"]["worker_core_share"]),
             _pct(r["cpu"]["logger_core_share"]), _pct(r["cpu"]["redis_core_share"]),
             _pct(r["cpu"]["bench_core_share"]), _pct(r["cpu"]["others_core_share"]),
             _pct(r["cpu"]["machine_busy"]), _pct(r["cpu"]["machine_steal"])] for r in runs]


CAMERA_HEADERS = ["camera", "clip", "frames", "video s", "wall s", "lag s", "max lag s", "lag at settle s",
                  "growth s", "fps after settle", "start s", "faces", "published", "dropped", "detect ms/frame",
                  "CPU ms/frame", "steady CPU ms/frame", "on time"]


def camera_rows(run: dict) -> list[list]:
    return [[c["camera"], c["clip"].split("_640")[0], c["frames"], c["duration_s"], c["wall_s"], c["lag_s"],
             c["max_lag_s"], c["lag_at_settle_s"], c["lag_growth_s"], c["fps_after_settle"], c["start_s"], c["faces"],
             c["crops_published"], c["crops_dropped"], c["detect_ms_per_frame"], c["cpu_ms_per_frame"],
             c["steady_cpu_ms_per_frame"], c["on_time"]]
            for c in run["per_camera"]]


PROFILE_HEADERS = ["clip", "every", "JPEG", "faces/frame", "decode (thread)", "decode (process)", "detect",
                   "of which model", "of which pre/post", "track+frame+crop", "pack", "jpeg", "submit",
                   "camera thread", "publisher thread", "other threads", "process CPU", "wall", "fps/core"]


def profile_rows(profiles: list[dict]) -> list[list]:
    rows = []
    for p in profiles:
        st = p["stages"]
        rows.append([p["clip"].split("_640")[0], p["detect_every"], p["publish_frames"], p["faces_per_frame"],
                     st["decode"]["cpu_ms"], p["decode_process_cpu_ms"], st["detect"]["cpu_ms"],
                     st["invoke"]["cpu_ms"], st["detect_pre_post"]["cpu_ms"], st["track_frame_crop"]["cpu_ms"],
                     st["pack"]["cpu_ms"], st["jpeg"]["cpu_ms"], st["submit"]["cpu_ms"], p["camera_thread_cpu_ms"],
                     st["send"]["cpu_ms"], st["other"]["cpu_ms"], p["process_cpu_ms"], p["wall_ms"],
                     p["max_fps_one_core"]])
    return rows


def _pct(v: float | None) -> float | None:
    return None if v is None else 100 * v


# -- the run ---------------------------------------------------------------------------------------------------------
def run(*, cameras=(8,), detector: str = DEFAULT_DETECTOR, detect_every=(1,), frames: bool = False,
        seconds: float = 25.0, profile_frames: int = 300, wait_quiet: float = 0.0,
        redis_url: str = DEFAULT_REDIS_URL, videos: Path | None = None, out_dir: Path | None = None) -> dict:
    """Every (cameras, detect_every) pair one after the other, then (``profile_frames`` > 0) a
    per-stage profile of one camera per clip and detect_every; tables, and ``pipeline_cameras.json``.
    ``wait_quiet``: seconds to wait, before each, for other busy processes to end."""
    src = Path(videos) if videos is not None else data_dir() / "video"
    base = Settings(_env_file=None).with_updates(redis={"url": redis_url})
    machine = machine_info(base.worker.model)
    print(f"load {machine['load_avg_1_5_15']}; busy: {machine['busy_processes'] or 'none'}", flush=True)
    configs = [RealConfig(k, detector, e, frames, seconds) for k in cameras for e in detect_every]
    results: dict = {"settings": run_settings(base, cameras, detector, detect_every, frames, seconds, wait_quiet),
                     "runs": [], "profile": []}
    with tempfile.TemporaryDirectory(prefix="fer-bench-video-") as tmp:
        clips = make_camera_videos(src, Path(tmp), seconds)
        measure_configs(base, configs, clips, Path(tmp), wait_quiet, results, machine, out_dir)
        if profile_frames > 0:
            measure_profiles(base, clips, detector, detect_every, frames, profile_frames, wait_quiet, results)
    report(results, machine, out_dir)
    return results


def run_settings(base: Settings, cameras, detector: str, detect_every, frames: bool, seconds: float,
                 quiet_s: float) -> dict:
    """What the results were measured under."""
    return {"cameras": list(cameras), "detector": detector, "detect_every": list(detect_every),
            "publish_frames": frames, "seconds_per_camera": seconds, "size": list(REAL_SIZE), "fps": REAL_FPS,
            "clips": list(CLIPS), "workers": RealConfig.workers, "on_time_lag_s": ON_TIME_LAG_S, "settle_s": SETTLE_S,
            "wait_quiet_s": quiet_s, "worker": base.worker.model_dump(mode="json")}


def measure_configs(base: Settings, configs: list[RealConfig], clips: list[Path], log_dir: Path, quiet_s: float,
                    results: dict, machine: dict, out_dir: Path | None) -> None:
    """Each configuration in turn, into ``results["runs"]``, with its tables."""
    for cfg in configs:
        section(f"Real video: {cfg.cameras} cameras 640x480 at {REAL_FPS:g} fps, {cfg.detector} every "
                f"{cfg.detect_every}, frames {'on' if cfg.frames else 'off'}, 1 worker + logger")
        r = run_real_config(base, cfg, clips, log_dir, quiet_s)
        r["product_sources"] = source_fingerprint()
        results["runs"].append(r)
        print(table(CAMERA_HEADERS, camera_rows(r), digits=2))
        print(table(REAL_HEADERS, real_rows([r]), digits=1), flush=True)
        # A long run on a shared machine: keep what is measured if a later step fails.
        write_result("pipeline_cameras", {**results, "partial": True, "machine": machine}, out_dir)


def measure_profiles(base: Settings, clips: list[Path], detector: str, detect_every, frames: bool, n_frames: int,
                     quiet_s: float, results: dict) -> None:
    """One camera per clip and detect_every, in this process, into ``results["profile"]``."""
    section(f"One camera, as fast as it goes: CPU ms per frame by stage ({detector})")
    results["profile_busy_processes_before"] = wait_for_quiet(quiet_s)
    results["profile"] = [safe_profile(base, clip, detector, e, frames, n_frames)
                          for e in detect_every for clip in clips]
    print(table(PROFILE_HEADERS, profile_rows([p for p in results["profile"] if "error" not in p]), digits=2))


def report(results: dict, machine: dict, out_dir: Path | None) -> None:
    """The summary table and the headline; the JSON."""
    if results["runs"]:
        section("Real video: summary")
        print(table(REAL_HEADERS, real_rows(results["runs"]), digits=1))
    results["headline"] = real_headline(results)
    # A profile alone must not overwrite the runs' results.
    finish("pipeline_cameras" if results["runs"] else "pipeline_cameras_profile", results, machine, out_dir)


def real_headline(results: dict) -> dict:
    out: dict = {}
    for p in results["profile"]:
        if "error" not in p:
            out[f"profile_{p['clip'].split('_640')[0]}_every{p['detect_every']}_cpu_ms_per_frame"] = p["process_cpu_ms"]
    for r in results["runs"]:
        tag = f"k{r['cameras']}_every{r['detect_every']}"
        out[f"{tag}_cameras_on_time"] = f"{r['cameras_on_time']}/{r['cameras']}"
        out[f"{tag}_cameras_steady"] = f"{r['cameras_steady']}/{r['cameras']}"
        out[f"{tag}_worst_lag_s"] = r["worst_lag_s"]
        out[f"{tag}_producer_cpu_ms_per_frame"] = r["cpu"]["producer_cpu_ms_per_frame"]
        out[f"{tag}_machine_busy"] = r["cpu"]["machine_busy"]
    k8 = [r for r in results["runs"] if r["cameras"] == 8]
    out["target_8_cameras_real_time"] = any(r["cameras_on_time"] == 8 for r in k8) if k8 else None
    out["labels_logged_equals_published"] = all(r["labels_logged"] == r["labels_published"] for r in results["runs"])
    out["every_exit_code_zero"] = all(c == 0 for r in results["runs"] for c in r["exit_codes"].values())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cameras", type=int_list, default=(8,), help="comma-separated camera counts (default 8)")
    ap.add_argument("--detector", default=DEFAULT_DETECTOR,
                    help=f"a ProducerSettings.detector name (default {DEFAULT_DETECTOR})")
    ap.add_argument("--detect-every", type=int_list, default=(1,),
                    help="comma-separated detect_every values, run one after the other (default 1)")
    ap.add_argument("--frames", action=argparse.BooleanOptionalAction, default=False,
                    help="producers also publish JPEG frames (default off: no display in the target)")
    ap.add_argument("--seconds", type=float, default=25.0, help="video length per camera (default 25)")
    ap.add_argument("--profile-frames", type=int, default=300,
                    help="frames in the per-stage profile of one camera (0: no profile)")
    ap.add_argument("--profile-only", action="store_true",
                    help="only the per-stage profile of one camera (writes pipeline_cameras_profile.json)")
    ap.add_argument("--wait-quiet", type=float, default=0.0,
                    help="before each configuration, wait up to this many seconds for other busy processes to end")
    ap.add_argument("--videos", type=Path, help="folder with the two clips (default ../shared/data/video)")
    ap.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    ap.add_argument("--out-dir", type=Path, help="where to write pipeline_cameras.json (default benchmarks/results)")
    a = ap.parse_args(argv)
    run(cameras=() if a.profile_only else a.cameras, detector=a.detector, detect_every=a.detect_every,
        frames=a.frames, seconds=a.seconds, profile_frames=a.profile_frames, wait_quiet=a.wait_quiet,
        redis_url=a.redis_url, videos=a.videos, out_dir=a.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
