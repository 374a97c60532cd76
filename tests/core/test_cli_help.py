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


def test_every_default_is_shown_one_way():
    """`[default: X]` (typer's place for it) on every option that has a default, never a
    "(default: X)" of its own in the help text."""
    missing = []
    for name, cmd in _commands().items():
        if hasattr(cmd, "commands"):
            continue
        text = runner.invoke(app, [*name.split(), "--help"], env={"COLUMNS": "400"}).output
        assert "(default" not in text, (name, text)
        for param in cmd.params:
            takes_value = not getattr(param, "is_flag", False) or getattr(param, "secondary_opts", None)
            if param.name == "help" or param.required or not takes_value or getattr(param, "hidden", False):
                continue
            line = next((ln for ln in text.splitlines()
                         if re.match(rf"│ +(-\w +)?{re.escape(param.opts[0])}[ ,]", ln)), "")
            block = text[text.find(line):].split("\n│ --", 1)[0] if line else ""
            if "[default:" not in block:
                missing.append(f"{name} {param.opts[0]}")
    assert missing == []
