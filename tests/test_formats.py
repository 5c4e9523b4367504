"""The format table: one row says everything about a format, and a behaviour every format promises is
tested once, over the rows (NNCF's cross-backend templates)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import random_batch, torch_out
from edgecut import _optional, runtime
from edgecut.errors import ModelError
from edgecut.exporters import ExportConfig, export
from edgecut.formats import EXPORT_FORMATS, FORMATS, Format


def _runs_here_from_torch(row: Format) -> bool:
    return (row.exporter is not None and "cpu" in row.devices and "torch" in row.parents and not row.converter_env
            and all(_optional.available(m) for m in (*row.modules, row.runtime_module or "")))


DYNAMIC = [name for name, row in EXPORT_FORMATS.items() if row.fixed_size is None and _runs_here_from_torch(row)]


@pytest.mark.parametrize("fmt", DYNAMIC)
def test_a_dynamic_export_runs_at_other_sizes(fmt, trained, tmp_path):
    art = export(trained, tmp_path / "dyn", ExportConfig(format=fmt, precision="fp32", dynamic=True, threads=1))
    assert art.spec.dynamic_size
    parity = art.manifest.metrics["parity"]
    assert parity["sizes"] == [[32, 32], [40, 36]] and parity["max_abs_diff"] <= 1e-4
    runner = runtime.load(art, threads=1)
    x = random_batch(48, 20, n=3)
    np.testing.assert_allclose(runner(x), torch_out(trained, x), atol=1e-4)
    with pytest.raises(ModelError, match="multiple of 4"):
        runner(random_batch(30, 32))


def test_every_row_is_whole():
    for name, row in FORMATS.items():
        assert row.name == name and row.precisions and row.suffix.startswith(".")
        assert (row.runner is None) == (row.backend is None) == bool(row.not_run_here), name
        for ref in (row.runner, row.exporter):
            if ref:
                module, _, attr = ref.partition(":")
                assert module.startswith("edgecut.") and attr, ref


# ------------------------------------------------------------------ a format is one row, an exporter and a Runner

class ToyRunner:
    """A toy format's Runner: its file is an ONNX graph under another suffix, run by ONNX Runtime."""

    backend = "toy"

    def __init__(self, runner) -> None:
        self._runner, self.spec, self.device = runner, runner.spec, "cpu"

    @classmethod
    def from_artifact(cls, art, device: str = "cpu", threads: int | None = None) -> ToyRunner:
        from edgecut.runtime.onnxruntime_runner import OnnxRuntimeRunner

        return cls(OnnxRuntimeRunner(art.model_path, art.spec, device=device, threads=threads))

    def __call__(self, batch):
        return self._runner(batch)


def export_toy(parent, workdir: Path, config):
    from edgecut.exporters.onnx import export_onnx

    onnx = export_onnx(parent, workdir, config)
    shutil.move(workdir / onnx.model_file, workdir / "model.toy")
    onnx.files = {"model.toy": workdir / "model.toy"}
    onnx.model_file = "model.toy"
    return onnx


def test_a_new_format_is_one_row_its_exporter_and_its_runner(trained, synth_data, tmp_path, monkeypatch):
    row = Format("toy", ".toy", ("fp32",), "toy", f"{__name__}:ToyRunner", "onnxruntime", f"{__name__}:export_toy",
                 modules=("onnx", "onnxruntime"))
    monkeypatch.setitem(FORMATS, "toy", row)
    monkeypatch.setitem(EXPORT_FORMATS, "toy", row)
    art = export(trained, tmp_path / "toy", ExportConfig(format="toy"), progress=False)
    assert art.manifest.format == "toy" and art.manifest.metrics["parity"]["passed"]
    runner = runtime.load(art, threads=1)
    assert isinstance(runner, ToyRunner)
    from edgecut.data.folder import find_samples
    from edgecut.measure.accuracy import evaluate

    assert evaluate(runner, find_samples(synth_data, "val"), progress=False).metrics["iou"] > 0.3
