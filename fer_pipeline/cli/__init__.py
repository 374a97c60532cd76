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
