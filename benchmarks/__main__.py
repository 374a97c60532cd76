"""`python -m benchmarks <name>`: the benchmark suite (inference, end-to-end pipeline,
real-video cameras, face detection, the emotion report over a large log).

Run from the source checkout (the benchmarks are not part of the installed package, and
the product's CLI knows nothing of them); each prints tables and writes JSON under
``benchmarks/results/``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Annotated

import typer

from fer_pipeline.errors import ConfigError, DataError, FerError
from fer_pipeline.settings import DETECTORS, ProducerSettings

bench_app = typer.Typer(help="Benchmarks: inference speed, end-to-end sweeps and overload, real-video cameras, "
                        "detection cost, loggers into the emotion log, the report over a large log.",
                        no_args_is_help=True, add_completion=False)

LOCAL_REDIS = "redis://127.0.0.1:6379/0"

Quick = Annotated[bool, typer.Option("--quick", help="A short smoke run (figures not for BENCHMARKS.md).")]
OutDir = Annotated[Path | None, typer.Option("--out-dir", help="Where to write the JSON [default: "
                                                "benchmarks/results].", show_default=False)]
BenchRedis = Annotated[str, typer.Option("--redis-url", help="Redis to measure against (keys under a unique "
                                         "prefix, deleted afterwards).")]


def _run(name: str, **options) -> dict:
    # Imported when run: each benchmark pulls in what it measures (TensorFlow, OpenCV...).
    try:
        return importlib.import_module(f"benchmarks.{name}").run(**options)
    except FileNotFoundError as e:
        raise DataError(str(e)) from e


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as e:
        raise ConfigError(f"expected comma-separated integers, got {text!r}") from e
    if not values or min(values) < 1:
        raise ConfigError(f"expected comma-separated positive integers, got {text!r}")
    return values


@bench_app.command("inference")
def inference(
    quick: Quick = False,
    seconds: Annotated[float, typer.Option(help="Seconds per measurement cell.", min=0.1)] = 2.0,
    model: Annotated[Path | None, typer.Option(help="model.json [default: the worker's model].",
                                                  show_default=False)] = None,
    seed_tflite: Annotated[bool, typer.Option("--seed-tflite/--no-seed-tflite", help="Also convert the tutorial "
                                              "CNN to int8 TFLite and time it (needs TensorFlow).")] = True,
    redis_url: BenchRedis = LOCAL_REDIS,
    out_dir: OutDir = None,
) -> None:
    """Faces/s: the tutorial's per-face model.predict vs our batched LiteRT worker call (same run)."""
    _run("inference", model=model, seconds=seconds, quick=quick, redis_url=redis_url, seed_tflite=seed_tflite,
         out_dir=out_dir)


@bench_app.command("pipeline")
def pipeline(
    quick: Quick = False,
    workers: Annotated[str, typer.Option(help="Comma-separated worker counts.")] = "1,2",
    cameras: Annotated[str, typer.Option(help="Comma-separated camera counts, ascending.")] = "1,2,4,8,12,16,24",
    faces: Annotated[int, typer.Option(help="Faces per replayed frame.", min=1, max=64)] = 2,
    window: Annotated[float, typer.Option(help="Measurement window per configuration, seconds.", min=1.0)] = 10.0,
    warmup: Annotated[float, typer.Option(help="Seconds between producer start and the window.", min=0.0)] = 3.0,
    overload_cameras: Annotated[int, typer.Option(help="Cameras in the overload run.", min=1)] = 16,
    overload_faces: Annotated[int, typer.Option(help="Faces per frame in the overload run.", min=1, max=64)] = 6,
    overload_backlog: Annotated[int, typer.Option(help="Also overload the largest pool with this "
                                                  "max_crop_backlog (0: skip).", min=0)] = 500,
    npz: Annotated[Path | None, typer.Option(help="Labelled faces to replay [default: "
                                                "../shared/data/fer2013_publictest.npz].", show_default=False)] = None,
    redis_url: BenchRedis = LOCAL_REDIS,
    out_dir: OutDir = None,
) -> None:
    """K replay cameras x W workers through the real Redis, then overload: throughput, latency, drops, memory."""
    _run("pipeline", workers=_ints(workers), cameras=_ints(cameras), faces=faces, window_s=window, warmup_s=warmup,
         overload_cameras=overload_cameras, overload_faces=overload_faces, overload_backlog=overload_backlog,
         quick=quick, redis_url=redis_url, npz=npz, out_dir=out_dir)


