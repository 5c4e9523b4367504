"""ncnn (``--format ncnn``, converted by pnnx): export, parity, reloading, refusals."""

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
from edgecut.exporters import ExportConfig, ParityConfig, export
from edgecut.models.store import build, save_model

pytest.importorskip("pnnx", reason="ncnn export needs the ncnn extra: pip install 'edgecut[ncnn]'")
pytest.importorskip("ncnn", reason="ncnn export needs the ncnn extra: pip install 'edgecut[ncnn]'")

LOOSE = ParityConfig(tolerances={"mask_iou": 0.0})  # an untrained model: fp16 masks of logits near 0 flip


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    torch.manual_seed(0)
    model = build(TINY_STUDENT, pretrained=False).eval()
    return save_model(tmp_path_factory.mktemp("ncnn") / "torch", model, TINY_STUDENT, model.default_spec.with_size(64))


@pytest.fixture(scope="module")
def student_ncnn(student, tmp_path_factory):
    return export(student, tmp_path_factory.mktemp("ncnn") / "fp32", ExportConfig(format="ncnn", threads=1))


def test_fp32_student_matches_torch(student, student_ncnn):
    m = student_ncnn.manifest
    assert (m.format, m.precision, m.model_file) == ("ncnn", "fp32", "model.ncnn.param")
    assert set(m.files) == {"model.ncnn.param", "model.ncnn.bin"}
    assert m.metrics["parity"]["passed"] and m.metrics["parity"]["max_abs_diff"] <= 1e-4
    assert m.lineage[-1].params["weights"] == "fp32" and m.lineage[-1].params["layers"] > 10
    assert not list(student_ncnn.path.glob("*.pt")) and not list(student_ncnn.path.glob("*pnnx*"))
    x = random_batch(64, 64, n=3)
    runner = runtime.load(student_ncnn, threads=1)
    assert runner.backend == "ncnn" and runner.options["use_fp16_storage"] is False
    np.testing.assert_allclose(runner(x), torch_out(student, x), atol=1e-4)
    with pytest.raises(EdgecutError, match="exported for 64x64 inputs only"):
        runner(random_batch(96, 96))


def test_dynamic_teacher_runs_at_other_sizes(tiny_artifact, tmp_path):
    art = export(tiny_artifact, tmp_path / "ncnn", ExportConfig(format="ncnn", dynamic=True, threads=1))
    assert art.spec.dynamic_size
    runner = runtime.load(art, threads=1)
    for h, w in ((32, 32), (48, 64)):
        x = random_batch(h, w, n=2)
        np.testing.assert_allclose(runner(x), torch_out(tiny_artifact, x), atol=1e-4)


@pytest.mark.slow
def test_fp16_halves_the_weights_and_reloads_in_a_fresh_process(student, student_ncnn, tmp_path):
    art = export(student, tmp_path / "fp16", ExportConfig(format="ncnn", precision="fp16", threads=1, parity=LOOSE))
    assert art.manifest.lineage[-1].params["weights"] == "fp16"
    fp32_bin = (student_ncnn.path / "model.ncnn.bin").stat().st_size
    assert (art.path / "model.ncnn.bin").stat().st_size < 0.6 * fp32_bin
    assert runtime.load(art, threads=1).options["use_fp16_arithmetic"] is True
    x = random_batch(64, 64, n=2)
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np; from edgecut import runtime; "
            "np.save(sys.argv[2], runtime.load(sys.argv[1], threads=1)(np.load(sys.argv[3])))")
    done = subprocess.run([sys.executable, "-c", code, str(art.path), str(tmp_path / "y.npy"), str(tmp_path / "x.npy")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1500:]
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), runtime.load(art, threads=1)(x))


def test_int8_is_refused_with_the_reason(student, tmp_path):
    with pytest.raises(EdgecutError, match="ncnn2table and ncnn2int8"):
        export(student, tmp_path / "int8", ExportConfig(format="ncnn", precision="int8"))
    assert not (tmp_path / "int8").exists()


def test_a_missing_converter_names_the_extra(student, tmp_path, monkeypatch):
    from edgecut import _optional

    real = _optional.available
    monkeypatch.setattr(_optional, "available", lambda m: m != "pnnx" and real(m))
    with pytest.raises(MissingBackendError, match=r"edgecut\[ncnn\]"):
        export(student, tmp_path / "x", ExportConfig(format="ncnn"))


def test_corrupt_or_truncated_files_are_one_clear_error(student_ncnn, tmp_path):
    import shutil

    from edgecut.artifact import load_artifact
    from edgecut.runtime.ncnn_runner import NcnnRunner

    bad = tmp_path / "bad"
    shutil.copytree(student_ncnn.path, bad)
    weights = bad / "model.ncnn.bin"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(InputError, match="model.ncnn.bin"):
        runtime.load(load_artifact(bad, verify=False))
    (bad / "model.ncnn.param").write_text("not a graph\n")
    with pytest.raises(InputError, match="not an ncnn .param file"):
        NcnnRunner(bad / "model.ncnn.param", student_ncnn.spec)
    res = CliRunner().invoke(app, ["eval", str(bad), "--data", str(tmp_path)])
    assert res.exit_code != 0 and "Traceback" not in res.output


def test_cutouts_from_an_ncnn_artifact(student_ncnn, tmp_path):
    import cv2

    photo = tmp_path / "in" / "p.jpg"
    photo.parent.mkdir()
    cv2.imwrite(str(photo), np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8))
    res = CliRunner().invoke(app, ["remove", str(photo.parent), "--model", str(student_ncnn.path),
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert cv2.imread(str(tmp_path / "o" / "p.png"), cv2.IMREAD_UNCHANGED).shape == (48, 40, 4)


def test_export_for_android_with_ncnn_takes_the_first_precision_ncnn_holds(student, tmp_path):
    from edgecut.artifact import load_artifact

    res = CliRunner().invoke(app, ["export", str(student.path), "--out", str(tmp_path / "a"), "--target",
                                   "android-arm64", "--format", "ncnn"])
    assert res.exit_code == 0, res.output
    m = load_artifact(tmp_path / "a").manifest
    assert (m.format, m.precision) == ("ncnn", "fp32")  # the profile's first (int8) is not an ncnn precision
