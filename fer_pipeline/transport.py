"""Redis streams transport shared by every role (sync redis-py; one process per role).

A message lives in a single field ``d`` holding its msgpack payload, except on bundled
streams (crops and labels), whose entries each hold a bundle of messages (``bundles.py``);
readers get one ``Entry`` per message either way. ``publish`` bounds every stream at a number
of messages (exactly, or on a bundled stream by trimming whole bundles) and counts those
trimmed before some consumer group read them, or while one held them unacknowledged, in the
stats hash, so a stalled consumer costs counted data, not Redis memory.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, NamedTuple, cast

import redis

from fer_pipeline import bundles, redis_compat
from fer_pipeline.errors import BrokerUnavailable, MessageError, first_line
from fer_pipeline.messages import decode
from fer_pipeline.settings import Settings
from fer_pipeline.streams import StreamKeys
from fer_pipeline.urls import raw_password_hint, redact_url, scrub

log = logging.getLogger("fer.transport")

FIELD = bundles.SINGLE  # the one field of an unbundled entry
EXPIRE_CHUNK = 64  # bundles handed to Lua per retention call on a bundled stream

# The server-side scripts (package resources, ``lua/``); each runs after helpers.lua.
def _lua(name: str) -> str:
    return resources.files("fer_pipeline").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


_LUA_HELPERS = _lua("helpers")
_PUBLISH_LUA = _LUA_HELPERS + _lua("publish")
_BUNDLED_LUA = _LUA_HELPERS + _lua("bundled")
_EXPIRE_BUNDLED_LUA = _LUA_HELPERS + _lua("expire_bundled")


@dataclass(frozen=True)
class Ack:
    """Entries of ``stream`` to XACK (for ``group``) and XDEL along with a publish.

    For a bundled stream, ``messages`` gives each entry's message count, so the stream's
    depth drops by what the XDEL really removed."""

    stream: str
    group: str
    ids: Sequence[str]
    messages: Sequence[int] | None = None


class Entry(NamedTuple):
    """One message read from a stream: an entry, or one part of a bundled entry (a tuple:
    a worker makes 64 of these per batch, a frozen dataclass cost ~1 us each)."""

    stream: str
    id: str
    payload: bytes | None  # None: the entry was deleted/trimmed before it could be read
    part: int = 0
    parts: int = 1
    malformed: str | None = None  # why the entry is unreadable as messages; payload is then its raw body

    @property
    def ref(self) -> str:
        """Where this message came from, for dead letters and logs: the entry id, #part in a bundle."""
        return self.id if self.parts == 1 else f"{self.id}#{self.part}"

    def message(self, max_bytes: int, expect=None):
        """The message, decoded and validated (``messages.decode``); ``MessageError`` with the
        reason when it is not one, an unreadable bundle included."""
        if self.malformed:
            raise MessageError(self.malformed)
        if self.payload is None:
            raise MessageError("the entry was deleted before it was read")
        return decode(self.payload, max_bytes=max_bytes, expect=expect)


