"""ONNX Runtime mobile (ORT format, ``--format ort``): export, parity, the operator list, reloading."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import TINY_STUDENT, random_batch
from edgecut import runtime
from edgecut.cli import app
from edgecut.errors import EdgecutError, InputError
from edgecut.exporters import CalibConfig, ExportConfig, ParityConfig, export
from edgecut.models.store import build, save_model

LOOSE = ParityConfig(tolerances={"mask_iou": 0.0})  # an untrained student: INT8 masks are noise


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    torch.manual_seed(0)
    model = build(TINY_STUDENT, pretrained=False).eval()
    return save_model(tmp_path_factory.mktemp("ort") / "torch", model, TINY_STUDENT, model.default_spec.with_size(64))


@pytest.fixture(scope="module")
def onnx_fp32(student, tmp_path_factory):
    return export(student, tmp_path_factory.mktemp("ort") / "onnx", ExportConfig(format="onnx", threads=1))


def test_fp32_from_torch_matches_the_onnx_model_and_lists_its_operators(student, onnx_fp32, tmp_path):
    art = export(student, tmp_path / "ort", ExportConfig(format="ort", threads=1))
    m = art.manifest
    assert (m.format, m.precision, m.model_file) == ("ort", "fp32", "model.ort")
    assert set(m.files) == {"model.ort", "required_operators.config"}
    assert art.model_path.read_bytes()[4:8] == b"ORTM"
    assert m.metrics["parity"]["passed"] and m.metrics["parity"]["max_abs_diff"] <= 1e-4
    step = m.lineage[-1].params
    assert (step["optimization_style"], step["target_platform"]) == ("Fixed", "arm")
    config = (art.path / "required_operators.config").read_text()
    assert "ai.onnx;" in config and "Conv" in config and step["operators"]
    assert "nchwc" not in config.lower()  # no x86-only layout ops: the file runs on ARM
    assert "staging" not in config and "# - model.ort" in config  # names the file, not where it was made

    x = random_batch(64, 64, n=2)
    want = runtime.load(onnx_fp32, threads=1)(x)
    np.testing.assert_allclose(runtime.load(art, threads=1)(x), want, atol=1e-5)
    bare = runtime.load(art.model_path, threads=1)  # the spec travels in the file's metadata
    assert bare.spec == art.spec
    np.testing.assert_allclose(bare(x), want, atol=1e-5)


def test_int8_from_a_qdq_onnx_artifact_converts_it_as_it_is(student, synth_data, tmp_path):
    qdq = export(student, tmp_path / "int8", ExportConfig(format="onnx", precision="int8", threads=1, parity=LOOSE,
                                                          calib=CalibConfig(data=synth_data, count=4)))
    art = export(qdq, tmp_path / "ort", ExportConfig(format="ort", precision="int8", threads=1, parity=LOOSE))
    assert art.manifest.lineage[-1].params["from"] == "onnx int8"
    assert "QLinearConv" in (art.path / "required_operators.config").read_text()
    x = random_batch(64, 64)
    assert runtime.load(art, threads=1)(x).shape == (1, 1, 64, 64)
    with pytest.raises(EdgecutError, match="int8 ONNX model: export it to ort as int8"):
        export(qdq, tmp_path / "fp32", ExportConfig(format="ort", precision="fp32"))
    with pytest.raises(EdgecutError, match="calibration does not apply"):
        export(qdq, tmp_path / "again", ExportConfig(format="ort", precision="int8",
                                                     calib=CalibConfig(data=synth_data)))
    assert not (tmp_path / "fp32").exists() and not (tmp_path / "again").exists()


@pytest.mark.slow
def test_fp16_and_int8_from_torch_reload_in_a_fresh_process(student, synth_data, tmp_path):
    x = random_batch(64, 64, n=2)
    np.save(tmp_path / "x.npy", x)
    for precision in ("fp16", "int8"):
        art = export(student, tmp_path / precision, ExportConfig(format="ort", precision=precision, threads=1,
                                                                 parity=LOOSE, calib=CalibConfig(count=4)))
        code = ("import sys, numpy as np; from edgecut import runtime; "
                "np.save(sys.argv[2], runtime.load(sys.argv[1], threads=1)(np.load(sys.argv[3])))")
        done = subprocess.run([sys.executable, "-c", code, str(art.path), str(tmp_path / "y.npy"),
                               str(tmp_path / "x.npy")], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-1500:]
        np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), runtime.load(art, threads=1)(x))


def test_a_corrupt_ort_file_is_one_clear_error(tmp_path):
    junk = tmp_path / "model.ort"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(InputError, match="not an ORT-format model"):
        runtime.load(junk)
    res = CliRunner().invoke(app, ["eval", str(junk), "--data", str(tmp_path)])
    assert res.exit_code != 0 and "Traceback" not in res.output


def test_cutouts_from_an_ort_artifact(student, tmp_path):
    import cv2

    art = export(student, tmp_path / "ort", ExportConfig(format="ort", threads=1))
    photo = tmp_path / "in" / "p.jpg"
    photo.parent.mkdir()
    cv2.imwrite(str(photo), np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8))
    res = CliRunner().invoke(app, ["remove", str(photo.parent), "--model", str(art.path), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert cv2.imread(str(tmp_path / "o" / "p.png"), cv2.IMREAD_UNCHANGED).shape == (48, 40, 4)


def test_export_for_a_device_profile_takes_its_format_and_precision(student, tmp_path):
    loose = ["--tolerance", "mask_iou=0"]
    res = CliRunner().invoke(app, ["export", str(student.path), "--out", str(tmp_path / "a"), "--target",
                                   "android-arm64", "--format", "ort", *loose])
    assert res.exit_code == 0, res.output
    from edgecut.artifact import load_artifact

    m = load_artifact(tmp_path / "a").manifest
    assert (m.format, m.precision) == ("ort", "int8")  # the profile's first precision
    assert "android-arm64 expects 320x320" in res.output  # the tiny student is 64 px
    res = CliRunner().invoke(app, ["export", str(student.path), "--out", str(tmp_path / "b"), "--target",
                                   "android-arm64", "--format", "ort", "--precision", "fp32"])
    assert res.exit_code == 0 and load_artifact(tmp_path / "b").manifest.format == "ort"
    res = CliRunner().invoke(app, ["export", str(student.path), "--out", str(tmp_path / "c"), "--target",
                                   "android-arm64", "--format", "openvino"])
    assert isinstance(res.exception, EdgecutError) and "android-arm64 runs tflite, ort, onnx" in str(res.exception)
    assert not (tmp_path / "c").exists()  # refused before any work
