"""Dynamic batching policy (pure: no Redis, no model).

A batch closes when it holds ``max_batch`` items or when its oldest item has waited
``max_wait_s``. Under load, reads already return full batches, so the wait only costs
latency when traffic is light; then it trades up to ``max_wait_s`` for fewer, larger calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Batcher(Generic[T]):
    """Items collected into one batch, ready when it holds ``max_batch`` or its oldest item has
    waited ``max_wait_s``."""

    max_batch: int
    max_wait_s: float
    clock: Callable[[], float] = time.monotonic
    items: list[T] = field(default_factory=list)
    _opened_at: float | None = None

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            msg = f"max_batch must be >= 1, got {self.max_batch}"
            raise ValueError(msg)

    def add(self, items: list[T]) -> None:
        if items and not self.items:
            self._opened_at = self.clock()
        self.items.extend(items)

    @property
    def room(self) -> int:
        return max(0, self.max_batch - len(self.items))

    def ready(self) -> bool:
        if not self.items:
            return False
        return len(self.items) >= self.max_batch or self.wait_left() <= 0

    def wait_left(self) -> float:
        """Seconds until the open batch must close (max_wait_s when nothing is open)."""
        if self._opened_at is None or not self.items:
            return self.max_wait_s
        return self.max_wait_s - (self.clock() - self._opened_at)

    def take(self) -> list[T]:
        """Remove and return up to ``max_batch`` items; the rest start a new batch now."""
        out, self.items = self.items[: self.max_batch], self.items[self.max_batch:]
        self._opened_at = self.clock() if self.items else None
        return out

    def __len__(self) -> int:
        return len(self.items)
