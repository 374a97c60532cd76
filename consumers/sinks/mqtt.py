"""The MQTT sink: labels and live episodes to an MQTT broker, in Frigate's manner.

Topics under a root (``fer`` by default), one level per camera (``/ + #`` in a camera id
become ``_``):

- ``fer/available``: ``online`` / ``offline``, retained; ``offline`` is also the last will, so
  a crashed sink reads as offline (Frigate's ``frigate/available``).
- ``fer/<camera>/label``: one JSON object per label (``--no-labels`` leaves them out).
- ``fer/<camera>/episode``: episode ``start`` / ``end`` events (JSON).
- ``fer/<camera>/<emotion>``: how many tracks of the camera are in an episode of that
  emotion now, retained (Frigate's ``frigate/<camera>/<object>`` counts): a Home Assistant
  sensor reads it directly. Per-track retained topics would outlive their tracks on the
  broker forever; the counts stay seven topics per camera. A clean stop sets them to 0; so
  does every (re)connection, for each camera the deployment knows, since a crashed sink
  leaves its last counts retained (and one that merely reconnects sends its own again).

A broker that cannot be reached, at start-up or later, or that refuses the connection (bad
credentials included: fixable on the broker without a restart) is "down": the sink logs it
once, keeps the labels pending in Redis and retries with backoff. Only a malformed URL is an
error at start-up.

With QoS 1 (the default) a message counts as delivered when the broker's PUBACK arrives;
only then are the labels acked in Redis. With QoS 0 it counts once written to the socket.
"""

from __future__ import annotations

import ssl
import threading
from collections import deque
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fer_pipeline.analytics.options import ReportOptions
from fer_pipeline.consumers.sinks.base import Item, SinkService, TargetDown
from fer_pipeline.consumers.sinks.episodes import EpisodeEvent
from fer_pipeline.consumers.sinks.payloads import topic_level
from fer_pipeline.errors import ConfigError, first_line
from fer_pipeline.labels import EMOTIONS
from fer_pipeline.settings import Settings
from fer_pipeline.transport import Transport
from fer_pipeline.urls import redact_url, scrub

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
MAX_IN_FLIGHT = 512  # messages handed to paho before waiting for their acknowledgements


