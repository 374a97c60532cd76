"""Operations commands: `status` of a running deployment, `report` (analytics of the emotion
log), the log's privacy controls (`prune`, `erase`), and `reindex` (its label blocks)."""

from __future__ import annotations

import json
import secrets
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from fer_pipeline.cli._app import Prefix, RedisUrl, app, build_settings, default, setup_logging
from fer_pipeline.errors import BrokerUnavailable, ConfigError
from fer_pipeline.settings import DashboardSettings, Settings

Db = Annotated[str | None, typer.Option(
    "--db", help="Emotion log: SQLite file or postgresql:// URL.",
    show_default="FER_CONSUMER__DB or out/emotions.sqlite")]


@app.command()
def status(
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(min=0.0, help="Seconds over which labels/s is measured (0: skip).")] = 1.0,
) -> None:
    """One glance at a running deployment: processes, lag and pending, drops, dead letters, labels/s.

    Works against any Redis the pipeline uses, local or remote (--redis-url, --prefix).
    """
    import redis

    from fer_pipeline.health import collect, render
    from fer_pipeline.transport import Transport
    from fer_pipeline.urls import redact_url

    s = build_settings(redis_url=redis_url, prefix=prefix)
    transport = Transport.connect(s)
    try:
        if as_json:
            typer.echo(json.dumps(collect(transport, rate_interval_s=interval).to_dict(), indent=2))
            return
        from rich.console import Console

        console = Console(width=None if sys.stdout.isatty() else 160)
        if not watch:
            console.print(render(collect(transport, rate_interval_s=interval)))
            return
        from rich.live import Live

        with Live(console=console, refresh_per_second=2) as live:
            while True:
                live.update(render(collect(transport, rate_interval_s=max(interval, 0.5))))
    except KeyboardInterrupt:
        return
    except (redis.ConnectionError, redis.TimeoutError) as e:
        raise BrokerUnavailable(f"lost Redis at {redact_url(s.redis.url)}: {type(e).__name__}") from e
    finally:
        transport.close()


@contextmanager
def _source(db: str | None):
    """What the analytics read: the SQLite path, or a ``ConnectionLog`` on an open PostgreSQL connection."""
    from fer_pipeline.emotion_log.store import is_postgres_url

    s = build_settings(consumer={"db": db})
    target = str(s.consumer.db)
    if is_postgres_url(target):
        from fer_pipeline.emotion_log.postgres import connect
        from fer_pipeline.emotion_log.reader import ConnectionLog

        conn = connect(target)
        try:
            yield ConnectionLog(conn, "postgres")
        finally:
            conn.close()
    else:
        yield Path(target)


def _store(db: str | None):
    """The log to change (prune, erase, reindex): an existing one only. Opening a mistyped
    path would create an empty log there and report "0 rows" as if it were done."""
    from fer_pipeline.emotion_log.store import is_postgres_url, open_store

    s = build_settings(consumer={"db": db})
    target = s.consumer.db
    if not is_postgres_url(target) and not Path(target).is_file():
        raise ConfigError(f"no emotion log at {target}")
    return open_store(target)


@app.command()
def prune(
    older_than: Annotated[float | None, typer.Option(
        "--older-than", min=0.0, max=1e6, help="Delete log rows captured more than this many days ago.",
        show_default="FER_CONSUMER__LOG_RETENTION_DAYS")] = None,
    db: Db = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be deleted.")] = False,
) -> None:
    """Retention: delete emotion-log rows older than N days (run it daily, e.g. from cron)."""
    days = older_than if older_than is not None else build_settings().consumer.log_retention_days
    if not days:
        raise ConfigError("give --older-than DAYS or set FER_CONSUMER__LOG_RETENTION_DAYS")
    cutoff = time.time() - days * 86_400.0
    with _store(db) as store:
        n = store.prune(cutoff, dry_run=dry_run)
    typer.echo(f"{'would delete' if dry_run else 'deleted'} {n:,} rows captured before "
               f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(cutoff))}")


