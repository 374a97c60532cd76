"""docker-compose.yml validated by the docker CLI (`docker compose config`, or the older
`docker-compose config`); skipped with a reason when neither is installed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROLES = {"producer", "worker", "logger", "display", "dashboard", "retention"}


def _compose() -> list[str]:
    if shutil.which("docker"):
        r = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if r.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.skip("no docker compose CLI (docker compose or docker-compose) on this machine")


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    # A clean environment: the file must work from its own defaults plus what a test sets.
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FER_", "CAMERA", "DASHBOARD_", "VIDEOS_"))}
    return subprocess.run([*_compose(), "-f", str(REPO / "docker-compose.yml"), *args], capture_output=True,
                          text=True, cwd=REPO, env={**base, **env}, timeout=60)


def _services(env: dict[str, str]) -> dict[str, dict | str]:
    """The resolved services: parsed JSON from compose v2, else each service's YAML text."""
    r = _run(["config", "--format", "json"], **env) if _compose()[0] == "docker" else None
    if r is not None and r.returncode == 0:
        return json.loads(r.stdout)["services"]
    r = _run(["config"], **env)
    assert r.returncode == 0, r.stderr
    body = r.stdout.split("\nservices:\n", 1)[-1] if not r.stdout.startswith("services:") else r.stdout[10:]
    body = re.split(r"\n\S", body, maxsplit=1)[0]  # up to the next top-level key (volumes:)
    parts = re.split(r"^  ([\w-]+):\n", body, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_compose_file_is_valid_with_defaults_and_with_overrides():
    assert _run(["config", "--quiet"]).returncode == 0
    r = _run(["config", "--quiet"], CAMERA_SOURCE="rtsp://cam.example/stream", CAMERA_ID="door",
             FER_CONSUMER__DB="postgresql://fer@db/fer", DASHBOARD_PORT="9000")
    assert r.returncode == 0, r.stderr
    r = _run(["--profile", "camera2", "config", "--services"])
    assert r.returncode == 0, r.stderr
    assert set(r.stdout.split()) == {"redis", "producer2"} | ROLES


def test_every_role_has_a_health_check_and_workers_scale():
    services = _services({"CAMERA_SOURCE": "rtsp://cam.example/stream", "DASHBOARD_PORT": "9000"})
    assert ROLES | {"redis"} <= set(services)
    for name in ROLES | {"redis"}:
        svc = services[name]
        assert ("healthcheck" in svc) if isinstance(svc, dict) else ("healthcheck:" in svc), name
    text = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in services.items()}
    # `--scale worker=N` needs no fixed name and no published port.
    assert "container_name" not in text["worker"] and "ports" not in text["worker"]
    assert "rtsp://cam.example/stream" in text["producer"]
    assert "9000" in text["dashboard"] and "8000" in text["dashboard"]
    assert "FER_REDIS__URL" in text["worker"] and "redis://redis:6379/0" in text["worker"]
    assert "FER_CONSUMER__STREAM_MAX_AGE_S" in text["retention"]
