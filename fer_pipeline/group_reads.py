"""One consumer's reads from a consumer group, in the order a restart needs: first what was
delivered to this consumer name and never acknowledged (its own pending entries: a lost ack,
a restart), then, every ``reclaim_every_s``, what other consumers left pending longer than
``reclaim_idle_ms`` (they died), then new entries. The sinks and ``LabelReader`` read this
way; a role sets ``own_pending`` again when an ack may have been lost (Redis went away).
"""

from __future__ import annotations

import time
from collections.abc import Container
from dataclasses import dataclass, field

from fer_pipeline.transport import Entry, Transport


@dataclass(frozen=True)
class Read:
    """What one ``GroupReads.read`` gave: the entries, where they came from (``own``:
    this consumer's pending, ``claimed``: taken over from another, ``new``), and how many
    pending ids Redis no longer holds (trimmed while pending; counted, nothing to read)."""

    entries: list[Entry]
    source: str
    missing: int = 0


@dataclass
class GroupReads:
    """The reads of ``consumer`` in ``group`` on ``stream`` (see the module)."""

    transport: Transport
    stream: str
    group: str
    consumer: str
    reclaim_every_s: float
    reclaim_idle_ms: int
    own_pending: bool = True
    _next_reclaim: float = field(default=0.0, repr=False)

    def read(self, count: int, block_ms: int | None, *, skip: Container[tuple[str, str]] = ()) -> Read:
        """The next entries (at most ``count`` stream entries); a read of new ones waits up to
        ``block_ms``. ``skip``: own pending entries (stream, id) already handled and not
        acknowledged yet, not to be handed out twice."""
        if self.own_pending:
            entries = [e for e in self.transport.read_group([self.stream], self.group, self.consumer, count=count,
                                                            block_ms=None, own_pending=True) if (e.stream, e.id) not in skip]
            if entries:
                return Read(entries, "own")
            self.own_pending = False
        missing = 0
        if time.monotonic() >= self._next_reclaim:
            self._next_reclaim = time.monotonic() + self.reclaim_every_s
            claimed, gone = self.transport.autoclaim(self.stream, self.group, self.consumer,
                                                     min_idle_ms=self.reclaim_idle_ms, count=count)
            missing = len(gone)
            if claimed:
                return Read(claimed, "claimed", missing)
        entries = self.transport.read_group([self.stream], self.group, self.consumer, count=count,
                                            block_ms=block_ms)
        return Read(entries, "new", missing)
