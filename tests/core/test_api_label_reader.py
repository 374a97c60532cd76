"""LabelReader against the real Redis: tails, consumer groups (at-least-once), bad entries."""

from __future__ import annotations

import threading
import time

import pytest

from fer_pipeline.broker import EmbeddedBroker
from fer_pipeline.errors import BrokerUnavailable, ConfigError
from fer_pipeline.label_reader import LabelReader, entry_order
from fer_pipeline.messages import Label
from fer_pipeline.transport import Transport
from tests.conftest import make_settings
from tests.factories import make_label

pytestmark = pytest.mark.redis


def publish(transport, first: int, n: int, bad: bytes | None = None) -> list[Label]:
    """``n`` labels (frame indexes first..first+n-1) in one bundle entry, as a worker's batch;
    ``bad`` is put in the middle when given."""
    labels = [make_label(frame_index=i) for i in range(first, first + n)]
    payloads = [lab.encode() for lab in labels]
    if bad is not None:
        payloads.insert(len(payloads) // 2, bad)
    transport.publish(transport.keys.labels, payloads, transport.settings.streams.labels_maxlen)
    return labels


def take(reader: LabelReader, n: int, timeout_s: float = 10.0, *, ack_last: bool = True) -> list[Label]:
    """The first ``n`` labels the reader yields (stopped by a timer if they do not come), the
    last one acknowledged before leaving the loop unless not ``ack_last``."""
    timer = threading.Timer(timeout_s, reader.stop)
    timer.start()
    out = []
    try:
        for label in reader:
            out.append(label)
            if len(out) == n:
                if ack_last:
                    reader.ack()
                break
    finally:
        timer.cancel()
    return out


def reader_for(settings, **kw) -> LabelReader:
    return LabelReader(settings.redis.url, prefix=settings.redis.prefix, settings=settings, block_ms=100, **kw)


def test_a_tail_from_the_start_yields_every_label_in_order(real_transport, redis_settings):
    sent = publish(real_transport, 0, 3) + publish(real_transport, 3, 2)
    with reader_for(redis_settings, start="earliest") as reader:
        got = take(reader, 5)
        assert [lab.crop_id for lab in got] == [lab.crop_id for lab in sent]
        assert all(isinstance(lab, Label) for lab in got)
        assert got[0] == sent[0]
        assert reader.counters["labels"] == 5


def test_a_tail_from_now_skips_what_was_there_and_waits_for_new_labels(real_transport, redis_settings):
    publish(real_transport, 0, 3)
    with reader_for(redis_settings) as reader:  # start="latest"
        later = threading.Timer(0.3, publish, (real_transport, 100, 2))
        later.start()
        got = take(reader, 2)
        later.join()
    assert [lab.frame_index for lab in got] == [100, 101]


def test_stop_from_another_thread_ends_the_iteration(redis_settings, real_transport):
    with reader_for(redis_settings) as reader:
        threading.Timer(0.3, reader.stop).start()
        t0 = time.monotonic()
        assert list(reader) == []
        assert time.monotonic() - t0 < 5
        assert reader.stopping


def test_a_tail_after_an_entry_id_starts_there(real_transport, redis_settings):
    publish(real_transport, 0, 2)
    after = real_transport.entries(real_transport.keys.labels, count=1, newest=True)[-1].id
    publish(real_transport, 10, 2)
    with reader_for(redis_settings, start=after) as reader:
        assert [lab.frame_index for lab in take(reader, 2)] == [10, 11]
        assert entry_order(reader.position) > entry_order(after)


def test_a_tail_skips_and_counts_bad_messages(real_transport, redis_settings):
    publish(real_transport, 0, 4, bad=b"\x81\xa1v\x01")  # a map with v=1 and nothing else
    with reader_for(redis_settings, start="earliest") as reader:
        got = take(reader, 4)
        assert [lab.frame_index for lab in got] == [0, 1, 2, 3]
        assert reader.counters["skipped"] == 1
    assert real_transport.stats().get("dead_letters", 0) == 0  # a tail leaves no trace in Redis


def test_a_group_acks_after_the_loop_body_and_redelivers_the_rest(real_transport, redis_settings):
    stream = real_transport.keys.labels
    publish(real_transport, 0, 3)
    publish(real_transport, 3, 3)
    with reader_for(redis_settings, group="app", consumer="c1", start="earliest") as reader:
        got = take(reader, 4)  # the first bundle whole, and one label of the second
    assert [lab.frame_index for lab in got] == [0, 1, 2, 3]
    # The first bundle is acknowledged; the second, not finished, stays pending for redelivery.
    assert real_transport.backlog(stream, "app") == (0, 1)
    with reader_for(redis_settings, group="app", consumer="c1") as again:
        # Left with the bundle's last label in hand, unacknowledged: it comes again...
        assert [lab.frame_index for lab in take(again, 3, ack_last=False)] == [3, 4, 5]
        assert real_transport.backlog(stream, "app") == (0, 1)
        threading.Timer(0.5, again.stop).start()
        # ... and once a loop body has finished with it, it is acknowledged.
        assert [lab.frame_index for lab in again] == [3, 4, 5]
    assert real_transport.backlog(stream, "app") == (0, 0)


def test_an_exception_in_the_loop_body_leaves_its_label_pending(real_transport, redis_settings):
    stream = real_transport.keys.labels
    publish(real_transport, 0, 1)
    publish(real_transport, 1, 1)
    with reader_for(redis_settings, group="x", consumer="c", start="earliest") as reader:
        with pytest.raises(RuntimeError):
            for label in reader:
                if label.frame_index == 1:
                    raise RuntimeError("the body failed")
        assert real_transport.backlog(stream, "x") == (0, 1)  # frame 0 done, frame 1 not
        assert [lab.frame_index for lab in take(reader, 1)] == [1]
    assert real_transport.backlog(stream, "x") == (0, 0)


def test_a_new_group_from_now_ignores_earlier_labels(real_transport, redis_settings):
    publish(real_transport, 0, 2)
    with reader_for(redis_settings, group="fresh") as reader:
        threading.Timer(0.3, publish, (real_transport, 50, 1)).start()
        assert [lab.frame_index for lab in take(reader, 1)] == [50]


def test_two_readers_of_one_group_share_the_labels(real_transport, redis_settings):
    for k in range(6):
        publish(real_transport, 10 * k, 2)
    a = reader_for(redis_settings, group="pool", consumer="a", start="earliest", batch=2)
    b = reader_for(redis_settings, group="pool", consumer="b", start="earliest", batch=2)
    with a, b:
        got_a, got_b = take(a, 6), take(b, 6)
    frames = sorted(lab.frame_index for lab in got_a + got_b)
    assert frames == sorted(10 * k + i for k in range(6) for i in range(2))
    assert got_a and got_b


def test_manual_ack_leaves_labels_pending_until_ack(real_transport, redis_settings):
    stream = real_transport.keys.labels
    publish(real_transport, 0, 2)
    with reader_for(redis_settings, group="m", consumer="c", start="earliest", auto_ack=False) as reader:
        assert len(take(reader, 2, ack_last=False)) == 2
        assert real_transport.backlog(stream, "m") == (0, 1)
        reader.ack()
        assert real_transport.backlog(stream, "m") == (0, 0)


def test_a_group_dead_letters_bad_messages_and_acks_them(real_transport, redis_settings):
    stream = real_transport.keys.labels
    publish(real_transport, 0, 2, bad=b"garbage")
    with reader_for(redis_settings, group="g", consumer="c", start="earliest") as reader:
        assert [lab.frame_index for lab in take(reader, 2)] == [0, 1]
        assert reader.counters["dead_letters"] == 1
    dead = real_transport.entries(real_transport.keys.dead)
    assert len(dead) == 1
    assert real_transport.stats()["dead_letters"] == 1
    assert real_transport.backlog(stream, "g") == (0, 0)


def test_an_idle_pending_label_of_a_dead_reader_is_reclaimed(real_transport, redis_settings):
    s = redis_settings.with_updates(worker={"reclaim_idle_ms": 100})
    publish(real_transport, 0, 1)
    dead = reader_for(s, group="r", consumer="dead", start="earliest", auto_ack=False)
    assert len(take(dead, 1, ack_last=False)) == 1  # delivered, never acknowledged: the reader "crashed"
    dead.close()
    time.sleep(0.2)
    with reader_for(s, group="r", consumer="alive") as alive:
        got = take(alive, 1)
        assert [lab.frame_index for lab in got] == [0]
        assert alive.counters["reclaimed"] == 1


def test_bad_arguments_and_an_unreachable_redis_are_one_line_errors(redis_settings):
    with pytest.raises(ValueError, match="start must be"):
        reader_for(redis_settings, start="yesterday")
    with pytest.raises(ValueError, match="start must be"):
        reader_for(redis_settings, group="g", start="1-0")  # a group starts at latest or earliest
    with pytest.raises(ConfigError, match="redis.prefix"):
        LabelReader(redis_settings.redis.url, prefix="has space")
    with pytest.raises(BrokerUnavailable, match="cannot reach Redis"):
        LabelReader("redis://127.0.0.1:1/0")


def test_a_noack_group_keeps_nothing_pending_and_redis_counts_the_labels_trimmed_unread(real_transport,
                                                                                      redis_settings):
    stream = real_transport.keys.labels
    with reader_for(redis_settings, group="p", consumer="c", noack=True) as reader:
        publish(real_transport, 0, 2)
        assert [lab.frame_index for lab in take(reader, 2)] == [0, 1]
        assert real_transport.backlog(stream, "p") == (0, 0)  # read, and nothing pending
        for i in range(2, 14):  # 12 entries into a stream of 10: the read one and 2 unread go
            real_transport.publish(stream, [make_label(frame_index=i).encode()], 10)
        assert real_transport.stats()[f"trimmed_unread:{stream}"] == 2  # only what the group had not read
        assert [lab.frame_index for lab in take(reader, 10)] == list(range(4, 14))
        assert entry_order(reader.position) == entry_order(real_transport.entries(stream, newest=True, count=1)[0].id)
    real_transport.drop_group(stream, "p")
    assert real_transport.groups(stream) == []
    real_transport.drop_group(stream, "p")  # gone already: nothing
    real_transport.drop_group(f"{stream}-none", "p")  # no stream either: nothing


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_dead_letter_refused_by_redis_is_waited_out_with_its_entry_pending(tmp_path):
    try:
        broker = EmbeddedBroker.start()
    except BrokerUnavailable as e:
        pytest.skip(str(e))
    with broker:
        s = make_settings(tmp_path, url=broker.url).with_updates(redis={"backoff_initial_s": 0.05,
                                                                         "backoff_max_s": 0.1})
        admin = Transport.connect(s)
        publish(admin, 0, 2, bad=b"garbage")
        got: list[int] = []
        with reader_for(s, group="g", consumer="c", start="earliest") as reader:
            # Full (maxmemory, noeviction): reads and acks still pass, the dead letter's XADD not.
            admin._client.config_set("maxmemory-policy", "noeviction")
            admin._client.config_set("maxmemory", 1)
            timer = threading.Timer(0.5, admin._client.config_set, ("maxmemory", 0))
            timer.start()
            stopper = threading.Timer(20, reader.stop)
            stopper.start()
            try:
                for label in reader:  # no traceback out of the loop: the outage is waited out
                    got.append(label.frame_index)
                    if label.frame_index == 1:
                        reader.ack()
                        break
            finally:
                timer.cancel()
                stopper.cancel()
            assert reader.counters["reconnects"] > 0
            assert reader.counters["dead_letters"] == 1
        # The entry stayed pending through the outage: its first label came again (at least once).
        assert got[0] == 0 and got[-1] == 1 and set(got) == {0, 1}
        assert len(admin.entries(admin.keys.dead)) == 1
        assert admin.backlog(admin.keys.labels, "g") == (0, 0)
        admin.close()


def test_a_reader_whose_group_cannot_be_made_closes_its_connection(real_transport, redis_settings, monkeypatch):
    real_transport._client.set(real_transport.keys.labels, "not a stream")  # XGROUP CREATE: WRONGTYPE
    closed: list[Transport] = []
    close = Transport.close

    def recording_close(self):
        closed.append(self)
        close(self)

    monkeypatch.setattr(Transport, "close", recording_close)
    with pytest.raises(Exception, match="WRONGTYPE"):
        reader_for(redis_settings, group="g")
    assert len(closed) == 1  # the reader's own connection, never handed to the caller
