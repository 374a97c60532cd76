"""`fer-pipeline sink mqtt|webhook`: results (labels, live episodes) to other systems, and
``sink_args``, which turns an `up --sink SPEC` into the child's arguments and settings."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import SecretStr

from fer_pipeline.cli._app import Prefix, RedisUrl, app, build_settings, setup_logging, warn_if_password_typed
from fer_pipeline.cli.run import Ident, _serve
from fer_pipeline.errors import ConfigError
from fer_pipeline.urls import redact_url

sink_app = typer.Typer(help="Send labels and live emotion episodes to MQTT or a webhook.", no_args_is_help=True)
app.add_typer(sink_app, name="sink")

Group = Annotated[str | None, typer.Option(
    "--group", help="Consumer group on the labels stream. A second sink of "
    "one kind to another target needs its own.", show_default="sink-mqtt / sink-webhook")]


def sink_args(spec: str) -> tuple[list[str], dict[str, str]]:
    """The sink child of an `up --sink SPEC`: its `fer-pipeline` arguments and the ``sink``
    settings it needs, ``(["sink", "mqtt"], {"mqtt_url": spec})`` for an ``mqtt://``/``mqtts://``
    broker, ``(["sink", "webhook"], {"webhook_url": spec})`` for an ``http://``/``https://`` URL.
    The URL travels in the child's environment (FER_SINK__*), not its arguments, which every
    local user can read. A ConfigError (password masked) for anything else."""
    scheme = spec.partition("://")[0].lower()
    if scheme in ("mqtt", "mqtts"):
        return ["sink", "mqtt"], {"mqtt_url": spec}
    if scheme in ("http", "https"):
        return ["sink", "webhook"], {"webhook_url": spec}
    raise ConfigError(f"--sink takes mqtt://, mqtts://, http:// or https:// URLs, got {redact_url(spec)}")


def _target(url: str | None, setting: SecretStr | None, what: str, envvar: str, example: str) -> str:
    """--url, else the setting; a one-line ConfigError when neither is given."""
    if url:
        warn_if_password_typed(url, "--url", envvar)
        return url
    if setting is not None and setting.get_secret_value():
        return setting.get_secret_value()
    raise ConfigError(f"no {what}: pass --url {example} or set {envvar}")


@sink_app.command("mqtt")
def mqtt(
    url: Annotated[str | None, typer.Option("--url", help="Broker: mqtt://[user:pass@]host[:port] or mqtts:// (TLS); "
                                            "the port is 1883 unless given, 8883 with TLS.",
                                            show_default="FER_SINK__MQTT_URL")] = None,
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    topic_prefix: Annotated[str, typer.Option("--topic-prefix", help="Topic root.")] = "fer",
    qos: Annotated[int, typer.Option(min=0, max=2, help="MQTT QoS of every message (1: a label is acked in Redis "
                                     "once the broker acknowledged it).")] = 1,
    client_id: Annotated[str | None, typer.Option("--client-id", help="MQTT client id.",
                                                  show_default="fer-sink-<ident>")] = None,
    labels: Annotated[bool, typer.Option("--labels/--no-labels", help="Publish every label, or only episode events "
                                         "and counts (low bandwidth).")] = True,
    group: Group = None,
    ident: Ident = None,
) -> None:
    """Publish labels, live episodes and per-camera emotion counts to an MQTT broker (Frigate's manner).

    Topics: <root>/available (retained online/offline), <root>/<camera>/label,
    <root>/<camera>/episode, <root>/<camera>/<emotion> (retained count of tracks in that episode).
    """
    from fer_pipeline.consumers.sinks.mqtt import MqttSink, parse_broker
    from fer_pipeline.transport import Transport

    s = build_settings(redis_url=redis_url, prefix=prefix)
    url = _target(url, s.sink.mqtt_url, "MQTT broker", "FER_SINK__MQTT_URL", "mqtt://host[:port]")
    parse_broker(url)  # a malformed URL is one line before anything connects
    setup_logging(s.log_level)
    transport = Transport.connect(s)
    _serve(MqttSink(s, transport, url, ident, topic_prefix=topic_prefix, qos=qos, client_id=client_id, labels=labels,
                    group=group))


@sink_app.command("webhook")
def webhook(
    url: Annotated[str | None, typer.Option("--url", help="http(s):// URL that receives the POSTs.",
                                            show_default="FER_SINK__WEBHOOK_URL")] = None,
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    labels: Annotated[bool, typer.Option("--labels/--no-labels", help="Also POST every label, in batches "
                                         "(--no-labels: episode events only).")] = False,
    group: Group = None,
    ident: Ident = None,
) -> None:
    """POST live episode events (and optionally labels) as JSON to a URL.

    Signed with X-Fer-Signature: sha256=<HMAC> when FER_SINK__WEBHOOK_SECRET is set (environment
    only). Delivery is at least once: dedupe on the body's id.
    """
    from fer_pipeline.consumers.sinks.webhook import WebhookSink, check_url
    from fer_pipeline.transport import Transport

    s = build_settings(redis_url=redis_url, prefix=prefix)
    url = _target(url, s.sink.webhook_url, "webhook URL", "FER_SINK__WEBHOOK_URL", "https://host/path")
    check_url(url)  # a malformed URL is one line before anything connects
    setup_logging(s.log_level)
    transport = Transport.connect(s)
    _serve(WebhookSink(s, transport, url, ident, labels=labels, group=group))

