"""`fer-pipeline up`: broker (embedded if no URL), workers, one producer per source, display
and logger; live progress; ordered, draining stop; a summary of what happened."""

from __future__ import annotations

import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from fer_pipeline.cli._app import (
    CameraIds,
    DetectEvery,
    DetectorName,
    Loop,
    Prefix,
    Realtime,
    RedisUrl,
    Sources,
    app,
    build_settings,
    resolve_sources,
    setup_logging,
)
from fer_pipeline.cli.ops import dashboard_settings
from fer_pipeline.cli.sink import sink_args
from fer_pipeline.errors import ConfigError
from fer_pipeline.run_ids import new_run_id


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"output folder {out} is not writable: {e.strerror or e}") from e


@app.command()
def up(
    source: Sources = None,
    camera_id: CameraIds = None,
    workers: Annotated[int, typer.Option("--workers", "-w", min=0, help="Inference worker processes.")] = 1,
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    out: Annotated[Path, typer.Option(help="Output folder: emotion log (SQLite), annotated videos, logs.")] = Path("out"),
    display: Annotated[bool, typer.Option("--display/--no-display", help="Run the display consumer.")] = True,
    window: Annotated[str | None, typer.Option(help="auto, on or off: show windows instead of writing MP4s "
                                                   "(auto: windows where a screen exists).",
                                                   show_default="auto")] = None,
    realtime: Realtime = None,
    loop: Loop = None,
    detector: DetectorName = None,
    detect_every: DetectEvery = None,
    model: Annotated[Path | None, typer.Option(help="model.json for the workers.",
                                                  show_default="the shipped model")] = None,
    sink: Annotated[list[str] | None, typer.Option(
        "--sink", metavar="URL", help="Also send labels and emotion episodes here, repeatable: mqtt://host[:port] "
        "(or mqtts://) for an MQTT broker, http(s)://... for a webhook.", show_default="none")] = None,
    dashboard: Annotated[bool, typer.Option(
        "--dashboard", help="Also serve the live dashboard (needs the dashboard extra); its address is printed "
        "(FER_DASHBOARD__HOST/PORT choose it).")] = False,
) -> None:
    """Run the whole pipeline on this machine and show live progress (Ctrl-C stops cleanly)."""
    from fer_pipeline.broker import EmbeddedBroker
    from fer_pipeline.model import read_info
    from fer_pipeline.producers.camera import camera_ids_for
    from fer_pipeline.producers.sources import open_source
    from fer_pipeline.supervisor import Supervisor
    from fer_pipeline.transport import Transport
    from fer_pipeline.urls import redact_url

    run_id = new_run_id()
    s = build_settings(redis_url=redis_url, prefix=prefix,
                       producer={"realtime": realtime, "loop": loop, "detector": detector,
                                 "detect_every": detect_every, "run_id": run_id,
                                 # Frames (JPEGs) are for the display and the dashboard: with
                                 # neither, encoding them is waste, and their stream would be
                                 # trimmed unread (and counted so in the summary).
                                 "publish_frames": None if display or dashboard else False},
                       worker={"model": model},
                       consumer={"out_dir": out, "db": out / "emotions.sqlite", "window": window})
    specs = resolve_sources(source or s.producer.sources)
    if camera_id and len(camera_id) != len(specs):
        raise ConfigError(f"{len(camera_id)} --camera-id for {len(specs)} --source: give one per source or none")
    setup_logging("WARNING")
    check_writable(out)
    sinks = [sink_args(spec) for spec in sink or ()]  # a bad URL is one line now, not a dead child later
    dashboard_url, dashboard_update = None, {}
    if dashboard:
        # The address (with the token made up for a non-loopback bind) is settled here, so the
        # child serves what `up` prints; a taken port is one line before anything starts. The
        # token goes to the dashboard's environment only.
        served, dashboard_url = dashboard_settings(s)
        _check_dashboard(served)
        if served.dashboard.token is not None:
            dashboard_update = {"dashboard": {"token": served.dashboard.token.get_secret_value()}}
    if workers:
        read_info(s.worker.model)  # a missing/mismatched model is one line now, not a dead child later
    total_frames = 0
    sources = []
    try:
        for spec in specs:  # likewise a bad source; finite ones say how many frames they hold
            sources.append(open_source(spec, s))
        # Each source is its own producer, all in one run: camera ids must differ across them, or
        # two cameras' crop ids (camera/run/frame/face) would coincide and the log keep one of each.
        cameras = camera_ids_for(sources, camera_id)
        for src in sources:
            total_frames = total_frames + src.frame_count if total_frames >= 0 and src.frame_count else -1
    finally:
        for src in sources:
            src.close()

    # From here on a SIGTERM must unwind through the `finally` below (stopping the broker and
    # removing its folder) rather than end the process where it stands; _run installs the
    # handlers for the ordered stop once the children exist.
    signal.signal(signal.SIGTERM, _terminate)
    broker = None
    if s.redis.url is None:
        broker = EmbeddedBroker.start()
        s = s.with_updates(redis={"url": broker.url})
        typer.echo(f"embedded broker: redis-server {broker.version_text} at {broker.url} (pass --redis-url to use yours)")
    else:
        typer.echo(f"broker: {redact_url(s.redis.url)}")
    typer.echo(f"run {run_id}: emotion log {s.consumer.db}, videos and logs in {out}")
    try:
        transport = Transport.connect(s)
        sup = Supervisor(s, transport, out / "logs" / run_id)
        sup.add("logger", "logger", ["logger"])
        if display:
            sup.add("display", "display", ["display"])
        groups: Counter[str] = Counter()
        for i, (args, target) in enumerate(sinks):
            kind = f"sink-{args[1]}"
            groups[kind] += 1
            group = kind if groups[kind] == 1 else f"{kind}-{groups[kind]}"  # one group per target
            # A fixed consumer name: a restarted sink takes its own pending labels back at once.
            sup.add(f"sink-{i}", "sink", [*args, "--group", group, "--ident", f"up-sink-{i}"], group=group,
                    settings_update={"sink": target})
        if dashboard_url:
            sup.add("dashboard", "dashboard", ["dashboard"], settings_update=dashboard_update)
            typer.echo(f"dashboard: {dashboard_url}")
        sup.add_workers(workers, "up-worker")
        sup.add_producers(specs, cameras)
        code = _run(sup, s, out, run_id, max(total_frames, 0) if not s.producer.loop else 0)
    finally:
        if broker is not None:
            broker.stop()
    raise typer.Exit(code)


