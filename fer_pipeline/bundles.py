"""Several messages in one stream entry (a bundle): the crops and labels streams' wire format.

Redis spends a few microseconds of its own time on every stream entry, whatever its size
(XADD, the consumer group's pending entry, XACK, XDEL): about as much as moving a 2.4 KB
crop through the loopback. Sent one entry per crop, a producer's round of 32 frames paid
it 64 times, and a worker's batch of 64 labels as many. A bundle is one entry with two fields, ``n`` (how many messages) and ``b``
(a msgpack array of the messages' own bytes), so every message stays exactly what it was
(validated on its own, dead-lettered on its own with its original bytes) while Redis
handles one entry per producer round and one per worker batch. Readers expand a bundle into one message per part; an entry
with the single-message field ``d`` reads as a bundle of one.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgpack

SINGLE = b"d"  # one message per entry (every stream but the bundled ones)
COUNT = b"n"
BODY = b"b"
MAX_BUNDLE = 64  # messages in one entry: a worker's default batch; bigger bundles share out worse


def pack(payloads: Sequence[bytes], max_bundle: int = MAX_BUNDLE) -> tuple[list[bytes], list[int]]:
    """The bundles' bodies and their message counts, in order, at most ``max_bundle`` each."""
    bodies, counts = [], []
    for i in range(0, len(payloads), max_bundle):
        chunk = list(payloads[i:i + max_bundle])
        bodies.append(msgpack.packb(chunk, use_bin_type=True))
        counts.append(len(chunk))
    return bodies, counts


def unpack(fields: dict[bytes, bytes] | None, max_message_bytes: int = 1 << 20) -> tuple[list[bytes | None], str | None]:
    """An entry's messages, and why it is malformed (None when it is not).

    A deleted entry (no fields) is one missing message, ``[None]``. A malformed bundle comes
    back as its raw body, one part, with the reason, so the reader can park it whole; so
    does one holding more than ``MAX_BUNDLE`` messages, or more bytes than that many messages
    of ``max_message_bytes`` (a few bytes must not fan out into a million dead letters)."""
    if not fields:
        return [None], None
    if SINGLE in fields:
        return [fields[SINGLE]], None
    body = fields.get(BODY)
    if body is None:
        return [b""], f"entry has neither a message ({SINGLE.decode()}) nor a bundle ({BODY.decode()})"
    if len(body) > MAX_BUNDLE * (max_message_bytes + 5):  # 5: a bin header at most
        return [body], f"malformed bundle: {len(body)} bytes exceeds {MAX_BUNDLE} messages of {max_message_bytes}"
    try:
        # Each message's own size limit is the receiver's (decode dead-letters it alone).
        parts = msgpack.unpackb(body, raw=False, use_list=True, max_array_len=MAX_BUNDLE, max_map_len=0)
        count = int(fields.get(COUNT, b"-1"))
    except Exception as e:  # msgpack raises several unrelated types on garbage
        return [body], f"malformed bundle: {type(e).__name__}"
    if not isinstance(parts, list) or not parts or not all(isinstance(p, bytes) for p in parts):
        return [body], "malformed bundle: not a list of messages"
    if count != len(parts):
        return [body], f"malformed bundle: says {count} messages, holds {len(parts)}"
    return parts, None
