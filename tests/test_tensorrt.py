"""TensorRT: the trtexec command, build-target checks and refusals (run anywhere); engines built
and run on a CUDA GPU (marked ``tensorrt``, skipped without TensorRT or a GPU)."""

from __future__ import annotations

import sys
import types

import numpy as np
import onnx
import pytest
import torch

from edgecut import _optional, runtime
from edgecut.artifact import Manifest, ModelSpec, Step, write_artifact
from edgecut.errors import EdgecutError, MissingBackendError, ModelError
from edgecut.exporters import FORMATS, CalibConfig, ExportConfig, ParityConfig, TensorRTOptions, export, qdq
from edgecut.exporters.tensorrt import EngineBuild, onnx_for_engine, shapes_for, trtexec_command, trtexec_text
from edgecut.runtime.tensorrt_runner import compatibility

STATIC = ModelSpec(input_size=(32, 32), dynamic_size=False, size_divisor=4)
DYNAMIC = ModelSpec(input_size=(320, 256), dynamic_size=True, size_divisor=16)
H100 = {"tensorrt": "10.13.0.35", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}


def _build(spec: ModelSpec, precision: str, **kw) -> EngineBuild:
    lo, opt, hi = shapes_for(spec, kw.pop("max_batch", 8))
    return EngineBuild(precision=precision, min_shape=lo, opt_shape=opt, max_shape=hi, **kw)


# --------------------------------------------------------------------------- pure functions


def test_profile_shapes_follow_the_spec():
    assert shapes_for(STATIC) == ((1, 3, 32, 32), (1, 3, 32, 32), (8, 3, 32, 32))
    assert shapes_for(DYNAMIC, 4) == ((1, 3, 160, 128), (1, 3, 320, 256), (4, 3, 640, 512))
    tiny = ModelSpec(input_size=(16, 48), dynamic_size=True, size_divisor=16)
    assert shapes_for(tiny, 1)[0] == (1, 3, 16, 16)  # never below one size-divisor block
    with pytest.raises(EdgecutError, match="max_batch"):
        shapes_for(STATIC, 0)


def test_trtexec_command_static_fp32():
    assert trtexec_command(_build(STATIC, "fp32")) == (
        "trtexec --onnx=model.onnx --saveEngine=model.engine --minShapes=input:1x3x32x32 "
        "--optShapes=input:1x3x32x32 --maxShapes=input:8x3x32x32 --memPoolSize=workspace:1024M "
        "--timingCacheFile=timing.cache --skipInference")


def test_trtexec_command_dynamic_fp16():
    cmd = trtexec_command(_build(DYNAMIC, "fp16", max_batch=4, workspace_mib=2048))
    assert "--minShapes=input:1x3x160x128 --optShapes=input:1x3x320x256 --maxShapes=input:4x3x640x512" in cmd
    assert "--memPoolSize=workspace:2048M" in cmd and cmd.count("--fp16") == 1 and "--int8" not in cmd


def test_trtexec_command_int8_qdq_and_calibrated():
    explicit = trtexec_command(_build(STATIC, "int8"))
    assert "--int8" in explicit and "--calib" not in explicit and "--fp16" not in explicit
    calibrated = trtexec_command(_build(STATIC, "int8", int8_source="calibrator"))
    assert "--int8 --calib=calib.cache" in calibrated
    with pytest.raises(EdgecutError, match="fp32, fp16 or int8"):
        trtexec_command(_build(STATIC, "bf16"))


def test_trtexec_text_says_what_it_was_built_on():
    text = trtexec_text(_build(STATIC, "fp16"), H100)
    lines = text.splitlines()
    assert lines[-1].startswith("trtexec --onnx=model.onnx") and text.endswith("\n")
    assert "TensorRT 10.13.0.35 on NVIDIA H100 80GB HBM3 (compute capability 9.0)" in text
    assert all(line.startswith("#") for line in lines[:-1])


def test_engines_from_another_gpu_or_tensorrt_are_refused():
    assert compatibility(H100, H100) is None
    assert compatibility(None, H100) is None  # nothing recorded: TensorRT itself decides
    assert compatibility(H100, {**H100, "gpu": "NVIDIA H100 PCIe"}) is None  # same compute capability
    orin = {"tensorrt": "10.3.0", "gpu": "Orin", "compute_capability": "8.7"}
    assert "TensorRT 10.13.0.35, this machine has 10.3.0" in compatibility(H100, orin)
    msg = compatibility(H100, {**orin, "tensorrt": H100["tensorrt"]})
    assert "compute capability 9.0" in msg and "Orin (compute capability 8.7)" in msg


