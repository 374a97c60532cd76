"""What every benchmark shares: timing loops, percentiles, tables, machine facts, JSON results,
process memory/CPU readings and Redis key clean-up.

The pure helpers (``percentiles``, ``summarize_latencies``, ``ratio``, ``table``, ``fmt``) are
unit-tested in tests/benchmarks; the rest touches the machine.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import platform
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_REDIS_URL = os.environ.get("FER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def data_dir() -> Path:
    """``FER_DATA_DIR`` if set, else ``../shared/data`` beside the repository (as the tests)."""
    return Path(os.environ.get("FER_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


# -- pure helpers ---------------------------------------------------------------------------------
def percentiles(values: Iterable[float], qs: Sequence[float] = (50, 95, 99)) -> dict[str, float | None]:
    """Percentiles by linear interpolation between closest ranks (numpy's default method).

    Args:
        values: Samples, any order; non-finite ones are ignored.
        qs: Percentiles in [0, 100].

    Returns:
        ``{"p50": ..., "p95": ...}``; every value is None when there are no finite samples.
    """
    data = sorted(v for v in values if math.isfinite(v))
    out: dict[str, float | None] = {}
    for q in qs:
        if not 0 <= q <= 100:
            msg = f"percentile must be within [0, 100], got {q}"
            raise ValueError(msg)
        key = f"p{q:g}"
        if not data:
            out[key] = None
            continue
        pos = (len(data) - 1) * q / 100
        lo = math.floor(pos)
        hi = min(lo + 1, len(data) - 1)
        out[key] = data[lo] + (data[hi] - data[lo]) * (pos - lo)
    return out


def summarize_latencies(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """Count, mean, p50/p95/p99 and max of latencies given in seconds, reported in milliseconds."""
    ms = [s * 1000 for s in seconds if math.isfinite(s)]
    out: dict[str, float | int | None] = {"n": len(ms)}
    out.update({f"{k}_ms": v for k, v in percentiles(ms).items()})
    out["mean_ms"] = sum(ms) / len(ms) if ms else None
    out["max_ms"] = max(ms) if ms else None
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt(value, digits: int = 1) -> str:
    """A table cell: None as "-", floats with ``digits`` decimals (thousands separated), others as str."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence], *, digits: int = 1) -> str:
    """A Markdown pipe table with padded columns (reads well in a terminal and pastes into BENCHMARKS.md)."""
    cells = [[fmt(c, digits) for c in row] for row in rows]
    for row in cells:
        if len(row) != len(headers):
            msg = f"row has {len(row)} cells for {len(headers)} headers: {row}"
            raise ValueError(msg)
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    # Text columns left-aligned, numbers right-aligned, decided by the first row.
    numeric = [bool(cells) and _looks_numeric(cells[0][i]) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if n else ("-" * (w + 2)) for w, n in zip(widths, numeric)) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in cells)])


def _looks_numeric(text: str) -> bool:
    stripped = text.replace(",", "").replace(".", "", 1).replace("x", "").replace("%", "").lstrip("-")
    return stripped.isdigit()


def letterbox(image, width: int, height: int):
    """``image`` scaled to fit inside width x height keeping its aspect ratio, centred on black
    (how a 16:9 clip shows on a 4:3 camera); returns (image, scale, x offset, y offset)."""
    import cv2
    import numpy as np

    h, w = image.shape[:2]
    s = min(width / w, height / h)
    nw, nh = round(w * s), round(h * s)
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    scaled = cv2.resize(image, (nw, nh), interpolation=interp) if (nw, nh) != (w, h) else image
    out = np.zeros((height, width, *image.shape[2:]), np.uint8)
    y0, x0 = (height - nh) // 2, (width - nw) // 2
    out[y0:y0 + nh, x0:x0 + nw] = scaled
    return out, s, x0, y0


# -- timing -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Throughput:
    calls: int
    items: int
    seconds: float

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0

    @property
    def ms_per_item(self) -> float:
        return 1000 * self.seconds / self.items if self.items else float("nan")

    def as_dict(self) -> dict:
        return {**asdict(self), "items_per_s": self.items_per_s, "ms_per_item": self.ms_per_item}


def measure(fn: Callable[[], object], *, items_per_call: int, min_seconds: float, min_calls: int = 3,
            warmup_calls: int = 1, max_calls: int | None = None) -> Throughput:
    """Call ``fn`` until both ``min_seconds`` and ``min_calls`` are reached (after warm-up calls)."""
    for _ in range(warmup_calls):
        fn()
    calls = 0
    t0 = time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - t0
        if (elapsed >= min_seconds and calls >= min_calls) or (max_calls is not None and calls >= max_calls):
            return Throughput(calls, calls * items_per_call, elapsed)


