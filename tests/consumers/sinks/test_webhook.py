"""The webhook sink against a real HTTP server in a thread, on the real Redis."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from fer_pipeline.consumers.sinks.webhook import WebhookSink, sign
from fer_pipeline.errors import ConfigError
from fer_pipeline.messages import Label
from tests.consumers.sinks.scenes import drain, person, publish
from tests.factories import make_label

pytestmark = pytest.mark.redis
SECRET = "s3cret-for-tests"


class Receiver:
    """An HTTP server that records each POST; ``fail`` holds the statuses to answer first."""

    def __init__(self, fail: list[int | bytes] | None = None) -> None:
        self.posts: list[tuple[dict, dict]] = []  # (headers, body)
        self.gets: list[str] = []  # paths asked for with GET (a followed redirect)
        self.fail = list(fail or [])  # a status, or the raw bytes of a broken answer
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    status = receiver.fail.pop(0) if receiver.fail else 200
                    if status == 200:
                        receiver.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
                if isinstance(status, bytes):
                    self.wfile.write(status)
                    self.close_connection = True
                    return
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):  # noqa: N802 - what a redirected POST would become
                with receiver.lock:
                    receiver.gets.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self) -> list[dict]:
        with self.lock:
            return [json.loads(b) for _, b in self.posts]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def dead_letters(transport) -> list[dict]:
    return [{k.decode(): v for k, v in fields.items()} for _, fields in transport._client.xrange(transport.keys.dead)]


def episode_scene(seed: int = 0) -> list[Label]:
    return person(np.random.default_rng(seed), seconds=20.0)


def test_episode_events_are_posted_signed_and_labels_acked(redis_settings, real_transport, receiver):
    s = redis_settings.with_updates(sink={"webhook_secret": SECRET})
    sink = WebhookSink(s, real_transport, receiver.url)
    sink.setup()
    labels = episode_scene()
    publish(real_transport, labels)
    drain(sink)
    sink.finish()  # ends the open episode (reason "stopped")
    bodies = receiver.bodies()
    assert bodies and all(b["type"] in ("start", "end") for b in bodies)
    starts = {b["episode_id"] for b in bodies if b["type"] == "start"}
    assert starts == {b["episode_id"] for b in bodies if b["type"] == "end"}
    assert bodies[-1]["reason"] == "stopped"
    for headers, raw in receiver.posts:
        expected = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
        assert headers["x-fer-signature"] == expected == sign(SECRET, raw)
        assert headers["user-agent"].startswith("fer-pipeline") and headers["content-type"] == "application/json"
        assert headers["x-fer-event-id"] == json.loads(raw)["id"]
    first = bodies[0]
    assert first["camera_id"] == "cam0" and first["emotion"] in ("angry", "disgust", "fear", "happy", "sad",
                                                                  "surprise", "neutral")
    assert real_transport.backlog(real_transport.keys.labels, "sink-webhook") == (0, 0)
    assert sink.counters["episodes_sent"] == len(bodies)


def test_a_server_that_fails_then_recovers_loses_nothing_and_duplicates_nothing(redis_settings, real_transport):
    receiver = Receiver(fail=[500, 500, 503])
    try:
        sink = WebhookSink(redis_settings, real_transport, receiver.url, labels=True)
        sink._target_backoff.initial = sink._target_backoff.current = 0.01  # test speed: the waits, not the logic
        sink.setup()
        labels = episode_scene(1)
        publish(real_transport, labels)
        sink.step()  # the first POST gets a 500: nothing acked, everything pending
        assert sink.counters["target_waits"] == 1 and sink.outbox
        assert real_transport.backlog(real_transport.keys.labels, "sink-webhook")[1] > 0
        drain(sink)
        sink.finish()
        bodies = receiver.bodies()
        ids = [b["id"] for b in bodies]
        assert len(ids) == len(set(ids))  # each accepted once: the refused ones were not taken
        got = [lab["crop_id"] for b in bodies if b["type"] == "labels" for lab in b["labels"]]
        assert got == [lab.crop_id for lab in labels]
        assert sum(b["type"] == "start" for b in bodies) == sum(b["type"] == "end" for b in bodies) > 0
        assert sink.counters["target_waits"] == 3
        assert real_transport.backlog(real_transport.keys.labels, "sink-webhook") == (0, 0)
    finally:
        receiver.close()


def test_a_server_that_is_not_there_keeps_the_labels_pending(redis_settings, real_transport):
    receiver = Receiver()
    url = receiver.url
    receiver.close()  # the port is now closed: connection refused
    sink = WebhookSink(redis_settings, real_transport, url)
    sink._target_backoff.initial = sink._target_backoff.current = 0.01
    sink.setup()
    publish(real_transport, episode_scene(2))
    for _ in range(3):
        sink.step()
    assert sink.counters["target_waits"] >= 2 and sink.counters.get("episodes_sent", 0) == 0
    lag, pending = real_transport.backlog(real_transport.keys.labels, "sink-webhook")
    assert pending > 0


def test_a_refusal_for_good_is_dead_lettered_and_the_rest_goes_on(redis_settings, real_transport):
    receiver = Receiver(fail=[400])
    try:
        sink = WebhookSink(redis_settings, real_transport, receiver.url)
        sink.setup()
        publish(real_transport, episode_scene(3))
        drain(sink)
        (dead,) = dead_letters(real_transport)
        assert dead["reason"] == b"webhook refused it: HTTP 400" and json.loads(dead["payload"])["type"] == "start"
        assert sink.counters["dead_letters"] == 1 and sink.counters["episodes_sent"] == len(receiver.bodies()) > 0
        assert real_transport.backlog(real_transport.keys.labels, "sink-webhook") == (0, 0)
    finally:
        receiver.close()


def test_a_malformed_label_is_dead_lettered_with_its_reason(redis_settings, real_transport, receiver):
    sink = WebhookSink(redis_settings, real_transport, receiver.url, labels=True)
    sink.setup()
    good = make_label(frame_index=1)
    real_transport.publish(real_transport.keys.labels, [b"\x93not a label", good.encode()], 1000)
    drain(sink)
    assert sink.counters["dead_letters"] == 1 and sink.counters["labels_sent"] == 1
    (dead,) = dead_letters(real_transport)
    assert dead["payload"] == b"\x93not a label" and dead["role"] == b"sink-webhook" and dead["reason"]
    assert [lab["crop_id"] for b in receiver.bodies() for lab in b["labels"]] == [good.crop_id]
    assert real_transport.backlog(real_transport.keys.labels, "sink-webhook") == (0, 0)


def test_only_http_urls(redis_settings, real_transport):
    with pytest.raises(ConfigError, match="http"):
        WebhookSink(redis_settings, real_transport, "ftp://example.com/x")


def test_two_people_in_one_read_keep_their_episodes(redis_settings, real_transport, receiver):
    """Labels of two tracks read together: neither track is taken for gone by the other's times."""
    rng = np.random.default_rng(9)
    labels = sorted(person(rng, seconds=15.0) + person(rng, track_id=1, seconds=15.0, first_frame=5_000),
                    key=lambda lab: lab.captured_at)
    sink = WebhookSink(redis_settings, real_transport, receiver.url)
    sink.setup()
    for i in range(0, len(labels), 16):  # as workers publish: bundles in capture order
        publish(real_transport, labels[i:i + 16])
    drain(sink)
    sink.finish()
    ends = [b for b in receiver.bodies() if b["type"] == "end"]
    assert {b["track_id"] for b in ends} == {0, 1}
    assert "track_lost" not in {b["reason"] for b in ends}
    assert [b["reason"] for b in ends if b["reason"] == "stopped"] == ["stopped", "stopped"]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_never_followed_nor_taken_for_accepted(redis_settings, real_transport, caplog, status):
    """urllib would re-send a 301/302/303 POST as a GET without its body: its 2xx must not ack."""
    receiver = Receiver(fail=[status])
    try:
        s = redis_settings.with_updates(sink={"webhook_secret": SECRET})
        sink = WebhookSink(s, real_transport, receiver.url, labels=True)
        sink._target_backoff.initial = sink._target_backoff.current = 0.01
        sink.setup()
        labels = episode_scene(4)
        publish(real_transport, labels)
        sink.step()
        assert receiver.gets == [] and receiver.bodies() == []
        assert sink.counters["target_waits"] == 1 and sink.counters.get("labels_sent", 0) == 0
        assert sink.counters.get("dead_letters", 0) == 0 and dead_letters(real_transport) == []
        assert real_transport.backlog(real_transport.keys.labels, "sink-webhook")[1] > 0
        (warning,) = [r.getMessage() for r in caplog.records if "redirect" in r.getMessage()]
        assert f"HTTP {status}" in warning and "/elsewhere" in warning
        drain(sink)  # the next answer is a 200: everything goes, once
        got = [lab["crop_id"] for b in receiver.bodies() if b["type"] == "labels" for lab in b["labels"]]
        assert got == [lab.crop_id for lab in labels]
        assert real_transport.backlog(real_transport.keys.labels, "sink-webhook") == (0, 0)
    finally:
        receiver.close()


