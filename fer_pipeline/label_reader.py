"""Reading a running deployment's labels from another program: ``LabelReader``.

Two ways to read the labels stream (``<prefix>:labels``, see docs/wire-format.md):

- **In a consumer group** (``group="name"``): at-least-once. Every label reaches one reader of
  the group; a label is acknowledged only after the loop body that got it has finished (or
  when ``ack()`` is called, with ``auto_ack=False``). Leaving the loop (``break``, an
  exception) leaves the label in hand unacknowledged (call ``ack()`` before ``break`` to
  count it as done), and a reader that dies mid-batch has its labels delivered again: to itself when it restarts under the same ``consumer`` name, or to
  another reader of the group once they have been pending ``worker.reclaim_idle_ms``. A new
  group starts at the stream's end (``start="latest"``) or its oldest entry (``"earliest"``);
  an existing group resumes where it stopped. Messages that are not valid labels are
  dead-lettered and acknowledged, as every role does. With ``noack=True`` the group is only a
  position Redis keeps (nothing pending, nothing delivered again, invalid messages skipped
  and counted as in a tail): what a reader with a group of its own that it never resumes
  wants, because Redis then counts the labels trimmed before the group read them (the
  deployment's ``trimmed_unread``; ``fer_pipeline.local_pipeline`` relies on it).
- **As a tail** (no group): every label after a position (now, the stream's oldest entry, or
  an entry id), nothing acknowledged and nothing left behind in Redis. A reader that falls
  more than ``streams.labels_maxlen`` labels behind misses the trimmed ones. Invalid messages
  are skipped and counted.

Either way ``for label in reader:`` yields ``fer_pipeline.messages.Label`` models until
``stop()`` (from another thread or a signal handler) or ``close()``. Redis outages are waited
out with backoff, as the roles do (a dead letter that cannot be written leaves its entry
pending, read again once Redis is back).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Literal

from fer_pipeline import bundles
from fer_pipeline.api_settings import api_settings
from fer_pipeline.backoff import Backoff
from fer_pipeline.errors import BrokerUnavailable, MessageError
from fer_pipeline.group_reads import GroupReads
from fer_pipeline.messages import Label
from fer_pipeline.redis_compat import UNAVAILABLE
from fer_pipeline.service import REDIS_REFUSED
from fer_pipeline.settings import Settings
from fer_pipeline.streams import entry_order
from fer_pipeline.transport import Entry, Transport
from fer_pipeline.urls import redact_url

__all__ = ["LabelReader", "entry_order"]

log = logging.getLogger("fer.label_reader")
ROLE = "reader"  # the role named in the dead letters this reader writes


class LabelReader:
    """Labels of a deployment, as an iterator; see the module docstring for the two modes.

    Args:
        redis_url: The deployment's Redis; None: ``FER_REDIS__URL``.
        prefix: Its key prefix; None: ``FER_REDIS__PREFIX`` (``fer``).
        group: Consumer group to read in (at-least-once, acknowledged); None: a tail.
        consumer: This reader's name in the group (default: host-pid). Keep it across restarts
            to take back this reader's unacknowledged labels at once.
        start: Where a new group or a tail begins: ``"latest"`` (labels published from now on),
            ``"earliest"`` (every label still in the stream), or, for a tail, an entry id to
            read after.
        auto_ack: Group mode: acknowledge each label once the loop body that got it has
            finished (a bundle's labels together, after the last of them). False: only
            ``ack()`` acknowledges.
        noack: Group mode: read without acknowledgements (see the module docstring).
        block_ms: Longest wait in one read; ``stop()`` takes effect within it.
        batch: About how many labels one read takes.
        settings: Everything else (timeouts, backoff, the reclaim idle time, size limits).

    Raises:
        BrokerUnavailable: Redis cannot be reached (checked here, in one line).
        ValueError: an unknown ``start``, or an entry id for a group.
        ConfigError: a bad URL or prefix.
    """

    def __init__(self, redis_url: str | None = None, *, prefix: str | None = None, group: str | None = None,
                 consumer: str | None = None, start: Literal["latest", "earliest"] | str = "latest",
                 auto_ack: bool = True, noack: bool = False, block_ms: int = 500, batch: int = 256,
                 settings: Settings | None = None) -> None:
        from fer_pipeline.service import default_ident

        self.settings = api_settings(settings, redis={"url": redis_url, "prefix": prefix})
        if start not in ("latest", "earliest") and (group is not None or not _is_entry_id(start)):
            raise ValueError(f"start must be 'latest', 'earliest'{'' if group else ' or an entry id'}, got {start!r}")
        self.group = group
        self.consumer = consumer or default_ident()
        self.noack = noack and group is not None
        self.auto_ack = auto_ack and not self.noack  # nothing to acknowledge without acks
        self.block_ms = max(1, int(block_ms))
        self.batch = max(1, int(batch))
        self.counters: Counter[str] = Counter()
        self._transport = Transport.connect(self.settings)
        self.stream = self._transport.keys.labels
        self._stop = threading.Event()
        self._sizer = bundles.ReadSizer()
        self._backoff = Backoff(self.settings.redis.backoff_initial_s, self.settings.redis.backoff_max_s)
        # Entries (stream, id: ids repeat across shards) whose every label is done, not yet acknowledged.
        self._complete: list[tuple[str, str]] = []
        self._in_hand: tuple[str, str] | None = None  # the entry of the label being handled, if it is its last
        self._down = False
        self._closed = False
        if group is not None:
            try:
                self._transport.ensure_group(self.stream, group, start="$" if start == "latest" else "0")
            except BaseException:
                self._transport.close()  # the caller never gets the reader to close
                raise
            self.position = "0-0"
        elif start == "latest":
            newest = self._transport.entries(self.stream, count=1, newest=True)
            self.position = newest[-1].id if newest else "0-0"
        else:
            self.position = "0-0" if start == "earliest" else start
        # Group mode (not noack): own pending first, then reclaimed, then new (group_reads).
        self._reads = None if group is None else GroupReads(
            self._transport, self.stream, group, self.consumer, self.settings.worker.reclaim_every_s,
            self.settings.worker.reclaim_idle_ms, own_pending=not self.noack)

    position: str
    """Tail mode: the id of the last entry read (labels after it come next). Group mode: the
    newest entry id this reader has been delivered as new (``"0-0"`` before the first)."""

    # -- iteration ------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Label]:
        """Labels as they arrive, until ``stop()`` or ``close()``; see the class docstring."""
        # A new loop first takes what this consumer holds unacknowledged: a label whose loop
        # body failed in the last loop comes again at once, not after the reclaim time.
        self._retake_own_pending()
        try:
            while not self._stop.is_set():
                if self.auto_ack:
                    self._flush()
                entries = self._read()
                for entry in entries or ():
                    try:
                        label = self._label(entry)
                    except REDIS_REFUSED as e:
                        raise self._refused(e) from None
                    except UNAVAILABLE as e:  # the dead letter could not be written
                        # This entry and the rest of the batch stay pending (not complete): the
                        # next read takes them again from this consumer's own pending entries.
                        self._unavailable(e)
                        break
                    last = entry.part == entry.parts - 1
                    if last and not self.auto_ack:
                        self._complete.append((entry.stream, entry.id))  # yielded: ack() may take it
                    if label is not None:
                        self._in_hand = (entry.stream, entry.id) if last else None
                        yield label
                        self._in_hand = None
                    if last and self.auto_ack and (entry.stream, entry.id) not in self._complete:
                        self._complete.append((entry.stream, entry.id))  # the loop body is done with it
                else:
                    if entries is not None:
                        self._reachable()
        finally:
            # Left early (break, an exception in the loop body): what is complete is
            # acknowledged; the label in hand is not (its body may have failed): it comes again.
            self._in_hand = None
            if self.auto_ack:
                self._flush(quiet=True)

    def ack(self) -> None:
        """Group mode: acknowledge every label yielded so far, the one in hand included (a
        bundle's labels are acknowledged together, once the last of them has been yielded).
        Call it before leaving the loop with ``break`` to keep the last label from coming
        again. Nothing in tail mode."""
        if self._in_hand is not None and self._in_hand not in self._complete:
            self._complete.append(self._in_hand)
        self._flush()

    def stop(self) -> None:
        """End the iteration after the current read (at most ``block_ms``); safe from any
        thread and from a signal handler."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Whether ``stop()`` or ``close()`` has been called."""
        return self._stop.is_set()

    def close(self) -> None:
        """Stop, acknowledge what is complete (``auto_ack``) and close the connection."""
        if self._closed:
            return
        self.stop()
        if self.auto_ack:
            self._flush(quiet=True)
        self._closed = True
        self._transport.close()

    def __enter__(self) -> LabelReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- pieces -----------------------------------------------------------------------------------
    def _read(self) -> list[Entry] | None:
        """The next entries ([] when none came within ``block_ms``); None: Redis did not answer."""
        try:
            entries = self._read_group() if self.group is not None else self._read_tail()
        except REDIS_REFUSED as e:
            raise self._refused(e) from None
        except UNAVAILABLE as e:
            self._unavailable(e)
            return None
        self._sizer.saw(entries)
        return entries

    def _reachable(self) -> None:
        """A read and its batch went through: an outage (if any) is over."""
        if self._down:
            self._down = False
            self._backoff.reset()
            log.warning("Redis reachable again")

    def _refused(self, e: BaseException) -> BrokerUnavailable:
        """The password changed: no retry can fix that."""
        return BrokerUnavailable(f"Redis at {redact_url(self.settings.redis.url or '')} refused the "
                                 f"credentials ({e})")

    def _unavailable(self, e: BaseException) -> None:
        """Redis did not answer: note it once, then wait the backoff (``stop()`` cuts it short)."""
        if not self._down:
            self._down = True
            log.warning("Redis unreachable (%s); retrying with backoff", type(e).__name__)
        self.counters["reconnects"] += 1
        self._retake_own_pending()  # an ack may have been lost with the connection
        self._stop.wait(self._backoff.next())

    def _read_tail(self) -> list[Entry]:
        entries = self._transport.read_after(self.stream, self.position, count=self._sizer.count(self.batch),
                                             block_ms=self.block_ms)
        if entries:
            self.position = entries[-1].id
        return entries

    def _retake_own_pending(self) -> None:
        """Read this consumer's unacknowledged entries again before new ones (nothing is
        pending without acks: noack)."""
        if self._reads is not None:
            self._reads.own_pending = not self.noack

    def _read_group(self) -> list[Entry]:
        assert self.group is not None and self._reads is not None
        count = self._sizer.count(self.batch)
        if self.noack:  # nothing pending to take back: new entries only
            entries = self._transport.read_group([self.stream], self.group, self.consumer, count=count,
                                                 block_ms=self.block_ms, noack=True)
            if entries:
                self.position = entries[-1].id
            return entries
        # Own pending entries this reader already handled and has not acknowledged yet
        # (auto_ack=False, or an ack lost with the connection) are not handed out twice.
        read = self._reads.read(count, self.block_ms, skip=self._complete)
        if read.missing:  # trimmed while pending: Redis dropped them
            self.counters["missing"] += read.missing
        if read.source == "claimed":
            self.counters["reclaimed"] += len(read.entries)
        entries = read.entries
        if read.source == "new" and entries:
            self.position = entries[-1].id
        return entries

    def _label(self, entry: Entry) -> Label | None:
        if entry.payload is None and not entry.malformed:  # trimmed or deleted after delivery
            self.counters["missing"] += 1
            return None
        try:
            label = entry.message(self.settings.streams.max_payload_bytes, expect=Label)
        except MessageError as err:
            if self.group is not None and not self.noack:
                self._transport.dead_letter(source=entry.stream, entry_id=entry.ref, payload=entry.payload,
                                            reason=err.reason, role=ROLE)
                self.counters["dead_letters"] += 1
            else:
                self.counters["skipped"] += 1
                log.warning("skipped %s in %s: %s", entry.ref, self.stream, err.reason)
            return None
        self.counters["labels"] += 1
        return label

    def _flush(self, quiet: bool = False) -> None:
        if self.group is None or not self._complete:
            return
        ids = list(self._complete)
        try:
            for stream in dict.fromkeys(s for s, _ in ids):
                self._transport.ack(stream, self.group, [i for s, i in ids if s == stream])
        except UNAVAILABLE as e:
            # Kept for the next flush; meanwhile they stay pending and may come again.
            if not quiet:
                log.warning("acknowledgement postponed: Redis unreachable (%s)", type(e).__name__)
            self._retake_own_pending()
            return
        del self._complete[:len(ids)]
        self.counters["acked_entries"] += len(ids)


def _is_entry_id(text: str) -> bool:
    try:
        entry_order(text)
    except ValueError:
        return False
    return True
