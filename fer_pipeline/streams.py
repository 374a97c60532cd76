"""Every Redis key name, computed from the configured prefix (one place, like arq's constants).

Tests isolate themselves with a unique prefix instead of flushing databases.
"""

from __future__ import annotations

from dataclasses import dataclass

WORKERS_GROUP = "workers"
DISPLAY_GROUP = "display"
LOGGER_GROUP = "logger"


def entry_order(entry_id: str) -> tuple[int, int]:
    """A stream entry id (``<ms>-<seq>``) as a tuple that sorts as Redis orders them.

    Raises:
        ValueError: not an entry id.
    """
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True)
class StreamKeys:
    """Every Redis key of one deployment, named under its ``prefix``."""

    prefix: str

    @property
    def crops(self) -> str:
        """Shared by all cameras; read by the workers' consumer group."""
        return f"{self.prefix}:crops"

    @property
    def depth(self) -> str:
        """Hash: messages held per bundled stream (its entries are bundles; see bundles.py)."""
        return f"{self.prefix}:depth"

    def bundled(self, stream: str) -> bool:
        """Streams whose entries are bundles of messages: the hot path's crops and labels."""
        return stream in (self.crops, self.labels)

    @property
    def labels(self) -> str:
        """Labels from every worker; the logger's and each display's consumer group read all of them."""
        return f"{self.prefix}:labels"

    @property
    def dead(self) -> str:
        """Dead letters: undecodable or invalid messages, with reason and original payload."""
        return f"{self.prefix}:dead"

    @property
    def cameras(self) -> str:
        """Set of camera ids that have published, so consumers can find frame streams."""
        return f"{self.prefix}:cameras"

    @property
    def stats(self) -> str:
        """Hash of counters (trimmed-unread per stream, drops) shared by all processes."""
        return f"{self.prefix}:stats"

    @property
    def epoch(self) -> str:
        """A random id written once: a different (or missing) one means Redis lost its data."""
        return f"{self.prefix}:epoch"

    def frames(self, camera_id: str) -> str:
        """One camera's frames (JPEG) from its producer, read by the display groups."""
        return f"{self.prefix}:frames:{camera_id}"

    def health(self, role: str, ident: str) -> str:
        """A TTL key each live process rewrites; its absence means the process is gone."""
        return f"{self.prefix}:health:{role}:{ident}"

    @property
    def health_pattern(self) -> str:
        """SCAN pattern matching every heartbeat key."""
        return f"{self.prefix}:health:*"
