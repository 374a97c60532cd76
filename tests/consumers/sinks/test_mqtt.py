"""The MQTT sink against a real Mosquitto (the system one at 127.0.0.1:1883, or one started
here for the outage test) and the real Redis; every test has its own topic root."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from fer_pipeline.consumers.sinks.mqtt import MqttSink, parse_broker
from fer_pipeline.errors import ConfigError
from fer_pipeline.labels import EMOTIONS
from tests.consumers.sinks.scenes import drain, person, publish
from tests.factories import make_label

pytestmark = pytest.mark.redis
BROKER = ("127.0.0.1", 1883)


def reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture
def broker_url() -> str:
    if not reachable(*BROKER):
        pytest.skip(f"no MQTT broker at {BROKER[0]}:{BROKER[1]} (.ci/run starts Debian's mosquitto)")
    return f"mqtt://{BROKER[0]}:{BROKER[1]}"


@pytest.fixture
def root() -> str:
    return f"fer-test-{uuid.uuid4().hex[:10]}"


class Subscriber:
    """Everything published under ``root/#``: (topic, payload, retained) in arrival order."""

    def __init__(self, port: int, root: str, session: str | None = None) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=session or "",
                                  clean_session=session is None)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{root}/#", qos=1)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(5), "no SUBACK"

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

    def on(self, topic: str) -> list[bytes]:
        with self.lock:
            return [p for t, p, _ in self.messages if t == topic]

    def wait_for(self, predicate, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained(port: int, topic: str, timeout: float = 5.0) -> bytes | None:
    """The retained message of ``topic`` as a new subscriber gets it (None: none within timeout)."""
    got: list[bytes] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2)

    def on_message(c, u, msg):
        if msg.retain:
            got.append(msg.payload)
            done.set()

    client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    done.wait(timeout)
    client.disconnect()
    client.loop_stop()
    return got[-1] if got else None


def test_labels_and_episodes_arrive_on_their_topics(redis_settings, real_transport, broker_url, root):
    sub = Subscriber(1883, root)
    sink = MqttSink(redis_settings, real_transport, broker_url, topic_prefix=root)
    try:
        sink.setup()
        assert sub.wait_for(lambda: sub.on(f"{root}/available") == [b"online"])
        labels = person(np.random.default_rng(5), camera_id="door/1", seconds=15.0)
        publish(real_transport, labels)
        drain(sink, 60)
        # A camera id with "/" is one topic level: door_1.
        assert sub.wait_for(lambda: len(sub.on(f"{root}/door_1/label")) == len(labels))
        got = [json.loads(p) for p in sub.on(f"{root}/door_1/label")]
        want = labels[0]
        assert got[0] == {
            "v": 1, "type": "label", "id": want.crop_id, "crop_id": want.crop_id, "camera_id": "door/1",
            "run_id": "r1", "track_id": 0, "frame_index": want.frame_index, "captured_at": want.captured_at,
            "position_s": want.position_s, "emotion": want.emotion, "confidence": round(want.confidence, 4),
            "probabilities": {e: round(p, 4) for e, p in zip(EMOTIONS, want.probabilities)},
            "bbox": {"x": 10, "y": 10, "w": want.bbox.w, "h": want.bbox.h}}
        assert [g["crop_id"] for g in got] == [lab.crop_id for lab in labels]
        assert real_transport.backlog(real_transport.keys.labels, "sink-mqtt") == (0, 0)
        episodes = [json.loads(p) for p in sub.on(f"{root}/door_1/episode")]
        assert episodes and episodes[0]["type"] == "start" and episodes[0]["ended_at"] is None
        assert {"id", "episode_id", "emotion", "track_id", "run_id", "started_at", "ended_at", "duration_s",
                "peak_confidence", "mean_confidence", "labels", "reason"} <= set(episodes[0])
        # The retained per-emotion count follows the episodes: the open one counts 1.
        open_emotion = [e for e in episodes if e["type"] == "start"][-1]["emotion"]
        assert sub.wait_for(lambda: sub.on(f"{root}/door_1/{open_emotion}")[-1:] == [b"1"])
    finally:
        sink.finish()
    # A clean stop: the open episode ends ("stopped"), its count goes back to 0, and offline is retained.
    assert sub.wait_for(lambda: json.loads(sub.on(f"{root}/door_1/episode")[-1])["reason"] == "stopped")
    assert sub.wait_for(lambda: sub.on(f"{root}/door_1/{open_emotion}")[-1:] == [b"0"])
    assert retained(1883, f"{root}/available") == b"offline"
    sub.close()


