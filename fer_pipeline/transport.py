"""Redis streams transport shared by every role (sync redis-py; one process per role).

Messages live in a single field ``d`` holding the msgpack payload. ``publish`` bounds every
stream with an exact MAXLEN and counts entries trimmed before some consumer group read
them, in the stats hash, so a stalled consumer costs counted data, not Redis memory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import redis

from fer_pipeline.errors import BrokerUnavailable
from fer_pipeline.settings import Settings
from fer_pipeline.streams import StreamKeys

log = logging.getLogger("fer.transport")

FIELD = b"d"

# Atomically: count the entries the trim is about to drop that some group has not yet
# been delivered (id > that group's last-delivered-id; every entry when there is no group
# or when ARGV[2] == "all", used for streams whose acked entries are deleted), then XADD,
# and count what was published per stream (the run summary compares these). Then, when
# given, XACK + XDEL the entries these payloads answer (KEYS[3], group ARGV[4]): the worker's
# labels and the ack of their crops land together, in one round trip, and a crash can no
# longer leave labels published with their crops still pending (a duplicate on redelivery).
# ARGV: maxlen, 'all'|'groups', n payloads, ack group, payload x n, ack id...
_PUBLISH_LUA = """
local stream, stats = KEYS[1], KEYS[2]
local maxlen = tonumber(ARGV[1])
local count_all = ARGV[2] == 'all'
local n = tonumber(ARGV[3])
local len = redis.call('XLEN', stream)
local excess = len + n - maxlen
local lost = 0
if excess > 0 then
  local floor_ms, floor_seq = nil, nil
  if not count_all and len > 0 then
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
  local old = {}
  if len > 0 then old = redis.call('XRANGE', stream, '-', '+', 'COUNT', math.min(excess, len)) end
  for _, e in ipairs(old) do
    if floor_ms == nil then
      lost = lost + 1
    else
      local ms, seq = string.match(e[1], '(%d+)-(%d+)')
      ms, seq = tonumber(ms), tonumber(seq)
      if ms > floor_ms or (ms == floor_ms and seq > floor_seq) then lost = lost + 1 end
    end
  end
  -- A batch larger than the room left trims some of its own new entries: unread by anyone.
  if excess > len then lost = lost + excess - len end
end
local ids = {}
for i = 5, 4 + n do
  ids[#ids + 1] = redis.call('XADD', stream, 'MAXLEN', maxlen, '*', 'd', ARGV[i])
end
if lost > 0 then redis.call('HINCRBY', stats, 'trimmed_unread:' .. stream, lost) end
redis.call('HINCRBY', stats, 'published:' .. stream, n)
-- unpack() in slices: Lua's C stack takes a few thousand values at most.
for i = 5 + n, #ARGV, 1000 do
  local last = math.min(i + 999, #ARGV)
  redis.call('XACK', KEYS[3], ARGV[4], unpack(ARGV, i, last))
  redis.call('XDEL', KEYS[3], unpack(ARGV, i, last))
end
return ids
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
    """Entries of ``stream`` to XACK (for ``group``) and XDEL along with a publish."""

    stream: str
    group: str
    ids: Sequence[str]


@dataclass(frozen=True)
class Entry:
    stream: str
    id: str
    payload: bytes | None  # None: the entry was deleted/trimmed before it could be read


class Transport:
    """Thin, typed wrapper around one Redis connection pool."""

    def __init__(self, client: redis.Redis, keys: StreamKeys, settings: Settings) -> None:
        self.client = client
        self.keys = keys
        self.settings = settings
        self._publish = client.register_script(_PUBLISH_LUA)

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
        """XADD each payload (one round trip), bounded at ``maxlen``; returns the new ids.

        With ``ack``, the entries it names are acknowledged and deleted in the same script,
        atomically with the publish (the worker's labels and its crops' ack)."""
        if not payloads and not (ack and ack.ids):
            return []
        keys, args = self._publish_call(stream, payloads, maxlen, count_all_trimmed, ack)
        ids = self._publish(keys=keys, args=args)
        return [_s(i) for i in ids]

    def publish_many(self, calls: Sequence[tuple[str, Sequence[bytes], int, bool]]) -> None:
        """Several ``publish(stream, payloads, maxlen, count_all_trimmed)`` calls in one
        pipelined round trip, in order (the producer's group commit: ``producers/publisher.py``)."""
        calls = [c for c in calls if c[1]]
        if len(calls) <= 1:
            for stream, payloads, maxlen, count_all in calls:
                self.publish(stream, payloads, maxlen, count_all_trimmed=count_all)
            return
        todo = list(range(len(calls)))
        for attempt in range(2):
            pipe = self.client.pipeline(transaction=False)
            for i in todo:
                keys, args = self._publish_call(*calls[i], None)
                pipe.evalsha(self._publish.sha, len(keys), *keys, *args)
            results = pipe.execute(raise_on_error=False)
            # The script cache is empty after a Redis restart: load it, resend only what
            # was refused (a refused EVALSHA ran nothing, so nothing is published twice).
            todo = [i for i, r in zip(todo, results) if isinstance(r, redis.exceptions.NoScriptError)]
            errors = [r for r in results if isinstance(r, Exception) and not isinstance(r, redis.exceptions.NoScriptError)]
            if errors:
                raise errors[0]
            if not todo:
                return
            self.client.script_load(_PUBLISH_LUA)
        raise redis.exceptions.NoScriptError("the publish script was flushed again while being resent")

    def _publish_call(self, stream: str, payloads: Sequence[bytes], maxlen: int, count_all: bool,
                      ack: Ack | None) -> tuple[list[str], list]:
        keys = [stream, self.keys.stats]
        args: list = [maxlen, "all" if count_all else "groups", len(payloads), ack.group if ack else "", *payloads]
        if ack and ack.ids:
            keys.append(ack.stream)
            args += ack.ids
        return keys, args

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
        return _entries(reply)

    def ack(self, stream: str, group: str, ids: Sequence[str], *, delete: bool = False) -> None:
        """XACK (and XDEL, for single-group streams, so XLEN is the backlog) in one round trip."""
        if not ids:
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
            for entry_id, fields in reply[1]:
                payload = fields.get(FIELD) if fields else None
                claimed.append(Entry(stream, _s(entry_id), payload))
            if len(reply) > 2:
                missing.extend(_s(i) for i in reply[2])
            if start == "0-0" or len(claimed) >= count:
                return claimed, missing

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


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _entries(reply) -> list[Entry]:
    out: list[Entry] = []
    for stream, items in reply or []:
        name = _s(stream)
        for entry_id, fields in items:
            # A pending entry deleted since delivery comes back without fields.
            out.append(Entry(name, _s(entry_id), fields.get(FIELD) if fields else None))
    return out


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:200]
