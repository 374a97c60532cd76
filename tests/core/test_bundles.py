"""Bundled streams (several messages per entry, fer_pipeline/bundles.py): wire format, the
message-counted bound, depth and acks, on the real Redis where the Lua script runs."""

from __future__ import annotations

import msgpack
import pytest

from fer_pipeline import bundles
from fer_pipeline.transport import Ack, Transport


def envelope(messages) -> bytes:
    return msgpack.packb({"v": 2, "kind": "bundle", "messages": messages})


def test_pack_unpack_round_trip_in_bundles_of_at_most_max():
    payloads = [b"m%d" % i for i in range(130)]
    bodies, counts = bundles.pack(payloads, max_bundle=64)
    assert counts == [64, 64, 2]
    back = [p for body, n in zip(bodies, counts) for p in bundles.unpack({b"n": b"%d" % n, b"d": body})[0]]
    assert back == payloads


@pytest.mark.parametrize(("fields", "reason"), [
    ({b"n": b"1", b"d": b"\xc1"}, "malformed bundle"),
    ({b"n": b"2", b"d": envelope([b"a"])}, "says 2 messages, holds 1"),
    ({b"n": b"1", b"d": msgpack.packb([b"a"])}, "not a version 2 bundle envelope"),
    ({b"n": b"1", b"d": msgpack.packb({"v": 1, "kind": "crop"})}, "not a version 2 bundle envelope"),
    ({b"n": b"65", b"d": envelope([b"m"] * 65)}, "malformed bundle"),  # more than MAX_BUNDLE
    ({b"n": b"1", b"d": envelope(["text, not bytes"])}, "not a list of messages"),
    ({b"n": b"0", b"d": envelope([])}, "not a list of messages"),
    ({b"x": b"y"}, "no message field"),
    ({b"n": b"1"}, "no envelope field"),
])
def test_a_malformed_entry_reads_as_one_part_with_its_raw_body_and_a_reason(fields, reason):
    parts, why = bundles.unpack(fields)
    assert len(parts) == 1 and why is not None and reason in why
    assert parts[0] == fields.get(b"d", b"")


def test_a_reader_from_before_bundles_dead_letters_a_bundle_with_a_reason():
    """Its decode sees a message of schema version 2 in ``d``: refused with a reason (so the
    bundle is parked whole with its bytes, not taken for an empty entry and lost)."""
    from fer_pipeline.errors import MessageError
    from fer_pipeline.messages import decode

    (body,), _ = bundles.pack([b"a", b"b"])
    with pytest.raises(MessageError, match="unknown schema version 2"):
        decode(body)


def test_single_message_entries_and_deleted_entries_still_read():
    assert bundles.unpack({b"d": b"one"}) == ([b"one"], None)
    assert bundles.unpack(None) == ([None], None)  # deleted between delivery and claim
    assert bundles.unpack({}) == ([None], None)


@pytest.mark.redis
def test_a_publish_is_one_entry_per_bundle_and_readers_get_messages(real_transport):
    t = real_transport
    t.ensure_group(t.keys.crops, "workers")
    t.publish(t.keys.crops, [b"a%d" % i for i in range(70)], maxlen=1000)  # 64 + 6
    t.publish(t.keys.crops, [b"b0"], maxlen=1000)
    assert t._client.xlen(t.keys.crops) == 3 and t.depth(t.keys.crops) == 71
    got = t.read_group([t.keys.crops], "workers", "w", count=2, block_ms=None)
    assert [e.payload for e in got] == [b"a%d" % i for i in range(70)]
    assert [(e.part, e.parts) for e in got[62:66]] == [(62, 64), (63, 64), (0, 6), (1, 6)]
    assert got[65].ref == f"{got[65].id}#1" and len({e.id for e in got}) == 2
    assert t.stats()[f"published:{t.keys.crops}"] == 71


