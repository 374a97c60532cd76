"""Static checks, run with the tests so CI keeps them: ruff over the repository, mypy over
the core package and the emotion log."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

# Top-level folders that install as fer_pipeline.<name> (pyproject's package-dir).
MAPPED = ("producers", "workers", "consumers", "emotion_log", "analytics", "dashboard", "trainer", "models", "demo")
# What mypy checks, as paths inside the installed package's shape.
TYPED = ("fer_pipeline/*.py", "fer_pipeline/cli/*.py", "fer_pipeline/emotion_log/*.py")


def test_ruff_is_clean():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    r = subprocess.run([ruff, "check", "--no-cache", str(REPO)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def package_shaped_tree(root: Path) -> Path:
    """Symlinks that lay the checkout out as the installed package (fer_pipeline/emotion_log/...),
    so that mypy sees every module under the name the code imports it by."""
    pkg = root / "fer_pipeline"
    pkg.mkdir(parents=True)
    for entry in (REPO / "fer_pipeline").iterdir():
        if entry.name != "__pycache__":
            (pkg / entry.name).symlink_to(entry)
    for name in MAPPED:
        (pkg / name).symlink_to(REPO / name)
    return root


def test_mypy_is_clean_on_the_core_and_the_emotion_log(tmp_path):
    pytest.importorskip("mypy", reason="mypy is not installed (pip install -e '.[test]')")
    root = package_shaped_tree(tmp_path / "src")
    files = sorted(str(p.relative_to(root)) for pattern in TYPED for p in root.glob(pattern))
    r = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
                        "--cache-dir", str(tmp_path / "cache"), *files],
                       capture_output=True, text=True, timeout=600, cwd=root)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
