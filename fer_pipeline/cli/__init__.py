"""`fer-pipeline` command line: one module per command group, joined on one typer app.

User errors (``FerError``) print one line and exit 1; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import os
import sys

from fer_pipeline.cli import ops as _ops  # noqa: E402,F401

# Importing a command module registers its commands on `app`.
from fer_pipeline.cli import run as _run  # noqa: E402,F401
from fer_pipeline.cli import sink as _sink  # noqa: E402,F401
from fer_pipeline.cli import train as _train  # noqa: E402,F401
from fer_pipeline.cli import up as _up  # noqa: E402,F401
from fer_pipeline.cli._app import app
from fer_pipeline.errors import FerError

# --help lists commands in this order, in these panels: `up` first, as a new user needs it,
# then what runs a deployment by role, then what reads one. Typer lists them as registered.
PANELS: dict[str, tuple[str, ...]] = {
    "Run everything on this machine": ("up",),
    "Run one role (scale by starting more, on any machine)": ("producer", "worker", "logger", "display", "sink",
                                                              "dashboard"),
    "Look at results and health": ("report", "status"),
    "Privacy and maintenance": ("prune", "erase", "retention", "reindex"),
    "Model": ("train", "evaluate", "export"),
}


def _arrange() -> None:
    rank = {name: i for i, name in enumerate(n for names in PANELS.values() for n in names)}
    panel = {name: title for title, names in PANELS.items() for name in names}

    def name_of(info) -> str:
        return info.name or info.callback.__name__.replace("_", "-")

    infos: list = [*app.registered_commands, *app.registered_groups]  # CommandInfo and TyperInfo alike
    for info in infos:
        info.rich_help_panel = panel.get(name_of(info), info.rich_help_panel)
    app.registered_commands.sort(key=lambda info: rank.get(name_of(info), len(rank)))


_arrange()


def main() -> None:
    # OpenCV's own log (a failed webcam open alone prints nine lines before our one) is off
    # unless asked for: every failure it reports reaches the user as one line of ours.
    # Children of `up` inherit it.
    os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's AV_LOG_QUIET
    try:
        app()
    except FerError as e:
        print(f"fer-pipeline: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("fer-pipeline: interrupted", file=sys.stderr)
        sys.exit(130)