@bench_app.command("cameras")
def cameras_benchmark(
    cameras: Annotated[str, typer.Option(help="Comma-separated camera counts, one run each.")] = "8",
    detector: Annotated[str, typer.Option(help=f"Face detector: {', '.join(DETECTORS)}.")] = (
        ProducerSettings.model_fields["detector"].default),
    detect_every: Annotated[str, typer.Option(help="Comma-separated detect_every values, one run each (with every "
                                              "camera count).")] = "1,2,3",
    frames: Annotated[bool, typer.Option("--frames/--no-frames", help="Producers also publish JPEG frames.")] = False,
    seconds: Annotated[float, typer.Option(help="Video length per camera, seconds.", min=1.0)] = 25.0,
    profile_frames: Annotated[int, typer.Option(help="Frames in the per-stage CPU profile of one camera (0: no "
                                                "profile).", min=0)] = 300,
    wait_quiet: Annotated[float, typer.Option(help="Before each run, wait up to this many seconds for other busy "
                                              "processes to end (a shared machine).", min=0.0)] = 0.0,
    redis_url: BenchRedis = LOCAL_REDIS,
    videos: Annotated[Path | None, typer.Option(help="Folder with the two shared videos [default: "
                                                   "../shared/data/video].", show_default=False)] = None,
    out_dir: OutDir = None,
) -> None:
    """N producer processes with real detection on 640x480 video at native rate, one worker and the
    logger: how far each camera falls behind real time, and where one camera's CPU goes."""
    if detector not in DETECTORS:  # before minutes of video preparation, not in every producer's log
        raise ConfigError(f"unknown detector {detector!r}: expected one of {', '.join(DETECTORS)}")
    _run("cameras", cameras=_ints(cameras), detector=detector, detect_every=_ints(detect_every), frames=frames,
         seconds=seconds, profile_frames=profile_frames, wait_quiet=wait_quiet, redis_url=redis_url, videos=videos,
         out_dir=out_dir)


@bench_app.command("detection")
def detection(
    quick: Quick = False,
    limit: Annotated[int | None, typer.Option(help="At most this many frames per video.", min=1,
                                                 show_default=False)] = None,
    videos: Annotated[Path | None, typer.Option(help="Folder with the two shared videos [default: "
                                                   "../shared/data/video].", show_default=False)] = None,
    only: Annotated[list[str] | None, typer.Option(help="Run only this setting (repeatable), e.g. "
                                                      "'blazeface every 3rd'.", show_default=False)] = None,
    out_dir: OutDir = None,
) -> None:
    """Every face detector as the producer runs it: recall and false boxes on annotated real frames
    and labelled scenes, ms per frame, crop accuracy, track fragmentation, demo coverage."""
    _run("detection", quick=quick, limit=limit, videos=videos, out_dir=out_dir, only=tuple(only or ()))


@bench_app.command("report")
def report(
    rows: Annotated[int, typer.Option(help="Labels to generate (before --copies).", min=1000)] = 2_000_000,
    copies: Annotated[int, typer.Option(help="Copy the generated labels this many times over inside SQLite "
                                        "(--copies 10: a 20M-label day of 4 cameras).", min=1)] = 1,
    cameras: Annotated[int, typer.Option(help="Cameras in the synthetic log.", min=1)] = 4,
    repeats: Annotated[int, typer.Option(help="Timed full reports (the best counts).", min=1)] = 2,
    keep: Annotated[Path | None, typer.Option(help="Keep (or reuse, when it exists) the generated log here.",
                                                 show_default=False)] = None,
    out_dir: OutDir = None,
) -> None:
    """`fer-pipeline report` over a large synthetic log: full report, one camera, reading alone;
    from the label blocks and from the rows, side by side."""
    _run("report_bench", rows=rows, cameras=cameras, copies=copies, repeats=repeats, keep=keep, out_dir=out_dir)


