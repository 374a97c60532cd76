"""Sharded streams on the real Redis (FER_STREAMS__SHARDS=3): producers write to their camera's
shard, workers label every shard with each label in its crop's shard, the logger and the
API's reader take every shard, and the group-wide figures (backlog, stats, status, retention)
add up the shards. The same code on Redis Cluster: tests/faults/test_redis_cluster.py."""

from __future__ import annotations

import time

import pytest

from fer_pipeline import health
from fer_pipeline.consumers.label_logger import LabelLoggerService
from fer_pipeline.errors import ConfigError
from fer_pipeline.label_reader import LabelReader
from fer_pipeline.messages import Label, decode
from fer_pipeline.producers.publisher import Outgoing, Publisher
from fer_pipeline.retention import expire_streams
from fer_pipeline.streams import LOGGER_GROUP, WORKERS_GROUP
from fer_pipeline.transport import Transport
from fer_pipeline.workers.inference import InferenceWorker
from tests.factories import crop_payload
from tests.fakes import MeanPredictor

SHARDS = 3


@pytest.fixture
def sharded(redis_settings):
    s = redis_settings.with_updates(streams={"shards": SHARDS, "block_ms": 50}, worker={"max_wait_ms": 0, "max_batch": 16})
    t = Transport.connect(s)
    yield s, t
    t.close()


def cameras_per_shard(t: Transport, per_shard: int = 2) -> dict[int, list[str]]:
    """Camera ids, ``per_shard`` landing in each shard."""
    out: dict[int, list[str]] = {k: [] for k in range(SHARDS)}
    i = 0
    while any(len(v) < per_shard for v in out.values()):
        cam = f"cam{i}"
        if len(out[t.keys.shard_of(cam)]) < per_shard:
            out[t.keys.shard_of(cam)].append(cam)
        i += 1
    return out


def publish_crops(t: Transport, cameras: list[str], n: int) -> None:
    for cam in cameras:
        t.publish(t.keys.crops_of(cam), [crop_payload(i, camera=cam) for i in range(n)], 10_000,
                  count_all_trimmed=True)


def labels_of(t: Transport, stream: str) -> list[Label]:
    return [decode(e.payload, expect=Label) for e in t.entries(stream)]


def test_the_worker_labels_every_shard_into_its_crops_shard(sharded):
    s, t = sharded
    by_shard = cameras_per_shard(t)
    cameras = [c for cams in by_shard.values() for c in cams]
    publish_crops(t, cameras, 20)
    w = InferenceWorker(s, t, MeanPredictor(), ident="w1")
    w.setup()
    deadline = time.monotonic() + 30
    while w.counters["crops_labelled"] < 20 * len(cameras) and time.monotonic() < deadline:
        w.step()
    w.finish()

    assert w.counters["crops_labelled"] == 20 * len(cameras)
    for shard, cams in by_shard.items():
        labels = labels_of(t, t.keys.labels_shards[shard])
        assert sorted({lb.camera_id for lb in labels}) == sorted(cams)  # each label in its crop's shard
        assert len(labels) == 20 * len(cams)
    # Every crop acked and deleted, shard by shard; the figures add the shards up.
    assert t.backlog(t.keys.crops, WORKERS_GROUP) == (0, 0)
    assert t.lengths([t.keys.crops])[t.keys.crops] == 0
    stats = t.stats()
    assert stats[f"published:{t.keys.crops}"] == stats[f"published:{t.keys.labels}"] == 20 * len(cameras)
    assert all(stats[f"published:{c}"] == 40 for c in t.keys.crops_shards)


def test_a_worker_assigned_one_shard_reads_only_that_one(sharded):
    s, t = sharded
    by_shard = cameras_per_shard(t, 1)
    publish_crops(t, [c for cams in by_shard.values() for c in cams], 5)
    w = InferenceWorker(s.with_updates(worker={"shards": [1]}), t, MeanPredictor(), ident="w1")
    w.setup()
    for _ in range(10):
        w.step()
    w.finish()
    assert [lb.camera_id for lb in labels_of(t, t.keys.labels)] == by_shard[1] * 5
    assert t.lengths([t.keys.crops])[t.keys.crops] == 10  # the two other shards wait (messages)
    assert t.backlog(t.keys.crops, WORKERS_GROUP) == (2, 0)  # in entries: one bundle each
    with pytest.raises(ConfigError, match="shard 3, but there are 3"):
        InferenceWorker(s.with_updates(worker={"shards": [3]}), t, MeanPredictor(), ident="w2")


