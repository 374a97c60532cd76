"""`fer-pipeline sink`: the child `up --sink` starts, where the URL comes from, and the one-line errors."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from fer_pipeline.cli import app
from fer_pipeline.cli.sink import sink_args
from fer_pipeline.errors import ConfigError
from fer_pipeline.settings import Settings
from fer_pipeline.supervisor import settings_env


def test_sink_args_pick_the_sink_by_scheme_and_keep_the_url_out_of_the_arguments():
    assert sink_args("mqtt://u:p@broker:1883") == (["sink", "mqtt"], {"mqtt_url": "mqtt://u:p@broker:1883"})
    assert sink_args("mqtts://broker") == (["sink", "mqtt"], {"mqtt_url": "mqtts://broker"})
    assert sink_args("https://example.com/hook") == (["sink", "webhook"], {"webhook_url": "https://example.com/hook"})
    assert sink_args("http://127.0.0.1:9000/") == (["sink", "webhook"], {"webhook_url": "http://127.0.0.1:9000/"})
    with pytest.raises(ConfigError, match=r"ftp://u:\*\*\*@h") as e:
        sink_args("ftp://u:hunter22@h")
    assert "hunter22" not in str(e.value)


def test_the_url_reaches_a_child_through_its_environment(monkeypatch):
    """What `up` does with sink_args: the settings update, in the child's environment only."""
    args, update = sink_args("mqtt://ann:pa55@broker:1883")
    env = settings_env(Settings().with_updates(sink=update))
    assert "pa55" not in " ".join(args)
    for k in [k for k in os.environ if k.startswith("FER_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        if k.startswith("FER_"):
            monkeypatch.setenv(k, v)
    child = Settings().sink
    assert child.mqtt_url is not None and child.mqtt_url.get_secret_value() == "mqtt://ann:pa55@broker:1883"
    assert "pa55" not in repr(child) and "pa55" not in child.model_dump_json()  # masked outside settings_env


def test_the_sink_url_settings_are_read_from_the_environment(monkeypatch):
    # These once broke every command: "Extra inputs are not permitted".
    monkeypatch.setenv("FER_SINK__MQTT_URL", "mqtt://x")
    monkeypatch.setenv("FER_SINK__WEBHOOK_URL", "https://example.com/hook")
    s = Settings()
    assert s.sink.mqtt_url is not None and s.sink.mqtt_url.get_secret_value() == "mqtt://x"
    assert s.sink.webhook_url is not None and s.sink.webhook_url.get_secret_value() == "https://example.com/hook"
    monkeypatch.setenv("FER_SINK__MQTT_URL", "")  # compose's unset variable
    assert Settings().sink.mqtt_url is None
    result = CliRunner().invoke(app, ["status", "--help"], env={"FER_SINK__MQTT_URL": "mqtt://x"})
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(("kind", "envvar"), [("mqtt", "FER_SINK__MQTT_URL"), ("webhook", "FER_SINK__WEBHOOK_URL")])
def test_no_url_anywhere_is_one_line(monkeypatch, kind, envvar):
    monkeypatch.delenv(envvar, raising=False)
    result = CliRunner().invoke(app, ["sink", kind, "--redis-url", "redis://127.0.0.1:1/0"])
    assert isinstance(result.exception, ConfigError)
    assert str(result.exception) == (f"no {'MQTT broker' if kind == 'mqtt' else 'webhook URL'}: pass --url "
                                     f"{'mqtt://host[:port]' if kind == 'mqtt' else 'https://host/path'} or set {envvar}")


@pytest.mark.parametrize(("kind", "envvar", "url", "says"), [
    ("mqtt", "FER_SINK__MQTT_URL", "ftp://u:hunter22@h", "MQTT broker URL must look like"),
    ("webhook", "FER_SINK__WEBHOOK_URL", "ftp://u:hunter22@h", "webhook URL must be http(s)"),
])
def test_the_setting_is_the_url_without_url_and_checked_first(monkeypatch, kind, envvar, url, says):
    # Checked before Redis is asked (nothing listens on port 1): the setting was read.
    monkeypatch.setenv(envvar, url)
    result = CliRunner().invoke(app, ["sink", kind, "--redis-url", "redis://127.0.0.1:1/0"])
    assert isinstance(result.exception, ConfigError)
    assert says in str(result.exception) and "u:***@h" in str(result.exception)
    assert "hunter22" not in str(result.exception)


def test_a_password_typed_in_url_warns(monkeypatch):
    monkeypatch.setattr("sys.argv", ["fer-pipeline", "sink", "mqtt", "--url", "ftp://u:hunter22@h"])
    result = CliRunner().invoke(app, ["sink", "mqtt", "--url", "ftp://u:hunter22@h"])
    assert "the password in --url is visible to every local user (ps); set FER_SINK__MQTT_URL" in result.output
    assert isinstance(result.exception, ConfigError)


def test_the_commands_are_registered_with_their_options():
    runner = CliRunner()
    out = runner.invoke(app, ["sink", "mqtt", "--help"], terminal_width=200).output
    for option in ("--url", "--topic-prefix", "--qos", "--client-id", "--labels", "--redis-url", "--group"):
        assert option in out
    assert "FER_SINK__MQTT_URL" in out
    out = runner.invoke(app, ["sink", "webhook", "--help"], terminal_width=200).output
    assert "--url" in out and "FER_SINK__WEBHOOK_SECRET" in out and "--secret" not in out
    assert "FER_SINK__WEBHOOK_URL" in out
