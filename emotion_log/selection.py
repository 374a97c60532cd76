"""Which labels to read from the emotion log, and how (``reader`` takes one of these)."""

from __future__ import annotations

from dataclasses import dataclass

from fer_pipeline.errors import ConfigError


@dataclass(frozen=True)
class Selection:
    """The labels to read: every field narrows the log; the defaults read all of it."""

    cameras: tuple[str, ...] = ()
    tracks: tuple[int, ...] = ()
    # Exact run ids (a restarted producer's ``<run>~n`` is an id of its own: ``analytics.scope``
    # resolves ``--run`` to the ids it covers); empty: every run.
    runs: tuple[str, ...] = ()
    since: float | None = None  # epoch seconds, inclusive
    until: float | None = None  # epoch seconds, exclusive
    # Labels read per batch, and so processed at a time (a track that goes on in the next
    # batch waits for it): it bounds memory, and 64k labels keep a batch's arrays in the CPU cache.
    chunk_rows: int = 65_536
    # Read the label blocks when they cover the log (``blocks.py``); False reads the rows
    # even then: the same labels, slower (the benchmark's and the tests' reference).
    blocks: bool = True

    def __post_init__(self) -> None:
        if self.chunk_rows < 1:
            raise ConfigError("the chunk size must be at least 1")
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise ConfigError("--until must be after --since")