def test_episodes_only(redis_settings, real_transport, broker_url, root):
    sub = Subscriber(1883, root)
    sink = MqttSink(redis_settings, real_transport, broker_url, topic_prefix=root, labels=False, qos=0)
    try:
        sink.setup()
        publish(real_transport, person(np.random.default_rng(6), seconds=10.0))
        drain(sink, 60)
        assert sub.wait_for(lambda: len(sub.on(f"{root}/cam0/episode")) > 0)
        assert sub.on(f"{root}/cam0/label") == []
    finally:
        sink.finish()
        sub.close()


def test_a_malformed_label_is_dead_lettered(redis_settings, real_transport, broker_url, root):
    sink = MqttSink(redis_settings, real_transport, broker_url, topic_prefix=root)
    try:
        sink.setup()
        real_transport.publish(real_transport.keys.labels, [b"\xc1", make_label().encode()], 1000)
        drain(sink, 60)
        dead = real_transport._client.xrange(real_transport.keys.dead)
        assert len(dead) == 1 and dead[0][1][b"payload"] == b"\xc1" and dead[0][1][b"role"] == b"sink-mqtt"
        assert sink.counters["labels_sent"] == 1
        assert real_transport.backlog(real_transport.keys.labels, "sink-mqtt") == (0, 0)
    finally:
        sink.finish()


def test_broker_urls():
    assert parse_broker("mqtt://h") == ("h", 1883, False, None, None)
    assert parse_broker("mqtts://u:p%40ss@h:1234") == ("h", 1234, True, "u", "p@ss")
    with pytest.raises(ConfigError) as e:
        parse_broker("http://u:secret@h")
    assert "secret" not in str(e.value)


# -- a broker of our own, that the test stops and starts ------------------------------------------
MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnBroker:
    """A mosquitto on a free port, with persistence so that a subscriber's session survives restarts."""

    def __init__(self, folder: Path, anonymous: bool = True) -> None:
        self.port = free_port()
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous {str(anonymous).lower()}\n"
                             f"persistence true\n"
                             f"persistence_location {folder}/\nautosave_interval 1\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([str(MOSQUITTO), "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not reachable("127.0.0.1", self.port):
            assert time.monotonic() < deadline, "mosquitto did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)  # saves its persistence file
            self.proc.wait(10)
            self.proc = None


@pytest.mark.skipif(MOSQUITTO is None, reason="the mosquitto binary is not installed (apt install mosquitto)")
def test_broker_down_then_up_loses_no_label(redis_settings, real_transport, tmp_path, root):
    broker = OwnBroker(tmp_path)
    broker.start()
    sub = Subscriber(broker.port, root, session=f"sub-{root}")  # a persistent session: queued while we wait
    sink = MqttSink(redis_settings.with_updates(sink={"timeout_s": 2.0}), real_transport,
                    f"mqtt://127.0.0.1:{broker.port}", topic_prefix=root)
    sink.client.reconnect_delay_set(0.1, 0.5)
    sink._target_backoff.initial = sink._target_backoff.current = 0.05
    try:
        sink.setup()
        first = [make_label(frame_index=i, captured_at=1_000 + i / 10) for i in range(30)]
        publish(real_transport, first)
        drain(sink, 60)
        assert sub.wait_for(lambda: len(sub.on(f"{root}/cam0/label")) == 30)
        sub.close()
        broker.stop()
        second = [make_label(frame_index=i, captured_at=1_000 + i / 10) for i in range(30, 80)]
        publish(real_transport, second)
        for _ in range(5):
            sink.step()  # down: waits, keeps the labels pending, stays alive
        assert sink.counters["target_waits"] >= 1
        # Pending counts stream entries (a publish is one bundle); the sink holds every label.
        assert real_transport.backlog(real_transport.keys.labels, "sink-mqtt") == (0, 1)
        assert len(sink.outbox) == len(second)
        broker.start()
        sub = Subscriber(broker.port, root, session=f"sub-{root}")
        drain(sink, rounds=200)
        assert real_transport.backlog(real_transport.keys.labels, "sink-mqtt") == (0, 0)
        # The second subscriber resumes the first one's session: it gets what was published since.
        want = {lab.crop_id for lab in second}
        assert sub.wait_for(lambda: {json.loads(p)["crop_id"] for p in sub.on(f"{root}/cam0/label")} >= want)
        assert retained(broker.port, f"{root}/available") == b"online"  # said again on reconnecting
    finally:
        sink.finish()
        sub.close()
        broker.stop()


