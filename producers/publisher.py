"""The producer's one writer to Redis, shared by all its cameras (a group commit).

Camera threads hand each frame's messages (its crops, its display frame) to ``submit`` and
go straight back to capture; one thread sends everything handed over since its last send
in one pipelined round trip, the crops as one bundled entry (``fer_pipeline/bundles.py``).
A lone frame goes out at once, so nothing waits for company, and frames that arrive while a
round trip is in flight share the next one: many cameras cost about as many round trips,
and about as many crop entries, as one. (Before, every camera waited on two round trips per
frame, and those round trips were most of the message overhead per face.)

Capture still never waits on Redis: when Redis is down the batch in flight is dropped and
counted, and so is every frame handed over until the backoff has passed; the queue is
bounded (``MAX_QUEUED`` frames), so a Redis that is up but slow costs counted drops, not
memory. Per camera, messages go out in the order they were handed over, crops before the
display frame that announces them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from fer_pipeline import redis_compat
from fer_pipeline.backoff import Backoff
from fer_pipeline.service import REDIS_DOWN
from fer_pipeline.settings import Settings
from fer_pipeline.transport import Transport

MAX_QUEUED = 512  # frames waiting to be sent (about 2 s of 8 cameras at 30 fps)
MAX_PER_SEND = 32  # frames in one round trip: on the 2-vCPU VM, 32-64 cost least per face (256: +30%)
SENT_NAMES = ("crops_published", "frames_published", "crops_dropped", "frames_dropped", "publish_errors")

log = logging.getLogger("fer.producer.publisher")


@dataclass
class Outgoing:
    """One frame's messages: its crops (for the crops stream) and, optionally, what goes on
    the camera's frames stream (a ``Frame``, or the ``EndOfStream`` after the last one)."""

    camera_id: str
    crops: list[bytes] = field(default_factory=list)
    display: bytes | None = None


