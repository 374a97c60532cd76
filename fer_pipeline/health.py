"""One look at a running deployment: what `fer-pipeline status` (and the dashboard) shows.

Everything comes from Redis, so it works the same against the embedded broker of `up` or a
shared Redis with workers on other machines: stream lengths and consumer-group lag/pending
(XINFO), processes alive (heartbeat keys with a TTL), and the shared counters hash
(published, trimmed-unread, dead letters). Labels/s is the growth of the labels stream's
published counter between two samples, so it survives worker restarts.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from fer_pipeline.transport import Transport
from fer_pipeline.urls import redact_url

# Which role drains which consumer group: a group with a backlog and none of these alive stalls.
GROUP_ROLES = {"workers": "worker", "logger": "logger", "display": "display",
               # The sinks' default groups (a second target's group, e.g. sink-mqtt-2, is not known here).
               "sink-mqtt": "sink-mqtt", "sink-webhook": "sink-webhook"}
# Heartbeat counters worth a column in the per-process table.
PROCESS_COUNTERS = ("frames", "crops_published", "crops_dropped", "crops_labelled", "batches", "labels_logged",
                    "frames_drawn", "dead_letters", "reconnects", "infer_ms")
# Read from heartbeats too, for the problems and /metrics, without a column of their own.
COLLECTED_COUNTERS = (*PROCESS_COUNTERS, "realtime_lost_ms", "redis_data_lost", "store_waits")
LOST_WARN_S = 1.0  # a producer this far behind its sources' frame rate is named in the problems


# -- heartbeats: every process writes one (``Service``), status/progress/dashboard read them ------
def beat(transport: Transport, role: str, ident: str, ttl_s: float, info: dict[str, str | int | float]) -> None:
    """Publish this process's heartbeat (its counters), alive for ``ttl_s`` unless renewed."""
    transport.put_record(transport.keys.health(role, ident), {k: str(v) for k, v in info.items()}, ttl_s)


def clear_heartbeat(transport: Transport, role: str, ident: str) -> None:
    """Remove this process's heartbeat on a clean stop (it is not alive any more)."""
    transport.delete_record(transport.keys.health(role, ident))


def alive_processes(transport: Transport) -> list[tuple[str, str, dict[str, str]]]:
    """(role, ident, info) for every process whose heartbeat has not expired."""
    out = []
    for key, info in transport.records(transport.keys.health_pattern):
        parts = key.split(":")
        out.append((parts[-2], parts[-1], info))
    return out


@dataclass(frozen=True)
class GroupState:
    """One consumer group on one stream."""

    stream: str  # short name: crops, labels, frames:<camera>
    group: str
    consumers: int  # consumer names Redis knows in the group (alive or not)
    lag: int  # entries not yet delivered to the group (bundles on crops and labels)
    pending: int  # delivered, not yet acknowledged


@dataclass(frozen=True)
class ProcessState:
    """One live process as its heartbeat describes it: role, ident, uptime and counters."""

    role: str
    ident: str
    uptime_s: float
    counters: dict[str, float]
    cameras: tuple[str, ...] = ()  # a producer's cameras