@pytest.mark.skipif(MOSQUITTO is None, reason="the mosquitto binary is not installed (apt install mosquitto)")
def test_sigterm_stops_the_cli_sink_and_it_says_offline(redis_settings, tmp_path, root):
    broker = OwnBroker(tmp_path)
    broker.start()
    sub = Subscriber(broker.port, root)
    env = {**os.environ, "FER_REDIS__URL": redis_settings.redis.url, "FER_REDIS__PREFIX": redis_settings.redis.prefix}
    proc = subprocess.Popen([sys.executable, "-m", "fer_pipeline", "sink", "mqtt", "--url",
                             f"mqtt://127.0.0.1:{broker.port}", "--topic-prefix", root], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert sub.wait_for(lambda: sub.on(f"{root}/available")[-1:] == [b"online"], timeout=30)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out.decode()[-2000:]
        assert sub.wait_for(lambda: sub.on(f"{root}/available")[-1:] == [b"offline"])
        assert retained(broker.port, f"{root}/available") == b"offline"
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
        broker.stop()


@pytest.mark.skipif(MOSQUITTO is None, reason="the mosquitto binary is not installed (apt install mosquitto)")
def test_a_killed_sink_reads_as_offline_by_its_last_will(redis_settings, real_transport, tmp_path, root):
    broker = OwnBroker(tmp_path)
    broker.start()
    env = {**os.environ, "FER_REDIS__URL": redis_settings.redis.url, "FER_REDIS__PREFIX": redis_settings.redis.prefix}
    proc = subprocess.Popen([sys.executable, "-m", "fer_pipeline", "sink", "mqtt", "--url",
                             f"mqtt://127.0.0.1:{broker.port}", "--topic-prefix", root], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        sub = Subscriber(broker.port, root)
        assert sub.wait_for(lambda: sub.on(f"{root}/available")[-1:] == [b"online"], timeout=30)
        proc.kill()
        proc.wait(10)
        assert sub.wait_for(lambda: sub.on(f"{root}/available")[-1:] == [b"offline"], timeout=10)
        sub.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        broker.stop()


@pytest.mark.skipif(MOSQUITTO is None, reason="the mosquitto binary is not installed (apt install mosquitto)")
def test_a_broker_down_at_start_is_waited_for_not_fatal(redis_settings, real_transport, tmp_path, root, caplog):
    """Under `up`, a sink that exited here would be restarted in a loop: it waits instead."""
    broker = OwnBroker(tmp_path)  # its port, with nothing listening yet: connection refused
    sink = MqttSink(redis_settings.with_updates(sink={"timeout_s": 2.0}), real_transport,
                    f"mqtt://user:hunter22@127.0.0.1:{broker.port}", topic_prefix=root)
    sink.client.reconnect_delay_set(0.1, 0.5)
    sink._target_backoff.initial = sink._target_backoff.current = 0.05
    sub = None
    try:
        (line,) = [r.getMessage() for r in caplog.records if "cannot reach" in r.getMessage()]
        assert "mqtt://user:***@127.0.0.1" in line and "hunter22" not in line
        sink.setup()
        labels = [make_label(frame_index=i, captured_at=1_000 + i / 10) for i in range(20)]
        publish(real_transport, labels)
        for _ in range(3):
            sink.step()
        assert sink.counters["target_waits"] >= 1
        assert [it.body["id"] for it in sink.outbox if it.kind == "label"] == [lab.crop_id for lab in labels]
        assert real_transport.backlog(real_transport.keys.labels, "sink-mqtt") == (0, 1)
        assert sum("cannot reach" in r.getMessage() for r in caplog.records) == 1  # logged once, not per retry
        broker.start()
        sub = Subscriber(broker.port, root)
        drain(sink, rounds=200)
        assert real_transport.backlog(real_transport.keys.labels, "sink-mqtt") == (0, 0)
        assert retained(broker.port, f"{root}/available") == b"online"
        assert any("hunter22" not in r.getMessage() and "connected to" in r.getMessage() for r in caplog.records)
    finally:
        sink.finish()
        if sub is not None:
            sub.close()
        broker.stop()


@pytest.mark.skipif(MOSQUITTO is None, reason="the mosquitto binary is not installed (apt install mosquitto)")
def test_refused_credentials_are_logged_and_waited_for(redis_settings, real_transport, tmp_path, root, caplog):
    broker = OwnBroker(tmp_path, anonymous=False)  # and no password file: nobody gets in
    broker.start()
    sink = MqttSink(redis_settings, real_transport, f"mqtt://ann:pa55word@127.0.0.1:{broker.port}",
                    topic_prefix=root)
    sink.client.reconnect_delay_set(0.1, 0.2)
    sink._target_backoff.initial = sink._target_backoff.current = 0.05
    try:
        sink.setup()
        publish(real_transport, [make_label()])
        for _ in range(4):
            sink.step()
        assert sink.counters["target_waits"] >= 1 and real_transport.backlog(real_transport.keys.labels,
                                                                             "sink-mqtt") == (0, 1)
        refusals = [r.getMessage() for r in caplog.records if "refused the connection" in r.getMessage()]
        assert len(refusals) == 1 and "Not authorized" in refusals[0]  # once, though paho retried meanwhile
        assert "ann:***@" in refusals[0] and all("pa55word" not in r.getMessage() for r in caplog.records)
        downs = [r.getMessage() for r in caplog.records if "keeping" in r.getMessage()]
        assert downs and "refuses us: Not authorized" in downs[0]
    finally:
        sink.finish()
        broker.stop()


def test_a_crashed_sinks_retained_counts_are_set_back_to_zero(redis_settings, real_transport, broker_url, root):
    """A sink killed with episodes open leaves its counts retained; the next one zeroes every
    known camera's before it counts anew."""
    real_transport.add_cameras(["lobby", "door/1"])
    stale = mqtt.Client(CallbackAPIVersion.VERSION2)
    stale.connect(*BROKER)
    stale.loop_start()
    for topic in (f"{root}/lobby/happy", f"{root}/door_1/sad"):
        stale.publish(topic, "2", qos=1, retain=True).wait_for_publish(5)
    stale.disconnect()
    stale.loop_stop()
    assert retained(1883, f"{root}/lobby/happy") == b"2"
    sink = MqttSink(redis_settings, real_transport, broker_url, topic_prefix=root)
    try:
        sink.setup()
        sink.step()
        for camera in ("lobby", "door_1"):
            for emotion in EMOTIONS:
                assert retained(1883, f"{root}/{camera}/{emotion}") == b"0", (camera, emotion)
        # New counts come after the reset: an episode on lobby counts 1.
        publish(real_transport, person(np.random.default_rng(5), camera_id="lobby", seconds=15.0))
        drain(sink, 60)
        open_emotion = max(sink.counts, key=lambda k: sink.counts[k])
        assert sink.counts[open_emotion] == 1
        assert retained(1883, f"{root}/lobby/{open_emotion[1]}") == b"1"
    finally:
        sink.finish()
