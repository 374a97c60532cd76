"""The typer app and what every command shares: settings construction and error reporting."""

from __future__ import annotations

import logging
import sys
from typing import Annotated, Optional

import typer
from pydantic import ValidationError

from fer_pipeline.errors import ConfigError
from fer_pipeline.settings import Settings

app = typer.Typer(
    name="fer-pipeline",
    help="Real-time facial emotion recognition as a streaming pipeline over Redis streams.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Options shared by the pipeline commands (typer has no option inheritance; reuse the types).
RedisUrl = Annotated[Optional[str], typer.Option(
    "--redis-url", envvar="FER_REDIS_URL", help="redis://[user:pass@]host:port/db or rediss:// (TLS).",
    show_default=False)]
Prefix = Annotated[Optional[str], typer.Option("--prefix", help="Key prefix of every stream [default: fer].",
                                               show_default=False)]


def build_settings(*, redis_url: str | None = None, prefix: str | None = None, **sections: dict) -> Settings:
    """Environment (FER_*) first, then command-line values; a bad value is a ConfigError."""
    try:
        s = Settings()
        return s.with_updates(redis={"url": redis_url, "prefix": prefix}, **sections)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ConfigError(f"invalid setting {where}: {first.get('msg')}") from e


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname).1s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
