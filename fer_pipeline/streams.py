"""Every Redis key name, computed from the configured prefix (one place, like arq's constants).

Tests isolate themselves with a unique prefix instead of flushing databases.

Sharding (``FER_STREAMS__SHARDS``, Redis Cluster): the crops and labels streams are split
into shards by camera. Shard k's keys (its crops and labels streams, its own stats and depth
hashes, its cameras' frame streams) carry one hash tag, ``{s<k>...}``, so they live in one
slot, and every script and MULTI of the hot path stays on one node. ``crops`` and ``labels``
stay the logical names (what status, the stats and the group-wide calls speak of);
``crops_shards``/``labels_shards`` are the streams Redis holds. One shard on a plain Redis
is today's layout, key for key; on a cluster even one shard is tagged (a script touching
``prefix:crops`` and ``prefix:stats`` would span two slots).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cached_property

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

WORKERS_GROUP = "workers"
DISPLAY_GROUP = "display"
LOGGER_GROUP = "logger"


def entry_order(entry_id: str) -> tuple[int, int]:
    """A stream entry id (``<ms>-<seq>``) as a tuple that sorts as Redis orders them.

    Raises:
        ValueError: not an entry id.
    """
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def shard_tag(shard: int, shards: int) -> str:
    """The hash tag of ``shard`` of ``shards``: ``s<shard>``, or ``s<shard>.<j>`` with the
    smallest j whose slot falls in the shard's even share of the 16,384 slots. ``redis-cli
    --cluster create`` gives each master an even, contiguous share, so N shards on M masters
    land as evenly as they can (3 on 3: one each), where plain names could share a node."""
    lo = shard * REDIS_CLUSTER_HASH_SLOTS // shards
    hi = (shard + 1) * REDIS_CLUSTER_HASH_SLOTS // shards
    j = 0
    tag = f"s{shard}"
    while not lo <= key_slot(tag.encode()) < hi:
        j += 1
        tag = f"s{shard}.{j}"
    return tag


@dataclass(frozen=True)
class StreamKeys:
    """Every Redis key of one deployment, named under its ``prefix``, its crops and labels
    in ``shards`` shards; ``tagged``: hash-tagged even with one shard (Redis Cluster)."""

    prefix: str
    shards: int = 1
    tagged: bool = False

    @property
    def sharded(self) -> bool:
        """Whether the streams of the hot path are shard keys (hash-tagged) rather than today's two."""
        return self.tagged or self.shards > 1

    @cached_property
    def tags(self) -> tuple[str, ...]:
        """Each shard's hash tag, in shard order (``shard_tag``)."""
        return tuple(shard_tag(k, self.shards) for k in range(self.shards))

    def _in(self, shard: int, name: str) -> str:
        return f"{self.prefix}:{{{self.tags[shard]}}}:{name}"

    @property
    def crops(self) -> str:
        """Shared by all cameras; read by the workers' consumer group. Sharded: the logical
        name of ``crops_shards`` (the stats and status speak of it)."""
        return f"{self.prefix}:crops"

    @property
    def labels(self) -> str:
        """Labels from every worker; the logger's and each display's consumer group read all of
        them. Sharded: the logical name of ``labels_shards``."""
        return f"{self.prefix}:labels"

    @cached_property
    def crops_shards(self) -> tuple[str, ...]:
        """The crops streams Redis holds: ``crops`` itself, or one per shard."""
        return tuple(self._in(k, "crops") for k in range(self.shards)) if self.sharded else (self.crops,)

    @cached_property
    def labels_shards(self) -> tuple[str, ...]:
        """The labels streams Redis holds: ``labels`` itself, or one per shard (a crop's label
        goes to its crop's shard, so a worker's labels and acks share a slot)."""
        return tuple(self._in(k, "labels") for k in range(self.shards)) if self.sharded else (self.labels,)

    def physical(self, stream: str) -> tuple[str, ...]:
        """The streams Redis holds for ``stream``: a logical sharded name's shards, else itself."""
        if stream == self.crops:
            return self.crops_shards
        if stream == self.labels:
            return self.labels_shards
        return (stream,)

    @cached_property
    def _logical(self) -> dict[str, str]:
        return {**dict.fromkeys(self.crops_shards, self.crops), **dict.fromkeys(self.labels_shards, self.labels)}

    def logical(self, stream: str) -> str:
        """The logical name of a shard stream (``crops`` or ``labels``); other streams as they are."""
        return self._logical.get(stream, stream)

    def shard_of(self, camera_id: str) -> int:
        """The shard of a camera: a stable hash of its id (every process agrees, across restarts)."""
        return zlib.crc32(camera_id.encode()) % self.shards if self.shards > 1 else 0

    def crops_of(self, camera_id: str) -> str:
        """The crops stream a camera's producer writes to."""
        return self.crops_shards[self.shard_of(camera_id)]

    def labels_for(self, crops_stream: str) -> str:
        """The labels stream of a crops stream's shard (where the worker publishes its labels)."""
        return self.labels_shards[self.crops_shards.index(crops_stream)]

    def shard_index(self, stream: str) -> int | None:
        """The shard of a crops or labels shard stream (None for any other)."""
        for shards in (self.crops_shards, self.labels_shards):
            if stream in shards:
                return shards.index(stream)
        return None

    def stats_of(self, stream: str) -> str:
        """The stats hash the scripts publishing to ``stream`` count in: the stream's shard's own
        (same slot) or, unsharded, the shared one."""
        tag = self._tag_of(stream)
        return f"{self.prefix}:{{{tag}}}:stats" if tag else self.stats

    def depth_of(self, stream: str) -> str:
        """The depth hash of a bundled stream (same slot as the stream)."""
        tag = self._tag_of(stream)
        return f"{self.prefix}:{{{tag}}}:depth" if tag else self.depth

    def slot_tag(self, key: str) -> str | None:
        """The hash tag of a shard's key (None for a key of no shard): keys with one tag share a slot."""
        return self._tag_of(key)

    def _tag_of(self, stream: str) -> str | None:
        if not self.sharded or not stream.startswith(f"{self.prefix}:{{"):
            return None
        return stream[len(self.prefix) + 2:].split("}", 1)[0]

    @cached_property
    def stats_keys(self) -> tuple[str, ...]:
        """Every stats hash: the shared one, then each shard's."""
        return (self.stats, *((f"{self.prefix}:{{{t}}}:stats" for t in self.tags) if self.sharded else ()))

    @property
    def depth(self) -> str:
        """Hash: messages held per bundled stream (its entries are bundles; see bundles.py)."""
        return f"{self.prefix}:depth"

    def bundled(self, stream: str) -> bool:
        """Streams whose entries are bundles of messages: the hot path's crops and labels."""
        return stream in self._logical

    @property
    def dead(self) -> str:
        """Dead letters: undecodable or invalid messages, with reason and original payload."""
        return f"{self.prefix}:dead"

    @property
    def cameras(self) -> str:
        """Set of camera ids that have published, so consumers can find frame streams."""
        return f"{self.prefix}:cameras"

    @property
    def stats(self) -> str:
        """Hash of counters (trimmed-unread per stream, drops) shared by all processes."""
        return f"{self.prefix}:stats"

    @property
    def layout(self) -> str:
        """The deployment's shard count, written by the first process: a process started with
        another ``FER_STREAMS__SHARDS`` would read and write streams nobody else does."""
        return f"{self.prefix}:shards"

    @property
    def epoch(self) -> str:
        """A random id written once: a different (or missing) one means Redis lost its data."""
        return f"{self.prefix}:epoch"

    def frames(self, camera_id: str) -> str:
        """One camera's frames (JPEG) from its producer, read by the display groups; sharded, in
        the camera's shard (the producer publishes crops and frames in one MULTI)."""
        if self.sharded:
            return self._in(self.shard_of(camera_id), f"frames:{camera_id}")
        return f"{self.prefix}:frames:{camera_id}"

    def health(self, role: str, ident: str) -> str:
        """A TTL key each live process rewrites; its absence means the process is gone."""
        return f"{self.prefix}:health:{role}:{ident}"

    @property
    def health_pattern(self) -> str:
        """SCAN pattern matching every heartbeat key."""
        return f"{self.prefix}:health:*"
