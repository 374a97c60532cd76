from __future__ import annotations

import threading
import time

import msgpack
import numpy as np
import pytest

from fer_pipeline.labels import EMOTIONS
from fer_pipeline.messages import BBox, Label, decode
from fer_pipeline.streams import WORKERS_GROUP
from fer_pipeline.workers.inference import InferenceWorker
from tests.factories import crop_payload
from tests.fakes import MeanPredictor, NanPredictor


def labels_in(transport) -> list[Label]:
    return [decode(e.payload, expect=Label) for e in transport.entries(transport.keys.labels)]


def test_batches_labels_acks_and_dead_letters(fake_transport, settings):
    t = fake_transport
    s = settings.with_updates(worker={"max_batch": 4, "max_wait_ms": 0})
    t.publish(t.keys.crops, [crop_payload(i) for i in range(6)], 1000, count_all_trimmed=True)
    t.publish(t.keys.crops, [b"\xc1garbage", msgpack.packb({"v": 2, "kind": "crop"})], 1000)
    pred = MeanPredictor()
    w = InferenceWorker(s, t, pred, ident="w1")
    w.setup()
    for _ in range(5):
        w.step()
    w.finish()

    labels = labels_in(t)
    assert sorted(lb.frame_index for lb in labels) == list(range(6))
    assert all(lb.emotion == EMOTIONS[min(6, ((i * 37) % 256) // 37)] for i, lb in
               zip(sorted(lb.frame_index for lb in labels), sorted(labels, key=lambda x: x.frame_index)))
    assert max(pred.calls) <= 4  # never more than max_batch per model call
    dead = t._client.xrange(t.keys.dead)
    reasons = sorted(f[b"reason"].decode() for _, f in dead)
    assert reasons[0].startswith("malformed msgpack") and "unknown schema version 2" in reasons[1]
    assert dead[0][1][b"payload"] == b"\xc1garbage"  # the original payload is kept
    # Everything acknowledged and deleted: the crops stream is empty, nothing pending.
    assert t._client.xlen(t.keys.crops) == 0
    assert t._client.xpending(t.keys.crops, WORKERS_GROUP)["pending"] == 0


def test_non_finite_model_output_goes_to_dead_letters(fake_transport, settings):
    t = fake_transport
    t.publish(t.keys.crops, [crop_payload(1)], 1000)
    w = InferenceWorker(settings.with_updates(worker={"max_wait_ms": 0}), t, NanPredictor(), ident="w1")
    w.setup()
    w.step()
    w.finish()
    assert labels_in(t) == []
    (_, fields), = t._client.xrange(t.keys.dead)
    assert b"model output rejected" in fields[b"reason"]
    assert t._client.xlen(t.keys.crops) == 0


def test_a_bundle_split_across_batches_is_acked_once_all_its_crops_are_done(fake_transport, settings):
    """One producer round (a bundle of 10 crops, one bad) through batches of 4: the entry stays
    pending until its last crop is labelled, then goes with its depth; the bad crop is
    dead-lettered alone, under entry id #part, with its own original bytes."""
    t = fake_transport
    payloads = [crop_payload(i) for i in range(10)]
    payloads[5] = b"\xc1bad crop"
    t.publish(t.keys.crops, payloads, 1000)
    w = InferenceWorker(settings.with_updates(worker={"max_batch": 4, "max_wait_ms": 0}), t, MeanPredictor(),
                        ident="w1")
    w.setup()
    w.step()
    assert len(labels_in(t)) == 4
    assert t._client.xpending(t.keys.crops, WORKERS_GROUP)["pending"] == 1 and t.depth(t.keys.crops) == 10
    w.step()
    w.finish()
    assert sorted(lb.frame_index for lb in labels_in(t)) == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    (_, dead), = t._client.xrange(t.keys.dead)
    assert dead[b"payload"] == b"\xc1bad crop" and dead[b"id"].decode().endswith("#5")
    assert t._client.xpending(t.keys.crops, WORKERS_GROUP)["pending"] == 0
    assert t._client.xlen(t.keys.crops) == 0 and t.depth(t.keys.crops) == 0


def test_an_unreadable_bundle_is_dead_lettered_whole(fake_transport, settings):
    t = fake_transport
    t._client.xadd(t.keys.crops, {"n": b"3", "d": b"\xc1not msgpack"})
    t.publish(t.keys.crops, [crop_payload(1)], 1000)
    w = InferenceWorker(settings.with_updates(worker={"max_wait_ms": 0}), t, MeanPredictor(), ident="w1")
    w.setup()
    for _ in range(3):
        w.step()
    w.finish()
    assert [lb.frame_index for lb in labels_in(t)] == [1]
    (_, dead), = t._client.xrange(t.keys.dead)
    assert dead[b"reason"].startswith(b"malformed bundle") and dead[b"payload"] == b"\xc1not msgpack"
    assert t._client.xlen(t.keys.crops) == 0 and t._client.xpending(t.keys.crops, WORKERS_GROUP)["pending"] == 0


class SecondRowBrokenPredictor(MeanPredictor):
    def predict(self, crops):
        out = np.full((len(crops), 7), 1 / 7, np.float32)
        out[1] = 0.5  # sums to 3.5
        return out


def test_one_broken_row_is_dead_lettered_and_the_rest_of_the_batch_labelled(fake_transport, settings):
    t = fake_transport
    t.publish(t.keys.crops, [crop_payload(i) for i in range(4)], 1000)
    w = InferenceWorker(settings.with_updates(worker={"max_wait_ms": 0, "max_batch": 4}), t,
                        SecondRowBrokenPredictor(), ident="w1")
    w.setup()
    w.step()
    w.finish()
    assert sorted(lab.frame_index for lab in labels_in(t)) == [0, 2, 3]
    (_, fields), = t._client.xrange(t.keys.dead)
    assert b"must sum to 1" in fields[b"reason"]
    assert t._client.xlen(t.keys.crops) == 0 and t._client.xpending(t.keys.crops, WORKERS_GROUP)["pending"] == 0
    assert w.counters["crops_labelled"] == 3 and w.counters["dead_letters"] == 1


def test_labels_carry_the_crops_position_in_its_video(fake_transport, settings):
    """The batch packer carries it (None from live cameras and from the previous build's
    producer), and a crop dead-lettered for its model output keeps it."""
    from fer_pipeline.messages import FaceCrop

    def crop(i: int, position_s: float | None) -> FaceCrop:
        return FaceCrop.from_pixels(np.full((48, 48), 40 * i, np.uint8), camera_id="cam0", run_id="r", frame_index=i,
                                    face_index=0, faces_in_frame=1, track_id=1, bbox=BBox(x=0, y=0, w=10, h=10),
                                    captured_at=100.0, published_at=100.0, position_s=position_s)

    old_build = crop(4, None).model_dump()
    del old_build["position_s"]  # a crop from the producer of the previous build
    t = fake_transport
    t.publish(t.keys.crops, [crop(0, 0.0).encode(), crop(1, 1.5).encode(), crop(2, 2.25).encode(),
                             crop(3, None).encode(), msgpack.packb(old_build, use_bin_type=True)], 1000)
    w = InferenceWorker(settings.with_updates(worker={"max_wait_ms": 0, "max_batch": 5}), t,
                        SecondRowBrokenPredictor(), ident="w1")
    w.setup()
    w.step()
    w.finish()
    assert {lab.frame_index: lab.position_s for lab in labels_in(t)} == {0: 0.0, 2: 2.25, 3: None, 4: None}
    (_, fields), = t._client.xrange(t.keys.dead)  # the rejected crop keeps its position
    assert decode(fields[b"payload"], expect=FaceCrop).position_s == 1.5


@pytest.mark.redis
def test_pending_crops_of_a_dead_worker_are_reclaimed(real_transport, redis_settings):
    t = real_transport
    t.ensure_group(t.keys.crops, WORKERS_GROUP)
    t.publish(t.keys.crops, [crop_payload(i) for i in range(5)], 1000)
    # A worker that read the crops and died before acking them.
    taken = t.read_group([t.keys.crops], WORKERS_GROUP, "dead-worker", count=10, block_ms=100)
    assert len(taken) == 5
    s = redis_settings.with_updates(worker={"reclaim_idle_ms": 200, "reclaim_every_s": 0.1, "max_wait_ms": 1})
    w = InferenceWorker(s, t, MeanPredictor(), ident="alive")
    thread = threading.Thread(target=w.run)
    thread.start()
    deadline = time.time() + 10
    while len(labels_in(t)) < 5 and time.time() < deadline:
        time.sleep(0.05)
    w.request_stop()
    thread.join(5)
    assert sorted(lb.frame_index for lb in labels_in(t)) == list(range(5))
    assert w.counters["crops_reclaimed"] == 5
    assert t._client.xpending(t.keys.crops, WORKERS_GROUP)["pending"] == 0


@pytest.mark.redis
def test_blocking_worker_labels_crops_as_they_arrive(real_transport, redis_settings):
    t = real_transport
    w = InferenceWorker(redis_settings.with_updates(worker={"max_wait_ms": 2}), t, MeanPredictor(), ident="w")
    thread = threading.Thread(target=w.run)
    thread.start()
    for i in range(20):
        t.publish(t.keys.crops, [crop_payload(i)], 1000, count_all_trimmed=True)
        time.sleep(0.005)
    deadline = time.time() + 10
    while len(labels_in(t)) < 20 and time.time() < deadline:
        time.sleep(0.05)
    w.request_stop()
    thread.join(5)
    assert not thread.is_alive()
    labels = labels_in(t)
    assert len(labels) == 20 and len({lb.crop_id for lb in labels}) == 20
    assert all(lb.labelled_at >= lb.captured_at for lb in labels)


def test_open_batch_is_waited_out_in_the_worker_not_in_a_redis_block(fake_transport, settings, monkeypatch):
    # Redis honours a short BLOCK timeout only when its event loop next wakes (up to 100 ms at
    # the default hz 10), so the batch wait happens here and the read that follows never blocks.
    t = fake_transport
    s = settings.with_updates(worker={"max_batch": 8, "max_wait_ms": 20})
    t.publish(t.keys.crops, [crop_payload(i) for i in range(3)], 1000, count_all_trimmed=True)
    w = InferenceWorker(s, t, MeanPredictor(), ident="w1")
    w.setup()
    blocks = []
    real = t.read_group

    def spy(*args, **kwargs):
        blocks.append(kwargs.get("block_ms"))
        return real(*args, **kwargs)

    monkeypatch.setattr(t, "read_group", spy)
    w.step()  # nothing open yet: a blocking read, which returns the 3 crops at once
    assert labels_in(t) == []
    t0 = time.monotonic()
    w.step()  # the open batch finds nothing waiting, waits its 20 ms here, takes what arrived, closes
    assert time.monotonic() - t0 >= 0.015
    assert blocks == [s.streams.block_ms, None, None]
    assert len(labels_in(t)) == 3


def test_crops_already_waiting_join_an_open_batch_without_a_wait(fake_transport, settings):
    """A bundle can leave a batch a few crops short: with more crops in Redis, the worker
    takes them at once instead of sleeping out the batch's wait (under load, every batch)."""
    t = fake_transport
    s = settings.with_updates(worker={"max_batch": 8, "max_wait_ms": 1000})
    t.publish(t.keys.crops, [crop_payload(i) for i in range(6)], 1000)
    w = InferenceWorker(s, t, MeanPredictor(), ident="w1")
    w.setup()
    w.step()  # reads the first bundle: a batch of 6 of 8 is open
    assert labels_in(t) == []
    t.publish(t.keys.crops, [crop_payload(i) for i in range(6, 12)], 1000)
    t0 = time.monotonic()
    w.step()  # the second bundle is waiting: taken at once, the batch is full and goes
    assert time.monotonic() - t0 < 0.5
    assert len(labels_in(t)) == 8


def test_a_redis_error_while_dead_lettering_loses_no_crop(fake_transport, settings, monkeypatch):
    """Redis goes away in the middle of parking a bad crop: the bundle is let go, not held
    forever; once Redis is back the worker reclaims it from itself and finishes it."""
    import redis as redis_lib

    t = fake_transport
    s = settings.with_updates(worker={"max_batch": 8, "max_wait_ms": 0, "reclaim_idle_ms": 100,
                                      "reclaim_every_s": 0.05})
    t.publish(t.keys.crops, [crop_payload(0), b"\xc1bad", crop_payload(2), crop_payload(3)], 1000)
    real = t.dead_letter
    fails = iter([True])

    def flaky(**kwargs):
        if next(fails, False):
            raise redis_lib.ConnectionError("Redis went away")
        return real(**kwargs)

    monkeypatch.setattr(t, "dead_letter", flaky)
    w = InferenceWorker(s, t, MeanPredictor(), ident="w1")
    w.setup()
    with pytest.raises(redis_lib.ConnectionError):
        w.step()
    assert w._held == {}
    time.sleep(0.15)  # idle long enough to be reclaimed
    for _ in range(3):
        w.step()
    w.finish()
    assert sorted(lb.frame_index for lb in labels_in(t)) == [0, 2, 3]
    assert t._client.xlen(t.keys.dead) == 1 and t._client.xlen(t.keys.crops) == 0 and t.depth(t.keys.crops) == 0


def test_a_failed_rejection_puts_the_batch_back(fake_transport, settings, monkeypatch):
    import redis as redis_lib

    t = fake_transport
    t.publish(t.keys.crops, [crop_payload(i) for i in range(4)], 1000)
    w = InferenceWorker(settings.with_updates(worker={"max_batch": 4, "max_wait_ms": 0}), t,
                        SecondRowBrokenPredictor(), ident="w1")
    w.setup()
    real = t.dead_letter
    fails = iter([True])
    monkeypatch.setattr(t, "dead_letter", lambda **kw: (_ for _ in ()).throw(redis_lib.ConnectionError("down"))
                        if next(fails, False) else real(**kw))
    with pytest.raises(redis_lib.ConnectionError):
        w.step()
    assert len(w.batcher) == 4  # back in the batch, its entry still held
    w.step()
    w.finish()
    assert sorted(lb.frame_index for lb in labels_in(t)) == [0, 2, 3]
    assert t._client.xlen(t.keys.crops) == 0 and t._client.xpending(t.keys.crops, WORKERS_GROUP)["pending"] == 0


def test_a_burst_of_full_bundles_after_small_ones_is_not_hoarded(fake_transport, settings):
    t = fake_transport
    s = settings.with_updates(worker={"max_batch": 64, "max_wait_ms": 1000})
    t.publish(t.keys.crops, [crop_payload(0)], 1000)
    w = InferenceWorker(s, t, MeanPredictor(), ident="w1")
    w.setup()
    w.step()  # a one-crop bundle: the batch is open
    for k in range(20):
        t.publish(t.keys.crops, [crop_payload(i) for i in range(64 * k + 1, 64 * k + 65)], 100_000)
    w.step()
    # At most room/8 entries per read: 8 bundles, not 63 (4,032 crops) on one worker.
    assert t._client.xpending(t.keys.crops, WORKERS_GROUP)["pending"] <= 9
