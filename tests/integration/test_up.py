"""The real pipeline, as a user runs it: `fer-pipeline up` on real videos through a real Redis."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys

import cv2
import pytest
import redis

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def run_up(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fer_pipeline", "up", *args],
                          capture_output=True, text=True, timeout=timeout)


def frame_count(path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    return n


def video_of(out, camera: str):
    """The camera's one annotated video, <camera>-<run>.mp4."""
    [path] = out.glob(f"{camera}-*.mp4")
    return path


def log_rows(db) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT crop_id, camera_id, track_id, emotion FROM labels").fetchall()


def test_real_video_through_up_labels_every_crop_exactly_once(redis_settings, video_dir, tmp_path):
    prefix, url = redis_settings.redis.prefix, redis_settings.redis.url
    out = tmp_path / "out"
    r = run_up("--source", str(video_dir / "short_hamilton_clip.mp4"), "--camera-id", "stage", "--fast",
               "--redis-url", url, "--prefix", prefix, "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "stopped (all sources ended)" in r.stdout

    stats = {k.decode(): int(v) for k, v in redis.Redis.from_url(url).hgetall(f"{prefix}:stats").items()}
    published = stats[f"published:{prefix}:crops"]
    rows = log_rows(out / "emotions.sqlite")
    assert published > 20  # the clip has faces in most frames
    assert len(rows) == published  # every published crop has exactly one row (crop_id is the key)
    assert len({row[0] for row in rows}) == len(rows)
    assert {row[1] for row in rows} == {"stage"}
    assert stats.get("dead_letters", 0) == 0
    assert frame_count(video_of(out, "stage")) == 275  # every frame of the video, annotated


def test_two_cameras_two_workers(redis_settings, video_dir, tmp_path):
    prefix, url = redis_settings.redis.prefix, redis_settings.redis.url
    out = tmp_path / "out"
    r = run_up("--source", str(video_dir / "woman2.mp4"), "--source", str(video_dir / "short_hamilton_clip.mp4"),
               "--workers", "2", "--fast", "--redis-url", url, "--prefix", prefix, "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    rows = log_rows(out / "emotions.sqlite")
    cameras = {row[1] for row in rows}
    assert cameras == {"woman2", "short_hamilton_clip"}
    # The woman is one person followed through the clip: her timeline is one dominant track.
    woman_tracks = [row[2] for row in rows if row[1] == "woman2"]
    top = max(set(woman_tracks), key=woman_tracks.count)
    assert woman_tracks.count(top) > 0.8 * len(woman_tracks)
    stats = {k.decode(): int(v) for k, v in redis.Redis.from_url(url).hgetall(f"{prefix}:stats").items()}
    assert len(rows) == stats[f"published:{prefix}:crops"]
    assert frame_count(video_of(out, "woman2")) == 464
    assert frame_count(video_of(out, "short_hamilton_clip")) == 275
    # Both workers took part (the progress summary reports per-worker totals through heartbeats).
    with sqlite3.connect(out / "emotions.sqlite") as con:
        workers = {w for (w,) in con.execute("SELECT DISTINCT worker_id FROM labels")}
    assert workers <= {"up-worker-0", "up-worker-1"} and workers


def test_demo_with_embedded_broker(tmp_path):
    """The README's first command: no Redis URL, the shipped demo clip. A face is visible in
    about 13 of every 15 frames; the default detector and tracker label one in most of them
    (the tutorial's Haar labelled 34%)."""
    out = tmp_path / "out"
    r = run_up("--source", "demo", "--fast", "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "embedded broker: redis-server" in r.stdout
    with sqlite3.connect(out / "emotions.sqlite") as con:
        frames = {f for (f,) in con.execute("SELECT DISTINCT frame_index FROM labels")}
    assert len(frames) >= 0.8 * 275, f"{len(frames)} of 275 frames carry a labelled face"
    assert frame_count(video_of(out, "short_hamilton_clip")) == 275


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "/no/such/video.mp4"], "no such file"),
        (["--source", "demo", "--redis-url", "http://x"], "a Redis URL starts with redis://"),
        (["--source", "demo", "--redis-url", "redis://127.0.0.1:1/0"], "cannot reach Redis"),
        (["--source", "demo", "--out", "/proc/forbidden"], "not writable"),
    ],
)
def test_bad_input_is_one_readable_line(args, message, tmp_path):
    r = run_up(*args, timeout=60)
    assert r.returncode == 1
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and message in err[0], r.stderr
    assert "Traceback" not in r.stderr


def test_two_runs_on_one_redis_each_report_their_own_and_keep_their_own_files(redis_settings, video_dir, tmp_path):
    prefix, url = redis_settings.redis.prefix, redis_settings.redis.url
    out = tmp_path / "out"
    args = ("--source", str(video_dir / "short_hamilton_clip.mp4"), "--camera-id", "stage", "--fast", "--no-display",
            "--redis-url", url, "--prefix", prefix, "--out", str(out))
    first, second = run_up(*args), run_up(*args)
    assert first.returncode == 0 and second.returncode == 0, second.stdout + second.stderr
    runs = [re.search(r"^run (\S+) stopped", r.stdout, re.M).group(1) for r in (first, second)]
    assert runs[0] != runs[1]
    counts = [re.search(r"faces published ([\d,]+) +labelled ([\d,]+) +in the log ([\d,]+)", r.stdout).groups()
              for r in (first, second)]
    # The second run on the same Redis and log counts itself only: same clip, same figures.
    assert counts[0] == counts[1] and len(set(counts[1])) == 1
    with sqlite3.connect(out / "emotions.sqlite") as con:
        per_run = dict(con.execute("SELECT run_id, COUNT(*) FROM labels GROUP BY run_id").fetchall())
    assert set(per_run) == set(runs) and per_run[runs[0]] == per_run[runs[1]]
    assert all((out / "logs" / run / "producer-0.log").is_file() for run in runs)


