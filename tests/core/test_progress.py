from __future__ import annotations

from fer_pipeline import health
from fer_pipeline.progress import Progress, render


def _text(renderable) -> str:
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(renderable)
    return console.export_text()


def test_progress_shows_producers_falling_behind_real_time(real_transport):
    t = real_transport
    health.beat(t, "producer", "p1", 5.0, {"role": "producer", "frames": 90, "realtime_lost_ms": 1500})
    health.beat(t, "producer", "p2", 5.0, {"role": "producer", "frames": 90, "realtime_lost_ms": 700})
    progress = Progress(t)
    progress.refresh()
    snap = progress.snapshot()
    assert snap["behind_s"] == 2.2
    assert "behind real time 2.2 s" in _text(render(snap))
    assert "behind real time" not in _text(render({**snap, "behind_s": 0.0}))
