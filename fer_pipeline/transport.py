"""Redis streams transport shared by every role (sync redis-py; one process per role).

A message lives in a single field ``d`` holding its msgpack payload, except on bundled
streams (crops and labels), whose entries each hold a bundle of messages (``bundles.py``);
readers get one ``Entry`` per message either way. ``publish`` bounds every stream at a number
of messages (exactly, or on a bundled stream by trimming whole bundles) and counts those
trimmed before some consumer group read them, in the stats hash, so a stalled consumer costs
counted data, not Redis memory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import urlsplit

import redis

from fer_pipeline import bundles
from fer_pipeline.errors import BrokerUnavailable, MessageError
from fer_pipeline.messages import decode
from fer_pipeline.settings import Settings
from fer_pipeline.streams import StreamKeys

log = logging.getLogger("fer.transport")

FIELD = bundles.SINGLE  # the one field of an unbundled entry
EXPIRE_CHUNK = 64  # bundles handed to Lua per retention call on a bundled stream

# Lua shared by the scripts below: the oldest last-delivered-id of the stream's groups (the
# floor: entries above it are unread by some group), and the message count of an entry.
_LUA_HELPERS = """
local floor_ms, floor_seq = nil, nil
local function find_floor(stream, count_all, len)
  if count_all or len == 0 then return end
  local groups = redis.call('XINFO', 'GROUPS', stream)
  for _, g in ipairs(groups) do
    for i = 1, #g, 2 do
      if g[i] == 'last-delivered-id' then
        local ms, seq = string.match(g[i + 1], '(%d+)-(%d+)')
        ms, seq = tonumber(ms), tonumber(seq)
        if floor_ms == nil or ms < floor_ms or (ms == floor_ms and seq < floor_seq) then
          floor_ms, floor_seq = ms, seq
        end
      end
    end
  end
end
local function unread(id)
  if floor_ms == nil then return true end
  local ms, seq = string.match(id, '(%d+)-(%d+)')
  ms, seq = tonumber(ms), tonumber(seq)
  return ms > floor_ms or (ms == floor_ms and seq > floor_seq)
