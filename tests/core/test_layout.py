"""The package tree's dependency rules, checked on the source (imports anywhere in a module,
function-level ones included): they keep each folder's concern its own."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("fer_pipeline", "producers", "workers", "consumers", "emotion_log", "analytics", "dashboard", "trainer")


def imports_of(folder: str) -> dict[str, set[str]]:
    """Per module of ``folder``, the fer_pipeline subpackages it imports (``emotion_log``, ...)."""
    out: dict[str, set[str]] = {}
    for path in sorted((REPO / folder).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module:
                mods = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            else:
                continue
            names |= {m.split(".")[1] for m in mods if m.startswith("fer_pipeline.") and m.count(".") >= 1}
        out[str(path.relative_to(REPO))] = names
    return out


def offenders(folder: str, forbidden: set[str]) -> list[str]:
    return [f"{mod} imports {sorted(used & forbidden)}" for mod, used in imports_of(folder).items() if used & forbidden]


def test_the_emotion_log_depends_on_neither_analytics_nor_consumers():
    assert offenders("emotion_log", {"analytics", "consumers", "dashboard", "cli"}) == []


def test_analytics_reads_the_log_and_nothing_downstream():
    assert offenders("analytics", {"consumers", "dashboard", "cli"}) == []


def test_nothing_but_the_cli_imports_the_dashboard():
    found = [f for folder in PACKAGES if folder != "dashboard" for f in offenders(folder, {"dashboard"})]
    assert [f for f in found if not f.startswith("fer_pipeline/cli/")] == []


def test_stream_consumers_do_not_import_analytics():
    # Except the result sinks (consumers/sinks): their live episodes must be the report's, so
    # they run the report's own rules (analytics.options, .smoothing, .episodes) instead of a copy.
    found = offenders("consumers", {"analytics", "dashboard"})
    assert [f for f in found if not (f.startswith("consumers/sinks/") and "dashboard" not in f)] == []


def test_only_the_transport_touches_the_redis_client():
    """Every Redis operation of the product is a Transport method (transport.py owns the client)."""
    found = []
    for folder in PACKAGES:
        for path in sorted((REPO / folder).rglob("*.py")):
            if path.name in ("transport.py", "redis_compat.py"):
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Attribute) and node.attr in ("client", "_client") and \
                        not (isinstance(node.value, ast.Name) and node.value.id == "self"):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} .{node.attr}")
    assert found == []