# --------------------------------------------------------------------------- refusals on this machine


def test_format_row():
    row = FORMATS["tensorrt"]
    assert (row.precisions, row.devices, row.extra, row.modules) == (("fp32", "fp16", "int8"), ("cuda",),
                                                                      "tensorrt", ("tensorrt",))


def test_export_without_tensorrt_names_the_extra(monkeypatch, tiny_artifact, tmp_path):
    real = _optional.available
    monkeypatch.setattr(_optional, "available", lambda m: m != "tensorrt" and real(m))
    with pytest.raises(MissingBackendError, match=r"tensorrt is needed for exporting to tensorrt.*edgecut\[tensorrt\]"):
        export(tiny_artifact, tmp_path / "trt", ExportConfig(format="tensorrt", precision="fp16", device="cuda"))
    assert not (tmp_path / "trt").exists() and not list(tmp_path.iterdir())


@pytest.mark.skipif(_optional.available("tensorrt"), reason="checks the refusal where TensorRT is not installed")
def test_cli_error_names_the_extra(tiny_artifact, tmp_path):
    import subprocess

    code = ("import sys; from edgecut.cli import main; sys.argv = ['edgecut', 'export', sys.argv[1], '--out', "
            "sys.argv[2], '--format', 'tensorrt', '--device', 'cuda']; main()")
    p = subprocess.run([sys.executable, "-c", code, str(tiny_artifact.path), str(tmp_path / "x")],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "pip install 'edgecut[tensorrt]'" in p.stderr  # not eaten as rich markup


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a CUDA GPU")
def test_export_needs_a_cuda_device_and_gpu(monkeypatch, tiny_artifact, tmp_path):
    real = _optional.available
    monkeypatch.setattr(_optional, "available", lambda m: m == "tensorrt" or real(m))
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))  # a stand-in: nothing is built
    with pytest.raises(EdgecutError, match="needs --device cuda"):
        export(tiny_artifact, tmp_path / "cpu", ExportConfig(format="tensorrt", precision="fp32"))
    with pytest.raises(EdgecutError, match="CUDA GPU .* has none"):
        export(tiny_artifact, tmp_path / "nogpu", ExportConfig(format="tensorrt", precision="fp32", device="cuda"))
    assert not list(tmp_path.iterdir())  # the staging folder is gone too


def test_runtime_dispatches_engines_to_the_tensorrt_runner(monkeypatch, tmp_path):
    real = _optional.available
    monkeypatch.setattr(_optional, "available", lambda m: m != "tensorrt" and real(m))
    manifest = Manifest(format="tensorrt", precision="fp16", model_file="model.engine", spec=STATIC,
                        lineage=[Step(step="export", params={"format": "tensorrt", "built_for": H100})])
    art = write_artifact(tmp_path / "engine", manifest, {"model.engine": b"not an engine"})
    with pytest.raises(MissingBackendError, match=r"running TensorRT engines.*edgecut\[tensorrt\]"):
        runtime.load(art.path, device="cuda")


def test_int8_onnx_for_the_engine_is_symmetric_qdq(tiny_artifact, tmp_path):
    options = ExportConfig(precision="int8", calib=CalibConfig(count=4))
    path, spec, params, metrics = onnx_for_engine(tiny_artifact, tmp_path, options)
    model = onnx.load(str(path))
    assert qdq.tensorrt_compatible(model) is None
    assert params["qdq"]["symmetric"] and set(params["qdq"]["zero_point_types"]) == {"int8"}
    assert params["int8_source"] == "qdq" and "calibration" in metrics and not spec.dynamic_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_uint8_or_asymmetric_int8_onnx_is_refused_with_the_fix(tiny_artifact, tmp_path):
    """The CPU's INT8 ONNX (uint8 activations) is refused; so is an asymmetric int8 one."""
    from onnxruntime import quantization as q

    ptq = export(tiny_artifact, tmp_path / "ptq", ExportConfig(format="onnx", precision="int8",
                                                               calib=CalibConfig(count=4),
                                                               parity=ParityConfig(tolerances={"mask_iou": 0.0}),
                                                               threads=1))
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(ModelError, match="quantises to uint8; TensorRT takes int8 Q/DQ only .build INT8 from the float"):
        onnx_for_engine(ptq, work, ExportConfig(precision="int8"))
    with pytest.raises(EdgecutError, match="build it as int8"):
        onnx_for_engine(ptq, work, ExportConfig(precision="fp16"))

    fp32 = export(tiny_artifact, tmp_path / "fp32", ExportConfig(format="onnx", threads=1))
    batches = iter([{"input": np.random.default_rng(i).standard_normal((1, 3, 32, 32)).astype(np.float32)}
                    for i in range(2)])

    class Reader(q.CalibrationDataReader):
        def get_next(self):
            return next(batches, None)

    q.quantize_static(str(fp32.model_path), str(tmp_path / "s8.onnx"), Reader(), quant_format=q.QuantFormat.QDQ,
                      activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8)
    assert "zero points are not all 0" in qdq.tensorrt_compatible(onnx.load(str(tmp_path / "s8.onnx")))