end
local function messages_in(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'n' then return tonumber(fields[i + 1]) or 1 end
  end
  return 1
end
"""

# Atomically: count the entries the trim is about to drop that some group has not yet
# been delivered (id > that group's last-delivered-id; every entry when there is no group
# or when ARGV[2] == "all", used for streams whose acked entries are deleted), then XADD,
# and count what was published per stream (the run summary compares these). Then, when
# given, XACK + XDEL the entries these payloads answer (KEYS[4], group ARGV[4]): the worker's
# labels and the ack of their crops land together, in one round trip, and a crash can no
# longer leave labels published with their crops still pending (a duplicate on redelivery).
# A counted ack (ARGV[5] == "counted", for a bundled stream) takes id, messages pairs and
# lowers that stream's depth (hash KEYS[3]) by the messages its XDEL really removed.
# ARGV: maxlen, 'all'|'groups', n payloads, ack group, 'plain'|'counted', payload x n,
#       ack id... (counted: id, count, ...)
_PUBLISH_LUA = _LUA_HELPERS + """
local stream, stats, depth = KEYS[1], KEYS[2], KEYS[3]
local maxlen = tonumber(ARGV[1])
local count_all = ARGV[2] == 'all'
local n = tonumber(ARGV[3])
local first = 6
local ids = {}
if n > 0 then
  local len = redis.call('XLEN', stream)
  local excess = len + n - maxlen
  local lost = 0
  if excess > 0 then
    find_floor(stream, count_all, len)
    local old = {}
    if len > 0 then old = redis.call('XRANGE', stream, '-', '+', 'COUNT', math.min(excess, len)) end
    for _, e in ipairs(old) do
      if unread(e[1]) then lost = lost + 1 end
    end
    -- A batch larger than the room left trims some of its own new entries: unread by anyone.
    if excess > len then lost = lost + excess - len end
  end
  for i = first, first + n - 1 do
    ids[#ids + 1] = redis.call('XADD', stream, 'MAXLEN', maxlen, '*', 'd', ARGV[i])
  end
  if lost > 0 then redis.call('HINCRBY', stats, 'trimmed_unread:' .. stream, lost) end
  redis.call('HINCRBY', stats, 'published:' .. stream, n)
end
if KEYS[4] then
  local s, group, at = KEYS[4], ARGV[4], first + n
  if ARGV[5] == 'counted' then
    local gone = 0
    for i = at, #ARGV, 2 do
      redis.call('XACK', s, group, ARGV[i])
      if redis.call('XDEL', s, ARGV[i]) == 1 then gone = gone + tonumber(ARGV[i + 1]) end
    end
    if gone > 0 then
      local left = redis.call('HINCRBY', depth, s, -gone)
      if left < 0 or redis.call('XLEN', s) == 0 then redis.call('HSET', depth, s, 0) end
    end
  else
    -- unpack() in slices: Lua's C stack takes a few thousand values at most.
    for i = at, #ARGV, 1000 do
      local last = math.min(i + 999, #ARGV)
      redis.call('XACK', s, group, unpack(ARGV, i, last))
      redis.call('XDEL', s, unpack(ARGV, i, last))
    end
  end
end
return ids
"""

# A bundled stream's bookkeeping, run in the same MULTI right after the XADDs of its new
# bundles (which go straight to Redis: passed through Lua, a 150 KB bundle costs more in
# copies than the XADD itself). MAXLEN counts messages: whole bundles are trimmed, oldest
# first (this publish's own too), until the stream holds at most ``maxlen``; the newest
# bundle always stays, so one bundle larger than ``maxlen`` is kept alone. Unread trimmed
# messages are counted as above; the depth hash (KEYS[3]) keeps the messages held.
# ARGV: maxlen, 'all'|'groups', bundles just added, messages in them. Returns the new depth.
_BUNDLED_LUA = _LUA_HELPERS + """
local stream, stats, depth = KEYS[1], KEYS[2], KEYS[3]
local maxlen, count_all = tonumber(ARGV[1]), ARGV[2] == 'all'
local added, adding = tonumber(ARGV[3]), tonumber(ARGV[4])
local len = redis.call('XLEN', stream)
local before = len - added
-- Messages held before this publish; with no record (the key deleted, a stream written
-- before bundles) one per entry, which is exact for single-message entries.
local held = 0
if before > 0 then held = math.max(0, tonumber(redis.call('HGET', depth, stream) or before) or before) end
local fresh = adding
local lost, drop = 0, 0
local excess = held + fresh - maxlen
if excess > 0 and len > 1 then
  find_floor(stream, count_all, len)
  -- XRANGE hands each bundle's whole body to Lua: ask for one, then a few more at a time.
  local from, count = '-', 1
  while excess > 0 and drop < len - 1 do
    local old = redis.call('XRANGE', stream, from, '+', 'COUNT', math.min(count, len - 1 - drop))
    count = math.min(count * 2, 16)
    if #old == 0 then break end
    for _, e in ipairs(old) do
      local k = messages_in(e[2])
      if unread(e[1]) then lost = lost + k end
      if drop < before then held = held - k else fresh = fresh - k end
      drop, excess, from = drop + 1, excess - k, '(' .. e[1]
      if excess <= 0 or drop >= len - 1 then break end
    end
  end
  redis.call('XTRIM', stream, 'MAXLEN', len - drop)
  -- Every older bundle gone: whatever the record said, none of their messages is left.
  if drop >= before then held = 0 end
end
held = math.max(0, held) + fresh
redis.call('HSET', depth, stream, held)
if lost > 0 then redis.call('HINCRBY', stats, 'trimmed_unread:' .. stream, lost) end
redis.call('HINCRBY', stats, 'published:' .. stream, adding)
return held
"""

# Delete up to ARGV[2] entries of a bundled stream older than ARGV[1] (an id, exclusive) and
# lower its depth by the messages they held; returns {messages deleted, entries deleted}.
# Retention calls it until fewer than ARGV[2] go: each call hands at most that many bodies
# to Lua, so a large expiry never blocks Redis in one long script.
_EXPIRE_BUNDLED_LUA = _LUA_HELPERS + """
local stream, depth, cutoff, limit = KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2])
local old = redis.call('XRANGE', stream, '-', '(' .. cutoff, 'COUNT', limit)
local gone = 0
for _, e in ipairs(old) do
  gone = gone + messages_in(e[2])
  redis.call('XDEL', stream, e[1])
end
if #old > 0 then
  local left = redis.call('HINCRBY', depth, stream, -gone)
  if left < 0 or redis.call('XLEN', stream) == 0 then redis.call('HSET', depth, stream, 0) end
end
return {gone, #old}
"""


def redact_url(url: str | None) -> str:
    """The URL with any password replaced, safe for logs and progress output.

    Covers the userinfo part and query options that carry secrets (redis-py accepts
    ``?password=`` and ``?ssl_password=`` too).
    """
    if not url:
        return "<none>"
    parts = urlsplit(url)
    query = parts.query
    if query:
        query = "&".join(f"{k}=***" if "password" in k.lower() else f"{k}={v}" if sep else k
                         for k, sep, v in (item.partition("=") for item in query.split("&")))
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"  # host part as written ([::1] too)
    if netloc == parts.netloc and query == parts.query:
        return url
    rest = parts.path + (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")
    return f"{parts.scheme}://{netloc}{rest}"


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
        return decode(self.payload, max_bytes=max_bytes, expect=expect)


class Transport:
    """Thin, typed wrapper around one Redis connection pool."""

    def __init__(self, client: redis.Redis, keys: StreamKeys, settings: Settings) -> None:
        self.client = client
        self.keys = keys
        self.settings = settings
        self._publish = client.register_script(_PUBLISH_LUA)
        self._expire_bundled = client.register_script(_EXPIRE_BUNDLED_LUA)

    @classmethod
    def connect(cls, settings: Settings, *, check: bool = True) -> Transport:
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
        except (redis.RedisError, OSError, ValueError) as e:
            msg = f"cannot reach Redis at {redact_url(url)}: {_short(e)}"
            raise BrokerUnavailable(msg) from e
        return cls(client, StreamKeys(settings.redis.prefix), settings)

    def close(self) -> None:
        self.client.close()

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
        pipe = self.client.pipeline(transaction=True)
        added = self._queue(pipe, stream, payloads, maxlen, count_all_trimmed, ack)
        return [_s(i) for i in _execute(pipe)[:added]]

    def publish_then_read(self, stream: str, payloads: Sequence[bytes], maxlen: int, *, ack: Ack | None,
                          read: str, group: str, consumer: str, count: int) -> list[Entry]:
        """``publish`` and, in the same MULTI round trip after it, a non-blocking XREADGROUP
        of ``read``: the worker delivers a batch and takes the next one in one trip (under
        load a round trip per batch instead of two). A publish error raises; a read refused
        because the group is gone (a Redis restart) recreates it and reads nothing."""
        pipe = self.client.pipeline(transaction=True)
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
        pipe = self.client.pipeline(transaction=True)
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
        pipe = self.client.pipeline(transaction=False)
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
        return int(self.client.xtrim(stream, minid=f"{cutoff_ms}-0", approximate=False))

    def dead_letter(self, *, source: str, entry_id: str, payload: bytes | None, reason: str, role: str) -> None:
        """Park a bad message with why it was rejected; the original payload is kept as is."""
        fields = {
            "reason": reason[:500], "source": source, "id": entry_id, "role": role,
            "at": f"{time.time():.3f}", "payload": payload if payload is not None else b"",
        }
        self.client.xadd(self.keys.dead, fields, maxlen=self.settings.streams.dead_maxlen, approximate=True)
        self.client.hincrby(self.keys.stats, "dead_letters", 1)
        log.warning("dead-letter %s %s from %s: %s", role, entry_id, source, reason)

    def incr(self, field: str, n: int = 1) -> None:
        if n:
            self.client.hincrby(self.keys.stats, field, n)

    def stats(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.client.hgetall(self.keys.stats).items()}

    # -- consumer groups ---------------------------------------------------------------
    def ensure_group(self, stream: str, group: str, start: str = "0") -> None:
        try:
            self.client.xgroup_create(stream, group, id=start, mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def read_group(self, streams: Iterable[str], group: str, consumer: str, *, count: int, block_ms: int | None,
                   own_pending: bool = False) -> list[Entry]:
        """New entries for this consumer (or, with ``own_pending``, the ones already delivered
        to it and never acked: what a restarted consumer must finish first). Recreates the
        group if Redis lost it (restart)."""
        streams = list(streams)
        start = "0" if own_pending else ">"
        try:
            reply = self.client.xreadgroup(group, consumer, {s: start for s in streams}, count=count,
                                           block=None if own_pending else block_ms)
        except redis.ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            for s in streams:
                self.ensure_group(s, group)
            return []
        return _entries(reply, self.settings.streams.max_payload_bytes)

    def entries(self, stream: str, *, start: str = "-", count: int | None = None, newest: bool = False) -> list[Entry]:
        """The stream's messages from ``start`` on (XRANGE, bundles expanded), read by no
        group; ``count`` counts entries. ``newest``: the last ``count`` entries instead."""
        if newest:
            return _entries([(stream, list(reversed(self.client.xrevrange(stream, count=count))))],
                            self.settings.streams.max_payload_bytes)
        return _entries([(stream, self.client.xrange(stream, min=start, count=count))],
                        self.settings.streams.max_payload_bytes)

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
        pipe = self.client.pipeline(transaction=False)
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
                reply = self.client.xautoclaim(stream, group, consumer, min_idle_time=min_idle_ms, start_id=start,
                                               count=count)
            except redis.ResponseError as e:
                if "NOGROUP" not in str(e):
                    raise
                self.ensure_group(stream, group)
                return claimed, missing
            start = _s(reply[0])
            claimed += _entries([(stream, reply[1])], self.settings.streams.max_payload_bytes)
            if len(reply) > 2:
                missing.extend(_s(i) for i in reply[2])
            elif any(item is None or item[0] is None for item in reply[1]):
                # Redis 6.2 (the embedded broker) claims a deleted entry as a bare nil, id
                # unknown, and keeps it pending for good: find such ids in our PEL.
                missing.extend(i for i in self._deleted_pending(stream, group, consumer) if i not in missing)
            if start == "0-0" or len(claimed) >= count:
                return claimed, missing

    def _deleted_pending(self, stream: str, group: str, consumer: str) -> list[str]:
        pel = self.client.xpending_range(stream, group, min="-", max="+", count=1000, consumername=consumer)
        ids = [_s(p["message_id"]) for p in pel]
        pipe = self.client.pipeline(transaction=False)
        for i in ids:
            pipe.xrange(stream, min=i, max=i, count=1)
        return [i for i, found in zip(ids, pipe.execute()) if not found]

    def backlog(self, stream: str, group: str) -> tuple[int, int]:
        """(entries not yet delivered to the group, delivered but unacknowledged)."""
        try:
            groups = self.client.xinfo_groups(stream)
        except redis.ResponseError:
            return 0, 0
        for g in groups:
            if _s(g["name"]) == group:
                pending = int(g["pending"])
                lag = g.get("lag")
                if lag is None:  # Redis < 7: count entries after last-delivered-id
                    last = _s(g["last-delivered-id"])
                    lag = len(self.client.xrange(stream, min=f"({last}", count=100_000)) if last else 0
                return int(lag), pending
        return self.client.xlen(stream), 0

    def heartbeat(self, role: str, ident: str, ttl_s: float, info: dict[str, str | int | float]) -> None:
        key = self.keys.health(role, ident)
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(key)
        pipe.hset(key, mapping={k: str(v) for k, v in info.items()})
        pipe.pexpire(key, int(ttl_s * 1000))
        pipe.execute()

    def clear_heartbeat(self, role: str, ident: str) -> None:
        self.client.delete(self.keys.health(role, ident))

    def alive(self) -> list[tuple[str, str, dict[str, str]]]:
        """(role, ident, info) for every process whose heartbeat has not expired."""
        out = []
        for key in self.client.scan_iter(match=self.keys.health_pattern, count=500):
            parts = _s(key).split(":")
            info = {_s(k): _s(v) for k, v in self.client.hgetall(key).items()}
            if info:
                out.append((parts[-2], parts[-1], info))
        return out


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


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _entries(reply, max_message_bytes: int = 1 << 20) -> list[Entry]:
    out: list[Entry] = []
    for stream, items in reply or []:
        name = _s(stream)
        for entry_id, fields in items:
            if entry_id is None:  # Redis 6.2's XAUTOCLAIM: a deleted pending entry, id and all (see autoclaim)
                continue
            # A pending entry deleted since delivery comes back without fields: one None payload.
            payloads, malformed = bundles.unpack(fields, max_message_bytes)
            eid = _s(entry_id)
            out += [Entry(name, eid, p, k, len(payloads), malformed) for k, p in enumerate(payloads)]
    return out


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:200]