@pytest.mark.parametrize("answer", [b"NOT HTTP AT ALL\r\n\r\n",  # BadStatusLine
                                    b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\ncut",  # IncompleteRead
                                    b""],  # RemoteDisconnected
                         ids=["bad-status-line", "incomplete-read", "remote-disconnected"])
def test_a_broken_answer_counts_as_down_not_as_a_crash(redis_settings, real_transport, answer):
    receiver = Receiver(fail=[answer])
    try:
        sink = WebhookSink(redis_settings, real_transport, receiver.url)
        sink._target_backoff.initial = sink._target_backoff.current = 0.01
        sink.setup()
        publish(real_transport, episode_scene(5))
        sink.step()  # raised out of the sink before: the process died
        assert sink.counters["target_waits"] == 1 and sink.outbox
        drain(sink)
        assert receiver.bodies() and real_transport.backlog(real_transport.keys.labels, "sink-webhook") == (0, 0)
    finally:
        receiver.close()


def test_a_sink_waiting_out_a_long_backoff_keeps_beating(redis_settings, real_transport, monkeypatch):
    from fer_pipeline.service import HEARTBEAT_EVERY_S, HEARTBEAT_TTL_S

    receiver = Receiver()
    url = receiver.url
    receiver.close()  # connection refused from here on
    sink = WebhookSink(redis_settings, real_transport, url)
    sink.setup()
    publish(real_transport, episode_scene(3))
    waits: list[float] = []
    monkeypatch.setattr(sink.stop_event, "wait", lambda timeout=None: waits.append(timeout) or False)
    clock = [1000.0]
    monkeypatch.setattr("fer_pipeline.consumers.sinks.base.time.monotonic", lambda: clock[0])
    for _ in range(200):  # the backoff grows to its 30 s cap; each step waits one beat at most
        sink.step()
        clock[0] += waits[-1] if waits else 0.0
    assert sink._target_backoff.current >= 30.0 or sink.counters["target_waits"] >= 6
    assert waits and max(waits) <= HEARTBEAT_EVERY_S < HEARTBEAT_TTL_S
