"""Live progress of a running pipeline, built from the processes' heartbeats and Redis.

Heartbeats vanish when a process exits, so the last report of every process is kept:
totals of finished producers stay in the sums.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from dataclasses import dataclass, field

from fer_pipeline.health import alive_processes
from fer_pipeline.labels import EMOTIONS
from fer_pipeline.transport import Transport


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return 0.0


# The labels/s and frames/s rates are measured over this window: heartbeats arrive every
# second or so, and a window as short as that flickers between 0 and twice the rate.
RATE_WINDOW_S = 5.0


@dataclass
class Progress:
    """What `up` shows while it runs: the last heartbeat of every process seen, the ones alive
    now, rates over the last few seconds, and, for finite sources, how far through they are.

    ``baseline`` is Redis's stats hash when the run started: a reused Redis keeps earlier
    runs' counters, and only this run's are shown. ``total_frames`` is the frames the finite
    sources hold (0 when unknown or endless): it makes the percentage and the ETA.
    """

    transport: Transport
    baseline: dict[str, int] = field(default_factory=dict)
    total_frames: int = 0
    last: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    alive: set[tuple[str, str]] = field(default_factory=set)
    finished: bool = False
    _marks: deque[tuple[float, float, float]] = field(default_factory=deque)
    rate: float = 0.0
    frame_rate: float = 0.0

    def refresh(self) -> None:
        """Read the heartbeats: keep each process's latest, note which are alive, and update the
        labels/s and frames/s rates."""
        self.alive = set()
        for role, ident, info in alive_processes(self.transport):
            self.last[(role, ident)] = info
            self.alive.add((role, ident))
        self._mark(time.monotonic())

    def _mark(self, now: float) -> None:
        self._marks.append((now, self.total("worker", "crops_labelled"), self.total("producer", "frames")))
        while len(self._marks) > 2 and now - self._marks[1][0] >= RATE_WINDOW_S:
            self._marks.popleft()
        t0, labelled0, frames0 = self._marks[0]
        if now - t0 >= 1.0:
            self.rate = (self._marks[-1][1] - labelled0) / (now - t0)
            self.frame_rate = (self._marks[-1][2] - frames0) / (now - t0)

    def finish(self, final: dict[str, list[dict[str, int]]]) -> None:
        """Replace the last heartbeats with the processes' final counters (``role -> one dict per
        process``) for the roles that have them: a heartbeat is up to a second old when its
        process stops, the final counters are exact. The panel then shows the run as ended."""
        for role, counters in final.items():
            self.last = {k: v for k, v in self.last.items() if k[0] != role}
            for i, c in enumerate(counters):
                self.last[(role, f"final-{i}")] = {k: str(v) for k, v in c.items()}
        self.alive = set()
        self.finished = True

    def total(self, role: str, key: str) -> float:
        """Counter ``key`` summed over every process of ``role`` seen, finished ones included."""
        return sum(_num(info.get(key)) for (r, _), info in self.last.items() if r == role)

    def count_alive(self, role: str) -> int:
        """How many processes of ``role`` had a live heartbeat at the last refresh."""
        return sum(1 for r, _ in self.alive if r == role)

    def emotions(self) -> dict[str, int]:
        """Crops labelled per emotion, summed over every worker seen."""
        out: dict[str, int] = defaultdict(int)
        for (r, _), info in self.last.items():
            if r == "worker":
                for e in EMOTIONS:
                    out[e] += int(_num(info.get(f"emotion_{e}")))
        return dict(out)

    def run_stats(self) -> dict[str, int]:
        """Redis's stats hash less what it held when the run started: this run's counters."""
        return {k: v - self.baseline.get(k, 0) for k, v in self.transport.stats().items()}

    def snapshot(self, backlog: dict[str, tuple[int, int]] | None = None) -> dict:
        """The progress as a dict: processes alive, frames (and of how many), faces, labels and
        their rate, losses, the queue per stage from ``backlog`` (waiting plus pending), and
        labels per emotion."""
        stats = self.run_stats()
        frames = int(self.total("producer", "frames"))
        left = max(self.total_frames - frames, 0)
        return {
            "finished": self.finished,
            "producers": self.count_alive("producer"),
            "workers": self.count_alive("worker"),
            "frames": frames,
            "total_frames": self.total_frames,
            "frames_per_s": round(self.frame_rate, 1),
            "eta_s": round(left / self.frame_rate) if self.total_frames and self.frame_rate > 0 else None,
            "faces": int(self.total("producer", "crops_published")),
            "crops_dropped": int(self.total("producer", "crops_dropped")),
            # Paced files replayed slower than their frame rate: the producers are too slow.
            "behind_s": round(self.total("producer", "realtime_lost_ms") / 1000, 1),
            "labelled": int(self.total("worker", "crops_labelled")),
            "labels_per_s": round(self.rate, 1),
            "logged": int(self.total("logger", "labels_logged")),
            "frames_drawn": int(self.total("display", "frames_drawn")),
            "dead_letters": int(stats.get("dead_letters", 0)),
            "trimmed_unread": trimmed_unread(stats),
            "queue": {k: v[0] + v[1] for k, v in (backlog or {}).items()},
            "emotions": self.emotions(),
        }


def trimmed_unread(stats: dict[str, int]) -> int:
    """Messages trimmed before a consumer group finished them, over every stream, from the stats hash."""
    return sum(v for k, v in stats.items() if k.startswith("trimmed_unread:"))


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def _fraction(snap: dict) -> float | None:
    total = snap.get("total_frames") or 0
    return min(snap["frames"] / total, 1.0) if total else None


def render(snap: dict):
    """A rich renderable of a snapshot: a progress bar for finite sources, then the table."""
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    t = Table(title="fer-pipeline", expand=False, show_header=False, box=None, padding=(0, 2))
    t.add_column(style="bold cyan")
    t.add_column()
    done = _fraction(snap)
    if done is not None:
        eta = "done" if snap.get("finished") or done >= 1.0 else (
            f"ETA {_clock(snap['eta_s'])}" if snap.get("eta_s") is not None else "ETA -")
        bar = Table.grid(padding=(0, 1))
        bar.add_row(ProgressBar(total=1.0, completed=done, width=24),
                    f"{100 * done:3.0f}%  {snap['frames']:,}/{snap['total_frames']:,} frames  "
                    f"{snap.get('frames_per_s', 0.0):,.1f} frames/s  {eta}")
        t.add_row("progress", bar)
    processes = "finished" if snap.get("finished") else f"{snap['producers']} producers, {snap['workers']} workers"
    t.add_row("processes", processes)
    t.add_row("frames", f"{snap['frames']:,}   faces published {snap['faces']:,}   dropped {snap['crops_dropped']:,}")
    t.add_row("labels", f"{snap['labelled']:,}   {snap['labels_per_s']:,.1f}/s   logged {snap['logged']:,}"
                        f"   frames drawn {snap['frames_drawn']:,}")
    queue = "   ".join(f"{k} {v:,}" for k, v in snap["queue"].items()) or "-"
    t.add_row("queue depth (entries)", queue)
    emo = snap["emotions"]
    total = sum(emo.values()) or 1
    t.add_row("emotions", "  ".join(f"{e} {emo.get(e, 0)} ({100 * emo.get(e, 0) / total:.0f}%)" for e in EMOTIONS))
    behind = f"   behind real time {snap['behind_s']:,.1f} s" if snap.get("behind_s") else ""
    t.add_row("problems", f"dead letters {snap['dead_letters']}   trimmed unread {snap['trimmed_unread']}{behind}")
    return t


def line(snap: dict) -> str:
    """One plain line for logs and non-terminal output."""
    q = " ".join(f"{k}={v}" for k, v in snap["queue"].items())
    done = _fraction(snap)
    pct = "" if done is None else f"{100 * done:.0f}% " + (
        f"eta={_clock(snap['eta_s'])} " if snap.get("eta_s") is not None else "")
    return (f"{pct}frames={snap['frames']} faces={snap['faces']} labelled={snap['labelled']} "
            f"({snap['labels_per_s']}/s) logged={snap['logged']} drawn={snap['frames_drawn']} queue[{q}] "
            f"dead={snap['dead_letters']} trimmed={snap['trimmed_unread']}")