# --------------------------------------------------------------------------- on a CUDA GPU with TensorRT


@pytest.fixture
def gpu_trt(monkeypatch, tmp_path):
    """TensorRT and a CUDA GPU, or a skip saying which is missing; the machine timing cache in tmp."""
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install 'edgecut[tensorrt]')")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT engines are built and run on a CUDA GPU; this machine has none")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return trt


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision,tol", [("fp32", {"max_abs_diff": 1e-3}), ("fp16", {"mask_iou": 0.99}),
                                           ("int8", {"mask_iou": 0.5})])
def test_engine_export_and_runner(gpu_trt, precision, tol, tiny_artifact, tmp_path):
    from edgecut.runtime.tensorrt_runner import TensorRTRunner

    art = export(tiny_artifact, tmp_path / precision, ExportConfig(format="tensorrt", precision=precision,
                                                                   calib=CalibConfig(count=4),
                                                                   parity=ParityConfig(tolerances=tol), device="cuda"))
    m = art.manifest
    assert (m.format, m.precision, m.model_file) == ("tensorrt", precision, "model.engine")
    assert {"model.engine", "model.onnx", "trtexec.txt", "timing.cache"} <= set(m.files)
    step = m.lineage[-1].params
    assert step["built_for"]["tensorrt"] == gpu_trt.__version__ and "." in step["built_for"]["compute_capability"]
    assert m.tools["tensorrt"] == gpu_trt.__version__ and m.metrics["parity"]["passed"]
    text = (art.path / "trtexec.txt").read_text()
    assert step["trtexec"] in text and ("--fp16" in text) == (precision == "fp16")
    assert list((tmp_path / "cache" / "edgecut" / "tensorrt").glob("timing-*.cache"))  # reused by the next build

    runner = runtime.load(art, device="cuda")
    assert isinstance(runner, TensorRTRunner) and runner.device.startswith("cuda")
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    y = runner(x)
    assert y.shape == (3, 1, 32, 32) and y.dtype == np.float32
    with pytest.raises(ModelError, match="outside the engine's profile"):
        runner(np.zeros((1, 3, 64, 32), np.float32))
    with pytest.raises(ModelError, match="trtexec.txt"):
        TensorRTRunner(art.model_path, art.spec, target={**step["built_for"], "tensorrt": "0.0.0"})
    with pytest.raises(ModelError, match="CUDA GPU"):
        runtime.load(art, device="cpu")


@pytest.mark.tensorrt
def test_dynamic_engine_runs_at_other_sizes(gpu_trt, tiny_artifact, tmp_path):
    art = export(tiny_artifact, tmp_path / "dyn", ExportConfig(format="tensorrt", precision="fp32",
                                                               parity=ParityConfig(tolerances={"max_abs_diff": 1e-3}),
                                                               dynamic=True, device="cuda"))
    runner = runtime.load(art, device="cuda")
    ref = runtime.load(tiny_artifact)
    x = np.random.default_rng(1).standard_normal((2, 3, 48, 20)).astype(np.float32)
    np.testing.assert_allclose(runner(x), ref(x), atol=1e-3)


@pytest.mark.tensorrt
def test_calibrator_int8_engine(gpu_trt, tiny_artifact, tmp_path):
    from edgecut.exporters.tensorrt import export_tensorrt

    options = ExportConfig(format="tensorrt", precision="int8", calib=CalibConfig(count=4),
                           tensorrt=TensorRTOptions(int8_source="calibrator"))
    work = tmp_path / "work"
    work.mkdir()
    result = export_tensorrt(tiny_artifact, work, options)
    assert "calib.cache" in result.files and "--calib=calib.cache" in (work / "trtexec.txt").read_text()
    assert result.params["int8_source"] == "calibrator"
