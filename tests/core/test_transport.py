from __future__ import annotations

import pytest

from fer_pipeline.errors import BrokerUnavailable
from fer_pipeline.transport import Ack, Transport
from fer_pipeline.urls import redact_url


@pytest.mark.redis
def test_publish_bounds_the_stream_and_counts_only_unfinished_trims(real_transport):
    t = real_transport
    stream = f"{t.keys.prefix}:s"
    t.ensure_group(stream, "g")
    t.publish(stream, [b"%d" % i for i in range(5)], maxlen=5)
    got = t.read_group([stream], "g", "c", count=2, block_ms=None)  # the group has read 2 of 5
    assert [e.payload for e in got] == [b"0", b"1"]
    t.ack(stream, "g", [got[0].id])  # 0 done; 1 delivered but never acked (its consumer died)
    t.publish(stream, [b"5", b"6", b"7", b"8"], maxlen=5)  # trims 0..3: 0 was done; 1 pending; 2,3 unread
    assert t._client.xlen(stream) == 5
    stats = t.stats()
    assert stats[f"trimmed_unread:{stream}"] == 3
    assert stats[f"published:{stream}"] == 9


@pytest.mark.redis
def test_count_all_trimmed_for_streams_whose_read_entries_are_deleted(real_transport):
    t = real_transport
    stream = f"{t.keys.prefix}:crops-like"
    t.publish(stream, [b"a", b"b", b"c"], maxlen=2, count_all_trimmed=True)
    assert t.stats()[f"trimmed_unread:{stream}"] == 1


def test_redact_url_hides_passwords():
    assert redact_url("redis://user:s3cret@host:6380/1") == "redis://user:***@host:6380/1"
    assert redact_url("rediss://:pw@h/0") == "rediss://:***@h/0"
    assert redact_url("redis://localhost:6379/0") == "redis://localhost:6379/0"


def test_unreachable_redis_is_one_readable_error(settings):
    s = settings.with_updates(redis={"url": "redis://:hunter2@127.0.0.1:1/0", "connect_timeout_s": 0.5})
    with pytest.raises(BrokerUnavailable) as e:
        Transport.connect(s)
    msg = str(e.value)
    assert "cannot reach Redis at redis://:***@127.0.0.1:1/0" in msg and "hunter2" not in msg
    assert "\n" not in msg


def test_missing_url_is_explained(settings):
    with pytest.raises(BrokerUnavailable, match="no Redis URL"):
        Transport.connect(settings)


def test_autoclaim_recreates_a_group_lost_with_a_redis_restart(fake_transport):
    t = fake_transport
    t.publish(t.keys.crops, [b"x"], 100)  # a stream without the group, as after a restart
    assert t.autoclaim(t.keys.crops, "workers", "w", min_idle_ms=0, count=10) == ([], [])
    assert [g["name"] for g in t._client.xinfo_groups(t.keys.crops)] == [b"workers"]


@pytest.mark.redis
def test_publish_with_ack_acknowledges_and_deletes_what_it_answers(real_transport):
    """The worker's labels and the ack of their crops in one script: 2,500 ids cross the
    1,000-value slices the script unpacks in."""
    t = real_transport
    src, out = f"{t.keys.prefix}:in", f"{t.keys.prefix}:out"
    t.ensure_group(src, "g")
    t.publish(src, [b"%d" % i for i in range(2600)], maxlen=10_000)
    got = []
    while batch := t.read_group([src], "g", "c", count=1000, block_ms=None):
        got += batch
    assert len(got) == 2600
    ids = t.publish(out, [b"label"] * 3, maxlen=100, ack=Ack(src, "g", [e.id for e in got[:2500]]))
    assert len(ids) == 3 and t._client.xlen(out) == 3
    assert t._client.xlen(src) == 100  # the 2,500 answered entries are deleted ...
    assert t._client.xpending(src, "g")["pending"] == 100  # ... and acknowledged; the rest still pending
    assert t.stats()[f"published:{out}"] == 3


def test_publish_many_is_one_pipeline_and_survives_a_flushed_script_cache(fake_transport):
    t = fake_transport
    calls = [(t.keys.crops, [b"c1", b"c2"], 100, True), (t.keys.frames("a"), [b"f1"], 100, False),
             (t.keys.frames("b"), [], 100, False)]
    t.publish_many(calls)
    t._client.script_flush()  # as after a Redis restart: EVALSHA answers NOSCRIPT
    t.publish_many(calls)
    assert [e.payload for e in t.entries(t.keys.crops)] == [b"c1", b"c2"] * 2
    assert t._client.xlen(t.keys.frames("a")) == 2 and not t._client.exists(t.keys.frames("b"))
    assert t.stats()[f"published:{t.keys.crops}"] == 4


def test_tls_options_on_a_plain_url_are_one_line_with_a_hint(tmp_path):
    from fer_pipeline.errors import BrokerUnavailable
    from tests.conftest import make_settings

    s = make_settings(tmp_path, url="redis://127.0.0.1:1/0?ssl_cert_reqs=required")
    with pytest.raises(BrokerUnavailable, match="TLS options need a rediss:// URL"):
        Transport.connect(s)