@app.command()
def erase(
    camera: Annotated[str, typer.Option("--camera", help="Camera id.")],
    track: Annotated[int | None, typer.Option("--track", help="Track id.",
                                                 show_default="every track of the camera")] = None,
    run: Annotated[str | None, typer.Option("--run", help="Only this producer run (track ids restart per run).",
                                               show_default=False)] = None,
    db: Db = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be deleted.")] = False,
) -> None:
    """Erase one person's (track's) emotion data from the log, or a whole camera's."""
    with _store(db) as store:
        n = store.erase(camera, track, run_id=run, dry_run=dry_run)
    what = f"camera {camera!r}" + (f" track {track}" if track is not None else "") + (f" run {run!r}" if run else "")
    typer.echo(f"{'would erase' if dry_run else 'erased'} {n:,} rows of {what}")


@app.command()
def reindex(
    db: Db = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild the blocks even when the log has them.")] = False,
) -> None:
    """Build the label blocks the report reads, for a log written before they existed.

    The logger does this once when it starts; until then the report reads the rows (slower).
    """
    with _store(db) as store:
        started = time.perf_counter()
        rows = store.backfill(force=force, on_start=lambda n: typer.echo(f"building label blocks for {n:,} rows"))
        covered = store.has_blocks()
    if not rows and covered:
        typer.echo("the log already has its label blocks (--force rebuilds them)")
    elif covered:
        typer.echo(f"label blocks built for {rows:,} rows in {time.perf_counter() - started:.1f}s")
    else:
        raise ConfigError("the label blocks do not match the rows: a writer that does not keep them (an older "
                          "logger?) changed the log meanwhile; run `fer-pipeline reindex` again once it has stopped")


@app.command()
def retention(
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    max_age: Annotated[float | None, typer.Option(
        "--max-age", min=0.001, help="Seconds stream entries (crops, frames, labels) may live in Redis.",
        show_default="FER_CONSUMER__STREAM_MAX_AGE_S")] = None,
    every: Annotated[float, typer.Option(min=0.1, help="Seconds between trims.")] = 5.0,
    once: Annotated[bool, typer.Option("--once", help="Trim once and exit.")] = False,
) -> None:
    """Privacy retention in Redis: delete face crops, frames and labels older than --max-age."""
    from fer_pipeline.cli.run import _serve
    from fer_pipeline.retention import RetentionService, expire_streams
    from fer_pipeline.transport import Transport

    s = build_settings(redis_url=redis_url, prefix=prefix, consumer={"stream_max_age_s": max_age})
    if not s.consumer.stream_max_age_s:
        raise ConfigError("give --max-age SECONDS or set FER_CONSUMER__STREAM_MAX_AGE_S")
    transport = Transport.connect(s)
    if once:
        removed = expire_streams(transport, s.consumer.stream_max_age_s)
        typer.echo(f"expired {sum(removed.values()):,} entries" + "".join(f"\n  {k}: {v:,}" for k, v in removed.items()))
        transport.close()
        return
    setup_logging(s.log_level)
    _serve(RetentionService(s, transport, every_s=every))