def test_the_producers_publisher_writes_each_camera_to_its_shard(sharded):
    s, t = sharded
    by_shard = cameras_per_shard(t, 1)
    cameras = [cams[0] for cams in by_shard.values()]
    publisher = Publisher(t, s, cameras)
    publisher.start()
    for i in range(4):
        for cam in cameras:
            publisher.submit(Outgoing(cam, [crop_payload(i, camera=cam)], None))
    publisher.close(timeout=10)
    for shard, (cam,) in by_shard.items():
        assert [e.stream for e in t.entries(t.keys.crops_shards[shard])] == [t.keys.crops_shards[shard]] * 4
        assert {decode(e.payload).camera_id for e in t.entries(t.keys.crops_shards[shard])} == {cam}


def test_the_logger_logs_every_shard_exactly_once(sharded):
    s, t = sharded
    by_shard = cameras_per_shard(t, 1)
    cameras = [cams[0] for cams in by_shard.values()]
    publish_crops(t, cameras, 30)
    w = InferenceWorker(s, t, MeanPredictor(), ident="w1")
    w.setup()
    while w.counters["crops_labelled"] < 90:
        w.step()
    w.finish()
    logger = LabelLoggerService(s, t, ident="log-a")
    logger.setup()
    for _ in range(20):
        logger.step()
    assert logger.store.count() == 90 and logger.counters["labels_logged"] == 90
    assert t.backlog(t.keys.labels, LOGGER_GROUP) == (0, 0)
    # A second logger of another name, reading from the start, adds nothing (crop ids are unique).
    for stream in t.keys.labels_shards:
        t._client.xgroup_setid(stream, LOGGER_GROUP, "0")
    again = LabelLoggerService(s, t, ident="log-b", store=logger.store)
    again.setup()
    for _ in range(20):
        again.step()
    assert again.counters["duplicates_ignored"] == 90 and logger.store.count() == 90
    logger.finish()


def test_readers_status_and_retention_cover_every_shard(sharded):
    s, t = sharded
    by_shard = cameras_per_shard(t, 1)
    cameras = [cams[0] for cams in by_shard.values()]
    publish_crops(t, cameras, 10)
    w = InferenceWorker(s, t, MeanPredictor(), ident="w1")
    w.setup()
    while w.counters["crops_labelled"] < 30:
        w.step()
    w.finish()

    reader = LabelReader(s.redis.url, prefix=s.redis.prefix, group="api", start="earliest", block_ms=50, settings=s)
    got = []
    for label in reader:
        got.append(label)
        if len(got) == 30:
            reader.stop()
    reader.close()
    assert sorted((lb.camera_id, lb.frame_index) for lb in got) == sorted((c, i) for c in cameras for i in range(10))
    assert t.backlog(t.keys.labels, "api") == (0, 0)
    newest = t.entries(t.keys.labels, count=2, newest=True)
    assert len({e.id for e in newest}) == 2  # the two latest entries over all shards

    status = health.collect(t, rate_interval_s=0)
    shard_rows = {g.stream for g in status.groups if g.group == WORKERS_GROUP}
    assert len(shard_rows) == SHARDS
    assert status.published["crops"] == 30 and status.streams["labels"] == 30
    assert status.problems == []

    time.sleep(0.01)
    removed = expire_streams(t, 0.001)
    assert removed[t.keys.labels] == 30 and t.lengths([t.keys.labels])[t.keys.labels] == 0


def test_a_process_with_another_shard_count_is_refused_in_one_line(sharded):
    s, t = sharded
    t.agree_on_shards(record=True)  # what every role does first: the first one records its count
    one = s.with_updates(streams={"shards": 1})
    with pytest.raises(ConfigError, match=r"are in 3 shard\(s\): set FER_STREAMS__SHARDS=3 \(this process has 1\)"):
        Transport.connect(one)
    # A read-only look (check=False skips the comparison) and a role started anyway: the role refuses.
    stray = Transport(t._client, type(t.keys)(s.redis.prefix), one)
    with pytest.raises(ConfigError, match="FER_STREAMS__SHARDS=3"):
        LabelLoggerService(one, stray, ident="stray").run()
    Transport.connect(s).close()  # the deployment's own count passes
