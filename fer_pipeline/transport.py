"""Redis streams transport shared by every role (sync redis-py; one process per role).

A message lives in a single field ``d`` holding its msgpack payload, except on bundled
streams (crops and labels), whose entries each hold a bundle of messages (``bundles.py``);
readers get one ``Entry`` per message either way. ``publish`` bounds every stream at a number
of messages (exactly, or on a bundled stream by trimming whole bundles) and counts those
trimmed before some consumer group read them, or while one held them unacknowledged, in the
stats hash, so a stalled consumer costs counted data, not Redis memory.

On Redis Cluster (found by asking the server, so any node's URL will do) the client is
redis-py's cluster client and the keys are sharded (``streams.py``): every script and MULTI
touches one shard's slot. The group-wide calls (``read_group``, ``autoclaim``, ``backlog``,
``groups``, ``lengths``, ``ensure_group``, ``expire``, ``entries``) take the logical
``crops``/``labels`` names and go to every shard; publishing and acking name a shard's stream
(an ``Entry`` carries the one it came from).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, NamedTuple, cast

import redis
from redis.cluster import RedisCluster

from fer_pipeline import bundles, redis_compat
from fer_pipeline.errors import BrokerUnavailable, ConfigError, MessageError, first_line
from fer_pipeline.messages import decode
from fer_pipeline.settings import Settings
from fer_pipeline.streams import StreamKeys, entry_order
from fer_pipeline.urls import raw_password_hint, redact_url, scrub

log = logging.getLogger("fer.transport")

FIELD = bundles.SINGLE  # the one field of an unbundled entry
EXPIRE_CHUNK = 64  # bundles handed to Lua per retention call on a bundled stream
# A blocking read over several shards blocks on one at a time, at most this long each, so a
# message on another waits that long at worst (Redis's own timer ticks every 100 ms at hz 10).
SHARD_BLOCK_MS = 100
SHARD_DOWN_S = 1.0  # a shard whose node did not answer a read is passed over this long

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
        self._down_until: dict[str, float] = {}  # first stream of a slot -> passed over until (node down)
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
        options = {"socket_timeout": settings.redis.socket_timeout_s,
                   "socket_connect_timeout": settings.redis.connect_timeout_s}
        cluster = False
        try:
            client: redis.Redis = redis.Redis.from_url(url, health_check_interval=30, **options)
            if check:
                client.ping()
                cluster = is_cluster(client)
            if cluster:
                # Any node's URL leads to all of them: the cluster client maps the slots and
                # follows MOVED/ASK as they change.
                client.close()
                client = RedisCluster.from_url(url, **options)  # type: ignore[assignment]
                redis_compat.stream_keys_locally(client.commands_parser)  # type: ignore[attr-defined]
        except (redis.RedisError, OSError, ValueError, TypeError) as e:
            # TypeError: an option redis-py does not take on this scheme (ssl_* on redis://).
            hint = " (TLS options need a rediss:// URL)" if isinstance(e, TypeError) and "ssl" in str(e) else ""
            msg = (f"cannot reach Redis at {redact_url(url)}: {scrub(_short(e), url)}"
                   f"{raw_password_hint(url)}{hint}")
            # `from None`: the chained exception's text may quote the raw URL, password included.
            raise BrokerUnavailable(msg) from None
        transport = cls(client, StreamKeys(settings.redis.prefix, settings.streams.shards, tagged=cluster), settings)
        if check:
            transport.agree_on_shards()
        return transport

    def agree_on_shards(self, *, record: bool = False) -> None:
        """Refuse to run with another shard count than the deployment's: ``ConfigError`` naming
        the one to use. ``record``: a role (``Service``) writes its own count when none is
        recorded yet (the first one does; a read-only tool such as status only compares).
        Redis restarted empty forgets it, and the next role records its own again."""
        try:
            pipe = self._client.pipeline(transaction=False)
            if record:
                pipe.set(self.keys.layout, self.keys.shards, nx=True)
            pipe.get(self.keys.layout)
            stored = pipe.execute()[-1]
        except redis_compat.UNAVAILABLE:
            return  # the node holding the record is down (a cluster): the roles wait Redis out anyway
        if stored is not None and int(stored) != self.keys.shards:
            self.close()
            msg = (f"this deployment's streams (prefix {self.keys.prefix}) are in {int(stored)} shard(s): set "
                   f"FER_STREAMS__SHARDS={int(stored)} (this process has {self.keys.shards}); to change the count, "
                   f"let the streams drain, stop every process and delete the key {self.keys.layout}")
            raise ConfigError(msg)

    @property
    def cluster(self) -> bool:
        """Whether this is a Redis Cluster (the cluster client), where one node can be down
        while the others answer."""
        return isinstance(self._client, RedisCluster)

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
        MULTI round trip, in order (the producer's group commit: ``producers/publisher.py``);
        sharded, one MULTI per shard the calls write to (a transaction stays in one slot)."""
        by_slot: dict[str | None, list] = {}
        for c in calls:
            if c[1]:
                by_slot.setdefault(self.keys.slot_tag(c[0]), []).append(c)
        for group in by_slot.values():
            pipe = self._client.pipeline(transaction=True)
            for stream, payloads, maxlen, count_all in group:
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
            pipe.execute_command("EVAL", _PUBLISH_LUA, len(keys), *keys, *args)
            return 0
        # The bundles go straight to XADD, the bookkeeping after them (see _BUNDLED_LUA).
        bodies, counts = bundles.pack(payloads)
        for body, n in zip(bodies, counts):
            pipe.xadd(stream, {bundles.COUNT: n, bundles.SINGLE: body})
        if bodies:
            # EVAL as a plain command: the cluster client's pipeline has no eval(), and routes
            # a command by its keys either way.
            pipe.execute_command("EVAL", _BUNDLED_LUA, 3, stream, self.keys.stats_of(stream),
                                 self.keys.depth_of(stream), maxlen, "all" if count_all else "groups",
                                 len(bodies), sum(counts))
        if ack and ack.ids:
            keys, args = self._publish_call(ack.stream, [], 0, False, ack)
            pipe.execute_command("EVAL", _PUBLISH_LUA, len(keys), *keys, *args)
        return len(bodies)

    def _publish_call(self, stream: str, payloads: Sequence[bytes], maxlen: int, count_all: bool,
                      ack: Ack | None) -> tuple[list[str], list]:
        keys = [stream, self.keys.stats_of(stream), self.keys.depth_of(stream)]
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
        """Messages held per stream, in one round trip: XLEN, or on a bundled stream its depth
        (a logical sharded name: the sum over its shards)."""
        pipe = self._client.pipeline(transaction=False)
        for s in streams:
            for p in self.keys.physical(s):
                pipe.xlen(p)
                if self.keys.bundled(p):
                    pipe.hget(self.keys.depth_of(p), p)
        replies = iter(pipe.execute())
        return {s: sum(messages_held(next(replies), next(replies)) if self.keys.bundled(p) else int(next(replies))
                       for p in self.keys.physical(s))
                for s in streams}

    def expire(self, stream: str, cutoff_ms: int) -> int:
        """Delete the entries older than ``cutoff_ms`` (broker time); returns the messages deleted."""
        if len(shards := self.keys.physical(stream)) > 1 or shards[0] != stream:
            return sum(self.expire(s, cutoff_ms) for s in shards)
        if self.keys.bundled(stream):
            gone = 0
            while True:
                messages, entries = self._expire_bundled(keys=[stream, self.keys.depth_of(stream)],
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
        """The shared stats hash as integers (published, trimmed unread, expired per stream; dead
        letters). Sharded, each shard's hash too, its counters of a shard stream also summed under
        the logical name (``published:<prefix>:crops`` is every shard's)."""
        if not self.keys.sharded:
            return {_s(k): int(v) for k, v in self._client.hgetall(self.keys.stats).items()}
        pipe = self._client.pipeline(transaction=False)
        for key in self.keys.stats_keys:
            pipe.hgetall(key)
        out: dict[str, int] = {}
        for reply in pipe.execute():
            for k, v in reply.items():
                field = _s(k)
                out[field] = out.get(field, 0) + int(v)
                kind, sep, stream = field.partition(":")
                if sep and (logical := self.keys.logical(stream)) != stream:
                    out[f"{kind}:{logical}"] = out.get(f"{kind}:{logical}", 0) + int(v)
        return out

    # -- consumer groups ---------------------------------------------------------------
    def ensure_group(self, stream: str, group: str, start: str = "0") -> None:
        """Create ``group`` on ``stream`` (and the stream if missing), reading from ``start``; an
        existing group is left as it is. A logical sharded name: on every shard."""
        for s in self.keys.physical(stream):
            try:
                self._client.xgroup_create(s, group, id=start, mkstream=True)
            except redis.ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise

    def read_group(self, streams: Iterable[str], group: str, consumer: str, *, count: int, block_ms: int | None,
                   own_pending: bool = False, noack: bool = False) -> list[Entry]:
        """New entries for this consumer (or, with ``own_pending``, the ones already delivered
        to it and never acked: what a restarted consumer must finish first). Recreates the
        group if Redis lost it (restart). ``noack``: nothing is left pending (XREADGROUP NOACK),
        the group is only a position Redis keeps (and counts trims past, see publish).
        ``count`` is per stream (XREADGROUP's COUNT); logical sharded names read every shard."""
        start = "0" if own_pending else ">"

        def read(group_streams: list[str], block: int | None) -> list[Entry]:
            try:
                reply = self._client.xreadgroup(group, consumer, dict.fromkeys(group_streams, start), count=count,
                                               block=block, noack=noack)
            except redis.ResponseError as e:
                if "NOGROUP" not in str(e):
                    raise
                for s in group_streams:
                    self.ensure_group(s, group)
                return []
            return _entries(reply, self.settings.streams.max_payload_bytes)

        return self._fan_out(streams, read, None if own_pending else block_ms)

    def _fan_out(self, streams: Iterable[str], read, block_ms: int | None) -> list[Entry]:
        """One read of several streams (logical names expanded). Streams in one slot go in one
        call; over several slots (shards; a cluster refuses a command across slots) each slot
        is read without blocking, and when all were empty and ``block_ms`` asks to wait, one
        slot after another blocks up to ``SHARD_BLOCK_MS`` until something comes or the time
        is up."""
        physical = [p for s in streams for p in self.keys.physical(s)]
        slots: dict[str | None, list[str]] = {}
        for p in physical:
            slots.setdefault(self.keys.slot_tag(p), []).append(p)
        if len(slots) <= 1:
            return read(physical, block_ms)
        groups = list(slots.values())
        out = self._each(groups, read)
        if out or not block_ms:
            return out
        deadline = time.monotonic() + block_ms / 1000
        for k in itertools.cycle(range(len(groups))):
            left = int((deadline - time.monotonic()) * 1000)
            if left <= 0:
                return []
            if self._down_until.get(groups[k][0], 0.0) > time.monotonic():
                continue
            out = self._each([groups[k]], read, max(1, min(left, SHARD_BLOCK_MS)))
            if out:
                # The others' waiting entries too, so one busy shard does not starve the rest.
                return out + self._each([g for j, g in enumerate(groups) if j != k], read)
        return []  # pragma: no cover - the cycle only ends by returning

    def _each(self, groups: list[list[str]], read, block_ms: int | None = None) -> list[Entry]:
        """``read`` of each slot's streams; a slot whose node does not answer is passed over for
        ``SHARD_DOWN_S`` (its entries wait there, pending or new, for a later read or a reclaim)
        while the others are read; only when none answers does the error reach the caller."""
        out: list[Entry] = []
        error: BaseException | None = None
        answered = 0
        now = time.monotonic()
        # Every slot passed over: ask them all (one may be back; if not, the caller hears so).
        live = [g for g in groups if self._down_until.get(g[0], 0.0) <= now] or groups
        for g in live:
            try:
                out += read(g, block_ms)
                answered += 1
            except redis_compat.UNAVAILABLE as e:
                self._down_until[g[0]] = time.monotonic() + SHARD_DOWN_S
                error = e
        if error is not None and not answered:
            raise error
        return out

    def drop_group(self, stream: str, group: str) -> None:
        """Delete ``group`` from ``stream`` (nothing if it is not there): a reader's own group,
        which would otherwise hold the trim accounting's floor back for good."""
        for s in self.keys.physical(stream):
            try:
                self._client.xgroup_destroy(s, group)
            except redis.ResponseError as e:  # no stream at all: no group either
                if "requires the key to exist" not in str(e):
                    raise

    def entries(self, stream: str, *, start: str = "-", count: int | None = None, newest: bool = False) -> list[Entry]:
        """The stream's messages from ``start`` on (XRANGE, bundles expanded), read by no
        group; ``count`` counts entries. ``newest``: the last ``count`` entries instead. A
        logical sharded name: every shard's, merged in id order (ids come from each node's
        clock: a tail by id can miss an entry only across nodes whose clocks disagree)."""
        if len(shards := self.keys.physical(stream)) > 1 or shards[0] != stream:
            parts = [self.entries(s, start=start, count=count, newest=newest) for s in shards]
            merged = sorted((e for p in parts for e in p), key=lambda e: entry_order(e.id))
            if count is None:
                return merged
            # count is in entries: keep whole entries, the oldest (or, newest, the latest) ``count``.
            ids = sorted({e.id for e in merged}, key=entry_order)
            keep = set(ids[-count:] if newest else ids[:count])
            return [e for e in merged if e.id in keep]
        if newest:
            return _entries([(stream, list(reversed(self._client.xrevrange(stream, count=count) or [])))],
                            self.settings.streams.max_payload_bytes)
        return _entries([(stream, self._client.xrange(stream, min=start, count=count))],
                        self.settings.streams.max_payload_bytes)

    def read_after(self, stream: str, after: str, *, count: int, block_ms: int | None) -> list[Entry]:
        """The stream's messages after the entry id ``after`` (XREAD, bundles expanded), read by
        no group: a tail (``fer_pipeline.label_reader``). Waits up to ``block_ms`` for the first
        one (None: no wait); ``count`` counts entries (per shard, on a logical sharded name)."""

        def read(streams: list[str], block: int | None) -> list[Entry]:
            reply = self._client.xread(dict.fromkeys(streams, after), count=count, block=block)
            return _entries(reply, self.settings.streams.max_payload_bytes)

        return sorted(self._fan_out([stream], read, block_ms), key=lambda e: entry_order(e.id))

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
        if stream not in self.keys.physical(stream):
            raise ValueError(f"ack names a shard's stream, not the logical {stream}: see ack_entries")
        if messages is not None:
            self.publish(stream, [], 0, ack=Ack(stream, group, ids, messages))
            return
        pipe = self._client.pipeline(transaction=False)
        pipe.xack(stream, group, *ids)
        if delete:
            pipe.xdel(stream, *ids)
        pipe.execute()

    def ack_entries(self, group: str, entries: Iterable[Entry]) -> None:
        """XACK what was read, each entry in the stream (shard) it came from."""
        by_stream: dict[str, list[str]] = {}
        for e in entries:
            by_stream.setdefault(e.stream, []).append(e.id)
        for stream, ids in by_stream.items():
            self.ack(stream, group, ids)

    def autoclaim(self, stream: str, group: str, consumer: str, *, min_idle_ms: int, count: int) -> tuple[list[Entry], list[str]]:
        """Take over entries another consumer left pending too long.

        Returns (claimed entries, ids whose entries no longer exist, e.g. trimmed). Recreates
        the group if Redis lost it (a restart without persistence): nothing to claim then.
        A logical sharded name: shard after shard, while fewer than ``count`` were claimed
        (to ack vanished ids, which name no shard, see ``autoclaim_shards``).
        """
        claimed: list[Entry] = []
        missing: list[str] = []
        for _, got, gone in self.autoclaim_shards(stream, group, consumer, min_idle_ms=min_idle_ms, count=count):
            claimed += got
            missing += gone
        return claimed, missing

    def autoclaim_shards(self, stream: str, group: str, consumer: str, *, min_idle_ms: int,
                         count: int) -> list[tuple[str, list[Entry], list[str]]]:
        """``autoclaim`` per shard stream: (stream, claimed, vanished ids) for each shard read."""
        out = []
        claimed = 0
        for s in self.keys.physical(stream):
            got, gone = self._autoclaim(s, group, consumer, min_idle_ms=min_idle_ms, count=count - claimed)
            out.append((s, got, gone))
            claimed += len({e.id for e in got})
            if claimed >= count:
                break
        return out

    def _autoclaim(self, stream: str, group: str, consumer: str, *, min_idle_ms: int,
                   count: int) -> tuple[list[Entry], list[str]]:
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
        """(entries not yet delivered to the group, delivered but unacknowledged); a logical
        sharded name: summed over the shards."""
        lag = pending = 0
        for s in self.keys.physical(stream):
            found = self.groups(s, only=group)
            for _, _, group_lag, group_pending in found:
                lag, pending = lag + group_lag, pending + group_pending
            if not found:
                lag += self._client.xlen(s)  # no such group yet: everything is undelivered
        return lag, pending

    def groups(self, stream: str, only: str | None = None) -> list[tuple[str, int, int, int]]:
        """(group, consumers, lag, pending) of each consumer group of ``stream`` (of group ``only``
        when given; [] before the stream exists). A logical sharded name: summed over the shards."""
        if len(shards := self.keys.physical(stream)) > 1 or shards[0] != stream:
            total: dict[str, list[int]] = {}
            for s in shards:
                for name, consumers, lag, pending in self.groups(s, only):
                    t = total.setdefault(name, [0, 0, 0])
                    t[0], t[1], t[2] = max(t[0], consumers), t[1] + lag, t[2] + pending
            return [(name, *t) for name, t in total.items()]  # type: ignore[misc]
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


def is_cluster(client: redis.Redis) -> bool:
    """Whether the server is a Redis Cluster node (INFO cluster; a server without the section is not)."""
    try:
        return bool(int(client.info("cluster").get("cluster_enabled", 0)))
    except redis.ResponseError:
        return False


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
    # The cluster client's MULTI hands back XREADGROUP unparsed: {stream: [[id, [f, v, ...]]]}.
    for stream, items in (reply.items() if isinstance(reply, dict) else reply or []):
        name = _s(stream)
        for entry_id, fields in items:
            if isinstance(fields, list):
                fields = dict(zip(fields[::2], fields[1::2]))
            # A pending entry deleted since delivery comes back without fields: one None payload.
            payloads, malformed = bundles.unpack(fields, max_message_bytes)
            eid = _s(entry_id)
            out += [Entry(name, eid, p, k, len(payloads), malformed) for k, p in enumerate(payloads)]
    return out


def _short(e: BaseException) -> str:
    return first_line(e)[:200]
