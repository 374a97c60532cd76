"""Pipeline commands: `up` (everything on one machine) and one command per role, each of
which can run on its own machine against a shared Redis."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from fer_pipeline.cli._app import Prefix, RedisUrl, app, build_settings, setup_logging
from fer_pipeline.errors import ConfigError, FerError

Ident = Annotated[Optional[str], typer.Option("--ident", help="Consumer name of this process [default: host-pid].",
                                              show_default=False)]


def _serve(service) -> None:
    service.install_signal_handlers()
    code = service.run()
    raise typer.Exit(code)


@app.command()
def worker(
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    model: Annotated[Optional[Path], typer.Option(help="model.json (or its folder) [default: models/].",
                                                  show_default=False)] = None,
    runtime: Annotated[Optional[str], typer.Option(help="litert (default) or keras.", show_default=False)] = None,
    int8: Annotated[Optional[bool], typer.Option("--int8/--float", help="Serve the int8 or float TFLite model.",
                                                 show_default=False)] = None,
    max_batch: Annotated[Optional[int], typer.Option(help="Largest batch per model call.", show_default=False)] = None,
    max_wait_ms: Annotated[Optional[float], typer.Option(help="Longest wait to fill a batch.", show_default=False)] = None,
    threads: Annotated[Optional[int], typer.Option(help="Inference threads (scale with processes).",
                                                   show_default=False)] = None,
    ident: Ident = None,
) -> None:
    """Run an inference worker: crops stream -> model -> labels stream (scale by starting more)."""
    from fer_pipeline.model import load_predictor
    from fer_pipeline.transport import Transport
    from fer_pipeline.workers.inference import InferenceWorker

    s = build_settings(redis_url=redis_url, prefix=prefix, worker={
        "model": model, "runtime": runtime, "max_batch": max_batch, "max_wait_ms": max_wait_ms, "threads": threads,
        "int8": int8})
    setup_logging(s.log_level)
    predictor = load_predictor(s.worker.model, s.worker.runtime, threads=s.worker.threads, int8=s.worker.int8)
    transport = Transport.connect(s)
    _serve(InferenceWorker(s, transport, predictor, ident))
