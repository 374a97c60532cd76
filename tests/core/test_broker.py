from __future__ import annotations

import redis

from fer_pipeline.broker import MIN_VERSION, EmbeddedBroker


def test_embedded_broker_is_a_real_private_redis_with_xautoclaim():
    with EmbeddedBroker.start() as b:
        assert b.version >= MIN_VERSION
        assert b.url.startswith("redis://127.0.0.1:")
        r = redis.Redis.from_url(b.url)
        r.xgroup_create("s", "g", id="0", mkstream=True)
        r.xadd("s", {"d": b"x"})
        r.xreadgroup("g", "c1", {"s": ">"})
        next_id, claimed, *_ = r.xautoclaim("s", "g", "c2", min_idle_time=0)
        assert len(claimed) == 1
        r.close()
    assert b.process.poll() is not None  # stopped with the context
