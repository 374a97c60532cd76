"""The wheel carries what `fer-pipeline up --source demo` needs: the shipped model and the
demo clip install inside the package, so a plain `pip install` works away from the checkout."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import pytest

from fer_pipeline.settings import DEFAULT_MODEL_DIR, shipped_path
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_the_wheel_ships_the_model_and_the_demo_clip(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = tmp_path.glob("fer_pipeline-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    meta = json.loads((DEFAULT_MODEL_DIR / "model.json").read_text())
    for f in {*meta["files"].values(), "model.json"}:
        assert f"fer_pipeline/models/{f}" in names
    assert "fer_pipeline/demo/short_hamilton_clip.mp4" in names
    assert "fer_pipeline/demo/ATTRIBUTION.md" in names  # the clip travels with its licence
    # Resources read with importlib.resources: the transport's scripts, the dashboard's page.
    assert {"fer_pipeline/lua/publish.lua", "fer_pipeline/dashboard/static/app.js",
            "fer_pipeline/dashboard/static/vendor/uPlot.iife.min.js"} <= names
    assert not any(n.startswith("benchmarks/") for n in names)  # run from a checkout only


def test_shipped_paths_resolve_to_the_checkout_in_a_source_tree():
    # Here (an editable install) the packages fer_pipeline.models/.demo are the top-level folders.
    assert shipped_path("models") == REPO / "models" == DEFAULT_MODEL_DIR
    assert (shipped_path("demo") / "short_hamilton_clip.mp4").is_file()
