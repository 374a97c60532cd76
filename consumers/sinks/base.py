"""The sink role: labels stream -> live episodes -> another system, acked only once accepted.

Each sink kind reads the labels stream through its own consumer group (``sink-mqtt``,
``sink-webhook``; a second sink of one kind to another target takes another ``--group``),
so it sees every label whatever the logger and displays do. A read batch becomes an
outbox of items (the labels, when sent, and the episode events they cause) that the
target must accept in order; only then are the batch's entries acked. While the target is
down, the outbox is retried with backoff and nothing new is read: the labels wait in Redis,
pending, and a restarted sink re-reads them (delivery is at least once; each item carries
an ``id`` to dedupe on). An item the target refuses for good is dead-lettered with the
reason, as a malformed label is.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from fer_pipeline import bundles
from fer_pipeline.analytics.options import ReportOptions
from fer_pipeline.backoff import Backoff
from fer_pipeline.consumers.sinks.episodes import EpisodeEvent, LiveEpisodes
from fer_pipeline.consumers.sinks.payloads import dumps, episode_json, label_json
from fer_pipeline.errors import MessageError
from fer_pipeline.group_reads import GroupReads
from fer_pipeline.messages import Label
from fer_pipeline.service import HEARTBEAT_EVERY_S, Service
from fer_pipeline.settings import Settings
from fer_pipeline.transport import Entry, Transport

BATCH = 256  # labels per read, about (a read counts entries: a worker's bundle each)
FINISH_TRIES_S = 5.0  # how long a stopping sink keeps trying to hand over what it holds


class TargetDown(Exception):
    """The target cannot take items now (unreachable, timing out, 5xx): retry later."""


@dataclass
class Item:
    """One thing to hand to the target: a label or an episode event, as its JSON object."""

    kind: str  # "label" | "episode"
    body: dict
    camera_id: str
    entry: Entry | None = None  # where a label came from (its dead letter keeps the original payload)
    event: EpisodeEvent | None = None
    rejected: bool = False  # dead-lettered: refused by the target for good

    def encoded(self) -> bytes:
        return dumps(self.body)


class SinkService(Service):
    """Base of the sink roles; a subclass sets ``kind`` and implements ``deliver``.

    Args:
        settings: pipeline settings (``sink``, ``streams``, ``worker.reclaim_*``).
        transport: an open transport.
        ident: consumer name (default host-pid).
        group: the consumer group (default ``sink-<kind>``); a new group starts at new labels.
        labels: send every label, not only the episode events.
        options: the episode rules (default: the report's defaults).
    """

    kind = "sink"

    def __init__(self, settings: Settings, transport: Transport, ident: str | None = None, *,
                 group: str | None = None, labels: bool = True, options: ReportOptions | None = None) -> None:
        super().__init__(settings, transport, ident)
        self.group = group or f"sink-{self.kind}"
        self.send_labels = labels
        self.stream = transport.keys.labels
        self.episodes = LiveEpisodes(options, settings.sink.track_timeout_s)
        self.outbox: deque[Item] = deque()
        self.to_ack: list[Entry] = []  # the entries read, acked once the outbox is empty
        self._sizer = bundles.ReadSizer()
        self._reads = GroupReads(transport, self.stream, self.group, self.ident, settings.worker.reclaim_every_s,
                                 settings.worker.reclaim_idle_ms)
        self._target_backoff = Backoff(0.5, 30.0)
        self._retry_at = 0.0  # monotonic time of the next delivery attempt while the target is down
        self._down_since: float | None = None

    # -- what a sink kind implements -----------------------------------------------------------
    def deliver(self, outbox: deque[Item]) -> None:
        """Hand the items to the target in order, removing each from the left of ``outbox`` once
        it is accepted (or ``reject``-ed); raise ``TargetDown`` when the target cannot go on."""
        raise NotImplementedError

    def on_episode(self, event: EpisodeEvent) -> None:
        """Hook: an episode event was accepted by the target (MQTT's per-camera counts)."""

    # -- the loop ----------------------------------------------------------------------------------
    def setup(self) -> None:
        # "$": a new sink starts with the labels to come, not the stream's history; an existing
        # group resumes where it stopped.
        self.transport.ensure_group(self.stream, self.group, start="$")
        self._reads.own_pending = True

    def step(self) -> None:
        if not self.outbox and not self.to_ack:
            self._take(self._read())
            for event in self.episodes.expire():
                self._queue_event(event)
        self._flush()

    def _flush(self) -> None:
        # While the target is down, wait for the next attempt a second at a time: the service
        # loop beats between steps, and a sink waiting out a 30 s backoff must still look alive
        # (status, health probes), not dead.
        left = self._retry_at - time.monotonic()
        if left > 0:
            self.stop_event.wait(min(left, HEARTBEAT_EVERY_S))
            return
        try:
            self._deliver_all()
        except TargetDown as e:
            self.counters["target_waits"] += 1
            wait = self._target_backoff.next()
            self._retry_at = time.monotonic() + wait
            if self._down_since is None or wait >= self._target_backoff.cap:
                self._down_since = self._down_since or time.time()
                self.log.warning("%s: %s; keeping %d items (%d stream entries) pending, retrying in %.1fs",
                                 self.kind, e, len(self.outbox), len({(e.stream, e.id) for e in self.to_ack}), wait)
            return
        if self._down_since is not None:
            self.log.warning("%s: the target takes items again after %.1fs", self.kind, time.time() - self._down_since)
            self._down_since = None
        self._target_backoff.reset()
        if self.to_ack:
            self.transport.ack_entries(self.group, self.to_ack)
            self.to_ack = []

    def _deliver_all(self) -> None:
        while self.outbox:
            before = len(self.outbox)
            head = list(self.outbox)
            try:
                self.deliver(self.outbox)
            finally:  # what was taken before the target went down counts too
                for item in head[:before - len(self.outbox)]:
                    if item.rejected:
                        continue
                    self.counters["labels_sent" if item.kind == "label" else "episodes_sent"] += 1
                    if item.event is not None:
                        self.on_episode(item.event)

    def reject(self, outbox: deque[Item], reason: str) -> None:
        """The target refused the first item for good: dead-letter it (with the reason) and go on."""
        item = outbox.popleft()
        item.rejected = True
        where = item.entry.ref if item.entry is not None else item.body.get("id", "?")
        payload = item.entry.payload if item.entry is not None else item.encoded()
        self.transport.dead_letter(source=item.entry.stream if item.entry is not None else f"{self.group}:{item.kind}",
                                   entry_id=str(where), payload=payload, reason=f"{self.kind} refused it: {reason}",
                                   role=self.role)
        self.counters["dead_letters"] += 1

    def _take(self, entries: list[Entry]) -> None:
        """Decode a read batch into the outbox (labels in capture order per track, their events
        after them); malformed entries are dead-lettered now; every entry is acked after delivery."""
        labelled: list[tuple[Entry, Label]] = []
        for e in entries:
            if e.payload is None:  # trimmed or deleted since it was delivered
                self.counters["labels_missing"] += 1
                continue
            try:
                labelled.append((e, e.message(self.settings.streams.max_payload_bytes, expect=Label)))
            except MessageError as err:
                self.transport.dead_letter(source=e.stream, entry_id=e.ref, payload=e.payload, reason=err.reason,
                                           role=self.role)
                self.counters["dead_letters"] += 1
        # Parallel workers publish batches out of order; a read at a time is put back in capture order.
        labelled.sort(key=lambda el: el[1].captured_at)
        late = self.episodes.late
        for e, label in labelled:
            if self.send_labels:
                self.outbox.append(Item("label", label_json(label), label.camera_id, entry=e))
            for event in self.episodes.add(label):
                self._queue_event(event)
        self.counters["labels_late"] += self.episodes.late - late
        self.to_ack = list(entries)

    def _queue_event(self, event: EpisodeEvent) -> None:
        self.outbox.append(Item("episode", episode_json(event), event.camera_id, event=event))

    def _read(self) -> list[Entry]:
        read = self._reads.read(self._sizer.count(BATCH), self.settings.streams.block_ms)
        self.counters["labels_missing"] += read.missing
        if read.source == "claimed":
            self.counters["labels_reclaimed"] += len(read.entries)
        elif read.source == "new":
            self._sizer.saw(read.entries)
        return read.entries

    def on_redis_down(self) -> None:
        # An ack may have been lost with the connection: look at our own pending entries again.
        self._reads.own_pending = True

    def finish(self) -> None:
        """Hand over what is held (a few seconds at most), then the open episodes' ``end``
        (reason ``stopped``); what the target did not take stays pending in Redis."""
        for event in self.episodes.close_all("stopped"):
            self._queue_event(event)
        deadline = time.monotonic() + FINISH_TRIES_S
        down: TargetDown | None = None
        while self.outbox and time.monotonic() < deadline:
            try:
                self._deliver_all()
            except TargetDown as e:
                down = e
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        if self.outbox:
            self.log.warning("%s: stopping with %d items undelivered (%s); their labels stay pending for the next "
                             "sink", self.kind, len(self.outbox), down)
        if not self.outbox and self.to_ack:
            self.transport.ack_entries(self.group, self.to_ack)
            self.to_ack = []
        self.close_target()

    def close_target(self) -> None:
        """Hook: say goodbye to the target (MQTT: availability ``offline``) and close it."""

    def info(self) -> dict[str, str | int | float]:
        return {**self.counters, "outbox": len(self.outbox)}
