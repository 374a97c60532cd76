"""`kill -9` of a worker holding a batch: another worker reclaims its crops, and the log ends
with exactly one row per published crop."""

from __future__ import annotations

import signal

import pytest

from fer_pipeline import bundles
from fer_pipeline.messages import FaceCrop, decode
from fer_pipeline.streams import LOGGER_GROUP, WORKERS_GROUP
from tests.faults.conftest import client_for, group_info, log_rows, replay_spec, stats, wait_alive, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(150)]

CROPS = 300


def test_killed_worker_mid_batch_loses_and_duplicates_nothing(cluster, redis_settings, data_dir, record):
    prefix = redis_settings.redis.prefix
    fast_reclaim = redis_settings.with_updates(worker={"reclaim_idle_ms": 2000, "reclaim_every_s": 0.2})
    # The victim gathers crops for up to 30 s before it infers: whatever it holds when killed
    # is delivered to it and unacknowledged, i.e. mid-batch.
    hoarder = fast_reclaim.with_updates(worker={"max_batch": 4096, "max_wait_ms": 30_000})
    r = client_for(redis_settings)
    keys = f"{prefix}:crops", f"{prefix}:labels"

    logger = cluster.start("logger", "logger", "--ident", "log", settings=fast_reclaim)
    victim = cluster.start("victim", "worker", "--ident", "victim", settings=hoarder)
    survivor = cluster.start("survivor", "worker", "--ident", "survivor", settings=fast_reclaim)
    wait_alive(r, prefix, {"logger:log", "worker:victim", "worker:survivor"}, [logger, victim, survivor])
    producer = cluster.start("producer", "producer", "--source", replay_spec(data_dir, fps=60, limit=CROPS),
                             "--camera-id", "replay", "--no-frames", settings=fast_reclaim)

    def crops_held() -> set[str]:
        """The crops in the entries (bundles) the victim holds unacknowledged (the PEL outlives it)."""
        pel = r.xpending_range(keys[0], WORKERS_GROUP, min="-", max="+", count=10_000, consumername="victim")
        return {decode(payload, expect=FaceCrop).crop_id
                for p in pel for _, fields in r.xrange(keys[0], min=p["message_id"], max=p["message_id"])
                for payload in bundles.unpack(fields)[0]}

    held = wait_until(lambda: crops_held() if len(crops_held()) >= 20 else None, 60,
                      "the victim worker to hold 20 unacknowledged crops")
    victim.signal(signal.SIGKILL)
    victim.wait(10)
    held_crops = crops_held()  # which crops were in the dead worker's hands
    assert len(held_crops) >= len(held)

    assert producer.wait(60) == 0
    db = redis_settings.consumer.db
    wait_until(lambda: len(log_rows(db)) >= CROPS, 60, f"{CROPS} rows in the log")
    wait_until(lambda: group_info(r, keys[1], LOGGER_GROUP).get("lag") == 0, 20, "the logger to read every label")
    assert survivor.stop() == 0 and logger.stop() == 0

    rows = log_rows(db)
    figures = stats(r, prefix)
    crop_ids = [row[0] for row in rows]
    assert figures[f"published:{keys[0]}"] == CROPS
    assert len(rows) == CROPS and len(set(crop_ids)) == CROPS  # no loss, no double count
    by_crop = {row[0]: row[2] for row in rows}
    assert all(by_crop[c] == "survivor" for c in held_crops)  # the dead worker's batch, reclaimed
    assert r.xpending(keys[0], WORKERS_GROUP)["pending"] == 0
    assert r.xlen(keys[0]) == 0  # every crop acknowledged and deleted
    reclaimed = survivor.counters()["crops_reclaimed"]
    assert reclaimed >= len(held_crops)
    assert figures.get("dead_letters", 0) == 0
    record(published=CROPS, held_by_killed_worker=len(held_crops), reclaimed=int(reclaimed),
           labels_published=figures[f"published:{keys[1]}"], rows_in_log=len(rows), dead_letters=0)
