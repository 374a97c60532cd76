"""The logger role: every label into the emotion log (SQLite or PostgreSQL), exactly once.

Reads the labels stream through the logger consumer group in batches, inserts a batch
in one transaction and only then acks it. A crash between the two redelivers the batch,
and the store's unique ``crop_id`` keeps each label to one row (and one
label block: the store packs only new rows, ``blocks.py``). A log written before label
blocks existed gets them once, when the logger starts (``backfill``).
"""

from __future__ import annotations

import threading
import time

from fer_pipeline import bundles
from fer_pipeline.backoff import Backoff
from fer_pipeline.emotion_log.store import LabelStore, StoreUnavailable, is_unavailable, open_store
from fer_pipeline.errors import MessageError
from fer_pipeline.messages import Label
from fer_pipeline.service import Service
from fer_pipeline.settings import Settings
from fer_pipeline.streams import LOGGER_GROUP
from fer_pipeline.transport import Entry, Transport

BATCH = 256  # labels per transaction, about: reads count entries (a worker's batch each)


class LabelLoggerService(Service):
    """Role "logger": labels -> the emotion log (per-person timelines).

    The consumer name is the service ident, so a logger restarted with the same ident
    first re-reads its own pending entries (delivered before a crash, never acked);
    entries left pending by loggers with other idents are taken over once idle for
    ``settings.worker.reclaim_idle_ms``.

    Args:
        settings: the pipeline settings (``consumer.db``, ``streams``, ``worker.reclaim_*``).
        transport: an open transport.
        ident: consumer name; defaults to host-pid.
        store: an open store to write to; by default ``open_store(settings.consumer.db)``,
            which the service then closes in ``finish``.

    Raises:
        ConfigError: the database cannot be opened.
    """

    role = "logger"

    def __init__(self, settings: Settings, transport: Transport, ident: str | None = None,
                 store: LabelStore | None = None) -> None:
        super().__init__(settings, transport, ident)
        # Opened here, not in setup(), so a bad path fails at start-up with its one-line message.
        self._owns_store = store is None
        self.store = store if store is not None else open_store(settings.consumer.db)
        self.stream = transport.keys.labels
        self._own_pending = True  # re-read our own PEL before reading new entries
        self._sizer = bundles.ReadSizer()  # COUNT (entries) for BATCH labels
        self._next_reclaim = 0.0
        self._store_backoff = Backoff(0.5, 30.0)
        # The backfill of an old log runs beside the logging: about 75 s for 20M rows on 2
        # cores, during which labels must keep being logged, not pile up in Redis and be
        # trimmed. It takes the store a range at a time (~1 s), between the logger's batches.
        self._backfiller: threading.Thread | None = None
        self._stop_backfill = threading.Event()

    def setup(self) -> None:
        if self._backfiller is None:  # once per process
            self._backfiller = threading.Thread(target=self._backfill, name="backfill", daemon=True)
            self._backfiller.start()
        self.transport.ensure_group(self.stream, LOGGER_GROUP, start="0")
        self._own_pending = True

    def _backfill(self) -> None:
        """Label blocks for the rows of a log written before they existed (a no-op otherwise)."""
        started = time.monotonic()

        def announce(rows: int) -> None:
            self.log.info("the emotion log has no label blocks yet: building them for %s rows beside the logging "
                          "(once; the report reads the rows until then)", f"{rows:,}")

        try:
            rows = self.store.backfill(on_start=announce, stop=self._stop_backfill)
        except Exception:  # noqa: BLE001 - the log stays correct without blocks: report reads rows
            self.log.exception("building the label blocks failed; `fer-pipeline reindex` can retry")
            return
        if rows:
            self.log.info("label blocks built for %s rows in %.1fs", f"{rows:,}", time.monotonic() - started)

    def backfill_done(self, timeout: float | None = None) -> bool:
        """Wait for the start-up backfill (tests, orderly stop); True when it is over."""
        if self._backfiller is not None:
            self._backfiller.join(timeout)
            return not self._backfiller.is_alive()
        return True

    def step(self) -> None:
        if self._own_pending:
            entries = self._read_own_pending()
            if not entries:
                self._own_pending = False
                return
        elif time.monotonic() >= self._next_reclaim:
            self._next_reclaim = time.monotonic() + self.settings.worker.reclaim_every_s
            entries, missing = self.transport.autoclaim(
                self.stream, LOGGER_GROUP, self.ident, min_idle_ms=self.settings.worker.reclaim_idle_ms,
                count=self._sizer.count(BATCH))
            # Redis drops ids of trimmed entries from the PEL itself; only count them.
            self.counters["labels_missing"] += len(missing)
            if entries:
                self.counters["labels_reclaimed"] += len(entries)
            else:
                entries = self._read_new()
        else:
            entries = self._read_new()
        try:
            self.handle(entries)
        except StoreUnavailable as e:
            # Locked (a long prune), disk full, database gone: keep the batch pending (not
            # acked) and take it again from our own PEL once the wait is over.
            self.counters["store_waits"] += 1
            wait = self._store_backoff.next()
            if self.counters["store_waits"] == 1 or wait >= self._store_backoff.cap:
                self.log.warning("the emotion log cannot be written (%s); keeping %d entries pending, retrying in "
                                 "%.1fs", str(e)[:200], len(entries), wait)
            self._own_pending = True
            self.stop_event.wait(wait)
        else:
            self._store_backoff.reset()

    def handle(self, entries: list[Entry]) -> int:
        """Decode, store (one transaction), dead-letter the bad ones, then ack them all.

        Returns:
            How many labels were newly stored.
        """
        if not entries:
            return 0
        labelled: list[tuple[Entry, Label]] = []
        bad: list[tuple[Entry, str]] = []
        for e in entries:
            if e.payload is None:  # trimmed/deleted between delivery and now (a bundle counts once)
                self.counters["labels_missing"] += 1
                continue
            try:
                labelled.append((e, e.message(self.settings.streams.max_payload_bytes, expect=Label)))
            except MessageError as err:
                bad.append((e, err.reason))
        inserted = self._store(labelled, bad)
        for e, reason in bad:
            self.transport.dead_letter(source=e.stream, entry_id=e.ref, payload=e.payload, reason=reason,
                                       role=self.role)
        self.transport.ack_entries(LOGGER_GROUP, entries)
        self.counters["labels_logged"] += inserted
        self.counters["duplicates_ignored"] += len(labelled) - inserted
        self.counters["dead_letters"] += len(bad)
        return inserted

    def _store(self, labelled: list[tuple[Entry, Label]], bad: list[tuple[Entry, str]]) -> int:
        """Store the batch in one transaction; when something in it cannot be stored, store
        the labels one by one and move those that fail to ``bad`` (they are dead-lettered,
        the rest logged). A database that cannot write now raises ``StoreUnavailable``:
        nothing is acked, and ``step`` retries the batch."""
        try:
            return self.store.add([lab for _, lab in labelled])
        except Exception as err:  # noqa: BLE001 - sorted below: the database's fault, or a message's
            if is_unavailable(err):
                raise StoreUnavailable(f"{type(err).__name__}: {err}") from err
        inserted, stored = 0, []
        for e, lab in labelled:
            try:
                inserted += self.store.add([lab])
            except Exception as err:  # noqa: BLE001 - this label's values: dead-letter it, log the rest
                if is_unavailable(err):
                    raise StoreUnavailable(f"{type(err).__name__}: {err}") from err
                bad.append((e, f"cannot be stored: {type(err).__name__}: {str(err)[:200]}"))
            else:
                stored.append((e, lab))
        labelled[:] = stored
        return inserted

    def on_redis_down(self) -> None:
        # An ack may have been lost with the connection: look at our PEL again once back.
        self._own_pending = True

    def finish(self) -> None:
        # A backfill cut short here is redone by the next start (the log stays unmarked).
        self._stop_backfill.set()
        if not self.backfill_done(timeout=30):
            self.log.warning("the label-block backfill did not stop within 30 s")
        if self._owns_store:
            self.store.close()

    def _read_new(self) -> list[Entry]:
        entries = self.transport.read_group([self.stream], LOGGER_GROUP, self.ident, count=self._sizer.count(BATCH),
                                            block_ms=self.settings.streams.block_ms)
        self._sizer.saw(entries)
        return entries

    def _read_own_pending(self) -> list[Entry]:
        """Entries delivered to this consumer name and never acked (id "0": history, no blocking).

        Only one batch per call; the next call continues from the start of the PEL, which
        the previous batch's ack has shortened.
        """
        return self.transport.read_group([self.stream], LOGGER_GROUP, self.ident, count=self._sizer.count(BATCH),
                                         block_ms=None, own_pending=True)