# -- machine and processes -------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def busy_processes(min_cpu_percent: float = 20.0) -> list[str]:
    """Other processes using a lot of CPU right now (sampled over 0.5 s), e.g. a training job."""
    try:
        import psutil
    except ImportError:
        return []
    procs = list(psutil.process_iter(["pid", "name", "cmdline"]))
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.cpu_percent(None)
    time.sleep(0.5)
    out = []
    for p in procs:
        try:
            pct = p.cpu_percent(None)
        except psutil.Error:
            continue
        if pct >= min_cpu_percent and p.pid != os.getpid():
            cmd = " ".join(p.info.get("cmdline") or [p.info.get("name") or "?"])[:80]
            out.append(f"{cmd} ({pct:.0f}% CPU)")
    return out


def machine_info(model_path: Path | None = None) -> dict:
    """Facts a reader needs to compare runs: CPU, load, library versions, the model measured."""
    import numpy as np

    info: dict = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "load_avg_1_5_15": [round(v, 2) for v in os.getloadavg()],
        "busy_processes": busy_processes(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    for mod, attr in (("cv2", "__version__"), ("redis", "__version__"), ("hiredis", "__version__"),
                      ("msgpack", "version")):
        try:
            m = __import__(mod)
            v = getattr(m, attr)
            info[mod] = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
        except ImportError:
            info[mod] = None
    try:
        from redis.utils import HIREDIS_AVAILABLE

        info["hiredis_parser_active"] = bool(HIREDIS_AVAILABLE)
    except ImportError:
        info["hiredis_parser_active"] = None
    try:
        from importlib.metadata import version

        info["ai_edge_litert"] = version("ai-edge-litert")
    except Exception:  # noqa: BLE001 - absent package: report None
        info["ai_edge_litert"] = None
    if model_path is not None:
        info["model"] = model_summary(model_path)
    return info


def model_summary(model_path: Path) -> dict:
    """model_id, architecture, MACs and public-test accuracy from a model.json."""
    try:
        meta = json.loads(Path(model_path).read_text())
    except (OSError, ValueError):
        return {"path": str(model_path), "error": "unreadable"}
    test = meta.get("metrics", {}).get("publictest", {})
    return {"path": str(model_path), "model_id": meta.get("model_id"), "architecture": meta.get("architecture"),
            "macs_per_face": meta.get("macs_per_face"), "parameters": meta.get("parameters"),
            "publictest_accuracy": test.get("accuracy"), "int8_available": "tflite_int8" in meta.get("files", {})}


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process in MiB (Linux /proc), None when unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a process has used so far (Linux /proc), None when unavailable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


# -- Redis ---------------------------------------------------------------------------------------------
def unique_prefix(tag: str) -> str:
    return f"bench-{tag}-{uuid.uuid4().hex[:8]}"


def redis_client(settings):
    """A plain redis-py client to the settings' Redis, for what benchmarks inspect directly
    (heartbeat keys, INFO, PING round trips); the product goes through ``Transport``."""
    import redis

    return redis.Redis.from_url(settings.redis.url, socket_timeout=settings.redis.socket_timeout_s)


def delete_prefix(client, prefix: str) -> int:
    """Delete every key under ``prefix:`` (never FLUSH: the Redis may be shared)."""
    n = 0
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        n += client.delete(key)
    return n


# -- output --------------------------------------------------------------------------------------------
def write_result(name: str, data: dict, out_dir: Path | None = None) -> Path:
    """Write ``<out_dir>/<name>.json`` (default benchmarks/results) with a timestamp; returns the path."""
    out_dir = Path(out_dir) if out_dir is not None else RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    payload = {"benchmark": name, "created": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
               **data}
    path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    return path


def _json_default(value):
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    msg = f"not JSON serialisable: {type(value).__name__}"
    raise TypeError(msg)


def section(title: str) -> None:
    print(f"\n## {title}\n", flush=True)


def finish(name: str, results: dict, machine: dict, out_dir: Path | None = None) -> Path:
    """Print the headline table, attach the machine, write the JSON: every benchmark ends so."""
    section("Headline")
    print(table(["figure", "value"], [[k, v] for k, v in results["headline"].items()], digits=2))
    results["machine"] = machine
    path = write_result(name, results, out_dir)
    print(f"\nwrote {path}")
    return path


def int_list(text: str) -> tuple[int, ...]:
    """A comma-separated command-line list of integers ("1,2,8")."""
    return tuple(int(v) for v in text.split(",") if v.strip())