class Transport:
    """Thin, typed wrapper around one Redis connection pool."""

    def __init__(self, client: redis.Redis, keys: StreamKeys, settings: Settings) -> None:
        self._client = client  # private: every Redis operation of the product is a method here
        self.keys = keys
        self.settings = settings
        self._publish = client.register_script(_PUBLISH_LUA)
        self._expire_bundled = client.register_script(_EXPIRE_BUNDLED_LUA)

    @classmethod
    def connect(cls, settings: Settings, *, check: bool = True) -> Transport:
        """A transport on ``settings.redis.url`` (PINGed first when ``check``); ``BrokerUnavailable``
        without a URL or when Redis cannot be reached."""
        url = settings.redis.url
        if not url:
            msg = "no Redis URL: pass --redis-url or set FER_REDIS__URL (or use `fer-pipeline up`, which can start one)"
            raise BrokerUnavailable(msg)
        try:
            client = redis.Redis.from_url(
                url,
                socket_timeout=settings.redis.socket_timeout_s,
                socket_connect_timeout=settings.redis.connect_timeout_s,
                health_check_interval=30,
            )
            if check:
                client.ping()
        except (redis.RedisError, OSError, ValueError, TypeError) as e:
            # TypeError: an option redis-py does not take on this scheme (ssl_* on redis://).
            hint = " (TLS options need a rediss:// URL)" if isinstance(e, TypeError) and "ssl" in str(e) else ""
            msg = (f"cannot reach Redis at {redact_url(url)}: {scrub(_short(e), url)}"
                   f"{raw_password_hint(url)}{hint}")
            # `from None`: the chained exception's text may quote the raw URL, password included.
            raise BrokerUnavailable(msg) from None
        return cls(client, StreamKeys(settings.redis.prefix), settings)

    def close(self) -> None:
        """Close the Redis client and its connection pool."""
        self._client.close()

    # -- writing -----------------------------------------------------------------------
    def publish(self, stream: str, payloads: Sequence[bytes], maxlen: int, *, count_all_trimmed: bool = False,
                ack: Ack | None = None) -> list[str]:
        """XADD each payload (one round trip), bounded at ``maxlen`` messages; returns the new
        entry ids. A bundled stream (``StreamKeys.bundled``) gets the payloads as bundles of
        up to ``bundles.MAX_BUNDLE``, one entry each.

        With ``ack``, the entries it names are acknowledged and deleted atomically with the
        publish (the worker's labels and its crops' ack)."""
        if not payloads and not (ack and ack.ids):
            return []
        if not payloads or not self.keys.bundled(stream):
            keys, args = self._publish_call(stream, payloads, maxlen, count_all_trimmed, ack)
            return [_s(i) for i in self._publish(keys=keys, args=args)]
        pipe = self._client.pipeline(transaction=True)
        added = self._queue(pipe, stream, payloads, maxlen, count_all_trimmed, ack)
        return [_s(i) for i in _execute(pipe)[:added]]

    def publish_then_read(self, stream: str, payloads: Sequence[bytes], maxlen: int, *, ack: Ack | None,
                          read: str, group: str, consumer: str, count: int) -> list[Entry]:
        """``publish`` and, in the same MULTI round trip after it, a non-blocking XREADGROUP
        of ``read``: the worker delivers a batch and takes the next one in one trip (under
        load a round trip per batch instead of two). A publish error raises; a read refused
        because the group is gone (a Redis restart) recreates it and reads nothing."""
        pipe = self._client.pipeline(transaction=True)
        self._queue(pipe, stream, payloads, maxlen, False, ack)
        pipe.xreadgroup(group, consumer, {read: ">"}, count=count)
        *published, reply = pipe.execute(raise_on_error=False)
        for r in published:
            if isinstance(r, Exception):
                raise r
        if isinstance(reply, redis.ResponseError) and "NOGROUP" in str(reply):
            self.ensure_group(read, group)
            return []
        if isinstance(reply, Exception):
            raise reply
        return _entries(reply, self.settings.streams.max_payload_bytes)

    def publish_many(self, calls: Sequence[tuple[str, Sequence[bytes], int, bool]]) -> None:
        """Several ``publish(stream, payloads, maxlen, count_all_trimmed)`` calls in one
        MULTI round trip, in order (the producer's group commit: ``producers/publisher.py``)."""
        calls = [c for c in calls if c[1]]
        if not calls:
            return
        pipe = self._client.pipeline(transaction=True)
        for stream, payloads, maxlen, count_all in calls:
            self._queue(pipe, stream, payloads, maxlen, count_all)
        _execute(pipe)

    def _queue(self, pipe, stream: str, payloads: Sequence[bytes], maxlen: int, count_all: bool,
               ack: Ack | None = None) -> int:
        """Queue one publish (and ack) on a MULTI pipeline; returns how many of its replies
        (the first) are new entry ids. Scripts go by EVAL, with their text: inside MULTI an
        EVALSHA that finds the script cache empty (a Redis restart) fails alone while the
        rest runs."""
        if not self.keys.bundled(stream):
            keys, args = self._publish_call(stream, payloads, maxlen, count_all, ack)
            pipe.eval(_PUBLISH_LUA, len(keys), *keys, *args)
            return 0
        # The bundles go straight to XADD, the bookkeeping after them (see _BUNDLED_LUA).
        bodies, counts = bundles.pack(payloads)
        for body, n in zip(bodies, counts):
            pipe.xadd(stream, {bundles.COUNT: n, bundles.SINGLE: body})
        if bodies:
            pipe.eval(_BUNDLED_LUA, 3, stream, self.keys.stats, self.keys.depth, maxlen,
                      "all" if count_all else "groups", len(bodies), sum(counts))
        if ack and ack.ids:
            keys, args = self._publish_call(ack.stream, [], 0, False, ack)
            pipe.eval(_PUBLISH_LUA, len(keys), *keys, *args)
        return len(bodies)

    def _publish_call(self, stream: str, payloads: Sequence[bytes], maxlen: int, count_all: bool,
                      ack: Ack | None) -> tuple[list[str], list]:
        keys = [stream, self.keys.stats, self.keys.depth]
        counted = ack is not None and ack.messages is not None
        args: list = [maxlen, "all" if count_all else "groups", len(payloads), ack.group if ack else "",
                      "counted" if counted else "plain", *payloads]
        if ack and ack.ids:
            keys.append(ack.stream)
            if counted:
                args += [x for pair in zip(ack.ids, ack.messages, strict=True) for x in pair]  # type: ignore[arg-type]
            else:
                args += ack.ids
        return keys, args

    def depth(self, stream: str) -> int:
        """Messages held in a bundled stream (undelivered and pending): its backlog."""
        return self.lengths([stream])[stream]

    def lengths(self, streams: Sequence[str]) -> dict[str, int]:
        """Messages held per stream, in one round trip: XLEN, or on a bundled stream its depth."""
        pipe = self._client.pipeline(transaction=False)
        for s in streams:
            pipe.xlen(s)
            if self.keys.bundled(s):
                pipe.hget(self.keys.depth, s)
        replies = iter(pipe.execute())
        return {s: messages_held(next(replies), next(replies)) if self.keys.bundled(s) else int(next(replies))
                for s in streams}

    def expire(self, stream: str, cutoff_ms: int) -> int:
        """Delete the entries older than ``cutoff_ms`` (broker time); returns the messages deleted."""
        if self.keys.bundled(stream):
            gone = 0
            while True:
                messages, entries = self._expire_bundled(keys=[stream, self.keys.depth],
                                                         args=[f"{cutoff_ms}-0", EXPIRE_CHUNK])
                gone += int(messages)
                if int(entries) < EXPIRE_CHUNK:
                    return gone
        return int(self._client.xtrim(stream, minid=f"{cutoff_ms}-0", approximate=False))

    def dead_letter(self, *, source: str, entry_id: str, payload: bytes | None, reason: str, role: str) -> None:
        """Park a bad message with why it was rejected; the original payload is kept as is."""
        body = bytes(payload) if payload is not None else b""
        keep = self.settings.streams.dead_payload_bytes
        fields: dict[Any, Any] = {  # redis-py types field values narrower than what it sends
            "reason": reason[:500], "source": source, "id": entry_id, "role": role,
            "at": f"{time.time():.3f}", "payload": body[:keep], "size": len(body),
            "sha256": hashlib.sha256(body).hexdigest(), "truncated": int(len(body) > keep),
        }
        self._client.xadd(self.keys.dead, fields, maxlen=self.settings.streams.dead_maxlen, approximate=True)
        self._client.hincrby(self.keys.stats, "dead_letters", 1)
        log.warning("dead-letter %s %s from %s: %s", role, entry_id, source, reason)

    def incr(self, field: str, n: int = 1) -> None:
        """Add ``n`` to ``field`` of the shared stats hash (nothing for 0)."""
        if n:
            self._client.hincrby(self.keys.stats, field, n)

    def claim_run_start(self, run_id: str, camera_ids: Iterable[str]) -> int:
        """Count a start of these cameras under ``run_id``; returns the most starts any of them
        has had (1: the first). Kept in the stats hash (``run_starts:<run>/<camera>``), so it
        lives as long as the deployment's counters do."""
        pipe = self._client.pipeline(transaction=False)
        for camera_id in camera_ids:
            pipe.hincrby(self.keys.stats, f"run_starts:{run_id}/{camera_id}", 1)
        return max((int(n) for n in pipe.execute()), default=1)

    def stats(self) -> dict[str, int]:
        """The shared stats hash as integers (published, trimmed unread, expired per stream; dead letters)."""
        return {_s(k): int(v) for k, v in self._client.hgetall(self.keys.stats).items()}

    # -- consumer groups ---------------------------------------------------------------
    def ensure_group(self, stream: str, group: str, start: str = "0") -> None:
        """Create ``group`` on ``stream`` (and the stream if missing), reading from ``start``; an
        existing group is left as it is."""
        try:
            self._client.xgroup_create(stream, group, id=start, mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def read_group(self, streams: Iterable[str], group: str, consumer: str, *, count: int, block_ms: int | None,
                   own_pending: bool = False, noack: bool = False) -> list[Entry]:
        """New entries for this consumer (or, with ``own_pending``, the ones already delivered
        to it and never acked: what a restarted consumer must finish first). Recreates the
        group if Redis lost it (restart). ``noack``: nothing is left pending (XREADGROUP NOACK),
        the group is only a position Redis keeps (and counts trims past, see publish)."""
        streams = list(streams)
        start = "0" if own_pending else ">"
        try:
            reply = self._client.xreadgroup(group, consumer, {s: start for s in streams}, count=count,
                                           block=None if own_pending else block_ms, noack=noack)
        except redis.ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            for s in streams:
                self.ensure_group(s, group)
            return []
        return _entries(reply, self.settings.streams.max_payload_bytes)

    def drop_group(self, stream: str, group: str) -> None:
        """Delete ``group`` from ``stream`` (nothing if it is not there): a reader's own group,
        which would otherwise hold the trim accounting's floor back for good."""
        try:
            self._client.xgroup_destroy(stream, group)
        except redis.ResponseError as e:  # no stream at all: no group either
            if "requires the key to exist" not in str(e):
                raise

    def entries(self, stream: str, *, start: str = "-", count: int | None = None, newest: bool = False) -> list[Entry]:
        """The stream's messages from ``start`` on (XRANGE, bundles expanded), read by no
        group; ``count`` counts entries. ``newest``: the last ``count`` entries instead."""
        if newest:
            return _entries([(stream, list(reversed(self._client.xrevrange(stream, count=count) or [])))],
                            self.settings.streams.max_payload_bytes)
        return _entries([(stream, self._client.xrange(stream, min=start, count=count))],
                        self.settings.streams.max_payload_bytes)

    def read_after(self, stream: str, after: str, *, count: int, block_ms: int | None) -> list[Entry]:
        """The stream's messages after the entry id ``after`` (XREAD, bundles expanded), read by
        no group: a tail (``fer_pipeline.label_reader``). Waits up to ``block_ms`` for the first
        one (None: no wait); ``count`` counts entries."""
        reply = self._client.xread({stream: after}, count=count, block=block_ms)
        return _entries(reply, self.settings.streams.max_payload_bytes)

    def ack(self, stream: str, group: str, ids: Sequence[str], *, delete: bool = False,
            messages: Sequence[int] | None = None) -> None:
        """XACK (and XDEL, for single-group streams, so XLEN is the backlog) in one round trip.

        ``messages`` (each entry's message count) deletes from a bundled stream and keeps its
        depth right (it implies ``delete``); deleting from one without it is refused."""
        if messages is None:
            if delete and self.keys.bundled(stream):
                raise ValueError(f"deleting from the bundled stream {stream} needs each entry's message count")
            ids = list(dict.fromkeys(ids))  # a bundle's messages share their entry's id
        if not ids:
            return
        if messages is not None:
            self.publish(stream, [], 0, ack=Ack(stream, group, ids, messages))
            return
        pipe = self._client.pipeline(transaction=False)
        pipe.xack(stream, group, *ids)
        if delete:
            pipe.xdel(stream, *ids)
        pipe.execute()

    def autoclaim(self, stream: str, group: str, consumer: str, *, min_idle_ms: int, count: int) -> tuple[list[Entry], list[str]]:
        """Take over entries another consumer left pending too long.

        Returns (claimed entries, ids whose entries no longer exist, e.g. trimmed). Recreates
        the group if Redis lost it (a restart without persistence): nothing to claim then.
        """
        claimed: list[Entry] = []
        missing: list[str] = []
        start = "0-0"
        while True:
            try:
                reply = self._client.xautoclaim(stream, group, consumer, min_idle_time=min_idle_ms, start_id=start,
                                               count=count)
            except redis.ResponseError as e:
                if "NOGROUP" not in str(e):
                    raise
                self.ensure_group(stream, group)
                return claimed, missing
            start = _s(reply[0])
            claimed += _entries([(stream, redis_compat.claimed_items(reply[1]))], self.settings.streams.max_payload_bytes)
            missing.extend(i for i in redis_compat.autoclaim_missing(self._client, stream, group, consumer, reply)
                           if i not in missing)
            if start == "0-0" or len(claimed) >= count:
                return claimed, missing

    def backlog(self, stream: str, group: str) -> tuple[int, int]:
        """(entries not yet delivered to the group, delivered but unacknowledged)."""
        for _, _, lag, pending in self.groups(stream, only=group):
            return lag, pending
        return self._client.xlen(stream), 0  # no such group yet: everything is undelivered

    def groups(self, stream: str, only: str | None = None) -> list[tuple[str, int, int, int]]:
        """(group, consumers, lag, pending) of each consumer group of ``stream`` (of group ``only``
        when given; [] before the stream exists)."""
        try:
            infos = self._client.xinfo_groups(stream)
        except redis.ResponseError:  # no such stream yet
            return []
        return [(_s(g["name"]), int(g["consumers"]), redis_compat.group_lag(self._client, stream, g), int(g["pending"]))
                for g in infos if only is None or _s(g["name"]) == only]

    # -- the cameras set, server time, liveness ---------------------------------------------------
    def add_cameras(self, camera_ids: Iterable[str]) -> None:
        """Announce cameras (the display, the dashboard and retention find their streams so)."""
        ids = list(camera_ids)
        if ids:
            self._client.sadd(self.keys.cameras, *ids)

    def camera_ids(self) -> list[str]:
        """Every camera ever announced under this prefix, sorted."""
        return sorted(_s(c) for c in self._client.smembers(self.keys.cameras))

    def epoch(self) -> str:
        """The data epoch of this Redis: a random id created on first use (SET NX, so every process
        agrees); a Redis restarted without persistence comes back without it, and gets a new one."""
        pipe = self._client.pipeline(transaction=False)
        pipe.set(self.keys.epoch, uuid.uuid4().hex, nx=True)
        pipe.get(self.keys.epoch)
        return _s(pipe.execute()[1])

    def server_time_ms(self) -> int:
        """Redis's clock (stream ids are made from it), in epoch milliseconds."""
        seconds, micros = self._client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def ping(self) -> None:
        """Raises a redis error when the server does not answer."""
        self._client.ping()

    # -- small records with a time to live (heartbeats: see health.py) ----------------------------
    def put_record(self, key: str, fields: dict[str, str], ttl_s: float) -> None:
        """Replace the hash ``key`` with ``fields``, expiring after ``ttl_s``, in one round trip."""
        pipe = self._client.pipeline(transaction=False)
        pipe.delete(key)
        pipe.hset(key, mapping=cast(Any, fields))
        pipe.pexpire(key, int(ttl_s * 1000))
        pipe.execute()

    def delete_record(self, key: str) -> None:
        """Delete the key ``key`` (a heartbeat on a clean stop)."""
        self._client.delete(key)

    def records(self, pattern: str) -> Iterator[tuple[str, dict[str, str]]]:
        """(key, fields) of every unexpired hash matching ``pattern`` (SCAN: never blocks Redis)."""
        for key in self._client.scan_iter(match=pattern, count=500):
            fields = {_s(k): _s(v) for k, v in self._client.hgetall(key).items()}
            if fields:
                yield _s(key), fields


def messages_held(entries: int, record: bytes | str | None) -> int:
    """A bundled stream's messages from its XLEN and its depth record: none without entries
    (the record of a stream emptied behind its back is stale until the next publish heals it)."""
    return int(record or 0) if entries else 0


def _execute(pipe) -> list:
    """Run a MULTI pipeline; raise its first error (a transaction does not roll back the rest)."""
    results = pipe.execute(raise_on_error=False)
    for r in results:
        if isinstance(r, Exception):
            raise r
    return results


_s = redis_compat.as_text


def _entries(reply, max_message_bytes: int = 1 << 20) -> list[Entry]:
    out: list[Entry] = []
    for stream, items in reply or []:
        name = _s(stream)
        for entry_id, fields in items:
            # A pending entry deleted since delivery comes back without fields: one None payload.
            payloads, malformed = bundles.unpack(fields, max_message_bytes)
            eid = _s(entry_id)
            out += [Entry(name, eid, p, k, len(payloads), malformed) for k, p in enumerate(payloads)]
    return out


def _short(e: BaseException) -> str:
    return first_line(e)[:200]
