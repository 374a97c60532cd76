"""Run ids: which run of the pipeline a face, a label, a log row and a video belong to.

`up` names one run for all its producers (``20261203-181502-a1b2c3``: sortable, readable in a
file name); a producer started on its own names its own. A producer that `up` restarts after
a crash continues as ``<run>~<n>``: its frame numbers start again, and a new run id keeps its
crop ids from colliding with the first start's, while the report still counts it in the run.
"""

from __future__ import annotations

import re
import secrets
import time

RESTART_MARK = "~"
# Letters, digits and ._- (safe in file names, crop ids and SQL LIKE without escaping), plus the restart mark.
RUN_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,56}(~[0-9]{1,6})?$"
_RESTART = re.compile(rf"(.+){re.escape(RESTART_MARK)}[0-9]+")


def new_run_id(now: float | None = None) -> str:
    """A new run id: local start time to the second and four random hex digits."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if now is None else now))
    # 24 random bits: producers started on their own in the same second stay apart.
    return f"{stamp}-{secrets.token_hex(3)}"


def restarted(run_id: str, restarts: int) -> str:
    """The run id of a producer's ``restarts``-th restart within run ``run_id``."""
    base = base_run(run_id)
    return base if restarts <= 0 else f"{base}{RESTART_MARK}{restarts}"


def base_run(run_id: str) -> str:
    """The run a run id belongs to: ``<run>~<n>`` (a restarted producer) is ``<run>``."""
    m = _RESTART.fullmatch(run_id)
    return m.group(1) if m else run_id
