"""The CLI's --help as a new user reads it: `up` first, every command in a panel, no type tags."""

from __future__ import annotations

import re

import typer
from typer.testing import CliRunner

from fer_pipeline.cli import PANELS, app

runner = CliRunner()


def _commands() -> dict:
    root = typer.main.get_command(app)  # typer's own (vendored) click group
    out = {}
    for name, cmd in root.commands.items():
        if hasattr(cmd, "commands"):
            out |= {f"{name} {sub}": c for sub, c in cmd.commands.items()}
        out[name] = cmd
    return out


def test_up_comes_first_and_every_visible_command_has_its_panel():
    text = runner.invoke(app, ["--help"], env={"COLUMNS": "120"}).output
    listed = re.findall(r"^│ (\w[\w-]*) ", text, flags=re.M)
    assert listed[0] == "up"
    placed = {n for names in PANELS.values() for n in names}
    visible = {n for n, c in _commands().items() if " " not in n and not c.hidden}
    assert visible == placed and set(listed) == placed


def test_no_option_carries_a_type_tag():
    for name, _ in _commands().items():
        text = runner.invoke(app, [*name.split(), "--help"], env={"COLUMNS": "160"}).output
        assert not re.search(r"<(bool|str|int|float|path|list\[[a-z]+\])[^>]*>", text), (name, text)
