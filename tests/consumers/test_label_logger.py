from __future__ import annotations

import threading
import time

import pytest

from fer_pipeline.backoff import Backoff
from fer_pipeline.consumers.label_logger import LabelLoggerService
from fer_pipeline.emotion_log.sqlite import SqliteStore
from fer_pipeline.errors import ConfigError
from fer_pipeline.messages import Label, decode
from fer_pipeline.streams import LOGGER_GROUP
from tests.logs import N, drive, publish_labels


def dead_letters(transport) -> list[dict]:
    return [{k.decode(): v for k, v in fields.items()} for _, fields in transport._client.xrange(transport.keys.dead)]


def test_logs_every_label_once_and_dead_letters_the_bad_one(settings, fake_transport):
    publish_labels(fake_transport)
    service = LabelLoggerService(settings, fake_transport, ident="log-a")
    drive(service)
    assert service.store.count() == N
    assert service.counters["labels_logged"] == N and service.counters["dead_letters"] == 1
    (dead,) = dead_letters(fake_transport)
    assert dead["role"] == b"logger" and b"invalid label" in dead["reason"]
    assert dead["id"].decode().endswith("#4")  # the 21st message: part 4 of the third bundle of 8
    assert fake_transport.backlog(fake_transport.keys.labels, LOGGER_GROUP) == (0, 0)
    # Nothing deleted: other groups (the display) share the labels stream.
    assert len(fake_transport.entries(fake_transport.keys.labels)) == N + 1
    service.finish()


def test_restarted_logger_does_not_duplicate(settings, fake_transport):
    publish_labels(fake_transport, bad=False)
    first = LabelLoggerService(settings, fake_transport, ident="log-a")
    drive(first)
    first.finish()
    publish_labels(fake_transport, 5, bad=False, start=N)
    second = LabelLoggerService(settings, fake_transport, ident="log-a")
    drive(second)
    assert second.counters["labels_logged"] == 5 and second.counters["duplicates_ignored"] == 0
    assert second.store.count() == N + 5
    second.finish()


def test_crash_between_insert_and_ack_is_redelivered_without_duplicates(settings, fake_transport):
    publish_labels(fake_transport, bad=False, per_entry=1)
    fake_transport.ensure_group(fake_transport.keys.labels, LOGGER_GROUP)
    # The crashed process: read and stored its batch, died before XACK.
    entries = fake_transport.read_group([fake_transport.keys.labels], LOGGER_GROUP, "log-a", count=25, block_ms=None)
    with SqliteStore(settings.consumer.db) as store:
        store.add([decode(e.payload, expect=Label) for e in entries])
    assert fake_transport.backlog(fake_transport.keys.labels, LOGGER_GROUP) == (N - 25, 25)

    restarted = LabelLoggerService(settings, fake_transport, ident="log-a")
    drive(restarted)
    assert restarted.counters["duplicates_ignored"] == 25
    assert restarted.counters["labels_logged"] == N - 25
    assert restarted.store.count() == N
    restarted.finish()


def test_entries_of_a_dead_logger_with_another_name_are_reclaimed(settings, fake_transport):
    settings = settings.with_updates(worker={"reclaim_idle_ms": 100})
    publish_labels(fake_transport, 10, bad=False)
    fake_transport.ensure_group(fake_transport.keys.labels, LOGGER_GROUP)
    fake_transport.read_group([fake_transport.keys.labels], LOGGER_GROUP, "gone", count=10, block_ms=None)
    time.sleep(0.15)
    service = LabelLoggerService(settings, fake_transport, ident="log-b")
    drive(service)
    assert service.counters["labels_reclaimed"] == 10 and service.store.count() == 10
    service.finish()


def test_unwritable_db_fails_at_construction(settings, fake_transport, tmp_path):
    (tmp_path / "file").write_text("x")
    bad = settings.with_updates(consumer={"db": tmp_path / "file" / "e.sqlite"})
    with pytest.raises(ConfigError, match="cannot open the emotion database"):
        LabelLoggerService(bad, fake_transport)


