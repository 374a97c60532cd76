"""`fer-pipeline sink`: the child arguments `up --sink` starts, and the one-line errors."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from fer_pipeline.cli import app
from fer_pipeline.cli.sink import sink_args
from fer_pipeline.errors import ConfigError


def test_sink_args_pick_the_sink_by_scheme():
    assert sink_args("mqtt://u:p@broker:1883") == ["sink", "mqtt", "--url", "mqtt://u:p@broker:1883"]
    assert sink_args("mqtts://broker") == ["sink", "mqtt", "--url", "mqtts://broker"]
    assert sink_args("https://example.com/hook") == ["sink", "webhook", "--url", "https://example.com/hook"]
    assert sink_args("http://127.0.0.1:9000/") == ["sink", "webhook", "--url", "http://127.0.0.1:9000/"]
    with pytest.raises(ConfigError, match=r"ftp://u:\*\*\*@h") as e:
        sink_args("ftp://u:hunter22@h")
    assert "hunter22" not in str(e.value)


def test_the_commands_are_registered_with_their_options():
    runner = CliRunner()
    out = runner.invoke(app, ["sink", "mqtt", "--help"], terminal_width=200).output
    for option in ("--url", "--topic-prefix", "--qos", "--client-id", "--labels", "--redis-url", "--group"):
        assert option in out
    out = runner.invoke(app, ["sink", "webhook", "--help"], terminal_width=200).output
    assert "--url" in out and "FER_SINK__WEBHOOK_SECRET" in out and "--secret" not in out
