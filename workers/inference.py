"""The inference worker: read crops through the workers' consumer group, batch across all
cameras, run the model once per batch, then publish the labels and XACK (+XDEL) their crops
in one MULTI round trip, which also reads the crops waiting for the next batch. Crops arrive
in bundles (``fer_pipeline/bundles.py``: a producer's round is one entry); an entry is acked
once every crop in it is labelled or dead-lettered.

Bad messages go to the dead-letter stream with a reason and are acknowledged, so one
poison message never blocks the group. Crops left pending by a dead worker are reclaimed
with XAUTOCLAIM once idle for ``reclaim_idle_ms``. Labels and the acks of the entries they
complete land together; a crop is labelled twice only when a crash or a lost reply comes
between the two (a bundle split across batches is pending until its last crop is labelled;
a reply lost after the MULTI ran makes the worker publish that batch again): the logger's
idempotent insert by crop id keeps the log exactly-once.

Sharded streams (``streams.py``): a batch comes from one shard, so its labels (to that
shard's labels stream) and its acks stay one MULTI in one slot. The worker stays on a shard
while it has crops, at most ``worker.shard_dwell_s``, then takes the next shard that has
some (round robin over its ``worker.shards``, all by default); reclaim runs per shard.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
from pydantic import ValidationError

from fer_pipeline import bundles
from fer_pipeline.errors import ConfigError, MessageError
from fer_pipeline.labels import EMOTIONS
from fer_pipeline.messages import FaceCrop, Label, valid_probabilities
from fer_pipeline.model import Predictor
from fer_pipeline.redis_compat import UNAVAILABLE
from fer_pipeline.service import Service
from fer_pipeline.settings import Settings
from fer_pipeline.streams import WORKERS_GROUP
from fer_pipeline.transport import SHARD_BLOCK_MS, SHARD_DOWN_S, Ack, Entry, Transport
from fer_pipeline.workers.batcher import Batcher

LONG_WAIT_MS = 250  # open-batch waits at least this long block in Redis instead of sleeping


@dataclass(frozen=True)
class Item:
    """A crop read from the crops stream, with its entry id (for the ack) and ref (for dead letters)."""

    entry_id: str
    ref: str  # the entry id, #part within a bundle
    crop: FaceCrop


class InferenceWorker(Service):
    """Role "worker": labels the crops of every camera in batches, publishing each batch's labels
    together with the acks of its crops."""

    role = "worker"

    def __init__(self, settings: Settings, transport: Transport, predictor: Predictor, ident: str | None = None) -> None:
        super().__init__(settings, transport, ident)
        self.predictor = predictor
        ws = settings.worker
        self.batcher: Batcher[Item] = Batcher(ws.max_batch, ws.max_wait_ms / 1000.0)
        self.shards = self._assigned(transport, ws.shards)
        self.stream = self.shards[0]  # the shard the batch (and the one in flight) comes from
        self._shard, self._since = 0, time.monotonic()
        self._next_reclaim = dict.fromkeys(self.shards, 0.0)
        self._down_until: dict[str, float] = {}  # shard -> until when it is passed over (its node is down)
        # A batch whose labels were computed but not yet published+acked (kept across Redis errors).
        self._inflight: tuple[list[Item], list[bytes]] | None = None
        self.emotions = dict.fromkeys(EMOTIONS, 0)
        self.infer_s = 0.0
        # Entries read and not yet acked: [crops not yet labelled or dead-lettered, crops in it].
        self._held: dict[str, list[int]] = {}
        self._sizer = bundles.ReadSizer()  # COUNT (entries) for the room (crops)

    @staticmethod
    def _assigned(transport: Transport, wanted: list[int]) -> list[str]:
        streams = transport.keys.crops_shards
        bad = [k for k in wanted if k >= len(streams)]
        if bad:
            msg = (f"FER_WORKER__SHARDS names shard {bad[0]}, but there are {len(streams)} "
                   f"(FER_STREAMS__SHARDS; shards count from 0)")
            raise ConfigError(msg)
        return [streams[k] for k in dict.fromkeys(wanted)] or list(streams)

    def setup(self) -> None:
        for stream in self.shards:
            self.transport.ensure_group(stream, WORKERS_GROUP, start="0")

    # -- the loop ----------------------------------------------------------------------------
    def step(self) -> None:
        if self._inflight is not None:
            self._deliver()
            return
        now = time.monotonic()
        if now >= self._next_reclaim[self.stream]:
            self._next_reclaim[self.stream] = now + self.settings.worker.reclaim_every_s
            self._reclaim()
        if self.batcher.room:
            self.batcher.add(self._read())
        if self.batcher.ready():
            self._infer_batch(self.batcher.take())
            self._deliver(read_next=True)

    def _read(self) -> list[Item]:
        if not len(self.batcher):
            if len(self.shards) > 1 and not self._held:
                return self._decode(self._read_shards())
            return self._decode(self._read_group(self.settings.streams.block_ms))
        # A batch is open. Crops already waiting join it at once (a bundle can leave a batch one
        # crop short; sleeping for that one would cost the whole wait under load).
        entries = self._read_group(None)
        if entries:
            return self._decode(entries)
        # Nothing waiting: wait out the batch's time, then take what has arrived without
        # blocking. A short XREADGROUP BLOCK is not a short wait: Redis checks blocked
        # clients' timeouts when its event loop wakes, every 1000/hz ms (100 ms at the
        # default hz 10) on a quiet server (benchmarks/pipeline.py: 1 camera p50 32 ms, 14 ms since).
        left = self.batcher.wait_left()
        if left * 1000 >= LONG_WAIT_MS:
            # A long wait: Redis's ~100 ms timer granularity does not matter, and a
            # blocking read keeps filling the batch as crops arrive.
            return self._decode(self._read_group(max(1, int(left * 1000))))
        self.stop_event.wait(max(0.0, left))
        return self._decode(self._read_group(None))

    def _read_shards(self) -> list[Entry]:
        """No batch open: crops from this shard while its dwell lasts, else from the next shard
        that has some; none has any: wait on the next one a little (SHARD_BLOCK_MS). A shard
        whose node is down is passed over for a while (SHARD_DOWN_S), so the others' crops
        keep being labelled; with every shard down the error goes to the service's backoff."""
        n = len(self.shards)
        first = 0 if time.monotonic() - self._since < self.settings.worker.shard_dwell_s else 1
        error: Exception | None = None
        for k in range(first, first + n):
            self._switch((self._shard + k) % n)
            if self._down_until.get(self.stream, 0.0) > time.monotonic():
                continue
            try:
                entries = self._read_group(None)
            except UNAVAILABLE as e:
                self._down_until[self.stream] = time.monotonic() + SHARD_DOWN_S
                self.counters["shard_waits"] += 1
                error = e
                continue
            if entries:
                return entries
        if error is not None and all(self._down_until.get(s, 0.0) > time.monotonic() for s in self.shards):
            raise error
        self._switch((self._shard + 1) % n)
        if self._down_until.get(self.stream, 0.0) > time.monotonic():
            self.stop_event.wait(SHARD_BLOCK_MS / 1000)
            return []
        return self._read_group(min(self.settings.streams.block_ms, SHARD_BLOCK_MS))

    def _switch(self, shard: int) -> None:
        if shard != self._shard:
            self._shard, self.stream, self._since = shard, self.shards[shard], time.monotonic()

    def _read_group(self, block_ms: int | None) -> list[Entry]:
        entries = self.transport.read_group([self.stream], WORKERS_GROUP, self.ident,
                                            count=self._sizer.count(self.batcher.room), block_ms=block_ms)
        self._sizer.saw(entries)
        return entries

    def finish(self) -> None:
        """Label what was already read (it is ours in the group), publish, ack; read nothing new."""
        if self._inflight is not None:
            self._deliver()
        while len(self.batcher):
            self._infer_batch(self.batcher.take())
            self._deliver()

    def on_redis_down(self) -> None:
        # Nothing to drop: the in-flight batch is retried; if Redis restarted empty, the
        # acks are no-ops and the labels are still worth publishing.
        pass

    def info(self) -> dict:
        return {**self.counters, "infer_ms": round(self.infer_s * 1000, 1), "model": self.predictor.model_id,
                **{f"emotion_{k}": v for k, v in self.emotions.items()}}

    # -- pieces -----------------------------------------------------------------------------------
    def _decode(self, entries: list[Entry]) -> list[Item]:
        # An entry this worker already holds (reclaimed from itself after a long stall) is
        # skipped: its crops are in the batch or in flight. Held means exactly that: on any
        # error here the new entries are let go again, for a later reclaim to take.
        known = set(self._held)
        entries = [e for e in entries if e.id not in known]
        for e in entries:
            self._held.setdefault(e.id, [e.parts, e.parts])
        try:
            good: list[Item] = []
            done: list[str] = []
            for e in entries:
                if e.payload is None:  # trimmed or deleted between delivery and claim (a vanished entry counts once)
                    self.counters["crops_vanished"] += 1
                    done.append(e.id)
                    continue
                try:
                    crop = e.message(self.settings.streams.max_payload_bytes, expect=FaceCrop)
                except MessageError as err:
                    self.transport.dead_letter(source=e.stream, entry_id=e.ref, payload=e.payload,
                                               reason=err.reason, role=self.role)
                    self.counters["dead_letters"] += 1
                    done.append(e.id)
                    continue
                good.append(Item(e.id, e.ref, crop))
            self._ack(done)
        except BaseException:
            for e in entries:
                self._held.pop(e.id, None)
            raise
        return good

    def _completes(self, entry_ids: list[str]) -> tuple[Counter[str], list[str], list[int]]:
        """For crops about to be done (one entry id each): per entry how many, and the entries
        they complete with their crop counts (what to ack). Nothing is changed until ``_done``."""
        done_now = Counter(entry_ids)
        ids = [eid for eid, k in done_now.items() if self._held[eid][0] == k]
        return done_now, ids, [self._held[eid][1] for eid in ids]

    def _done(self, done_now: Counter[str], completed: list[str]) -> None:
        for eid, k in done_now.items():
            self._held[eid][0] -= k
        for eid in completed:
            del self._held[eid]

    def _ack(self, entry_ids: list[str]) -> None:
        done_now, ids, counts = self._completes(entry_ids)
        self.transport.ack(self.stream, WORKERS_GROUP, ids, delete=True, messages=counts)
        self._done(done_now, ids)

    def _reclaim(self) -> None:
        claimed, missing = self.transport.autoclaim(
            self.stream, WORKERS_GROUP, self.ident, min_idle_ms=self.settings.worker.reclaim_idle_ms,
            count=max(1, math.ceil(self.settings.worker.max_batch / bundles.ASSUMED_PER_ENTRY)))
        if missing:  # already deleted (trimmed, expired): nothing to delete or count in the depth
            self.transport.ack(self.stream, WORKERS_GROUP, missing)
            self.counters["crops_vanished"] += len(missing)
        if claimed:
            self.counters["crops_reclaimed"] += len(claimed)
            self.log.info("reclaimed %d crops left pending by another worker", len(claimed))
            self.batcher.add(self._decode(claimed))

    def _infer_batch(self, items: list[Item]) -> None:
        try:
            self._infer(items)
        except BaseException:
            # E.g. Redis down while dead-lettering a rejected crop: the batch goes back to the
            # front, to be inferred again, rather than be lost with its entries still held.
            self.batcher.items[:0] = items
            raise

    def _infer(self, items: list[Item]) -> None:
        batch = np.stack([it.crop.pixels() for it in items])
        t0 = time.perf_counter()
        probs = self.predictor.predict(batch)
        self.infer_s += time.perf_counter() - t0
        ok = valid_probabilities(probs)
        if not ok.all():  # NaN/inf or non-normalised output from a broken model
            for it, p, good in zip(items, probs, ok):
                if not good:
                    self._reject(it, p)
            labelled, probs = [it for it, good in zip(items, ok) if good], probs[ok]
        else:
            labelled = items
        payloads = Label.pack_batch([it.crop for it in labelled], probs, model_id=self.predictor.model_id,
                                    worker_id=self.ident, inferred_at=time.time())
        for k, n in enumerate(np.bincount(np.argmax(probs, axis=1), minlength=len(EMOTIONS)).tolist()):
            self.emotions[EMOTIONS[k]] += n
        self.counters["batches"] += 1
        self.counters["crops_labelled"] += len(labelled)
        # Every crop of the batch is done once the labels are out (rejected ones are dead-lettered).
        self._inflight = (items, payloads)

    def _reject(self, item: Item, probabilities: np.ndarray) -> None:
        """Dead-letter a crop whose model output ``Label`` refuses, with the validator's reason."""
        try:
            Label.for_crop(item.crop, probabilities, model_id=self.predictor.model_id, worker_id=self.ident,
                           inferred_at=time.time())
            reason = "model output rejected"
        except ValidationError as err:  # the validator's own words, not pydantic's trailing help link
            reason = f"model output rejected: {err.errors()[0]['msg'][:200]}"
        self.transport.dead_letter(source=self.stream, entry_id=item.ref, payload=item.crop.encode(),
                                   reason=reason, role=self.role)
        self.counters["dead_letters"] += 1

    def _deliver(self, read_next: bool = False) -> None:
        """Labels out and the crop entries they complete acked+deleted in one atomic round
        trip; the entries' counts change only once it succeeded (a retry acks the same).
        ``read_next``: the same round trip takes the crops already waiting for the next batch."""
        items, payloads = self._inflight  # type: ignore[misc]
        done_now, ids, counts = self._completes([it.entry_id for it in items])
        ack = Ack(self.stream, WORKERS_GROUP, ids, counts)
        labels, maxlen = self.transport.keys.labels_for(self.stream), self.settings.streams.labels_maxlen
        # With other shards to serve, the next batch comes from here only while the dwell lasts.
        stay = len(self.shards) == 1 or time.monotonic() - self._since < self.settings.worker.shard_dwell_s
        if read_next and stay and self.batcher.room and not self.stop_event.is_set():
            entries = self.transport.publish_then_read(
                labels, payloads, maxlen, ack=ack, read=self.stream, group=WORKERS_GROUP, consumer=self.ident,
                count=self._sizer.count(self.batcher.room))
        else:
            entries = []
            self.transport.publish(labels, payloads, maxlen, ack=ack)
        self._done(done_now, ids)
        self._inflight = None
        if entries:
            self._sizer.saw(entries)
            self.batcher.add(self._decode(entries))
