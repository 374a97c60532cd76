"""Key names: one shard keeps today's layout; shards put each shard's keys in one slot and
spread the shards evenly over the slot space (so over the masters of a cluster)."""

from __future__ import annotations

from redis.crc import key_slot

from fer_pipeline.streams import StreamKeys, shard_tag


def test_one_shard_on_a_plain_redis_keeps_todays_keys():
    k = StreamKeys("fer")
    assert not k.sharded
    assert (k.crops, k.labels, k.stats, k.depth, k.dead) == ("fer:crops", "fer:labels", "fer:stats", "fer:depth",
                                                             "fer:dead")
    assert k.crops_shards == ("fer:crops",) and k.labels_shards == ("fer:labels",)
    assert k.crops_of("cam") == "fer:crops" and k.labels_for("fer:crops") == "fer:labels"
    assert k.frames("cam") == "fer:frames:cam"
    assert k.stats_of("fer:crops") == "fer:stats" and k.depth_of("fer:labels") == "fer:depth"
    assert k.stats_keys == ("fer:stats",)
    assert k.physical("fer:crops") == ("fer:crops",)


def test_each_shards_keys_share_one_slot():
    k = StreamKeys("fer", shards=4)
    for shard in range(4):
        crops, labels = k.crops_shards[shard], k.labels_shards[shard]
        same = {key_slot(x.encode()) for x in (crops, labels, k.stats_of(crops), k.depth_of(crops),
                                               k.stats_of(labels), k.depth_of(labels))}
        assert len(same) == 1, (shard, same)
        assert k.labels_for(crops) == labels
        assert k.logical(crops) == "fer:crops" and k.logical(labels) == "fer:labels"
        assert k.bundled(crops) and k.bundled(labels)
    # A camera's frames live with its crops (the producer's MULTI writes both).
    for camera in ("door", "hall", "lobby", "cam-7"):
        assert key_slot(k.frames(camera).encode()) == key_slot(k.crops_of(camera).encode())
    assert len(set(k.stats_keys)) == 5


def test_shards_spread_evenly_over_the_slot_space():
    # redis-cli --cluster create gives M masters M even, contiguous slot ranges.
    for shards in (1, 2, 3, 5, 16):
        for k in range(shards):
            slot = key_slot(shard_tag(k, shards).encode())
            assert k * 16384 // shards <= slot < (k + 1) * 16384 // shards
    tags = [shard_tag(k, 64) for k in range(64)]
    assert len(set(tags)) == 64


def test_one_shard_on_a_cluster_is_tagged():
    k = StreamKeys("fer", tagged=True)
    assert k.sharded and k.crops_shards != ("fer:crops",)
    assert key_slot(k.crops_shards[0].encode()) == key_slot(k.stats_of(k.crops_shards[0]).encode())


def test_a_cameras_shard_is_stable_and_cameras_spread():
    a, b = StreamKeys("fer", shards=3), StreamKeys("other", shards=3)
    cameras = [f"cam-{i}" for i in range(300)]
    assert [a.shard_of(c) for c in cameras] == [b.shard_of(c) for c in cameras]  # every process agrees
    counts = [sum(a.shard_of(c) == s for c in cameras) for s in range(3)]
    assert min(counts) > 70, counts


def test_global_keys_belong_to_no_shard():
    k = StreamKeys("fer", shards=3)
    for key in (k.dead, k.stats, k.cameras, k.epoch, k.health("worker", "w1")):
        assert k.slot_tag(key) is None
    assert k.shard_index(k.crops_shards[2]) == 2 and k.shard_index(k.labels_shards[1]) == 1
    assert k.shard_index(k.dead) is None
