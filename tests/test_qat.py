"""Quantization-aware training: NNCF fake quantization fine-tuned in the one loop, INT8 QDQ ONNX out."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from conftest import TINY_UNET, train_tiny
from emulated import needs_qemu, outputs_on_avx2
from edgecut import io, runtime
from edgecut.artifact import load_artifact
from edgecut.cli import app
from edgecut.errors import EdgecutError, InputError, ModelError
from edgecut.exporters import CalibConfig, ExportConfig, ParityConfig, export, qdq
from edgecut.models.store import build
from edgecut.runtime.onnxruntime_runner import OnnxRuntimeRunner
from edgecut.training.loop import TrainingInterrupted

pytest.importorskip("nncf")

from edgecut.compress.config import QAT_LOOP, QATConfig  # noqa: E402
from edgecut.compress.qat import fold_batchnorm, qat  # noqa: E402

LOW_BAR = {"mask_iou": 0.8}  # a barely trained 32 px model after one QAT epoch: a few flipped pixels


def _cfg(config: QATConfig = QATConfig(), **loop) -> QATConfig:
    """``config`` fine-tuning one epoch (or as ``loop`` says) on one thread."""
    loop = dataclasses.replace(QAT_LOOP, **{"epochs": 1, "batch_size": 4, "device": "cpu", **loop})
    return dataclasses.replace(config, loop=loop, threads=1)


def _qat(parent, data, out, config=QATConfig(calib_count=8), train=None, **kw):
    config = dataclasses.replace(_cfg(config, **(train or {})),
                                 parity=ParityConfig(data=data, count=8, tolerances=LOW_BAR))
    return qat(parent, data, out, config, progress=False, **kw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """TINY_UNET fitted for 80 steps on synthetic 32 px photos (conftest.train_tiny)."""
    return train_tiny(tmp_path_factory.mktemp("trained") / "unet", steps=80)


@pytest.fixture(scope="module")
def qat_art(trained, synth_data, tmp_path_factory):
    return _qat(trained, synth_data, tmp_path_factory.mktemp("qat") / "q")


def test_qat_writes_an_int8_qdq_onnx_artifact(qat_art, trained):
    art = load_artifact(qat_art.path, verify=True)
    m = art.manifest
    assert (m.format, m.precision, m.model_file) == ("onnx", "int8", "model.onnx")
    step = m.lineage[-1]
    assert step.step == "qat" and step.parent_sha256 == trained.sha256
    assert step.params["calib_count"] == 8 and step.params["train"]["epochs"] == 1
    assert step.params["train"]["precision"] == "fp32"  # the fine-tuning ran without autocast
    assert "nncf" in m.tools and (m.params, m.macs) == (trained.manifest.params, trained.manifest.macs)

    model = onnx.load(str(art.model_path))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "BatchNormalization" not in ops  # folded before QAT
    summary = qdq.summary(model)
    assert summary["int8_weights"] == 13 and summary["float_weights_quantized_at_run_time"] == 0  # 11 Conv + 2 ConvT
    assert summary["symmetric"] and summary["zero_point_types"]["uint8"] > 0  # unsigned after ReLU by default
    assert onnx.TensorProto.INT8 in {t.data_type for t in model.graph.initializer}
    assert step.params["concat_dequantize_sunk"] == 2  # the U-Net's two skip concatenations

    parity = m.metrics["parity"]  # what the gate guarantees on any CPU: it passed, by the numbers it recorded
    assert parity["passed"] and not parity["failures"] and parity["tolerances"] == LOW_BAR and parity["images"] == 8
    assert parity["mask_iou_mean"] >= LOW_BAR["mask_iou"]
    assert parity["metric"]["drop"] == pytest.approx(parity["metric"]["parent"] - parity["metric"]["export"])
    fidelity = m.metrics["export_fidelity"]  # how the ONNX model compares with the fake-quantised torch model
    assert {"max_abs_diff", "mask_iou_min", "mask_iou_mean"} <= set(fidelity) and "per_image" not in fidelity
    # the trained weights stay on the 7-bit grid (NNCF's overflow fix), which x86 CPUs without VNNI
    # compute without saturating, so the ONNX model means the same on every CPU
    assert summary["max_abs_int8_weight"] <= qdq.NO_SATURATION and not step.params["notes"]
    assert set(m.metrics["val"]) >= {"iou", "mae"} and len(m.metrics["calibration"]["names"]) == 8
    assert (art.path / "qat_setup.json").is_file() and (art.path / "checkpoints" / "last.pt").is_file()


def test_qat_model_runs_through_runtime_load_with_int8_kernels(qat_art, tmp_path):
    import onnxruntime as ort

    runner = runtime.load(qat_art, threads=1)
    assert isinstance(runner, OnnxRuntimeRunner) and runner.precision == "int8"
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    y = runner(x)
    assert y.shape == (2, 1, 32, 32) and y.dtype == np.float32 and np.isfinite(y).all()
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(qat_art.model_path), so, providers=["CPUExecutionProvider"])
    fused = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert fused.count("QLinearConv") >= 6  # ORT's QDQ fusion runs those convolutions on int8 kernels


def test_qat_model_converts_to_openvino_int8_with_its_own_scales(qat_art, synth_data, tmp_path):
    pytest.importorskip("openvino")
    art = export(qat_art, tmp_path / "ov", ExportConfig(format="openvino", precision="int8",
                                                        parity=ParityConfig(data=synth_data / "images", count=4)))
    m = art.manifest
    assert (m.format, m.precision) == ("openvino", "int8") and m.lineage[-1].parent_sha256 == qat_art.sha256
    assert m.lineage[-1].params["int8_source"] == "qdq" and "calibration" not in m.metrics
    assert m.lineage[-1].params["qdq"]["int8_weights"] == 13
    assert m.lineage[-1].params["ops"].get("FakeQuantize", 0) > 0  # Q/DQ pairs became OpenVINO int8 ops
    # what the gate guarantees on any CPU (OpenVINO's and ONNX Runtime's int8 kernels differ from one to another)
    parity = m.metrics["parity"]
    assert parity["passed"] and parity["mask_iou_mean"] >= parity["tolerances"]["mask_iou"] == 0.98
    with pytest.raises(EdgecutError, match="precision int8"):
        export(qat_art, tmp_path / "ov32", ExportConfig(format="openvino", precision="fp32"))
    with pytest.raises(EdgecutError, match="already quantized"):
        export(qat_art, tmp_path / "ovc", ExportConfig(format="openvino", precision="int8",
                                                       calib=CalibConfig(data=synth_data / "images")))


def test_interrupted_qat_resumes_to_the_same_model(trained, synth_data, tmp_path):
    train = {"epochs": 2}
    full = _qat(trained, synth_data, tmp_path / "full", train=train)

    def stop(state):
        if state.global_step == 6:  # epoch 2, step 2 of 4
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted, match="--resume"):
        _qat(trained, synth_data, tmp_path / "cut", train=train, callbacks=[stop])
    assert not (tmp_path / "cut" / "edgecut.json").exists()
    with pytest.raises(InputError, match="--resume"):  # no silent restart over a run
        _qat(trained, synth_data, tmp_path / "cut", train=train)
    with pytest.raises(InputError, match="other QAT settings"):
        _qat(trained, synth_data, tmp_path / "cut", QATConfig(calib_count=4), train=train, resume=True)
    resumed = _qat(trained, synth_data, tmp_path / "cut", train=train, resume=True)

    a = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and any("scale" in k for k in a)  # the quantizer scales are trained state too
    assert all(torch.equal(a[k], b[k]) for k in a)
    wa = {t.name: t.SerializeToString() for t in onnx.load(str(full.model_path)).graph.initializer}
    wb = {t.name: t.SerializeToString() for t in onnx.load(str(resumed.model_path)).graph.initializer}
    assert wa == wb
    assert io.read_json(tmp_path / "full" / "history.json")[-1]["val_iou"] == \
        io.read_json(tmp_path / "cut" / "history.json")[-1]["val_iou"]


def test_failed_parity_keeps_the_training_for_a_resumed_export(trained, synth_data, tmp_path):
    from edgecut.exporters.parity import ParityError

    out = tmp_path / "strict"
    with pytest.raises(ParityError, match="--resume") as e:
        qat(trained, synth_data, out, _cfg(QATConfig(calib_count=4, parity=ParityConfig(
            tolerances={"max_abs_diff": 1e-9}))), progress=False)
    assert "max_abs_diff=1e-09" in str(e.value)
    assert not (out / "edgecut.json").exists() and not list(out.glob(".qat-export-*"))
    art = qat(trained, synth_data, out, _cfg(QATConfig(calib_count=4, parity=ParityConfig(tolerances=LOW_BAR))),
              progress=False, resume=True)
    assert art.manifest.metrics["parity"]["passed"] and len(io.read_json(out / "history.json")) == 1


def test_signed_activations_make_a_tensorrt_ready_graph(qat_art, trained, synth_data, tmp_path):
    unsigned = onnx.load(str(qat_art.model_path))
    assert "--signed-activations" in qdq.tensorrt_compatible(unsigned)
    art = _qat(trained, synth_data, tmp_path / "signed", QATConfig(calib_count=4, signed_activations=True, dynamic=True))
    model = onnx.load(str(art.model_path))
    assert qdq.summary(model)["zero_point_types"] == {"int8": 26} and qdq.tensorrt_compatible(model) is None
    assert art.spec.dynamic_size and art.manifest.metrics["parity"]["sizes"] == [[32, 32], [40, 36]]


def test_batchnorm_folding_keeps_the_function():
    torch.manual_seed(0)
    model = build(TINY_UNET)
    for m in model.modules():  # non-trivial running statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        assert fold_batchnorm(model) == 10
        after = model(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_qdq_rewrites_are_exact():
    from onnx import TensorProto, helper, numpy_helper

    w = np.asarray([[0.5, -0.25], [1.3, -2.0]], np.float32)  # row 0: 1 and -0.5 (rounds to 0); row 1 saturates
    scale, zp = np.asarray([0.5, 0.01], np.float32), np.asarray([0, 0], np.int8)
    s1, z1 = np.asarray(0.1, np.float32), np.asarray(0, np.int8)
    nodes = [
        helper.make_node("QuantizeLinear", ["w", "ws", "wz"], ["wq"], axis=0),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
        helper.make_node("QuantizeLinear", ["a", "s", "z"], ["aq"]),
        helper.make_node("QuantizeLinear", ["b", "s", "z"], ["bq"]),
        helper.make_node("DequantizeLinear", ["aq", "s", "z"], ["ad"]),
        helper.make_node("DequantizeLinear", ["bq", "s", "z"], ["bd"]),
        helper.make_node("Concat", ["ad", "bd"], ["c"], axis=1),
        helper.make_node("MatMul", ["c", "wd"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 1]) for n in ("a", "b")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
        [numpy_helper.from_array(v, n) for n, v in (("w", w), ("ws", scale), ("wz", zp), ("s", s1), ("z", z1))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    feeds = {"a": np.asarray([[0.33], [-5.0]], np.float32), "b": np.asarray([[0.05], [20.0]], np.float32)}

    import onnxruntime as ort

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]

    before = run(model)
    assert qdq.fold_weight_quantizers(model) == 1 and qdq.sink_concat_dequantize(model) == 1
    onnx.checker.check_model(model, full_check=True)
    np.testing.assert_array_equal(run(model), before)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert "w" not in inits and inits["wq"].tolist() == [[1, 0], [127, -128]]  # -0.5 to even, saturated
    assert [n.op_type for n in model.graph.node].count("DequantizeLinear") == 2  # weight + after the concat


def test_qat_refusals(trained, synth_data, tmp_path, qat_art):
    with pytest.raises(ModelError, match="torch artifact"):
        qat(qat_art, synth_data, tmp_path / "x", _cfg(), progress=False)
    with pytest.raises(InputError, match="already holds a QAT run"):
        _qat(trained, synth_data, qat_art.path)
    with pytest.raises(EdgecutError, match="calib_count"):
        _qat(trained, synth_data, tmp_path / "y", QATConfig(calib_count=0))
    with pytest.raises(InputError, match="nothing to resume"):
        _qat(trained, synth_data, tmp_path / "z", resume=True)


def test_cli_qat(trained, synth_data, tmp_path):
    out = tmp_path / "cli"
    res = CliRunner().invoke(app, [
        "qat", str(trained.path), "--data", str(synth_data), "--out", str(out), "--epochs", "1", "--batch", "4",
        "--calib-count", "4", "--lr", "5e-5", "--device", "cpu", "--threads", "1", "--tolerance", "mask_iou=0.8"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())  # rich wraps long lines
    val = (synth_data / "splits" / "val.txt").read_text().split()
    # default: the data set's val images (not trained on), whose masks give an IoU
    assert f"parity vs the float parent on {len(val)} image(s) ({synth_data}:val)" in text
    assert "IoU vs masks" in text and "onnx int8 (QDQ)" in text
    params = load_artifact(out).manifest.lineage[-1].params
    assert (params["train"]["lr"], params["calib_count"], params["train"]["epochs"]) == (5e-5, 4, 1)


def test_nncf_may_build_its_extension_for_longer_inside_qat(monkeypatch):
    from edgecut.compress.qat import EXTENSION_TIMEOUT, extension_build_time, prepare

    monkeypatch.delenv(EXTENSION_TIMEOUT, raising=False)
    with extension_build_time(900):
        assert os.environ[EXTENSION_TIMEOUT] == "900"
    assert EXTENSION_TIMEOUT not in os.environ
    monkeypatch.setenv(EXTENSION_TIMEOUT, "30")  # the user's setting wins
    with extension_build_time(900):
        assert os.environ[EXTENSION_TIMEOUT] == "30"

    def slow(*_a, **_k):
        raise RuntimeError("The extension load function failed to execute within 30 seconds.\nmore")

    monkeypatch.setattr("nncf.quantize", slow)
    with pytest.raises(ModelError, match=f"{EXTENSION_TIMEOUT}=1800"):
        prepare(torch.nn.Sequential(torch.nn.Conv2d(3, 1, 1)), [torch.zeros(1, 3, 8, 8)], QATConfig())


@pytest.mark.slow
@needs_qemu
def test_qat_onnx_computes_the_same_on_a_cpu_without_vnni(qat_art, tmp_path):
    x = np.random.default_rng(1).standard_normal((4, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(outputs_on_avx2(qat_art, x, tmp_path), runtime.load(qat_art, threads=1)(x), atol=1e-5)
