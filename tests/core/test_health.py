"""`fer-pipeline status` against the real Redis: groups' lag/pending, processes alive, losses, labels/s."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fer_pipeline import health
from fer_pipeline.cli import app
from fer_pipeline.health import collect, render
from fer_pipeline.streams import DISPLAY_GROUP, LOGGER_GROUP, WORKERS_GROUP

pytestmark = pytest.mark.redis


def _fill(t, crops: int = 5, labels: int = 4):
    k = t.keys
    t.ensure_group(k.crops, WORKERS_GROUP)
    t.ensure_group(k.labels, LOGGER_GROUP)
    t.ensure_group(k.labels, DISPLAY_GROUP)
    # The crops stream is bundled: each publish is one entry (a producer's round).
    t.publish(k.crops, [b"c%d" % i for i in range(min(crops, 2))], maxlen=1000)
    t.publish(k.crops, [b"c%d" % i for i in range(2, crops)], maxlen=1000)
    t.publish(k.labels, [b"l%d" % i for i in range(labels)], maxlen=1000)


def test_lag_pending_and_alive_per_group(real_transport):
    t = real_transport
    _fill(t)
    delivered = t.read_group([t.keys.crops], WORKERS_GROUP, "w1", count=1, block_ms=None)
    assert [e.payload for e in delivered] == [b"c0", b"c1"]
    t.read_group([t.keys.labels], LOGGER_GROUP, "lg", count=10, block_ms=None)
    t.ack(t.keys.labels, LOGGER_GROUP, [e.id for e in t.read_group([t.keys.labels], LOGGER_GROUP, "lg", count=10,
                                                                     block_ms=None, own_pending=True)])
    health.beat(t, "worker", "w1", 5.0, {"role": "worker", "started": 1.0, "crops_labelled": 7, "batches": 2})
    health.beat(t, "producer", "p1", 5.0, {"role": "producer", "crops_dropped": 3, "frames": 10,
                                        "realtime_lost_ms": 2500})
    t._client.sadd(t.keys.cameras, "door")
    t.publish(t.keys.frames("door"), [b"f"], maxlen=100)

    st = collect(t, rate_interval_s=0)
    groups = {(g.stream, g.group): g for g in st.groups}
    assert (groups[("crops", "workers")].lag, groups[("crops", "workers")].pending) == (1, 1)  # bundles
    assert groups[("crops", "workers")].consumers == 1
    assert (groups[("labels", "logger")].lag, groups[("labels", "logger")].pending) == (0, 0)
    assert (groups[("labels", "display")].lag, groups[("labels", "display")].pending) == (1, 0)  # a bundle of 4
    assert st.streams == {"crops": 5, "labels": 4, "frames:door": 1, "dead": 0}
    assert st.alive == {"producer": 1, "worker": 1}
    assert st.crops_dropped == 3 and st.labels_per_s is None
    assert st.published == {"crops": 5, "labels": 4, "frames:door": 1}
    by_role = {p.role: p for p in st.processes}
    assert by_role["worker"].counters["crops_labelled"] == 7
    # The display group has a backlog and no display process: that is the stall to point out.
    assert any("group display" in p and "no display alive" in p for p in st.problems)
    assert not any("group workers" in p for p in st.problems)
    assert any("dropped 3 crops" in p for p in st.problems)
    assert any("producer p1" in p and "2.5 s behind real time" in p for p in st.problems)


def test_dead_letters_trimmed_and_rate(real_transport):
    t = real_transport
    _fill(t, crops=0, labels=0)
    t.dead_letter(source=t.keys.crops, entry_id="1-0", payload=b"x", reason="bad", role="worker")
    # 12 crops in bundles of 2 into a stream bounded at 10, nobody read them: 2 trimmed unread.
    for _ in range(6):
        t.publish(t.keys.crops, [b"c"] * 2, maxlen=10)

    def sleep(_s):  # labels published while status watches the counter
        t.publish(t.keys.labels, [b"l"] * 50, maxlen=1000)

    st = collect(t, rate_interval_s=0.5, sleep=sleep)
    assert st.dead_letters == 1 and st.streams["dead"] == 1
    assert st.trimmed_unread == {"crops": 2}
    assert st.labels_per_s is not None and st.labels_per_s > 0
    assert any("dead letters" in p for p in st.problems)
    assert any("trimmed before a consumer finished them" in p for p in st.problems)


def test_empty_deployment_and_render(real_transport):
    st = collect(real_transport, rate_interval_s=0)
    assert st.groups == [] and st.alive == {} and st.problems == []
    from rich.console import Console

    console = Console(record=True, width=160)
    console.print(render(st))
    assert "no live processes" in console.export_text()


def test_status_cli_json_and_table(redis_settings, real_transport):
    _fill(real_transport)
    args = ["status", "--redis-url", redis_settings.redis.url, "--prefix", redis_settings.redis.prefix]
    r = CliRunner().invoke(app, [*args, "--json", "--interval", "0"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["streams"]["crops"] == 5 and data["prefix"] == redis_settings.redis.prefix
    assert {g["group"] for g in data["groups"]} == {"workers", "logger", "display"}
    r = CliRunner().invoke(app, [*args, "--interval", "0"])
    assert r.exit_code == 0, r.output
    assert "workers" in r.output and "no worker alive" in r.output


def test_status_cli_unreachable_redis_is_one_line(capsys):
    import sys

    from fer_pipeline.cli import main

    argv = sys.argv
    sys.argv = ["fer-pipeline", "status", "--redis-url", "redis://127.0.0.1:1/0", "--interval", "0"]
    try:
        with pytest.raises(SystemExit) as e:
            main()
    finally:
        sys.argv = argv
    assert e.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("fer-pipeline: error: cannot reach Redis") and "\n" not in err


def test_container_healthcheck_command(redis_settings, real_transport):
    health.beat(real_transport, "worker", "box7-123", 5.0, {"role": "worker"})
    args = ["healthcheck", "--redis-url", redis_settings.redis.url, "--prefix", redis_settings.redis.prefix]
    r = CliRunner().invoke(app, [*args, "--role", "worker", "--host", "box7"])
    assert r.exit_code == 0 and "box7-123" in r.output
    assert CliRunner().invoke(app, [*args, "--role", "worker", "--host", "box"]).exit_code == 1  # not a prefix match
    assert CliRunner().invoke(app, [*args, "--role", "logger", "--host", "box7"]).exit_code == 1


def test_a_redis_that_lost_its_data_is_counted_and_shown(settings, fake_transport):
    from fer_pipeline.consumers.label_logger import LabelLoggerService

    t = fake_transport
    service = LabelLoggerService(settings, t, ident="log")
    service._beat()
    first = t.epoch()
    assert t.epoch() == first  # stable while Redis keeps its data
    t._client.flushall()  # fakeredis is private to this test: as a restart without persistence leaves it
    service._last_beat = 0.0
    service._beat()
    assert service.counters["redis_data_lost"] == 1 and t.epoch() != first
    status = collect(t, rate_interval_s=0)
    assert any("Redis lost its data 1 time(s)" in p for p in status.problems)
    service._last_beat = 0.0
    service._beat()  # the new epoch is the one it now knows
    assert service.counters["redis_data_lost"] == 1


def test_a_logger_waiting_for_its_database_is_a_problem_in_status(settings, fake_transport):
    health.beat(fake_transport, "logger", "log-1", 5.0, {"role": "logger", "started": 1.0, "store_waits": 3})
    st = collect(fake_transport, rate_interval_s=0)
    assert any("logger log-1: the emotion log could not be written 3 time(s)" in p for p in st.problems)


def test_the_process_table_names_cameras_shows_time_per_face_and_fits_an_80_column_terminal(real_transport):
    import time

    from rich.console import Console

    t = real_transport
    started = time.time() - 125
    health.beat(t, "producer", "host-1234", 5.0, {"role": "producer", "started": started, "frames": 300,
                                                  "crops_published": 412, "camera_ids": '["door", "hall,2"]'})
    health.beat(t, "worker", "up-worker-0", 5.0, {"role": "worker", "started": started, "crops_labelled": 400,
                                                  "batches": 40, "infer_ms": 160.0})
    st = collect(t, rate_interval_s=0)
    assert {p.role: p.cameras for p in st.processes} == {"producer": ("door", "hall,2"), "worker": ()}
    console = Console(width=80, record=True)
    console.print(render(st))
    text = console.export_text()
    assert "door," in text and "hall,2" in text
    assert "0.40" in text  # 160 ms over 400 faces, not the running total
    assert "…" not in text and "2m05s" in text  # nothing cut off at 80 columns


def test_a_sink_group_with_labels_waiting_and_no_sink_alive_is_a_problem(real_transport):
    t = real_transport
    t.ensure_group(t.keys.labels, "sink-mqtt")
    t.publish(t.keys.labels, [b"l0", b"l1"], maxlen=1000)
    st = collect(t, rate_interval_s=0)
    assert any("group sink-mqtt" in p and "no sink-mqtt alive" in p for p in st.problems)
    health.beat(t, "sink-mqtt", "s1", 5.0, {"role": "sink-mqtt", "started": 1.0})
    assert not any("group sink-mqtt" in p for p in collect(t, rate_interval_s=0).problems)