@pytest.mark.redis
def test_run_loop_against_real_redis(redis_settings, real_transport):
    """The real loop with blocking reads: drains, stops promptly, leaves nothing pending."""
    publish_labels(real_transport)
    service = LabelLoggerService(redis_settings.with_updates(streams={"block_ms": 100}), real_transport, ident="log-r")
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    labels = real_transport.keys.labels
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if service.counters["labels_logged"] == N and real_transport.backlog(labels, LOGGER_GROUP) == (0, 0):
            break
        time.sleep(0.05)
    # Labels published while running are picked up too.
    publish_labels(real_transport, 3, bad=False, start=N)
    while time.monotonic() < deadline and service.counters["labels_logged"] < N + 3:
        time.sleep(0.05)
    stopped_at = time.monotonic()
    service.request_stop()
    thread.join(timeout=5)
    assert not thread.is_alive() and time.monotonic() - stopped_at < 2
    assert service.counters["labels_logged"] == N + 3 and service.counters["dead_letters"] == 1
    assert real_transport.backlog(labels, LOGGER_GROUP) == (0, 0)
    with SqliteStore(redis_settings.consumer.db) as store:
        assert store.count() == N + 3
        assert [r.frame_index for r in store.timeline("cam0", 0)] == list(range(0, N + 3, 3))
    (dead,) = dead_letters(real_transport)
    assert b"invalid label" in dead["reason"]


class FlakyStore:
    """Wraps a real store: fails the first ``down`` adds as the database would (locked, disk
    full), and refuses any label of ``poison`` crop ids as a value it cannot store."""

    def __init__(self, store, *, down: int = 0, error: str = "database is locked", poison: set[str] = frozenset()):
        self.store, self.down, self.error, self.poison = store, down, error, poison

    def add(self, labels):
        import sqlite3

        if self.down:
            self.down -= 1
            raise sqlite3.OperationalError(self.error)
        if any(lab.crop_id in self.poison for lab in labels):
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        return self.store.add(labels)

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_a_label_the_store_cannot_take_is_dead_lettered_and_the_rest_logged(settings, fake_transport, tmp_path):
    payloads = publish_labels(fake_transport, 10, bad=False)
    poison = decode(payloads[4]).crop_id
    with SqliteStore(tmp_path / "log.sqlite") as real:
        service = LabelLoggerService(settings, fake_transport, ident="log-p", store=FlakyStore(real, poison={poison}))
        drive(service)
        assert real.count() == 9 and service.counters["labels_logged"] == 9
    assert service.counters["dead_letters"] == 1
    (dead,) = dead_letters(fake_transport)
    assert dead["reason"].startswith(b"cannot be stored: OverflowError") and dead["payload"] == payloads[4]


@pytest.mark.parametrize("error", ["database is locked", "database or disk is full"])
def test_a_database_that_cannot_write_keeps_the_labels_pending_until_it_can(settings, fake_transport, tmp_path,
                                                                           error):
    publish_labels(fake_transport, 12, bad=False)
    with SqliteStore(tmp_path / "log.sqlite") as real:
        service = LabelLoggerService(settings, fake_transport, ident="log-w", store=FlakyStore(real, down=2,
                                                                                                error=error))
        service._store_backoff = Backoff(0.01, 0.05)
        drive(service)  # no exception escapes: the batch waits, then goes in
        assert real.count() == 12 and service.counters["labels_logged"] == 12
    assert service.counters["store_waits"] == 2 and service.counters["dead_letters"] == 0
    assert fake_transport.backlog(fake_transport.keys.labels, LOGGER_GROUP) == (0, 0)


@pytest.mark.slow
def test_a_writer_holding_the_log_past_the_busy_timeout_only_delays_the_logger(settings, fake_transport, tmp_path):
    """As a long prune does: another connection holds the write lock for longer than the
    store's 5 s busy timeout. The logger waits it out and then logs everything."""
    import sqlite3

    path = tmp_path / "log.sqlite"
    with SqliteStore(path) as real:
        publish_labels(fake_transport, 6, bad=False)
        service = LabelLoggerService(settings, fake_transport, ident="log-l", store=real)
        service._store_backoff = Backoff(0.2, 0.5)
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        release = threading.Timer(6.0, other.execute, ("COMMIT",))
        release.start()
        try:
            drive(service, max_steps=200)
        finally:
            release.join()
            other.close()
        assert real.count() == 6 and service.counters["store_waits"] >= 1
