"""How the report turns labels into states and episodes (``ReportOptions``), and reading
times given on the command line."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime

from fer_pipeline.emotion_log.selection import Selection
from fer_pipeline.errors import ConfigError
from fer_pipeline.labels import EMOTIONS

STATES: tuple[str, ...] = (*EMOTIONS, "unknown")
UNKNOWN = len(EMOTIONS)
K = len(EMOTIONS)


@dataclass(frozen=True)
class ReportOptions(Selection):
    """What to select from the log (a ``Selection``) and how to turn labels into states and episodes."""

    # Which producer runs (``scope``): "latest", "all" (the default here, as for a plain
    # Selection; the CLI's default is latest) or a run id, its restarts included.
    run: str = "all"
    smooth: int = 5  # labels of a track averaged (the trailing smoothing window)
    min_confidence: float = 0.4
    min_face: int = 40
    min_dwell_s: float = 1.0
    release_s: float | None = None  # None: same as min_dwell_s
    max_gap_s: float = 1.0
    threads: int = 0  # parts of a SQLite log read in parallel; 0 = up to 4, by CPU count

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.smooth < 1 or self.threads < 0:
            raise ConfigError("--smooth must be at least 1, threads at least 0")
        if not self.run:
            raise ConfigError("--run needs latest, all or a run id")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ConfigError("min confidence must be between 0 and 1")
        if self.min_dwell_s < 0 or (self.release_s is not None and self.release_s < 0) or self.max_gap_s <= 0:
            raise ConfigError("dwell and release times must be >= 0 and the max gap > 0")

    @property
    def release(self) -> float:
        """How long another state must hold to end an episode: ``release_s``, or ``min_dwell_s`` when
        that is None."""
        return self.min_dwell_s if self.release_s is None else self.release_s


def parse_time(text: str, now: float | None = None) -> float:
    """Epoch seconds from ``1700000000``, an ISO date/time (local time unless it has an
    offset), or an age such as ``90s``, ``15m``, ``2h``, ``7d`` (that long before now)."""
    text = text.strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd])", text)
    if m:
        return (time.time() if now is None else now) - float(m.group(1)) * {"s": 1, "m": 60, "h": 3600,
                                                                            "d": 86400}[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ConfigError(f"cannot read time {text!r}: use epoch seconds, ISO 8601 or an age like 2h") from None
