"""The package as a user meets it: a light import, a lazy public API, pinned versions, every command listed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_edgecut_is_light():
    code = ("import sys, edgecut; heavy = [m for m in ('torch', 'onnxruntime', 'openvino', 'tensorrt', 'onnx', "
            "'cv2', 'torchvision') if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_public_api_resolves_lazily():
    import edgecut

    assert edgecut.ModelSpec().input_size == (320, 320)
    assert "unet" in edgecut.list_models()
    assert set(edgecut.__all__) >= {"train", "evaluate", "remove_background", "load_model", "ModelSpec"}


def test_constraints_pin_the_tested_torch():
    pins = dict(ln.split("==") for ln in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in ln and not ln.startswith("#"))
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"


def test_cli_help_lists_every_command():
    from typer.testing import CliRunner

    from edgecut.cli import app

    out = CliRunner().invoke(app, ["--help"])
    assert out.exit_code == 0
    for cmd in ("data", "train", "distill", "prune", "qat", "export", "eval", "bench", "compare", "info", "remove",
                "doctor", "quickstart"):
        assert cmd in out.output


def test_the_main_job_needs_nothing_beyond_the_core_install():
    """README's first command installs edgecut alone: what the quickstart recipe uses must be core."""
    import re
    import tomllib

    from edgecut.recipe import load_recipe

    core = {re.split(r"[<>=!~\[ ]", d, maxsplit=1)[0].lower().replace("_", "-")
            for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    recipe = load_recipe(ROOT / "recipes" / "quickstart.yaml")
    needs = {n for s in recipe.steps.values() for n in s.kind.needs(s.config)}
    dist = {"torch_pruning": "torch-pruning", "cv2": "opencv-python-headless"}
    assert needs and {dist.get(n, n).replace("_", "-") for n in needs} <= core
    assert {"onnxslim", "matplotlib"} <= core  # the slimmed ONNX graph and the report's pareto.png