@bench_app.command("loggers")
def loggers(
    quick: Quick = False,
    count: Annotated[str, typer.Option("--loggers", help="Comma-separated PostgreSQL logger process counts.")] = "1,2,4",
    labels: Annotated[int, typer.Option(help="Labels in the pre-filled stream (and per store run).",
                                        min=1000)] = 60_000,
    sqlite: Annotated[bool, typer.Option("--sqlite/--no-sqlite", help="Also the SQLite logger and store, for "
                                         "reference.")] = True,
    pg_url: Annotated[str, typer.Option("--pg-url", help="PostgreSQL database to measure in (a fresh schema per "
                                        "run, dropped afterwards).")] = "postgresql://postgres@127.0.0.1:5432/test",
    redis_url: BenchRedis = LOCAL_REDIS,
    out_dir: OutDir = None,
) -> None:
    """Labels/s into the emotion log: K logger processes in one group from a pre-filled labels
    stream (PostgreSQL, and SQLite for reference), beside the store's own insert rate without Redis."""
    _run("loggers", loggers=_ints(count), labels=labels, quick=quick, redis_url=redis_url, pg_url=pg_url,
         sqlite=sqlite, out_dir=out_dir)


@bench_app.command("capacity")
def capacity(
    window: Annotated[float, typer.Option(help="Measurement window per point, seconds.", min=1.0)] = 12.0,
    out_dir: OutDir = None,
) -> None:
    """Capacity-model ingredients on a private Redis: message sizes, CPU per frame, crop and round
    trip of every role and of Redis, bytes through Redis; a saturated point, then two checks."""
    _run("capacity", window_s=window, out_dir=out_dir)


@bench_app.command("shards")
def shards(
    quick: Quick = False,
    configs: Annotated[str, typer.Option(help="Comma-separated: plain1 (one Redis, 1 shard; the reference, "
                                         "first), cluster3 (a local 3-master cluster, 3 shards), plain3 (one "
                                         "Redis, 3 shards).")] = "plain1,cluster3,plain3",
    cameras: Annotated[int, typer.Option(help="Replay cameras.", min=1)] = 12,
    faces: Annotated[int, typer.Option(help="Faces per replayed frame.", min=1, max=64)] = 1,
    workers: Annotated[int, typer.Option(help="Worker processes.", min=1)] = 1,
    window: Annotated[float, typer.Option(help="Measurement window per configuration, seconds.", min=1.0)] = 10.0,
    warmup: Annotated[float, typer.Option(help="Seconds between producer start and the window.", min=0.0)] = 3.0,
    out_dir: OutDir = None,
) -> None:
    """The capacity model against 3 shards on a local Redis Cluster: the same load through one
    plain Redis and through the cluster, per-node Redis CPU predicted and measured, exactly once."""
    names = tuple(c.strip() for c in configs.split(",") if c.strip())
    from benchmarks.shards import CONFIGS

    if not names or any(n not in CONFIGS for n in names):
        raise ConfigError(f"--configs: expected some of {', '.join(CONFIGS)}, got {configs!r}")
    _run("shards", configs=names, cameras=cameras, faces=faces, workers=workers, window_s=window, warmup_s=warmup,
         quick=quick, out_dir=out_dir)


@bench_app.command("all")
def all_benchmarks(
    quick: Quick = False,
    redis_url: BenchRedis = LOCAL_REDIS,
    out_dir: OutDir = None,
) -> None:
    """The whole suite with default options: detection, inference, then the pipeline."""
    _run("detection", quick=quick, out_dir=out_dir)
    _run("inference", quick=quick, redis_url=redis_url, out_dir=out_dir)
    _run("pipeline", quick=quick, redis_url=redis_url, out_dir=out_dir)


def main() -> None:
    try:
        bench_app()
    except FerError as e:
        print(f"benchmarks: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
