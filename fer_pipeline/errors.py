"""Typed errors at the boundaries.

Every ``FerError`` carries a one-line message meant for the user; the CLI prints it and
exits non-zero. Anything else escaping is a bug and keeps its traceback.
"""

from __future__ import annotations


class FerError(Exception):
    """Base class: a problem the user can act on, described in one line."""


class ConfigError(FerError):
    """Settings or command-line values that cannot work."""


class SourceError(FerError):
    """A camera/video/image source cannot be opened or read."""


class BrokerUnavailable(FerError):
    """Redis cannot be reached (or an embedded one cannot be started)."""


class ModelError(FerError):
    """A model file is missing, unreadable, or disagrees with its metadata."""


class DataError(FerError):
    """Training/evaluation data is missing or malformed."""


class MessageError(FerError):
    """A stream message cannot be decoded or fails validation.

    ``reason`` is short and machine-friendly; it goes to the dead-letter stream.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def first_line(e: BaseException) -> str:
    """An exception's message as one line (its first), or its type's name when it has none:
    what a one-line error quotes of a library's multi-line message."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
