"""ExecuTorch (``--format executorch``): torch.export lowered to XNNPACK, FP32 and PT2E INT8."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import TINY_STUDENT, random_batch, torch_out
from edgecut import runtime
from edgecut.errors import EdgecutError, InputError
from edgecut.exporters import CalibConfig, ExportConfig, ParityConfig, export
from edgecut.models.store import build, save_model

pytest.importorskip("executorch", reason="ExecuTorch needs the executorch extra: pip install 'edgecut[executorch]'")

LOOSE = ParityConfig(tolerances={"mask_iou": 0.0})  # an untrained model: INT8 masks of logits near 0 are noise


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    torch.manual_seed(0)
    model = build(TINY_STUDENT, pretrained=False).eval()
    return save_model(tmp_path_factory.mktemp("et") / "torch", model, TINY_STUDENT, model.default_spec.with_size(64))


@pytest.mark.slow
def test_fp32_matches_torch_and_reloads_in_a_fresh_process(student, tmp_path):
    art = export(student, tmp_path / "fp32", ExportConfig(format="executorch", threads=1))
    m = art.manifest
    assert (m.format, m.precision, m.model_file) == ("executorch", "fp32", "model.pte")
    assert m.metrics["parity"]["passed"] and m.metrics["parity"]["max_abs_diff"] <= 1e-4
    assert m.lineage[-1].params["backend"] == "XnnpackPartitioner"
    x = random_batch(64, 64, n=2)
    runner = runtime.load(art, threads=1)
    assert runner.backend == "executorch" and runner.threads == 1
    np.testing.assert_allclose(runner(x), torch_out(student, x), atol=1e-4)
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np; from edgecut import runtime; "
            "np.save(sys.argv[2], runtime.load(sys.argv[1], threads=1)(np.load(sys.argv[3])))")
    done = subprocess.run([sys.executable, "-c", code, str(art.path), str(tmp_path / "y.npy"), str(tmp_path / "x.npy")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1500:]
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), runner(x))


@pytest.mark.slow
def test_int8_is_calibrated_pt2e_and_ios_takes_it(student, synth_data, tmp_path):
    from typer.testing import CliRunner

    from edgecut.artifact import load_artifact
    from edgecut.cli import app

    res = CliRunner().invoke(app, ["export", str(student.path), "--out", str(tmp_path / "int8"), "--target", "ios",
                                   "--format", "executorch", "--calib", str(synth_data), "--calib-count", "4",
                                   "--tolerance", "mask_iou=0", "--threads", "1"])
    assert res.exit_code == 0, res.output
    art = load_artifact(tmp_path / "int8")
    assert art.manifest.precision == "int8"  # ios lists fp16 first, which ExecuTorch does not hold
    assert art.manifest.metrics["calibration"]["method"] == "minmax"
    assert "PT2E" in art.manifest.lineage[-1].params["quantizer"]
    assert runtime.load(art, threads=1)(random_batch(64, 64)).shape == (1, 1, 64, 64)


def test_refusals_before_any_work(student, tmp_path):
    with pytest.raises(EdgecutError, match="has no fp16"):
        export(student, tmp_path / "a", ExportConfig(format="executorch", precision="fp16"))
    with pytest.raises(EdgecutError, match="fixed input size"):
        export(student, tmp_path / "b", ExportConfig(format="executorch", dynamic=True))
    with pytest.raises(EdgecutError, match="min/max"):
        export(student, tmp_path / "c", ExportConfig(format="executorch", precision="int8",
                                                     calib=CalibConfig(method="entropy")))
    assert not any((tmp_path / n).exists() for n in "abc")


def test_a_corrupt_program_is_one_clear_error(student, tmp_path):
    from edgecut.runtime.executorch_runner import ExecuTorchRunner

    junk = tmp_path / "model.pte"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(InputError, match="not an ExecuTorch program"):
        ExecuTorchRunner(junk, student.spec)
