"""The typer app and what every command shares: settings construction and error reporting."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer
from typer.core import TyperOption
from pydantic import ValidationError

from fer_pipeline.errors import ConfigError
from fer_pipeline.settings import Settings, shipped_path
from fer_pipeline.urls import has_password

DEMO_CLIP = shipped_path("demo") / "short_hamilton_clip.mp4"

def _value_hint(self, ctx) -> str | None:
    """What typer shows after an option in --help: its metavar where one is given (``--out DIR``),
    otherwise nothing. Typer 0.2x prints a type tag on every option instead (``<bool>`` on a
    flag, ``<list[str]>``), which reads as noise; the help text says what a value is."""
    return self.metavar


TyperOption.display_type_rich = _value_hint  # type: ignore[method-assign]

app = typer.Typer(
    name="fer-pipeline",
    help="Real-time facial emotion recognition as a streaming pipeline over Redis streams.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Options shared by the pipeline commands (typer has no option inheritance; reuse the types).
RedisUrl = Annotated[str | None, typer.Option(
    "--redis-url", envvar="FER_REDIS_URL", help="redis://[user:pass@]host:port/db or rediss:// (TLS).",
    show_default=False)]
Prefix = Annotated[str | None, typer.Option("--prefix", help="Key prefix of every stream (default: fer).",
                                               show_default=False)]
Sources = Annotated[list[str] | None, typer.Option(
    "--source", "-s", help="Camera source, repeatable: webcam index, video file, rtsp/http URL, image folder, "
    "replay:FILE.npz?fps=30&faces=2, or 'demo' (the shipped clip) (default: 0, the webcam).", show_default=False)]
CameraIds = Annotated[list[str] | None, typer.Option(
    "--camera-id", help="Camera id per --source, in order (default: from the source).", show_default=False)]
Realtime = Annotated[bool | None, typer.Option(
    "--realtime/--fast", help="Replay files at native fps, or as fast as possible.", show_default=False)]
Loop = Annotated[bool | None, typer.Option("--loop/--no-loop", help="Loop finite sources.", show_default=False)]
DetectorName = Annotated[str | None, typer.Option(
    "--detector", help="Face detector: blazeface (default), blazeface-full, blazeface-short, res10 or haar "
    "(the tutorial's).",
    show_default=False)]
DetectEvery = Annotated[int | None, typer.Option(
    help="Run detection every Nth frame; the tracker predicts each face in between (default: 3).",
    show_default=False)]


def resolve_sources(specs: list[str] | None) -> list[str]:
    """Source specs with ``demo`` replaced by the clip shipped in the repository."""
    out = []
    for spec in specs or ["0"]:
        if spec == "demo":
            if not DEMO_CLIP.is_file():
                raise ConfigError(f"the demo clip is missing: {DEMO_CLIP}")
            spec = str(DEMO_CLIP)
        out.append(spec)
    return out


def build_settings(*, redis_url: str | None = None, prefix: str | None = None, **sections: dict) -> Settings:
    """Environment (FER_*) first, then command-line values; a bad value is a ConfigError."""
    if redis_url and has_password(redis_url) and _on_command_line(redis_url):
        typer.echo("fer-pipeline: warning: the password in --redis-url is visible to every local user (ps); "
                   "set FER_REDIS__URL in the environment instead", err=True)
    try:
        s = Settings()
        return s.with_updates(redis={"url": redis_url, "prefix": prefix}, **sections)
    except ValidationError as e:
        raise ConfigError(setting_error(e)) from e


def setting_error(e: ValidationError) -> str:
    """One line for a refused setting: which one, and pydantic's reason without its "Value error, " prefix."""
    first = e.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    reason = str(first.get("msg", "")).removeprefix("Value error, ")
    return f"invalid setting {where}: {reason}"


def _on_command_line(value: str) -> bool:
    # typer also fills --redis-url from FER_REDIS_URL: only a value typed as an argument warns.
    return any(arg == value or arg == f"--redis-url={value}" for arg in sys.argv[1:])


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname).1s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
