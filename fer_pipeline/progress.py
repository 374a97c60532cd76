"""Live progress of a running pipeline, built from the processes' heartbeats and Redis.

Heartbeats vanish when a process exits, so the last report of every process is kept:
totals of finished producers stay in the sums.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

from fer_pipeline.health import alive_processes
from fer_pipeline.labels import EMOTIONS
from fer_pipeline.transport import Transport


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return 0.0


@dataclass
class Progress:
    """What `up` shows while it runs: the last heartbeat of every process seen, the ones alive
    now, and the labels/s rate."""

    transport: Transport
    last: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    alive: set[tuple[str, str]] = field(default_factory=set)
    _rate_mark: tuple[float, float] | None = None
    rate: float = 0.0

    def refresh(self) -> None:
        """Read the heartbeats: keep each process's latest, note which are alive, and update the
        labels/s rate (at most once a second)."""
        self.alive = set()
        for role, ident, info in alive_processes(self.transport):
            self.last[(role, ident)] = info
            self.alive.add((role, ident))
        labelled = self.total("worker", "crops_labelled")
        now = time.monotonic()
        if self._rate_mark is not None and now - self._rate_mark[0] >= 1.0:
            self.rate = (labelled - self._rate_mark[1]) / (now - self._rate_mark[0])
            self._rate_mark = (now, labelled)
        elif self._rate_mark is None:
            self._rate_mark = (now, labelled)

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

    def snapshot(self, backlog: dict[str, tuple[int, int]] | None = None) -> dict:
        """The progress as a dict: processes alive, frames, faces, labels and their rate, losses,
        the queue per stage from ``backlog`` (waiting plus pending), and labels per emotion."""
        stats = self.transport.stats()
        return {
            "producers": self.count_alive("producer"),
            "workers": self.count_alive("worker"),
            "frames": int(self.total("producer", "frames")),
            "faces": int(self.total("producer", "crops_published")),
            "crops_dropped": int(self.total("producer", "crops_dropped")),
            # Paced files replayed slower than their frame rate: the producers are too slow.
            "behind_s": round(self.total("producer", "realtime_lost_ms") / 1000, 1),
            "labelled": int(self.total("worker", "crops_labelled")),
            "labels_per_s": round(self.rate, 1),
            "logged": int(self.total("logger", "labels_logged")),
            "frames_drawn": int(self.total("display", "frames_drawn")),
            "dead_letters": int(stats.get("dead_letters", 0)),
            "trimmed_unread": sum(v for k, v in stats.items() if k.startswith("trimmed_unread:")),
            "queue": {k: v[0] + v[1] for k, v in (backlog or {}).items()},
            "emotions": self.emotions(),
        }


def render(snap: dict):
    """A rich renderable of a snapshot."""
    from rich.table import Table

    t = Table(title="fer-pipeline", expand=False, show_header=False, box=None, padding=(0, 2))
    t.add_column(style="bold cyan")
    t.add_column()
    t.add_row("processes", f"{snap['producers']} producers, {snap['workers']} workers")
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
    return (f"frames={snap['frames']} faces={snap['faces']} labelled={snap['labelled']} "
            f"({snap['labels_per_s']}/s) logged={snap['logged']} drawn={snap['frames_drawn']} queue[{q}] "
            f"dead={snap['dead_letters']} trimmed={snap['trimmed_unread']}")
