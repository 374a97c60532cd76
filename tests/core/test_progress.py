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


def test_the_rate_is_measured_over_seconds_not_between_two_heartbeats(fake_transport):
    progress = Progress(fake_transport)
    # Heartbeats land about once a second: the counter moves in steps of 100 labels, and a
    # window as short as the beat would read 0/s and 200/s by turns.
    for i, (t, labelled) in enumerate([(0.0, 0), (0.5, 100), (1.0, 100), (1.5, 200), (2.0, 200), (2.5, 300),
                                       (3.0, 300), (3.5, 400), (4.0, 400), (4.5, 500), (5.0, 500), (5.5, 600)]):
        progress.last[("worker", "w")] = {"crops_labelled": str(labelled)}
        progress._mark(t)
        if i >= 4:
            assert 66 <= progress.rate <= 134, (t, progress.rate)


def test_run_counters_exclude_what_redis_held_before_the_run(real_transport):
    t = real_transport
    t.incr("dead_letters", 3)
    progress = Progress(t, baseline=t.stats())
    t.incr("dead_letters", 2)
    assert progress.snapshot()["dead_letters"] == 2


def test_finite_sources_get_a_bar_with_percentage_and_eta_and_the_last_panel_the_final_counts(fake_transport):
    progress = Progress(fake_transport, total_frames=400)
    progress.last[("producer", "p1")] = {"frames": "90", "crops_published": "92"}
    progress._mark(0.0)
    progress.last[("producer", "p1")] = {"frames": "100", "crops_published": "92"}
    progress._mark(2.0)
    snap = progress.snapshot()
    assert snap["frames_per_s"] == 5.0 and snap["eta_s"] == 60
    text = _text(render(snap))
    assert "25%" in text and "100/400 frames" in text and "ETA 1:00" in text
    progress.finish({"producer": [{"frames": 400, "crops_published": 96}]})
    snap = progress.snapshot()
    assert snap["faces"] == 96 and snap["frames"] == 400
    text = _text(render(snap))
    assert "100%" in text and "done" in text and "finished" in text and "0 producers" not in text