@dataclass
class PipelineStatus:
    """A snapshot of a deployment; ``to_dict`` gives the JSON form."""

    broker: str
    prefix: str
    taken_at: float
    alive: dict[str, int]
    processes: list[ProcessState]
    streams: dict[str, int]
    groups: list[GroupState]
    published: dict[str, int]
    trimmed_unread: dict[str, int]
    dead_letters: int
    crops_dropped: int
    labels_per_s: float | None
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The snapshot as plain dicts and lists, ready for JSON."""
        return asdict(self)


def _short(full: str, prefix: str) -> str:
    return full[len(prefix) + 1:] if full.startswith(prefix + ":") else full


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return 0.0


def _groups(transport: Transport, stream: str) -> list[GroupState]:
    short = _short(stream, transport.keys.prefix)
    return [GroupState(stream=short, group=name, consumers=consumers, lag=lag, pending=pending)
            for name, consumers, lag, pending in transport.groups(stream)]


def _labels_published(transport: Transport) -> int:
    return transport.stats().get(f"published:{transport.keys.labels}", 0)


def collect(transport: Transport, *, rate_interval_s: float = 1.0,
            sleep: Callable[[float], None] = time.sleep) -> PipelineStatus:
    """Read the state of the pipeline behind ``transport``.

    Args:
        transport: an open transport (its prefix selects the deployment).
        rate_interval_s: how long to watch the labels counter for labels/s; 0 skips the
            measurement (``labels_per_s`` is then None).
        sleep: injected for tests.

    Raises:
        redis.ConnectionError: Redis went away while reading (the CLI reports it in one line).
    """
    keys = transport.keys
    before = _labels_published(transport) if rate_interval_s > 0 else 0
    t0 = time.monotonic()
    if rate_interval_s > 0:
        sleep(rate_interval_s)
    rate = None
    if rate_interval_s > 0:
        rate = round((_labels_published(transport) - before) / max(time.monotonic() - t0, 1e-6), 1)

    now = time.time()
    processes = []
    alive: Counter[str] = Counter()
    for role, ident, info in sorted(alive_processes(transport)):
        alive[role] += 1
        counters = {k: _num(info[k]) for k in COLLECTED_COUNTERS if k in info}
        started = _num(info.get("started")) or now
        processes.append(ProcessState(role=role, ident=ident, uptime_s=round(max(0.0, now - started), 1),
                                      counters=counters, cameras=_cameras(info.get("camera_ids"))))

    cameras = transport.camera_ids()
    frames = [keys.frames(c) for c in cameras]
    # Sharded: the totals, then each shard's streams; the groups per shard (where they live).
    shards = [*keys.crops_shards, *keys.labels_shards] if keys.sharded else []
    streams = [keys.crops, keys.labels, *shards, *frames, keys.dead]
    # A bundled stream's length is the messages it holds, not its entries (bundles.py).
    lengths = {_short(s, keys.prefix): n for s, n in transport.lengths(streams).items()}
    groups = [g for s in (shards or [keys.crops, keys.labels]) + frames for g in _groups(transport, s)]

    stats = transport.stats()
    published = {_short(k.split(":", 1)[1], keys.prefix): v for k, v in stats.items() if k.startswith("published:")}
    trimmed = {_short(k.split(":", 1)[1], keys.prefix): v for k, v in stats.items()
               if k.startswith("trimmed_unread:")}
    status = PipelineStatus(
        broker=redact_url(transport.settings.redis.url), prefix=keys.prefix, taken_at=round(now, 3),
        alive=dict(alive), processes=processes, streams=lengths, groups=groups, published=published,
        trimmed_unread=trimmed, dead_letters=int(stats.get("dead_letters", 0)),
        crops_dropped=int(sum(p.counters.get("crops_dropped", 0) for p in processes)), labels_per_s=rate,
    )
    status.problems = problems(status)
    return status


def _cameras(text: str | None) -> tuple[str, ...]:
    """A producer heartbeat's cameras (a JSON list: ids may hold commas); () when absent or garbled."""
    try:
        ids = json.loads(text) if text else []
    except ValueError:
        return ()
    return tuple(str(i) for i in ids) if isinstance(ids, list) else ()


def problems(status: PipelineStatus) -> list[str]:
    """Plain-language warnings: stalled groups, losses, dead letters."""
    out = []
    for g in status.groups:
        role = GROUP_ROLES.get(g.group)
        if role and (g.lag or g.pending) and not status.alive.get(role):
            out.append(f"{g.stream}: group {g.group} has {g.lag + g.pending:,} waiting and no {role} alive")
    if status.dead_letters:
        out.append(f"{status.dead_letters:,} dead letters in {status.prefix}:dead")
    grouped = {g.stream for g in status.groups}
    for stream, n in sorted(status.trimmed_unread.items()):
        # A stream nobody consumes (frames while no display runs) is trimmed by design.
        if n and stream in grouped:
            out.append(f"{stream}: {n:,} messages trimmed before a consumer finished them")
    if status.crops_dropped:
        out.append(f"producers dropped {status.crops_dropped:,} crops (backlog over the limit)")
    for p in status.processes:
        behind = p.counters.get("realtime_lost_ms", 0) / 1000
        if p.role == "producer" and behind >= LOST_WARN_S:
            # A paced file replays slower than real time; a live camera would drop frames instead.
            out.append(f"producer {p.ident}: its cameras fell {behind:,.1f} s behind real time "
                       "(too slow for the frame rate: raise --detect-every or add cores)")
        if p.role == "logger" and p.counters.get("store_waits", 0):
            out.append(f"logger {p.ident}: the emotion log could not be written {p.counters['store_waits']:,.0f} "
                       "time(s) (locked, disk full, database gone): its labels wait pending, see its log")
    lost = max((p.counters.get("redis_data_lost", 0) for p in status.processes), default=0)
    if lost:
        out.append(f"Redis lost its data {lost:,.0f} time(s) while these processes ran (a restart without "
                   "persistence): the messages it held then are gone, and its counters restarted from 0")
    return out


