"""`fer-pipeline dashboard` as a process: a taken port is one readable line and exit 1; SIGTERM
(how `up` stops its children) ends it with exit 0 even while a video stream is open."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from fer_pipeline.errors import ConfigError

pytest.importorskip("uvicorn", reason="the dashboard extra is not installed")

from fer_pipeline.dashboard.serve import bind  # noqa: E402
from tests.dashboard.live import free_port, publish  # noqa: E402


def command(port: int, prefix: str = "test-unused", url: str = "redis://127.0.0.1:6379/0") -> list[str]:
    return [sys.executable, "-m", "fer_pipeline", "dashboard", "--redis-url", url, "--prefix", prefix,
            "--port", str(port)]


def test_a_taken_port_is_a_config_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"^port {port} on 127.0.0.1 is in use; pass --port"):
            bind("127.0.0.1", port)
    with pytest.raises(ConfigError, match="cannot listen on 'no-such-host.invalid'"):
        bind("no-such-host.invalid", 8000)
    sock = bind("127.0.0.1", 0)
    sock.close()


def test_the_command_on_a_taken_port_says_so_in_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run(command(port), capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stdout == ""  # no address printed for a server that never started
    assert r.stderr.splitlines() == [f"fer-pipeline: error: port {port} on 127.0.0.1 is in use; pass --port with "
                                     "a free one (or set FER_DASHBOARD__PORT)"]


@pytest.mark.redis
@pytest.mark.slow
def test_sigterm_stops_it_cleanly_with_a_stream_open(redis_settings, real_transport):
    import httpx

    publish(real_transport, 0)
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(command(port, redis_settings.redis.prefix, redis_settings.redis.url), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            line = proc.stdout.readline()
            assert line.startswith(f"dashboard on http://127.0.0.1:{port}/"), line
            with httpx.stream("GET", f"http://127.0.0.1:{port}/api/stream/door", timeout=10) as r:
                assert r.status_code == 200
                next(r.iter_bytes())  # the first frame is in: the stream is open
                t0 = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                rc = proc.wait(timeout=15)
                stopped_in = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
        err = proc.stderr.read()
    assert rc == 0, err
    assert "Traceback" not in err and "ERROR" not in err, err
    assert stopped_in < 2.0  # the stream ended at once, not after uvicorn's grace period
