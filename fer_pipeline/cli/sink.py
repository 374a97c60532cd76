"""`fer-pipeline sink mqtt|webhook`: results (labels, live episodes) to other systems, and
``sink_args``, which turns an `up --sink SPEC` into the child's command line."""

from __future__ import annotations

from typing import Annotated

import typer

from fer_pipeline.cli._app import Prefix, RedisUrl, app, build_settings, setup_logging
from fer_pipeline.cli.run import Ident, _serve
from fer_pipeline.errors import ConfigError
from fer_pipeline.urls import redact_url

sink_app = typer.Typer(help="Send labels and live emotion episodes to MQTT or a webhook.", no_args_is_help=True)
app.add_typer(sink_app, name="sink")

Group = Annotated[str | None, typer.Option(
    "--group", help="Consumer group on the labels stream. A second sink of "
    "one kind to another target needs its own.", show_default="sink-mqtt / sink-webhook")]


def sink_args(spec: str) -> list[str]:
    """The `fer-pipeline` arguments of the sink child for ``spec``: an ``mqtt://``/``mqtts://``
    broker URL, or an ``http://``/``https://`` webhook URL. A ConfigError for anything else."""
    scheme = spec.partition("://")[0].lower()
    if scheme in ("mqtt", "mqtts"):
        return ["sink", "mqtt", "--url", spec]
    if scheme in ("http", "https"):
        return ["sink", "webhook", "--url", spec]
    raise ConfigError(f"--sink takes mqtt://, mqtts://, http:// or https:// URLs, got {redact_url(spec)}")


@sink_app.command("mqtt")
def mqtt(
    url: Annotated[str, typer.Option("--url", envvar="FER_SINK_MQTT_URL", help="Broker: mqtt://[user:pass@]host[:port] "
                                     "or mqtts:// (TLS); the port is 1883 unless given, 8883 with TLS.", show_default=False)],
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
    from fer_pipeline.consumers.sinks.mqtt import MqttSink
    from fer_pipeline.transport import Transport

    s = build_settings(redis_url=redis_url, prefix=prefix)
    _warn_if_password_typed(url, "FER_SINK_MQTT_URL")
    setup_logging(s.log_level)
    transport = Transport.connect(s)
    _serve(MqttSink(s, transport, url, ident, topic_prefix=topic_prefix, qos=qos, client_id=client_id, labels=labels,
                    group=group))


@sink_app.command("webhook")
def webhook(
    url: Annotated[str, typer.Option("--url", envvar="FER_SINK_WEBHOOK_URL", help="http(s):// URL that receives the "
                                     "POSTs.", show_default=False)],
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
    from fer_pipeline.consumers.sinks.webhook import WebhookSink
    from fer_pipeline.transport import Transport

    s = build_settings(redis_url=redis_url, prefix=prefix)
    _warn_if_password_typed(url, "FER_SINK_WEBHOOK_URL")
    setup_logging(s.log_level)
    transport = Transport.connect(s)
    _serve(WebhookSink(s, transport, url, ident, labels=labels, group=group))


def _warn_if_password_typed(url: str, envvar: str) -> None:
    # As build_settings does for --redis-url: only a value typed as an argument warns.
    import sys

    from fer_pipeline.urls import has_password

    if has_password(url) and any(a == url or a == f"--url={url}" for a in sys.argv[1:]):
        typer.echo(f"fer-pipeline: warning: the password in --url is visible to every local user (ps); "
                   f"set {envvar} in the environment instead", err=True)
