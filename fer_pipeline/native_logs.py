"""Quieting what native libraries print straight to the process's stderr (file descriptor 2),
where Python's logging cannot reach: LiteRT announces ``INFO: Created TensorFlow Lite XNNPACK
delegate for CPU.`` in every worker and producer, a line that reads like a problem and is none."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator

log = logging.getLogger("fer.native")
# Lines known to be chatter: kept at DEBUG. Anything else a library prints is passed on as it was.
CHATTER = re.compile(r"^INFO: (Created TensorFlow Lite XNNPACK delegate|Initialized TensorFlow Lite runtime)")
_lock = threading.Lock()  # fd 2 is one per process: one capture at a time


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Capture fd 2 for the block, then write back what is not known chatter (in order, nothing
    lost: another thread's output during the block is written back too)."""
    with _lock, tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for raw in captured.read().decode(errors="replace").splitlines(keepends=True):
                if CHATTER.match(raw):
                    log.debug("%s", raw.rstrip())
                else:
                    sys.stderr.write(raw)
            sys.stderr.flush()