def parse_broker(url: str) -> tuple[str, int, bool, str | None, str | None]:
    """(host, port, tls, user, password) of ``mqtt://[user:pass@]host[:port]`` or ``mqtts://``;
    a ConfigError (password masked) for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ConfigError(f"MQTT broker URL must look like mqtt://[user:pass@]host[:port] or mqtts://..., "
                          f"got {redact_url(url)}")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise ConfigError(f"bad port in the MQTT broker URL {redact_url(url)}") from None
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return parts.hostname, port, parts.scheme == "mqtts", user, password


def topic_root(prefix: str) -> str:
    """The topic root without trailing ``/``; wildcards and empty levels are refused."""
    root = prefix.strip("/")
    if not root or any(c in root for c in "+#\x00") or "//" in root:
        raise ConfigError(f"--topic-prefix must be a topic without wildcards or empty levels, got {prefix!r}")
    return root


class MqttSink(SinkService):
    """Role "sink-mqtt": labels and episodes to an MQTT broker (see the module docstring).

    Connects in the constructor, waiting up to ``sink.timeout_s`` for the broker's answer; a
    broker that is unreachable or refuses is logged (password masked) and retried in the
    background, never raised. A malformed URL is a ConfigError.
    """

    kind = "mqtt"
    role = "sink-mqtt"

    def __init__(self, settings: Settings, transport: Transport, url: str, ident: str | None = None, *,
                 topic_prefix: str = "fer", qos: int = 1, client_id: str | None = None, labels: bool = True,
                 group: str | None = None, options: ReportOptions | None = None) -> None:
        super().__init__(settings, transport, ident, group=group, labels=labels, options=options)
        if qos not in (0, 1, 2):
            raise ConfigError(f"MQTT QoS must be 0, 1 or 2, got {qos}")
        self.url, self.qos = url, qos
        self.root = topic_root(topic_prefix)
        self.available_topic = f"{self.root}/available"
        self.counts: dict[tuple[str, str], int] = {}  # (camera, emotion) -> tracks in such an episode
        host, port, tls, user, password = parse_broker(url)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"fer-sink-{self.ident}",
                                  protocol=mqtt.MQTTv311)
        if user is not None:
            self.client.username_pw_set(user, password)
        if tls:
            self.client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        self.client.will_set(self.available_topic, "offline", qos=1, retain=True)
        self.client.reconnect_delay_set(1, 30)
        self.client.max_inflight_messages_set(100)
        self.client.connect_timeout = settings.sink.timeout_s
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self._connack = threading.Event()
        self._up = False  # connected and accepted
        self._trouble: str | None = None  # what is wrong now, logged once until the broker takes us
        self._counts_stale = False  # (re)connected: the retained counts must be set again
        self._closing = False  # our own disconnect is no loss
        self._connect(host, port)

    @property
    def _where(self) -> str:
        return f"the MQTT broker at {redact_url(self.url)}"

    def _connect(self, host: str, port: int) -> None:
        # One attempt here, for its reason in the log; then paho's thread retries with backoff
        # (reconnect_delay_set), as it does after a connection lost later.
        try:
            self.client.connect(host, port, keepalive=30)
        except OSError as e:  # refused, unresolvable, timed out, TLS (ssl.SSLError is an OSError)
            text = first_line(e)
            self._trouble = "unreachable"
            self.log.warning("cannot reach %s (%s); retrying in the background, the labels wait in Redis",
                             self._where, scrub(text[:200], self.url))
            self.client.connect_async(host, port, keepalive=30)
            self.client.loop_start()
            return
        self.client.loop_start()
        self._connack.wait(self.settings.sink.timeout_s)  # a quiet start when it answers at once

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            if self._trouble != str(reason_code):
                self.log.warning("%s refused the connection: %s; retrying in the background, the labels wait in "
                                 "Redis", self._where, reason_code)
            self._trouble = str(reason_code)
        else:
            # Every (re)connection says so: the last will may have set "offline" meanwhile.
            client.publish(self.available_topic, "online", qos=1, retain=True)
            self._counts_stale = True
            if self._trouble is not None:
                self.log.warning("connected to %s", self._where)
            self._up, self._trouble = True, None
        self._connack.set()

    def _on_connect_fail(self, client, userdata) -> None:
        if self._trouble is None:
            self.log.warning("cannot reach %s; retrying in the background, the labels wait in Redis", self._where)
        self._trouble = self._trouble or "unreachable"

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._up and not self._closing:
            self.log.warning("lost %s (%s); reconnecting", self._where, reason_code)
            self._trouble = "unreachable"
        self._up = False

    def topic(self, item: Item) -> str:
        return f"{self.root}/{topic_level(item.camera_id)}/{item.kind}"

    def step(self) -> None:
        if self._counts_stale and self.client.is_connected():
            self._reset_counts()
        super().step()

    def _reset_counts(self) -> None:
        """Set every retained count of every known camera to what this sink holds (0 unless a
        track is in an episode), before any new count: the previous sink may have crashed with
        its counts up, and a broker without persistence forgets them."""
        self._counts_stale = False
        try:
            cameras = set(self.transport.camera_ids()) | {camera for camera, _ in self.counts}
        except BaseException:
            self._counts_stale = True
            raise
        for camera in sorted(cameras):
            for emotion in EMOTIONS:
                self.client.publish(f"{self.root}/{topic_level(camera)}/{emotion}",
                                    str(self.counts.get((camera, emotion), 0)), qos=self.qos, retain=True)

    def deliver(self, outbox: deque[Item]) -> None:
        if not self.client.is_connected():
            why = "is unreachable" if self._trouble in (None, "unreachable") else f"refuses us: {self._trouble}"
            raise TargetDown(f"{self._where} {why}")
        if self._counts_stale:
            self._reset_counts()
        batch = [outbox[i] for i in range(min(len(outbox), MAX_IN_FLIGHT))]
        infos = [self.client.publish(self.topic(item), item.encoded(), qos=self.qos) for item in batch]
        for info in infos:
            try:
                info.wait_for_publish(self.settings.sink.timeout_s)
                done = info.is_published()
            except (ValueError, RuntimeError) as e:  # not queued: the connection went meanwhile
                raise TargetDown(f"the MQTT broker at {redact_url(self.url)} took no more messages ({e})") from None
            if not done:
                raise TargetDown(f"the MQTT broker at {redact_url(self.url)} acknowledged nothing for "
                                 f"{self.settings.sink.timeout_s:g}s")
            outbox.popleft()

    def on_episode(self, event: EpisodeEvent) -> None:
        key = (event.camera_id, event.emotion)
        n = self.counts.get(key, 0) + (1 if event.type == "start" else -1)
        self.counts[key] = max(n, 0)
        # Retained, not waited for: the next count replaces it, and a reconnect sets all again.
        self.client.publish(f"{self.root}/{topic_level(event.camera_id)}/{event.emotion}", str(self.counts[key]),
                            qos=self.qos, retain=True)

    def close_target(self) -> None:
        """Counts back to 0 (finish ended every episode), then ``offline``, then disconnect."""
        self._closing = True
        info = self.client.publish(self.available_topic, "offline", qos=1, retain=True)
        try:
            info.wait_for_publish(min(self.settings.sink.timeout_s, 5.0))
        except (ValueError, RuntimeError):
            self.log.warning("could not publish offline to the MQTT broker (the last will says so for us)")
        self.client.disconnect()
        self.client.loop_stop()
