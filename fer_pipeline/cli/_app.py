"""The typer app and what every command shares: settings construction and error reporting."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer
from pydantic import BaseModel, ValidationError
from typer.core import TyperOption

from fer_pipeline.errors import ConfigError
from fer_pipeline.settings import ProducerSettings, RedisSettings, Settings, shipped_path
from fer_pipeline.urls import has_password

DEMO_CLIP = shipped_path("demo") / "short_hamilton_clip.mp4"

def _value_hint(self, ctx) -> str | None:
    """What typer shows after an option in --help: its metavar where one is given (``--out DIR``),
    otherwise nothing. Typer 0.2x prints a type tag on every option instead (``<bool>`` on a
    flag, ``<list[str]>``), which reads as noise; the help text says what a value is."""
    return self.metavar


_typer_default_string = TyperOption._get_default_string


def _default_string(self, *, ctx, show_default_is_str: bool, default_value) -> str:
    """Defaults read one way: text given for an option that falls back to the settings
    (``show_default="64"``) as ``[default: 64]``, where typer adds parentheses, and an on/off
    flag as the flag one types (``[default: --display]``), where typer drops the dashes."""
    if show_default_is_str:
        return str(self.show_default)
    if self.is_bool_flag and self.secondary_opts and default_value is not None:
        return (self.opts if default_value else self.secondary_opts)[0]  # --display, as one types it
    return _typer_default_string(self, ctx=ctx, show_default_is_str=False, default_value=default_value)


TyperOption.display_type_rich = _value_hint  # type: ignore[method-assign]
TyperOption._get_default_string = _default_string  # type: ignore[method-assign]

app = typer.Typer(
    name="fer-pipeline",
    help="Real-time facial emotion recognition as a streaming pipeline over Redis streams.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

def default(section: type[BaseModel], name: str) -> str:
    """A setting's default as --help shows it (``show_default=default(WorkerSettings, "max_batch")``):
    options left unset fall back to the settings (env FER_*, then these), so help reads them from there."""
    return str(section.model_fields[name].default)


# Options shared by the pipeline commands (typer has no option inheritance; reuse the types).
RedisUrl = Annotated[str | None, typer.Option(
    "--redis-url", envvar="FER_REDIS_URL", help="redis://[user:pass@]host:port/db or rediss:// (TLS).",
    metavar="URL", show_default="FER_REDIS__URL; `up` starts its own broker")]
Prefix = Annotated[str | None, typer.Option("--prefix", help="Key prefix of every stream.",
                                               show_default=default(RedisSettings, "prefix"))]
Sources = Annotated[list[str] | None, typer.Option(
    "--source", "-s", metavar="SOURCE", help="Camera source, repeatable: webcam index, video file, rtsp/http URL, image folder, "
    "replay:FILE.npz?fps=30&faces=2, or 'demo' (the shipped clip).",
    show_default="FER_PRODUCER__SOURCES, or 0: the webcam")]
CameraIds = Annotated[list[str] | None, typer.Option(
    "--camera-id", help="Camera id per --source, in order.", show_default="from the source")]
Realtime = Annotated[bool | None, typer.Option(
    "--realtime/--fast", help="Replay files at native fps, or as fast as possible.", show_default="--realtime")]
Loop = Annotated[bool | None, typer.Option("--loop/--no-loop", help="Loop finite sources.", show_default="--no-loop")]
DetectorName = Annotated[str | None, typer.Option(
    "--detector", help="Face detector: blazeface, blazeface-full, blazeface-short, res10 or haar "
    "(the tutorial's).", show_default=default(ProducerSettings, "detector"))]
DetectEvery = Annotated[int | None, typer.Option(
    help="Run detection every Nth frame; the tracker predicts each face in between.",
    show_default=default(ProducerSettings, "detect_every"))]


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
    warn_if_password_typed(redis_url, "--redis-url", "FER_REDIS__URL")
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


def warn_if_password_typed(url: str | None, option: str, envvar: str) -> None:
    """Warn when ``url``, given as ``option``, holds a password typed on the command line."""
    if url and has_password(url) and _on_command_line(url, option):
        typer.echo(f"fer-pipeline: warning: the password in {option} is visible to every local user (ps); "
                   f"set {envvar} in the environment instead", err=True)


def _on_command_line(value: str, option: str = "--redis-url") -> bool:
    # typer also fills --redis-url from FER_REDIS_URL: only a value typed as an argument warns.
    return any(arg == value or arg == f"{option}={value}" for arg in sys.argv[1:])


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname).1s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
