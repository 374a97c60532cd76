"""Several messages in one stream entry (a bundle): the crops and labels streams' wire format.

Redis spends a few microseconds of its own time on every stream entry, whatever its size
(XADD, the consumer group's pending entry, XACK, XDEL): about as much as moving a 2.4 KB
crop through the loopback. Sent one entry per crop, a producer's round of 32 frames paid
it 64 times, and a worker's batch of 64 labels as many. A bundle is one entry with two
fields: ``n``, how many messages, and ``d``, the msgpack map
``{"v": 2, "kind": "bundle", "messages": [...]}`` holding the messages' own bytes. Every
message stays exactly what it was (validated on its own, dead-lettered on its own with its
original bytes) while Redis handles one entry per producer round and one per worker batch.
Readers expand a bundle into one message per part; an entry without ``n`` is one message.

The envelope sits in ``d``, where a single message would, as schema version 2: a reader
from before bundles takes it for a message of an unknown version and dead-letters it whole,
with the reason, instead of losing it as an empty entry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import msgpack

SINGLE = b"d"  # the message (or, with COUNT, the bundle's envelope)
COUNT = b"n"
VERSION = 2
MAX_BUNDLE = 64  # messages in one entry: a worker's default batch; bigger bundles share out worse
ASSUMED_PER_ENTRY = 8  # a read takes at most wanted/8 entries: <= 8 bundles (512 messages) for 64


class ReadSizer:
    """XREADGROUP's COUNT is in entries, a reader's appetite in messages: size it by the
    largest bundle of the last read, assuming at least ``ASSUMED_PER_ENTRY`` messages an
    entry (after one-message rounds, a burst of full bundles must not land 64 batches on one
    reader). Reading short costs a round trip: readers take what is still waiting before
    they wait."""

    def __init__(self) -> None:
        self.largest = MAX_BUNDLE

    def count(self, messages: int) -> int:
        """Entries to ask for, to get about ``messages`` messages."""
        return max(1, math.ceil(messages / max(self.largest, ASSUMED_PER_ENTRY)))

    def saw(self, entries) -> None:
        """Learn from a read's entries (``Entry`` tuples: one per message, ``parts`` each)."""
        if entries:
            self.largest = max(e.parts for e in entries)


def pack(payloads: Sequence[bytes], max_bundle: int = MAX_BUNDLE) -> tuple[list[bytes], list[int]]:
    """The bundles' envelopes and their message counts, in order, at most ``max_bundle`` each."""
    bodies, counts = [], []
    packer = msgpack.Packer(use_bin_type=True)
    for i in range(0, len(payloads), max_bundle):
        chunk = list(payloads[i:i + max_bundle])
        bodies.append(packer.pack({"v": VERSION, "kind": "bundle", "messages": chunk}))
        counts.append(len(chunk))
    return bodies, counts


def unpack(fields: dict[bytes, bytes] | None, max_message_bytes: int = 1 << 20) -> tuple[list[bytes | None], str | None]:
    """An entry's messages, and why it is malformed (None when it is not).

    A deleted entry (no fields) is one missing message, ``[None]``. A malformed bundle comes
    back as its raw envelope, one part, with the reason, so the reader can park it whole; so
    does one holding more than ``MAX_BUNDLE`` messages, or more bytes than that many messages
    of ``max_message_bytes`` (a few bytes must not fan out into a million dead letters)."""
    if not fields:
        return [None], None
    body = fields.get(SINGLE)
    if COUNT not in fields:
        if body is None:
            return [b""], f"entry has no message field ({SINGLE.decode()})"
        return [body], None
    if body is None:
        return [b""], f"bundle has no envelope field ({SINGLE.decode()})"
    if len(body) > MAX_BUNDLE * (max_message_bytes + 5) + 64:  # 5: a bin header at most; 64: the envelope
        return [body], f"malformed bundle: {len(body)} bytes exceeds {MAX_BUNDLE} messages of {max_message_bytes}"
    try:
        # Each message's own size limit is the receiver's (decode dead-letters it alone).
        envelope = msgpack.unpackb(body, raw=False, use_list=True, max_array_len=MAX_BUNDLE, max_map_len=3)
        count = int(fields[COUNT])
    except Exception as e:  # msgpack raises several unrelated types on garbage
        return [body], f"malformed bundle: {type(e).__name__}"
    parts = envelope.get("messages") if isinstance(envelope, dict) else None
    if not isinstance(envelope, dict) or envelope.get("v") != VERSION or envelope.get("kind") != "bundle":
        return [body], f"malformed bundle: not a version {VERSION} bundle envelope"
    if not isinstance(parts, list) or not parts or not all(isinstance(p, bytes) for p in parts):
        return [body], "malformed bundle: not a list of messages"
    if count != len(parts):
        return [body], f"malformed bundle: says {count} messages, holds {len(parts)}"
    return parts, None