@pytest.mark.redis
def test_the_bound_counts_messages_and_drops_whole_oldest_bundles(real_transport):
    t = real_transport
    s = t.keys.crops
    t.ensure_group(s, "workers")
    for i in range(4):  # bundles of 3: 12 messages
        t.publish(s, [b"%d-%d" % (i, k) for k in range(3)], maxlen=12)
    done = t.read_group([s], "workers", "w", count=1, block_ms=None)  # the group has read bundle 0
    t._client.xack(s, "workers", done[0].id)  # and finished it
    t.publish(s, [b"4-0", b"4-1"], maxlen=12)  # 14 > 12: bundle 0 goes (done), then 11 fit
    assert t.depth(s) == 11 and t._client.xlen(s) == 4
    assert t.stats().get(f"trimmed_unread:{s}", 0) == 0
    t.publish(s, [b"5-0"] * 4, maxlen=12)  # 15 > 12: bundle 1 (unread, 3 messages) goes
    assert t.depth(s) == 12 and t.stats()[f"trimmed_unread:{s}"] == 3
    assert [e.payload for e in t.entries(s)][:3] == [b"2-0", b"2-1", b"2-2"]
    # count_all (the producers' setting: acked crops are deleted) counts every trimmed message.
    t.publish(s, [b"6-0"] * 3, maxlen=12, count_all_trimmed=True)
    assert t.depth(s) == 12 and t.stats()[f"trimmed_unread:{s}"] == 6


@pytest.mark.redis
def test_a_counted_ack_lowers_the_depth_by_what_it_deleted_once(real_transport):
    t = real_transport
    s = t.keys.crops
    t.ensure_group(s, "workers")
    t.publish(s, [b"a"] * 5, maxlen=100)
    t.publish(s, [b"b"] * 2, maxlen=100)
    got = t.read_group([s], "workers", "w", count=10, block_ms=None)
    first = got[0].id
    t.ack(s, "workers", [first], delete=True, messages=[5])
    t.ack(s, "workers", [first], delete=True, messages=[5])  # a retried ack: already gone, no change
    assert t.depth(s) == 2 and t._client.xpending(s, "workers")["pending"] == 1
    labels = f"{t.keys.prefix}:labels"
    t.publish(labels, [b"l1", b"l2"], maxlen=100, ack=Ack(s, "workers", [got[-1].id], [2]))
    assert t.depth(s) == 0 and t._client.xlen(s) == 0 and len(t.entries(labels)) == 2
    assert t._client.xpending(s, "workers")["pending"] == 0


@pytest.mark.redis
def test_the_depth_heals_when_the_stream_is_emptied_behind_its_back(real_transport):
    t = real_transport
    s = t.keys.crops
    t.publish(s, [b"a"] * 5, maxlen=100)
    t._client.xtrim(s, maxlen=0)  # somebody trimmed by hand: the counter says 5, the stream is empty
    assert t.depth(s) == 0
    t.publish(s, [b"b"] * 2, maxlen=100)
    assert t.depth(s) == 2


@pytest.mark.redis
def test_publish_then_read_delivers_a_batch_and_takes_the_next_in_one_trip(real_transport):
    t = real_transport
    crops, labels = t.keys.crops, t.keys.labels
    t.ensure_group(crops, "workers")
    t.publish(crops, [b"a0", b"a1"], maxlen=100)
    t.publish(crops, [b"b0", b"b1", b"b2"], maxlen=100)
    first = t.read_group([crops], "workers", "w", count=1, block_ms=None)
    nxt = t.publish_then_read(labels, [b"l0", b"l1"], 100, ack=Ack(crops, "workers", [first[0].id], [2]),
                              read=crops, group="workers", consumer="w", count=5)
    assert [e.payload for e in nxt] == [b"b0", b"b1", b"b2"]
    assert [e.payload for e in t.entries(labels)] == [b"l0", b"l1"]
    assert t.depth(crops) == 3 and t._client.xpending(crops, "workers")["pending"] == 1
    # The group lost (a Redis restart): the labels still go out, the read recreates the group.
    t._client.xgroup_destroy(crops, "workers")
    assert t.publish_then_read(labels, [b"l2"], 100, ack=None, read=crops, group="workers", consumer="w",
                               count=5) == []
    assert len(t.entries(labels)) == 3 and [g["name"] for g in t._client.xinfo_groups(crops)] == [b"workers"]


