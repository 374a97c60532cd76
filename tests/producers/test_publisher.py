from __future__ import annotations

import threading
import time

import pytest
import redis

from fer_pipeline.producers.publisher import MAX_QUEUED, Outgoing, Publisher


def _id(entry_id: bytes | str) -> tuple[int, int]:
    ms, seq = (entry_id.decode() if isinstance(entry_id, bytes) else entry_id).split("-")
    return int(ms), int(seq)


def _payloads(transport, key) -> list[bytes]:
    return [e.payload for e in transport.entries(key)]


@pytest.mark.redis
def test_cameras_share_round_trips_and_keep_their_order(redis_settings, real_transport):
    """Four camera threads hand over 120 frames each as fast as they can (480 in all: the
    queue holds them, nothing is dropped): every message arrives, in order per camera, each
    frame's crops before the frame, in far fewer round trips than frames."""
    t = real_transport
    cams = ["a", "b", "c", "d"]
    assert MAX_QUEUED >= 4 * 120
    pub = Publisher(t, redis_settings, cams)
    pub.start()

    def camera(cid: str) -> None:
        for i in range(120):
            assert pub.submit(Outgoing(cid, [b"%s-%d-0" % (cid.encode(), i), b"%s-%d-1" % (cid.encode(), i)],
                                       b"%s-frame-%d" % (cid.encode(), i)))

    threads = [threading.Thread(target=camera, args=(c,)) for c in cams]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert all(pub.drain(c, timeout=10) for c in cams)
    pub.close(timeout=10)

    crops = _payloads(t, t.keys.crops)
    assert len(crops) == 4 * 120 * 2
    for cid in cams:
        mine = [p for p in crops if p.startswith(cid.encode() + b"-")]
        assert mine == [b"%s-%d-%d" % (cid.encode(), i, k) for i in range(120) for k in range(2)]
        assert _payloads(t, t.keys.frames(cid)) == [b"%s-frame-%d" % (cid.encode(), i) for i in range(120)]
        assert pub.counts(cid) == {"crops_published": 240, "frames_published": 120, "crops_dropped": 0,
                                   "frames_dropped": 0, "publish_errors": 0}
        # A frame's crops are in Redis no later than the frame that announces them (ids start
        # with the millisecond; sequence numbers are per stream, so only that part compares).
        last_crop = [_id(e.id) for e in t.entries(t.keys.crops) if e.payload == b"%s-119-1" % cid.encode()][0]
        assert last_crop[0] <= _id(t._client.xrange(t.keys.frames(cid))[-1][0])[0]
    assert pub.round_trips < 480 / 2  # group commit: frames queued during a round trip share the next
    assert t.stats()[f"published:{t.keys.crops}"] == 960


def test_a_lone_frame_goes_out_at_once(settings, fake_transport):
    pub = Publisher(fake_transport, settings, ["a"])
    pub.start()
    t0 = time.monotonic()
    pub.submit(Outgoing("a", [b"crop"], None))
    assert pub.drain("a", timeout=5)
    assert time.monotonic() - t0 < 1.0 and pub.round_trips == 1
    pub.close(timeout=5)
    assert _payloads(fake_transport, fake_transport.keys.crops) == [b"crop"]


def test_redis_down_drops_and_counts_and_never_blocks_the_camera(settings, fake_transport, monkeypatch):
    s = settings.with_updates(redis={"backoff_initial_s": 30.0})
    gate = threading.Event()

    def down(calls):
        gate.wait(5)  # a round trip that hangs, then fails
        raise redis.ConnectionError("down")

    monkeypatch.setattr(fake_transport, "publish_many", down)
    pub = Publisher(fake_transport, s, ["a"])
    pub.start()
    t0 = time.monotonic()
    for i in range(50):  # the first is in flight; the rest queue behind it
        pub.submit(Outgoing("a", [b"c%d" % i], b"f%d" % i))
    assert time.monotonic() - t0 < 0.5  # handing over never waited on the hung round trip
    gate.set()
    assert pub.drain("a", timeout=5)
    assert not pub.accepting()  # backing off: the next frames are dropped without trying
    assert not pub.submit(Outgoing("a", [b"late"], None))
    pub.close(timeout=5)
    c = pub.counts("a")
    assert c["crops_dropped"] == 51 and c["frames_dropped"] == 50 and c["crops_published"] == 0
    assert c["publish_errors"] == 1  # one failed round trip; what queued behind it was dropped unsent
    assert pub.queued_crops == 0


def test_queue_is_bounded_and_close_sends_what_is_queued(settings, fake_transport):
    pub = Publisher(fake_transport, settings, ["a"])  # not started: nothing leaves the queue yet
    for i in range(MAX_QUEUED + 5):
        pub.submit(Outgoing("a", [b"c%d" % i], None))
    assert pub.queued_crops == MAX_QUEUED and pub.counts("a")["crops_dropped"] == 5
    pub.start()
    pub.close(timeout=10)  # drains before stopping
    assert len(_payloads(fake_transport, fake_transport.keys.crops)) == MAX_QUEUED
    assert fake_transport.depth(fake_transport.keys.crops) == MAX_QUEUED
    assert pub.counts("a")["crops_published"] == MAX_QUEUED and pub.queued_crops == 0
    assert not pub.submit(Outgoing("a", [b"after close"], None))


def test_a_refusing_redis_drops_and_counts_and_the_publisher_lives_on(settings, fake_transport, monkeypatch):
    """Not down but refusing (OOM, READONLY, WRONGTYPE): the batch is dropped and counted, the
    publisher backs off and keeps sending afterwards instead of dying silently."""
    s = settings.with_updates(redis={"backoff_initial_s": 0.0})
    real = fake_transport.publish_many
    fails = iter([True])

    def refusing(calls):
        if next(fails, False):
            raise redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'")
        return real(calls)

    monkeypatch.setattr(fake_transport, "publish_many", refusing)
    pub = Publisher(fake_transport, s, ["a"])
    pub.start()
    assert pub.submit(Outgoing("a", [b"first"], None))
    assert pub.drain("a", timeout=5)
    assert pub.submit(Outgoing("a", [b"second"], None))
    assert pub.drain("a", timeout=5)
    pub.close(timeout=5)
    c = pub.counts("a")
    assert c["publish_errors"] == 1 and c["crops_dropped"] == 1 and c["crops_published"] == 1
    assert _payloads(fake_transport, fake_transport.keys.crops) == [b"second"]
    assert pub.queued_crops == 0