class Publisher:
    """Sends the cameras' messages from one thread; see the module docstring.

    ``sent[camera_id]`` counts, per camera, what went out and what was dropped here; it is
    written under the publisher's lock and read through ``counts``.
    """

    def __init__(self, transport: Transport, settings: Settings, camera_ids: Sequence[str]) -> None:
        self.transport = transport
        self.settings = settings
        self._cv = threading.Condition()
        self._queue: deque[Outgoing] = deque()
        self._queued_crops = 0
        self._pending: Counter[str] = Counter()  # per camera: handed over, not yet sent or dropped
        self._sent = {cid: Counter(dict.fromkeys(SENT_NAMES, 0)) for cid in camera_ids}
        # Held while a batch is in flight: the backlog gauge reads the depth + queued under it, so
        # crops are never counted both in Redis and in the queue.
        self.sending = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._retry_at = 0.0
        self._backoff = Backoff(settings.redis.backoff_initial_s, settings.redis.backoff_max_s)
        self.round_trips = 0

    # -- camera side -------------------------------------------------------------------------
    def accepting(self) -> bool:
        """False while Redis is being given time to come back (what is handed over is dropped)."""
        return time.monotonic() >= self._retry_at

    def submit(self, out: Outgoing) -> bool:
        """Queue one frame's messages; False when they were dropped (and counted) instead."""
        with self._cv:
            if self._closing or not self.accepting() or len(self._queue) >= MAX_QUEUED:
                self._count_dropped([out])
                return False
            self._queue.append(out)
            self._queued_crops += len(out.crops)
            self._pending[out.camera_id] += 1
            self._cv.notify_all()
            return True

    @property
    def queued_crops(self) -> int:
        """Crops handed over and not yet sent (they are part of the workers' backlog)."""
        return self._queued_crops

    def drain(self, camera_id: str, timeout: float) -> bool:
        """Wait until everything ``camera_id`` handed over is sent or dropped; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._pending[camera_id] and self._thread is not None and self._thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
            return not self._pending[camera_id]

    def counts(self, camera_id: str) -> dict[str, int]:
        with self._cv:
            return dict(self._sent[camera_id])

    # -- the sending thread ----------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
            self._thread.start()

    def close(self, timeout: float) -> None:
        """Send what is queued (within ``timeout``), then stop the thread; what could not be
        sent by then is counted as dropped."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("publisher did not finish sending within %.0fs", timeout)
        with self._cv:
            if self._queue:
                self._count_dropped(list(self._queue))
                self._forget(list(self._queue))
                self._queue.clear()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closing:
                    self._cv.wait()
                if not self._queue:
                    return
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), MAX_PER_SEND))]
                late = not self.accepting()  # queued before a failure: Redis is still being waited for
            if late:
                with self._cv:
                    self._count_dropped(batch)
                    self._forget(batch)
                continue
            # Sharded: a MULTI per shard, each counted on its own (one shard's node down must
            # not count another shard's landed crops as dropped).
            for part in self._by_shard(batch):
                try:
                    self._send(part)
                except Exception:  # noqa: BLE001 - this thread must outlive any one batch
                    log.exception("publisher: unexpected error; dropping a batch of %d frames", len(part))

    def _by_shard(self, batch: list[Outgoing]) -> list[list[Outgoing]]:
        keys = self.transport.keys
        if keys.shards == 1:
            return [batch]
        parts: dict[int, list[Outgoing]] = {}
        for out in batch:
            parts.setdefault(keys.shard_of(out.camera_id), []).append(out)
        return list(parts.values())

    def _send(self, batch: list[Outgoing]) -> None:
        keys, streams = self.transport.keys, self.settings.streams
        crops: dict[str, list[bytes]] = {}  # per crops stream: the cameras' shards (one unsharded)
        for out in batch:
            if out.crops:
                crops.setdefault(keys.crops_of(out.camera_id), []).extend(out.crops)
        calls = [(stream, payloads, streams.crops_maxlen, True) for stream, payloads in crops.items()]
        displays: dict[str, list[bytes]] = {}
        for out in batch:
            if out.display is not None:
                displays.setdefault(out.camera_id, []).append(out.display)
        calls += [(keys.frames(cid), payloads, streams.frames_maxlen, False) for cid, payloads in displays.items()]
        error: Exception | None = None
        with self.sending:
            try:
                self.transport.publish_many(calls)
            except Exception as e:  # noqa: BLE001 - down, or refusing (OOM, READONLY, WRONGTYPE...)
                error = e
            finally:
                with self._cv:
                    self.round_trips += 1
                    if error is None:
                        for out in batch:
                            sent = self._sent[out.camera_id]
                            sent["crops_published"] += len(out.crops)
                            sent["frames_published"] += out.display is not None
                        self._backoff.reset()
                    else:
                        # The whole batch counts as dropped: after an error mid-pipeline some of
                        # it may have landed, so "published" can undercount, never overcount.
                        self._count_dropped(batch)
                        for cid in {out.camera_id for out in batch}:
                            self._sent[cid]["publish_errors"] += 1
                        wait = self._backoff.next()
                        self._retry_at = time.monotonic() + wait
                        what = "unreachable" if isinstance(error, REDIS_DOWN) else "refused the publish"
                        log.warning("Redis %s (%s: %s); dropping the cameras' messages for %.1fs", what,
                                    type(error).__name__, redis_compat.reason(error)[:200], wait)
                    self._forget(batch)

    # -- bookkeeping (under self._cv) -----------------------------------------------------------
    def _count_dropped(self, outs: list[Outgoing]) -> None:
        for out in outs:
            sent = self._sent[out.camera_id]
            sent["crops_dropped"] += len(out.crops)
            sent["frames_dropped"] += out.display is not None

    def _forget(self, outs: list[Outgoing]) -> None:
        for out in outs:
            self._queued_crops -= len(out.crops)
            self._pending[out.camera_id] -= 1
        self._cv.notify_all()