def test_an_oversized_bundle_body_is_malformed_not_fanned_out():
    body = envelope([b"x" * 100] * 20)  # 64 messages of 10 bytes could not take 2 KB
    parts, why = bundles.unpack({b"n": b"20", b"d": body}, max_message_bytes=10)
    assert parts == [body] and "exceeds" in why


@pytest.mark.redis
def test_one_publish_larger_than_the_bound_keeps_only_its_newest_bundles(real_transport):
    t = real_transport
    s = t.keys.crops
    t.publish(s, [b"m"] * 300, maxlen=100)  # bundles of 64, 64, 64, 64, 44: the oldest four go
    assert t.depth(s) == 44 and len(t.entries(s)) == 44
    assert t.stats()[f"trimmed_unread:{s}"] == 256
    t.publish(s, [b"m"] * 150, maxlen=100)  # bundles of 64, 64, 22: the old 44 and the first 64 go
    assert t.depth(s) == 86 and t._client.xlen(s) == 2
    t.publish(s, [b"m"] * 64, maxlen=10)  # one bundle larger than the bound stays, alone
    assert t.depth(s) == 64 and t._client.xlen(s) == 1


@pytest.mark.redis
def test_a_stream_without_a_depth_record_is_counted_one_message_per_entry(real_transport):
    """Entries from before bundles (single messages), or a depth key deleted by hand: the
    bound still holds, counting each old entry as one message."""
    t = real_transport
    s = t.keys.crops
    for i in range(100):
        t._client.xadd(s, {"d": b"%d" % i})
    for _ in range(20):
        t.publish(s, [b"new"] * 10, maxlen=100)
    assert t.depth(s) == 100 == len(t.entries(s))


def test_a_deleted_pending_entry_is_reported_missing_on_the_embedded_redis_6(tmp_path):
    """Redis 6.2 (the embedded broker) claims a deleted pending entry as a bare nil and keeps
    it pending: autoclaim must name it missing (to be acked), not hand back an entry without id."""
    from fer_pipeline.broker import EmbeddedBroker
    from tests.conftest import make_settings

    with EmbeddedBroker.start() as b:
        s = make_settings(tmp_path, url=b.url)
        t = Transport.connect(s)
        try:
            t.ensure_group(t.keys.crops, "workers")
            t.publish(t.keys.crops, [b"a", b"b"], maxlen=100)
            (gone_id,) = {e.id for e in t.read_group([t.keys.crops], "workers", "dead", count=5, block_ms=None)}
            t.publish(t.keys.crops, [b"c"], maxlen=100)
            kept = t.read_group([t.keys.crops], "workers", "dead", count=5, block_ms=None)
            t._client.xdel(t.keys.crops, gone_id)  # trimmed while pending
            claimed, missing = t.autoclaim(t.keys.crops, "workers", "w", min_idle_ms=0, count=10)
            assert [e.payload for e in claimed] == [b"c"] and claimed[0].id == kept[0].id
            assert missing == [gone_id]
        finally:
            t.close()


@pytest.mark.redis
def test_a_bundle_trimmed_from_under_a_consumer_that_died_is_counted_in_messages(real_transport):
    """Labels delivered to a logger that died before acking, then trimmed by the bound, used
    to be counted nowhere (its successor's labels_missing counts entries, not labels)."""
    t = real_transport
    s = t.keys.labels
    t.ensure_group(s, "logger")
    t.publish(s, [b"a-%d" % k for k in range(8)], maxlen=20)  # one bundle of 8
    held = t.read_group([s], "logger", "dead-logger", count=1, block_ms=None)
    assert len(held) == 8  # delivered, never acked: the logger was killed
    for i in range(2):  # the second goes past the bound (20 messages): the held bundle is trimmed
        t.publish(s, [b"b%d-%d" % (i, k) for k in range(8)], maxlen=20)
    assert t.stats()[f"trimmed_unread:{s}"] == 8
