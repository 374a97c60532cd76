"""Operations commands: `status` of a running deployment, and the emotion log's privacy
controls (`prune`, `erase`)."""

from __future__ import annotations

import json
import time
from typing import Annotated, Optional

import typer

from fer_pipeline.cli._app import Prefix, RedisUrl, app, build_settings
from fer_pipeline.errors import BrokerUnavailable

Db = Annotated[Optional[str], typer.Option(
    "--db", help="Emotion log: SQLite file or postgresql:// URL (default: FER_CONSUMER__DB or out/emotions.sqlite).",
    show_default=False)]


@app.command()
def status(
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(min=0.0, help="Seconds over which labels/s is measured (0: skip).")] = 1.0,
) -> None:
    """One glance at a running deployment: processes alive, lag and pending per consumer group,
    drops, dead letters, labels/s (local or remote: pass --redis-url)."""
    import redis

    from fer_pipeline.health import collect, render
    from fer_pipeline.transport import Transport, redact_url

    s = build_settings(redis_url=redis_url, prefix=prefix)
    transport = Transport.connect(s)
    try:
        if as_json:
            typer.echo(json.dumps(collect(transport, rate_interval_s=interval).to_dict(), indent=2))
            return
        from rich.console import Console

        console = Console()
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


def _store(db: str | None):
    from fer_pipeline.consumers.store import open_store

    s = build_settings(consumer={"db": db})
    return open_store(s.consumer.db)


@app.command()
def prune(
    older_than: Annotated[float, typer.Option("--older-than", min=0.0, help="Delete log rows captured more than "
                                                                           "this many days ago.")],
    db: Db = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be deleted.")] = False,
) -> None:
    """Retention: delete emotion-log rows older than N days."""
    cutoff = time.time() - older_than * 86_400.0
    with _store(db) as store:
        n = store.prune(cutoff, dry_run=dry_run)
    typer.echo(f"{'would delete' if dry_run else 'deleted'} {n:,} rows captured before "
               f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(cutoff))}")


@app.command()
def erase(
    camera: Annotated[str, typer.Option("--camera", help="Camera id.")],
    track: Annotated[Optional[int], typer.Option("--track", help="Track id (default: every track of the camera).",
                                                 show_default=False)] = None,
    run: Annotated[Optional[str], typer.Option("--run", help="Only this producer run (track ids restart per run).",
                                               show_default=False)] = None,
    db: Db = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be deleted.")] = False,
) -> None:
    """Erase one person's (track's) emotion data from the log, or a whole camera's."""
    with _store(db) as store:
        n = store.erase(camera, track, run_id=run, dry_run=dry_run)
    what = f"camera {camera!r}" + (f" track {track}" if track is not None else "") + (f" run {run!r}" if run else "")
    typer.echo(f"{'would erase' if dry_run else 'erased'} {n:,} rows of {what}")
