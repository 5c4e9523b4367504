"""LiteRT (``--format tflite``): litert-torch in the converter environment, ai-edge-litert here."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import TINY_STUDENT, random_batch, torch_out
from edgecut import runtime
from edgecut.cli import app
from edgecut.errors import EdgecutError, InputError, MissingBackendError
from edgecut.exporters import CalibConfig, ExportConfig, LiteRTOptions, ParityConfig, export
from edgecut.models.store import build, save_model

pytest.importorskip("ai_edge_litert", reason="LiteRT needs the litert extra: pip install 'edgecut[litert]'")

LOOSE = ParityConfig(tolerances={"mask_iou": 0.0})  # an untrained model: INT8 masks of logits near 0 are noise


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    torch.manual_seed(0)
    model = build(TINY_STUDENT, pretrained=False).eval()
    return save_model(tmp_path_factory.mktemp("litert") / "torch", model, TINY_STUDENT, model.default_spec.with_size(64))


@pytest.mark.slow
def test_fp32_matches_torch_and_reloads_in_a_fresh_process(student, litert_env, tmp_path):
    art = export(student, tmp_path / "fp32", ExportConfig(format="tflite", threads=1))
    m = art.manifest
    assert (m.format, m.precision, m.model_file) == ("tflite", "fp32", "model.tflite")
    assert art.model_path.read_bytes()[4:8] == b"TFL3"
    assert m.metrics["parity"]["passed"] and m.metrics["parity"]["max_abs_diff"] <= 1e-4
    assert m.lineage[-1].params["converter"].startswith("litert_torch")
    assert m.metrics["conversion"]["operators"].get("CONV_2D", 0) > 0
    x = random_batch(64, 64, n=2)
    runner = runtime.load(art, threads=1)
    assert runner.backend == "litert"
    np.testing.assert_allclose(runner(x), torch_out(student, x), atol=1e-4)
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np; from edgecut import runtime; "
            "np.save(sys.argv[2], runtime.load(sys.argv[1], threads=1)(np.load(sys.argv[3])))")
    done = subprocess.run([sys.executable, "-c", code, str(art.path), str(tmp_path / "y.npy"), str(tmp_path / "x.npy")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1500:]
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), runner(x))
    with pytest.raises(EdgecutError, match="exported for 64x64 inputs only"):
        runner(random_batch(96, 96))


@pytest.mark.slow
def test_fp16_weights_and_full_integer_int8(student, litert_env, synth_data, tmp_path):
    fp16 = export(student, tmp_path / "fp16", ExportConfig(format="tflite", precision="fp16", threads=1, parity=LOOSE))
    int8 = export(student, tmp_path / "int8", ExportConfig(format="tflite", precision="int8", threads=1, parity=LOOSE,
                                                           calib=CalibConfig(data=synth_data, count=4)))
    assert int8.manifest.metrics["calibration"]["names"] and int8.manifest.lineage[-1].params["recipe"] == "static_wi8_ai8"
    runner = runtime.load(int8, threads=1)
    assert runner._in_q is not None  # int8 input: the Runner quantises it as an app would
    assert runner(random_batch(64, 64, n=2)).dtype == np.float32
    sizes = {a.manifest.precision: a.model_path.stat().st_size for a in (fp16, int8)}
    assert sizes["int8"] < sizes["fp16"]
    assert fp16.manifest.metrics["conversion"]["operators"].get("DEQUANTIZE", 0) > 0  # float16 weights, dequantised


@pytest.mark.slow
def test_dynamic_range_int8_takes_no_calibration(student, litert_env, synth_data, tmp_path):
    config = ExportConfig(format="tflite", precision="int8", threads=1, parity=LOOSE, litert=LiteRTOptions("dynamic"))
    art = export(student, tmp_path / "dyn", config)
    assert art.manifest.lineage[-1].params["recipe"] == "dynamic_wi8_afp32" and "calibration" not in art.manifest.metrics
    with pytest.raises(EdgecutError, match="--calib does not apply"):
        export(student, tmp_path / "x", ExportConfig(format="tflite", precision="int8", litert=LiteRTOptions("dynamic"),
                                                     calib=CalibConfig(data=synth_data)))
    with pytest.raises(EdgecutError, match="int8 only"):
        export(student, tmp_path / "y", ExportConfig(format="tflite", litert=LiteRTOptions("dynamic")))
    with pytest.raises(EdgecutError, match="min/max"):
        export(student, tmp_path / "e", ExportConfig(format="tflite", precision="int8",
                                                     calib=CalibConfig(method="entropy")))
    with pytest.raises(EdgecutError, match="not an option of format onnx"):
        export(student, tmp_path / "z", ExportConfig(format="onnx", litert=LiteRTOptions("dynamic")))


def test_without_the_converter_environment_the_error_says_how_to_build_it(student, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECUT_ENVS", str(tmp_path / "no-envs"))
    with pytest.raises(MissingBackendError, match="edgecut env setup litert"):
        export(student, tmp_path / "x", ExportConfig(format="tflite"))
    with pytest.raises(EdgecutError, match="fixed input size"):
        export(student, tmp_path / "d", ExportConfig(format="tflite", dynamic=True))
    assert not (tmp_path / "x").exists() and not (tmp_path / "d").exists()
    res = CliRunner().invoke(app, ["doctor"])
    assert res.exit_code == 0 and "litert: not set up: edgecut env setup litert" in res.output


def test_a_corrupt_tflite_file_is_one_clear_error(tmp_path, student):
    from edgecut.runtime.litert_runner import LiteRTRunner

    junk = tmp_path / "model.tflite"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(InputError, match="not a TFLite flatbuffer"):
        LiteRTRunner(junk, student.spec)


def test_the_environment_shares_edgecut_torch_and_puts_its_own_packages_first(tmp_path, monkeypatch):
    """A converter environment built from pins of its own: torch comes from edgecut's environment,
    a package it pins comes from its own folder, and setup is idempotent."""
    import edgecut.converters.envs as envs

    pins = tmp_path / "probe.txt"
    pins.write_text("# test pins\n")
    env = envs.ConverterEnv("probe", (), "a test", "nothing")
    monkeypatch.setitem(envs.ENVS, "probe", env)
    monkeypatch.setattr(envs.ConverterEnv, "pins_file", property(lambda self: pins))
    monkeypatch.setenv("EDGECUT_ENVS", str(tmp_path / "envs"))
    said: list[str] = []
    root = envs.setup("probe", say=said.append)
    assert envs.is_ready("probe") and (root / envs.READY).is_file()
    probe = "import sys, torch; print(torch.__version__); print([p for p in sys.path if 'site-packages' in p])"
    version, paths = subprocess.run([str(envs.python("probe")), "-c", probe], capture_output=True, text=True,
                                    check=True).stdout.splitlines()
    assert version == torch.__version__  # edgecut's torch, not a second one
    assert paths.index(str(root)) < paths.index(envs.shared_site())  # its own site-packages first
    envs.setup("probe", say=said.append)
    assert sum("virtual environment" in line for line in said) == 1  # built once, then found ready
    assert said[-1] == f"probe environment ready in {root}"
    pins.write_text("# changed pins\nsomething==1.0\n")
    assert not envs.is_ready("probe")  # new pins: rebuilt on the next setup


@pytest.mark.slow
def test_export_for_android_takes_litert_int8(student, litert_env, tmp_path):
    from edgecut.artifact import load_artifact

    res = CliRunner().invoke(app, ["export", str(student.path), "--out", str(tmp_path / "a"), "--target",
                                   "android-arm64", "--tolerance", "mask_iou=0"])
    assert res.exit_code == 0, res.output
    m = load_artifact(tmp_path / "a").manifest
    assert (m.format, m.precision) == ("tflite", "int8")  # the profile's first choices, as measured
