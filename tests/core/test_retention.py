"""Time-based retention of the Redis streams (XTRIM MINID on the broker's clock)."""

from __future__ import annotations

import threading
import time

import pytest
from typer.testing import CliRunner

from fer_pipeline.cli import app
from fer_pipeline.retention import RetentionService, expire_streams

pytestmark = pytest.mark.redis


def test_old_entries_expire_and_are_counted(real_transport):
    t = real_transport
    k = t.keys
    t._client.sadd(k.cameras, "door")
    t.publish(k.crops, [b"old"] * 3, maxlen=100)
    t.publish(k.frames("door"), [b"old"] * 2, maxlen=100)
    time.sleep(0.4)
    t.publish(k.crops, [b"new"] * 2, maxlen=100)
    t.publish(k.labels, [b"new"], maxlen=100)
    removed = expire_streams(t, max_age_s=0.2)
    assert removed == {k.crops: 3, k.frames("door"): 2}
    # The crops stream holds bundles: its depth (messages held) follows what expired.
    assert t.depth(k.crops) == 2 and [e.payload for e in t.entries(k.crops)] == [b"new"] * 2
    assert t._client.xlen(k.labels) == 1 and t._client.xlen(k.frames("door")) == 0
    assert t.stats()[f"expired:{k.crops}"] == 3
    assert expire_streams(t, max_age_s=60) == {}


def test_service_trims_periodically_and_stops(redis_settings, real_transport):
    s = redis_settings.with_updates(consumer={"stream_max_age_s": 0.2}, streams={"block_ms": 50})
    svc = RetentionService(s, real_transport, "janitor", every_s=0.1)
    real_transport.publish(real_transport.keys.crops, [b"x"] * 4, maxlen=100)
    th = threading.Thread(target=svc.run)
    th.start()
    deadline = time.monotonic() + 5
    while real_transport._client.xlen(real_transport.keys.crops) and time.monotonic() < deadline:
        time.sleep(0.05)
    svc.request_stop()
    th.join(timeout=5)
    assert not th.is_alive()
    assert real_transport._client.xlen(real_transport.keys.crops) == 0 and svc.counters["entries_expired"] == 4
    with pytest.raises(ValueError):
        RetentionService(redis_settings, real_transport)


def test_retention_once_command(redis_settings, real_transport):
    real_transport.publish(real_transport.keys.labels, [b"x"] * 3, maxlen=100)
    time.sleep(0.3)
    r = CliRunner().invoke(app, ["retention", "--once", "--max-age", "0.1", "--redis-url", redis_settings.redis.url,
                                 "--prefix", redis_settings.redis.prefix])
    assert r.exit_code == 0, r.output
    assert "expired 3 entries" in r.output
    r = CliRunner().invoke(app, ["retention", "--once", "--redis-url", redis_settings.redis.url])
    assert r.exit_code != 0 and "--max-age" in str(r.exception)