COLUMN_NAMES = {"crops_published": "faces", "crops_dropped": "dropped", "crops_labelled": "labelled",
                "labels_logged": "logged", "frames_drawn": "drawn", "dead_letters": "dead", "reconnects": "reconn"}


def _duration(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h" if d else f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def render(status: PipelineStatus):
    """A rich renderable: a headline, per-group lag/pending, processes, problems."""
    from rich import box
    from rich.console import Group, RenderableType
    from rich.table import Table
    from rich.text import Text

    rate = "-" if status.labels_per_s is None else f"{status.labels_per_s:,.1f}"
    roles = "  ".join(f"{r} {status.alive.get(r, 0)}" for r in ("producer", "worker", "logger", "display")) or "-"
    head = Text.assemble(("fer-pipeline ", "bold"), f"{status.broker} prefix {status.prefix}   ",
                         ("alive ", "bold cyan"), roles, ("   labels/s ", "bold cyan"), rate,
                         ("   dead letters ", "bold cyan"), f"{status.dead_letters:,}",
                         ("   dropped ", "bold cyan"), f"{status.crops_dropped:,}")

    stages = Table(title="streams and consumer groups", title_justify="left", caption_justify="left",
                   caption="length counts messages; on crops and labels, lag and pending count bundles "
                           "(a producer round, a worker batch)")
    for col in ("stream", "length", "group", "consumers", "alive", "lag", "pending", "trimmed unread"):
        stages.add_column(col, justify="left" if col in ("stream", "group") else "right")
    for g in status.groups:
        role = GROUP_ROLES.get(g.group)
        alive = str(status.alive.get(role, 0)) if role else "-"
        stages.add_row(g.stream, f"{status.streams.get(g.stream, 0):,}", g.group, str(g.consumers), alive,
                       f"{g.lag:,}", f"{g.pending:,}", f"{status.trimmed_unread.get(g.stream, 0):,}")
    grouped = {g.stream for g in status.groups}
    for stream, n in status.streams.items():
        if stream not in grouped:
            stages.add_row(stream, f"{n:,}", "-", "-", "-", "-", "-", f"{status.trimmed_unread.get(stream, 0):,}")

    # Compact (no vertical rules, one space of padding, short headers) and folding instead of
    # cutting: the table reads whole in an 80-column terminal.
    procs = Table(title="processes", title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    procs.add_column("role", no_wrap=True)
    procs.add_column("ident", overflow="fold")
    with_cameras = any(p.cameras for p in status.processes)
    if with_cameras:
        procs.add_column("cameras", overflow="fold")
    procs.add_column("up", justify="right", no_wrap=True)
    # Only counters some process has a nonzero value for: what matters stays on screen.
    # Batches and the inference total are read per face instead (ms/face); /metrics keeps them.
    shown = [c for c in PROCESS_COUNTERS if c not in ("infer_ms", "batches")
             and any(p.counters.get(c) for p in status.processes)]
    for c in shown:
        procs.add_column(COLUMN_NAMES.get(c, c), justify="right", no_wrap=True)
    per_face = any(p.counters.get("infer_ms") for p in status.processes)
    if per_face:
        procs.add_column("ms/face", justify="right", no_wrap=True)  # inference per face, not a running total
    for p in status.processes:
        row = [p.role, p.ident] + ([", ".join(p.cameras)] if with_cameras else []) + [_duration(p.uptime_s)]
        row += [f"{p.counters[c]:,.0f}" if c in p.counters else "" for c in shown]
        if per_face:
            faces = p.counters.get("crops_labelled", 0.0)
            row.append(f"{p.counters.get('infer_ms', 0) / faces:.2f}" if faces else "")
        procs.add_row(*row)
    parts: list[RenderableType] = [head, stages,
                                   procs if status.processes else Text("no live processes", style="yellow")]
    parts += [Text(f"! {p}", style="bold red") for p in status.problems]
    return Group(*parts)