def _logged(stdout: str) -> int:
    m = re.search(r"in the log ([\d,]+)", stdout)
    return int(m.group(1).replace(",", "")) if m else 0


def test_up_with_an_mqtt_sink_and_the_dashboard(redis_settings, video_dir, tmp_path):
    import socket
    import threading
    import time

    paho = pytest.importorskip("paho.mqtt.client")
    try:
        socket.create_connection(("127.0.0.1", 1883), timeout=1).close()
    except OSError:
        pytest.skip("no MQTT broker at 127.0.0.1:1883 (.ci/run starts Mosquitto)")
    got: list[str] = []
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.on_message = lambda c, u, m: got.append(m.topic)
    client.connect("127.0.0.1", 1883)
    client.subscribe("fer/stage-mq/#", qos=1)
    client.loop_start()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prefix, url = redis_settings.redis.prefix, redis_settings.redis.url
    out = tmp_path / "out"
    env_port = {"FER_DASHBOARD__PORT": str(port)}
    try:
        r = subprocess.run([sys.executable, "-m", "fer_pipeline", "up", "--source",
                            str(video_dir / "short_hamilton_clip.mp4"), "--camera-id", "stage-mq", "--fast",
                            "--no-display", "--redis-url", url, "--prefix", prefix, "--out", str(out),
                            "--sink", "mqtt://127.0.0.1:1883", "--dashboard"],
                           capture_output=True, text=True, timeout=300, env={**os.environ, **env_port})
        # The last QoS 1 deliveries to this subscriber (the sink had them acknowledged already).
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and got.count("fer/stage-mq/label") < _logged(r.stdout):
            threading.Event().wait(0.2)
    finally:
        client.loop_stop()
        client.disconnect()
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"dashboard: http://127.0.0.1:{port}/" in r.stdout
    assert got.count("fer/stage-mq/label") == _logged(r.stdout) > 20  # every label of the run, through the broker
    [run_dir] = (out / "logs").iterdir()
    assert "stopped after" in (run_dir / "sink-0.log").read_text()
    assert f"dashboard on http://127.0.0.1:{port}/" in (run_dir / "dashboard.log").read_text()


def test_up_refuses_a_bad_sink_and_a_taken_dashboard_port_in_one_line(tmp_path):
    import socket

    r = run_up("--source", "demo", "--out", str(tmp_path), "--sink", "ftp://x")
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "--sink takes mqtt://" in r.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "fer_pipeline", "up", "--source", "demo", "--out", str(tmp_path),
                            "--dashboard"], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "FER_DASHBOARD__PORT": str(port)})
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and f"port {port} on 127.0.0.1 is in use" in r.stderr


def test_the_same_file_twice_is_two_cameras_and_every_face_of_both_is_logged(tmp_path):
    out = tmp_path / "out"
    r = run_up("--source", "demo", "--source", "demo", "--fast", "--no-display", "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    published = int(re.search(r"faces published ([\d,]+)", r.stdout).group(1).replace(",", ""))
    with sqlite3.connect(out / "emotions.sqlite") as con:
        per_camera = dict(con.execute("SELECT camera_id, COUNT(*) FROM labels GROUP BY camera_id").fetchall())
    # One run id for both producers: without distinct camera ids their crop ids would coincide.
    assert set(per_camera) == {"short_hamilton_clip", "short_hamilton_clip-2"}
    assert sum(per_camera.values()) == published and per_camera["short_hamilton_clip"] > 20


def test_a_producers_source_is_in_its_environment_not_its_arguments(tmp_path):
    """Every local user reads a process's arguments (ps): a camera URL's password must not be
    there. `up` hands each producer its source as FER_PRODUCER__SOURCES."""
    import time
    from pathlib import Path

    proc = subprocess.Popen([sys.executable, "-m", "fer_pipeline", "up", "--source", "demo", "--workers", "0",
                             "--no-display", "--out", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        found = None
        deadline = time.monotonic() + 60
        while found is None and time.monotonic() < deadline and proc.poll() is None:
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    args = cmdline.read_bytes().split(b"\0")
                    if b"producer" in args and b"fer_pipeline" in args:
                        env = (cmdline.parent / "environ").read_bytes().split(b"\0")
                        if f"FER_PARENT_PID={proc.pid}".encode() in env:  # this `up`'s, no other's
                            found = (args, env)
                            break
                except OSError:
                    continue
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    assert found is not None, "no producer child seen"
    args, env = found
    assert not any(b"short_hamilton_clip.mp4" in a for a in args)  # (the camera id is the file name)
    assert any(e.startswith(b"FER_PRODUCER=") and b"short_hamilton_clip.mp4" in e for e in env)
