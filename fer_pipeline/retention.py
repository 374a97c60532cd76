"""Time-based retention of the Redis streams (privacy): face crops, frames and labels older
than a maximum age are deleted with XTRIM MINID, on top of the MAXLEN bounds.

Stream ids are the broker's clock in milliseconds, so the cutoff is computed from Redis'
TIME, not the local clock: a janitor on another machine with a skewed clock trims the same.
Deleted messages (a bundled stream's entries hold several) are counted per stream in the
stats hash as ``expired:<stream>``.
"""

from __future__ import annotations

import time

from fer_pipeline.service import Service
from fer_pipeline.settings import Settings
from fer_pipeline.transport import Transport


def expire_streams(transport: Transport, max_age_s: float) -> dict[str, int]:
    """Delete entries older than ``max_age_s`` from every pipeline stream; returns how many per stream."""
    keys = transport.keys
    cutoff_ms = transport.server_time_ms() - int(max_age_s * 1000)
    if cutoff_ms <= 0:
        return {}
    cameras = transport.camera_ids()
    streams = [keys.crops, keys.labels, keys.dead, *(keys.frames(c) for c in cameras)]
    removed = {s: transport.expire(s, cutoff_ms) for s in streams}
    for s, n in removed.items():
        transport.incr(f"expired:{s}", n)
    return {s: n for s, n in removed.items() if n}


class RetentionService(Service):
    """Role "retention": trims the streams to ``consumer.stream_max_age_s`` every ``every_s``.

    Raises:
        ValueError: the settings ask for no time-based retention (``stream_max_age_s`` is 0).
    """

    role = "retention"

    def __init__(self, settings: Settings, transport: Transport, ident: str | None = None, *,
                 every_s: float = 5.0) -> None:
        super().__init__(settings, transport, ident)
        if settings.consumer.stream_max_age_s <= 0:
            raise ValueError("stream_max_age_s must be > 0 for the retention service")
        self.every_s = every_s
        self._next = 0.0

    def step(self) -> None:
        """Expire old entries when a run is due; otherwise wait towards it, at most ``block_ms``, so a
        stop request is seen promptly."""
        now = time.monotonic()
        if now < self._next:
            # Wait in short slices so a stop request is honoured within block_ms.
            self.stop_event.wait(min(self._next - now, self.settings.streams.block_ms / 1000.0))
            return
        self._next = now + self.every_s
        for stream, n in expire_streams(self.transport, self.settings.consumer.stream_max_age_s).items():
            self.counters["entries_expired"] += n
            self.log.info("expired %d entries older than %.0fs from %s", n, self.settings.consumer.stream_max_age_s,
                          stream)