@app.command()
def report(
    db: Annotated[str | None, typer.Option(
        "--db", help="Emotion log: SQLite file or postgresql:// URL.",
        show_default="FER_CONSUMER__DB, or out/emotions.sqlite")] = None,
    run: Annotated[str, typer.Option(
        "--run", help="Which producer run: 'latest' (the run with the newest label), 'all', or a run id "
        "(its restarts <id>~n included).")] = "latest",
    camera: Annotated[list[str] | None, typer.Option("--camera", help="Only this camera (repeatable).",
                                                        show_default="every camera")] = None,
    track: Annotated[list[int] | None, typer.Option("--track", help="Only this track id (repeatable).",
                                                       show_default="every track")] = None,
    since: Annotated[str | None, typer.Option(help="From this time: epoch, ISO 8601, or an age like 2h.",
                                                 show_default="the first label")] = None,
    until: Annotated[str | None, typer.Option(help="Up to this time (same forms).",
                                                 show_default="the last label")] = None,
    smooth: Annotated[int, typer.Option(min=1, help="Smoothing: average each track's probabilities over this many "
                                        "labels.")] = 5,
    min_confidence: Annotated[float, typer.Option(min=0.0, max=1.0, help="Smoothed top probability under this "
                                                  "is 'unknown'.")] = 0.4,
    min_face: Annotated[int, typer.Option(min=0, help="Faces smaller than this (px) are 'unknown'.")] = 40,
    min_dwell: Annotated[float, typer.Option(min=0.0, help="Seconds an emotion must hold to start an episode.")] = 1.0,
    release: Annotated[float | None, typer.Option(min=0.0, help="Seconds another state must hold to end an "
                                                     "episode.", show_default="--min-dwell")] = None,
    max_gap: Annotated[float, typer.Option(min=0.001, help="A label stands for at most this many seconds.")] = 1.0,
    export: Annotated[str | None, typer.Option(help="Also write the tables: csv, json or parquet.",
                                                  show_default="none")] = None,
    labels: Annotated[bool, typer.Option("--labels", help="With --export: also write one row per label "
                                         "(labels.csv, labels.jsonl or labels.parquet).")] = False,
    export_dir: Annotated[Path, typer.Option("--export-dir", help="Folder for --export.")] = Path("out/report"),
    plot: Annotated[Path | None, typer.Option(help="Write timelines and distributions to this PNG.",
                                                 show_default="none")] = None,
    episodes: Annotated[bool, typer.Option("--episodes", help="Also list the episodes.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="Rows per terminal table.")] = 30,
) -> None:
    """Emotion analytics of the log: distributions, time per emotion, episodes, transitions.

    Per camera and per track of the latest run (--run), with smoothing (--smooth), 'unknown'
    for small or uncertain faces, episodes with a minimum dwell and hysteresis; tables,
    --export (--labels: every label too) and --plot.
    """
    from rich.console import Console

    from fer_pipeline.analytics.episodes import build_report
    from fer_pipeline.analytics.label_export import export_labels
    from fer_pipeline.analytics.options import ReportOptions, parse_time
    from fer_pipeline.analytics.render import FORMATS, render
    from fer_pipeline.analytics.render import export as export_tables
    from fer_pipeline.analytics.render import plot as plot_report

    if export is not None and export not in FORMATS:
        raise ConfigError(f"--export must be one of {', '.join(FORMATS)}, got {export!r}")
    if labels and export is None:
        raise ConfigError("--labels writes a file of --export's format: give --export csv, json or parquet")
    options = ReportOptions(
        cameras=tuple(camera or ()), tracks=tuple(track or ()), run=run,
        since=parse_time(since) if since else None, until=parse_time(until) if until else None,
        smooth=smooth, min_confidence=min_confidence, min_face=min_face, min_dwell_s=min_dwell, release_s=release,
        max_gap_s=max_gap)
    started = time.perf_counter()
    with _source(db) as source:
        rep = build_report(source, options)
        seconds = time.perf_counter() - started
        hint = isinstance(source, Path) and not _has_blocks(source)
        # Console output first: the per-label file of a big log takes a while.
        console = Console(width=None if sys.stdout.isatty() else 180)  # piped: the emotion columns need width
        for part in render(rep, limit=limit, episodes=episodes):
            console.print(part)
        console.print(f"[dim]summarised in {seconds:.2f}s[/dim]")
        if hint:
            console.print("[dim]read from the label rows: `fer-pipeline reindex` (or a logger of this version, at "
                          "start) builds the label blocks that the report reads much faster[/dim]")
        if export:
            for path in export_tables(rep, export, export_dir):
                typer.echo(f"wrote {path}")
            if labels and rep.labels_read:
                path, n = export_labels(source, rep.options, export, export_dir)
                typer.echo(f"wrote {path} ({n:,} labels)")
    if plot is not None:
        typer.echo(f"wrote {plot_report(rep, plot)}")


def _has_blocks(path: Path) -> bool:
    from fer_pipeline.emotion_log.reader import SqliteLog

    with SqliteLog(path) as log:
        return log.blocks


@app.command()
def dashboard(
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    host: Annotated[str | None, typer.Option(help="Interface to listen on (0.0.0.0: every interface).",
                                             show_default=f"FER_DASHBOARD__HOST, or {default(DashboardSettings, 'host')}")
                    ] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="HTTP port.",
                                             show_default=f"FER_DASHBOARD__PORT, or {default(DashboardSettings, 'port')}")
                    ] = None,
) -> None:
    """Serve the live dashboard (video, per-track emotion charts, health) and Prometheus /metrics.

    Stops on SIGINT or SIGTERM (exit 0), closing open video streams within a couple of seconds.
    """
    try:
        import fastapi  # noqa: F401 - the extra's packages, imported lazily below
        import uvicorn  # noqa: F401

        from fer_pipeline.dashboard.app import create_app
        from fer_pipeline.dashboard.serve import bind, serve
    except ImportError as e:
        raise ConfigError(f"the dashboard needs its extra ({e.name} is missing): "
                          "pip install 'fer-pipeline[dashboard]'") from None
    from fer_pipeline.transport import Transport

    s, where = dashboard_settings(build_settings(redis_url=redis_url, prefix=prefix)
                                  .with_updates(dashboard={"host": host, "port": port}))
    setup_logging(s.log_level)
    # Bound here, before anything prints the address: a taken port is one line, not a traceback.
    sock = bind(s.dashboard.host, s.dashboard.port)
    try:
        transport = Transport.connect(s)
    except BaseException:
        sock.close()
        raise
    try:
        app_ = create_app(s, transport)
        typer.echo(f"dashboard on {where}  (metrics at /metrics)")
        serve(app_, sock)
    finally:
        sock.close()
        transport.close()


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def dashboard_settings(s: Settings) -> tuple[Settings, str]:
    """The settings the dashboard runs with, and the address to open. Listening beyond this
    machine without a token, it makes one up (as Jupyter does) and prints it in the address:
    the cameras are never open to whoever reaches the port (compose's case, unless
    DASHBOARD_TOKEN is set)."""
    d = s.dashboard
    if d.token is None and d.host not in LOOPBACK:
        token = secrets.token_urlsafe(18)
        return s.with_updates(dashboard={"token": token}), f"http://{d.host}:{d.port}/?token={token}"
    suffix = "?token=<FER_DASHBOARD__TOKEN>" if d.token is not None else ""
    return s, f"http://{d.host}:{d.port}/{suffix}"


@app.command(hidden=True)
def healthcheck(
    role: Annotated[str, typer.Option(help="Role whose heartbeat to look for (producer, worker, logger, ...).")],
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    host: Annotated[str | None, typer.Option(help="Ident prefix (the default idents, host-pid, start with "
                                                "the host's name).", show_default="this host's name")] = None,
) -> None:
    """Container health check: exit 0 when a process of ROLE on this host has a live heartbeat."""
    import socket

    from fer_pipeline.health import alive_processes
    from fer_pipeline.transport import Transport

    s = build_settings(redis_url=redis_url, prefix=prefix)
    transport = Transport.connect(s)
    try:
        mine = host or socket.gethostname()
        alive = [ident for r, ident, _ in alive_processes(transport)
                 if r == role and (ident == mine or ident.startswith(mine + "-"))]
    finally:
        transport.close()
    if not alive:
        typer.echo(f"no live {role} heartbeat from {mine}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{role} alive: {', '.join(sorted(alive))}")
