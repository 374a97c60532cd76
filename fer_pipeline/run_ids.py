"""Run ids: which run of the pipeline a face, a label, a log row and a video belong to.

`up` names one run for all its producers (``20261203-181502-a1b2``: sortable, readable in a
file name); a producer started on its own names its own. A producer that `up` restarts after
a crash continues as ``<run>~<n>``: its frame numbers start again, and a new run id keeps its
crop ids from colliding with the first start's, while the report still counts it in the run.
"""

from __future__ import annotations

import secrets
import time

RESTART_MARK = "~"
# Letters, digits and ._- (safe in file names, crop ids and SQL LIKE without escaping), plus the restart mark.
RUN_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,56}(~[0-9]{1,6})?$"


def new_run_id(now: float | None = None) -> str:
    """A new run id: local start time to the second and four random hex digits."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(2)}"


def restarted(run_id: str, restarts: int) -> str:
    """The run id of a producer's ``restarts``-th restart within run ``run_id``."""
    base = run_id.split(RESTART_MARK, 1)[0]
    return base if restarts <= 0 else f"{base}{RESTART_MARK}{restarts}"
