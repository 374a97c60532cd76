"""Pipeline commands: `up` (everything on one machine) and one command per role, each of
which can run on its own machine against a shared Redis."""

from __future__ import annotations

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
    default,
    resolve_sources,
    setup_logging,
)
from fer_pipeline.errors import ConfigError
from fer_pipeline.settings import ConsumerSettings, ProducerSettings, WorkerSettings

Ident = Annotated[str | None, typer.Option("--ident", help="Consumer name of this process.",
                                              show_default="host-pid")]


def _serve(service) -> None:
    service.install_signal_handlers()
    code = service.run()
    raise typer.Exit(code)


@app.command()
def worker(
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    model: Annotated[Path | None, typer.Option(help="model.json (or its folder).",
                                                  show_default="models/")] = None,
    runtime: Annotated[str | None, typer.Option(help="litert or keras.", show_default="litert")] = None,
    int8: Annotated[bool | None, typer.Option("--int8/--float", help="Serve the int8 or float TFLite model.",
                                                 show_default="int8 where the CPU has int8 dot-product "
                                                 "instructions")] = None,
    max_batch: Annotated[int | None, typer.Option(help="Largest batch per model call.", show_default=default(WorkerSettings, "max_batch"))] = None,
    max_wait_ms: Annotated[float | None, typer.Option(help="Longest wait to fill a batch.", show_default=default(WorkerSettings, "max_wait_ms"))] = None,
    threads: Annotated[int | None, typer.Option(help="Inference threads (scale with processes).",
                                                   show_default=default(WorkerSettings, "threads"))] = None,
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
    # Redis first: it fails fast and in one line, before the model runtime starts printing.
    transport = Transport.connect(s)
    predictor = load_predictor(s.worker.model, s.worker.runtime, threads=s.worker.threads, int8=s.worker.int8)
    _serve(InferenceWorker(s, transport, predictor, ident))


@app.command()
def producer(
    source: Sources = None,
    camera_id: CameraIds = None,
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    realtime: Realtime = None,
    loop: Loop = None,
    scale_factor: Annotated[float | None, typer.Option(help="Haar scaleFactor (--detector haar).",
                                                          show_default=default(ProducerSettings, "scale_factor"))] = None,
    min_neighbors: Annotated[int | None, typer.Option(help="Haar minNeighbors (--detector haar).",
                                                         show_default=default(ProducerSettings, "min_neighbors"))] = None,
    detect_width: Annotated[int | None, typer.Option(help="Detect on frames downscaled to this width "
                                                        "(0 = full size).", show_default=default(ProducerSettings, "detect_width"))] = None,
    detect_every: DetectEvery = None,
    detector: DetectorName = None,
    frames: Annotated[bool | None, typer.Option("--frames/--no-frames", help="Publish JPEG frames for "
                                                   "display consumers.", show_default="--frames")] = None,
    ident: Ident = None,
) -> None:
    """Run camera producers: detect faces and publish 48x48 crops (one thread per camera)."""
    from fer_pipeline.producers.camera import build_producer_service
    from fer_pipeline.transport import Transport

    s = build_settings(redis_url=redis_url, prefix=prefix, producer={
        "realtime": realtime, "loop": loop, "scale_factor": scale_factor, "min_neighbors": min_neighbors,
        "detect_width": detect_width, "detect_every": detect_every, "publish_frames": frames, "detector": detector})
    setup_logging(s.log_level)
    transport = Transport.connect(s)
    _serve(build_producer_service(s, transport, resolve_sources(source or s.producer.sources), camera_id,
                                  ident=ident))


@app.command()
def display(
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    out: Annotated[Path | None, typer.Option(help="Folder for the annotated MP4s.",
                                                show_default="out")] = None,
    window: Annotated[str | None, typer.Option(help="auto (window if a screen exists), on, or off (MP4s).",
                                                  show_default="auto")] = None,
    label_wait_ms: Annotated[int | None, typer.Option(help="How long a frame waits for its labels.",
                                                         show_default=default(ConsumerSettings, "label_wait_ms"))] = None,
    group: Annotated[str | None, typer.Option(help="Consumer group. Every group sees all "
                                                      "frames: give a second display its own.",
                                                 show_default="display")] = None,
    segment: Annotated[float | None, typer.Option(help="Start a new MP4 every this many seconds of video "
                                                         "(<camera>-<run>-001.mp4, ...); 0: one per camera "
                                                         "and run.", show_default=default(ConsumerSettings, "video_segment_s"))] = None,
    ident: Ident = None,
) -> None:
    """Draw emotions on each camera's frames: a window per camera, or H.264 MP4s per camera."""
    from fer_pipeline.consumers.display import DisplayService
    from fer_pipeline.transport import Transport

    if window not in (None, "auto", "on", "off"):
        raise ConfigError(f"--window must be auto, on or off, got {window!r}")
    s = build_settings(redis_url=redis_url, prefix=prefix,
                       consumer={"out_dir": out, "window": window, "label_wait_ms": label_wait_ms,
                                 "display_group": group, "video_segment_s": segment})
    setup_logging(s.log_level)
    transport = Transport.connect(s)
    _serve(DisplayService(s, transport, ident))


@app.command()
def logger(
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    # A str, not a Path: Path would fold a postgresql:// URL's "//" and log into a local SQLite file.
    db: Annotated[str | None, typer.Option(help="Emotion log: SQLite file or postgresql:// URL.",
                                              show_default="out/emotions.sqlite")] = None,
    ident: Ident = None,
) -> None:
    """Record every label into the emotion log (SQLite or PostgreSQL) of per-camera, per-track timelines."""
    from fer_pipeline.consumers.label_logger import LabelLoggerService
    from fer_pipeline.transport import Transport

    s = build_settings(redis_url=redis_url, prefix=prefix, consumer={"db": db})
    setup_logging(s.log_level)
    transport = Transport.connect(s)
    _serve(LabelLoggerService(s, transport, ident))
