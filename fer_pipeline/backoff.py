"""Capped exponential backoff: the one waiting policy of every loop here that retries
(Redis outages in every role and in the producer's publisher, dropped live streams)."""

from __future__ import annotations


class Backoff:
    """Waits that double from ``initial`` up to ``cap``; ``reset`` after a success."""

    def __init__(self, initial: float, cap: float) -> None:
        self.initial, self.cap = initial, cap
        self.current = initial

    def next(self) -> float:
        """The wait to make now; the following one is twice as long (at most ``cap``)."""
        wait = self.current
        self.current = min(self.current * 2, self.cap)
        return wait

    def reset(self) -> None:
        """Start again from the ``initial`` wait (after a success)."""
        self.current = self.initial