def _check_dashboard(s) -> None:
    """The dashboard's extra is installed and its port free: else one line, before anything starts."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401

        from fer_pipeline.dashboard.serve import bind
    except ImportError as e:
        raise ConfigError(f"--dashboard needs the dashboard extra ({e.name} is missing): "
                          "pip install 'fer-pipeline[dashboard]'") from None
    bind(s.dashboard.host, s.dashboard.port).close()


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt


def _run(sup, s, out: Path, run_id: str, total_frames: int) -> int:
    from rich.console import Console
    from rich.live import Live

    from fer_pipeline.progress import Progress, line, render

    console = Console(stderr=False)
    # A reused Redis keeps earlier runs' counters: the panel and the summary show this run's.
    progress = Progress(sup.transport, baseline=sup.transport.stats(), total_frames=total_frames)
    interrupted = {"n": 0}

    def on_signal(signum, frame):
        interrupted["n"] += 1
        if interrupted["n"] > 1:
            sup.kill_all()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    started = time.time()
    sup.start()
    live = Live(console=console, refresh_per_second=4, transient=False) if console.is_terminal else None
    last_line = 0.0

    def show(snap: dict, force: bool = False) -> None:
        nonlocal last_line
        if live is not None:
            live.update(render(snap))
        elif force or time.monotonic() - last_line > 2.0:
            last_line = time.monotonic()
            print(line(snap), flush=True)

    def tick():
        progress.refresh()
        show(progress.snapshot(sup.backlog()))

    if live is not None:
        live.start()
    try:
        given_up: list = []
        while not interrupted["n"] and not sup.producers_done():
            tick()
            # A crashed child is restarted (with backoff, counted in its log and the summary);
            # one that keeps crashing stops the pipeline.
            # A sink or the dashboard that keeps crashing is left down (the summary says so);
            # the cameras go on.
            given_up = sup.essential(sup.restart_crashed())
            if given_up:
                break
            time.sleep(0.25)
        reason = ("interrupted" if interrupted["n"] else
                  f"{given_up[0].name} kept crashing" if given_up else "all sources ended")
        drained = sup.stop(drain=not interrupted["n"], tick=tick)
        # The last panel shows the processes' exact final counters, not their last heartbeats.
        progress.finish(sup.final_counters())
        show(progress.snapshot(), force=True)
    finally:
        if live is not None:
            live.stop()
    return _summary(sup, progress, out, run_id, reason, drained, time.time() - started)


def _summary(sup, progress, out: Path, run_id: str, reason: str, drained: dict, seconds: float) -> int:
    from fer_pipeline.emotion_log.sqlite import SqliteStore
    from fer_pipeline.progress import trimmed_unread

    keys = sup.transport.keys
    stats = progress.run_stats()
    published = stats.get(f"published:{keys.crops}", 0)
    store = SqliteStore(sup.settings.consumer.db)
    try:
        logged = store.count(run_id=run_id)
    finally:
        store.close()
    videos = sorted(v for v in sup.settings.consumer.out_dir.glob(f"*{run_id}*.mp4"))
    print(f"\nrun {run_id} stopped ({reason}) after {seconds:.1f}s")
    labelled = stats.get(f"published:{keys.labels}", 0)
    print(f"  faces published {published:,}  labelled {labelled:,}  "
          f"in the log {logged:,}  dead letters {stats.get('dead_letters', 0)}  "
          f"dropped {int(progress.total('producer', 'crops_dropped'))}  "
          f"trimmed unread {trimmed_unread(stats)}")
    behind = progress.total("producer", "realtime_lost_ms") / 1000
    if behind >= 1.0:
        print(f"  cameras fell behind real time by {behind:,.1f} s in all: detection is too slow for their frame "
              "rate here (raise --detect-every, or use --fast for files)")
    print(f"  emotion log: {sup.settings.consumer.db} (earlier runs stay in it: `fer-pipeline report` shows this "
          "run, --run all every run)")
    for v in videos:
        print(f"  annotated video: {v}")
    print(f"  process logs: {sup.log_dir}")
    lost = sup.unaccounted()
    if lost and any(v > 0 for v in lost.values()):
        # Counted from the processes' own final counters: Redis's stats may be gone with it.
        print(f"  vanished inside Redis: {lost['crops']:,} crops, {lost['labels']:,} labels (lost with its memory "
              "on a restart without persistence, or trimmed unread); see RELIABILITY.md", file=sys.stderr)
    restarted = [f"{c.name} x{c.restarts}" for c in sup.children if c.restarts]
    if restarted:
        print(f"  restarted after a crash: {', '.join(restarted)} (see their logs)")
    failed = sup.failed()
    for c in failed:
        print(f"  {c.name} exited with {c.returncode}: {c.log_tail()}", file=sys.stderr)
    if not all(drained.values()):
        print("  warning: not everything was drained before stopping: " +
              ", ".join(k for k, ok in drained.items() if not ok), file=sys.stderr)
    return 1 if failed else 0
