"""Export to ONNX (fp32 / fp16 / int8), the ONNX Runtime Runner, parity, and ``edgecut export``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from conftest import TINY_STUDENT, TINY_UNET, random_batch, torch_out
from emulated import needs_qemu, outputs_on_avx2
from edgecut import _optional, runtime
from edgecut.artifact import ModelSpec, load_artifact
from edgecut.cli import app
from edgecut.errors import EdgecutError, InputError, MissingBackendError, ModelError, UnsafeFileError
from edgecut.exporters import CalibConfig, ExportConfig, ParityConfig, calibration, export, qdq
from edgecut.exporters.parity import ParityError, parse_tolerances, resolve_tolerances
from edgecut.models.store import build, save_model
from edgecut.runtime.onnxruntime_runner import SPEC_KEY, OnnxRuntimeRunner, read_spec

LOW_BAR = {"mask_iou": 0.8}  # tiny 32 px masks of a barely trained model: one flipped pixel costs ~0.003 IoU


@pytest.fixture(scope="module")
def onnx_fp32(trained, tmp_path_factory):
    return export(trained, tmp_path_factory.mktemp("onnx") / "fp32", ExportConfig(format="onnx", precision="fp32",
                                                                                  threads=1))


# --------------------------------------------------------------------------- fp32


@pytest.mark.parametrize("arch,size", [(TINY_UNET, 32), (TINY_STUDENT, 64)], ids=["unet", "student"])
def test_fp32_export_matches_torch(arch, size, tmp_path):
    torch.manual_seed(0)
    model = build(arch, pretrained=False).eval()
    parent = save_model(tmp_path / "torch", model, arch, model.default_spec.with_size(size))
    art = export(parent, tmp_path / "onnx", ExportConfig(format="onnx", precision="fp32", threads=1))

    m = art.manifest
    assert (m.format, m.precision, m.model_file) == ("onnx", "fp32", "model.onnx")
    assert (m.params, m.macs) == (parent.manifest.params, parent.manifest.macs)
    step = m.lineage[-1]
    assert step.step == "export" and step.parent_sha256 == parent.sha256
    assert step.params["opset"] == 18 and step.params["simplified"] is True
    assert "Identity" not in step.params["nodes"]  # onnxslim removed the exporter's leftovers
    parity = m.metrics["parity"]
    assert parity["passed"] and parity["max_abs_diff"] <= 1e-4 and parity["images"] == 8
    assert not m.spec.dynamic_size
    art.verify()

    runner = runtime.load(art, threads=1)
    assert isinstance(runner, OnnxRuntimeRunner) and runner.threads == 1
    x = random_batch(size, size, n=2)  # batch is always dynamic
    np.testing.assert_allclose(runner(x), torch_out(parent, x), atol=1e-4)
    with pytest.raises(ModelError, match="exported for"):
        runner(random_batch(size * 2, size))


def test_spec_travels_in_metadata_props(onnx_fp32, tmp_path):
    model = onnx.load(str(onnx_fp32.model_path))
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props[SPEC_KEY]) == onnx_fp32.spec.model_dump(mode="json")
    assert props["edgecut.precision"] == "fp32"
    assert read_spec(model) == onnx_fp32.spec
    bare = tmp_path / "alone.onnx"  # the .onnx without its edgecut.json still says how to feed it
    bare.write_bytes(onnx_fp32.model_path.read_bytes())
    runner = runtime.load(bare, threads=1)
    assert runner.spec == onnx_fp32.spec
    x = random_batch(32, 32)
    np.testing.assert_allclose(runner(x), runtime.load(onnx_fp32, threads=1)(x), atol=0)


# --------------------------------------------------------------------------- fp16 / int8


def test_fp16_and_int8_reload_in_a_fresh_process(trained, synth_data, tmp_path):
    fp16 = export(trained, tmp_path / "fp16", ExportConfig(format="onnx", precision="fp16",
                                                           parity=ParityConfig(tolerances={"mask_iou": 0.99}),
                                                           threads=1))
    int8 = export(trained, tmp_path / "int8", ExportConfig(format="onnx", precision="int8",
                                                           calib=CalibConfig(data=synth_data, count=12),
                                                           parity=ParityConfig(data=synth_data, tolerances=LOW_BAR),
                                                           threads=1))

    half = onnx.load(str(fp16.model_path))
    assert {t.data_type for t in half.graph.initializer} == {onnx.TensorProto.FLOAT16}
    assert half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # keep_io_types
    assert half.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    q = onnx.load(str(int8.model_path))
    ops = {n.op_type for n in q.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert onnx.TensorProto.INT8 in {t.data_type for t in q.graph.initializer}

    for art, precision in ((fp16, "fp16"), (int8, "int8")):
        assert art.manifest.precision == precision
        parity = art.manifest.metrics["parity"]
        # what the gate guarantees on any CPU: it passed, by the numbers it recorded ...
        assert parity["passed"] and not parity["failures"]
        assert parity["tolerances"]["mask_iou"] in (0.99, 0.8)
        assert parity["mask_iou_mean"] >= parity["tolerances"]["mask_iou"]
        # ... and those numbers are what this machine computes for the written model
        again = _parity_again(trained, art, synth_data if precision == "int8" else None)
        for key in ("mask_iou_mean", "mask_iou_min", "max_abs_diff"):
            assert again[key] == pytest.approx(parity[key], abs=1e-6), key
    metric = int8.manifest.metrics["parity"]["metric"]
    assert metric["drop"] == pytest.approx(metric["parent"] - metric["export"])
    assert int8.manifest.lineage[-1].params["calib"]["method"] == "minmax"
    assert qdq.summary(q)["max_abs_int8_weight"] <= qdq.NO_SATURATION  # 7-bit weights: the same on AVX2 and VNNI

    from edgecut.data.synth import render

    x = trained.spec.preprocess([render(i, 32, seed=9)[0] for i in range(2)])
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np; from edgecut import runtime; x = np.load(sys.argv[1]); "
            "[np.save(p + '/y.npy', runtime.load(p, threads=1)(x)) for p in sys.argv[2:]]")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "x.npy"), str(fp16.path), str(int8.path)],
                   check=True, capture_output=True, text=True)
    for art in (fp16, int8):
        y = np.load(art.path / "y.npy")
        assert y.dtype == np.float32 and y.shape == (2, 1, 32, 32)
        np.testing.assert_allclose(y, runtime.load(art, threads=1)(x), atol=1e-6)  # same in both processes


def _parity_again(parent, art, data):
    """The parity check of ``art`` against ``parent`` run again here, on the images the export used."""
    from edgecut.exporters import parity

    report = art.manifest.metrics["parity"]
    images = parity.load_images(data, art.spec, count=None if data else report["images"], seed=0)
    return parity.check(runtime.load(parent, threads=1), runtime.load(art, threads=1), images, report["tolerances"])


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_each_calibration_method(method, trained, synth_data, tmp_path):
    art = export(trained, tmp_path / method, ExportConfig(format="onnx", precision="int8",
                                                          calib=CalibConfig(data=synth_data, count=8, method=method),
                                                          parity=ParityConfig(data=synth_data, count=8, tolerances={"mask_iou": 0.5}),
                                                          threads=1))
    cal = art.manifest.metrics["calibration"]
    assert cal["method"] == method and len(cal["names"]) == 8 and cal["available"] == 24
    assert cal["quantized_tensors"] >= 10
    assert cal["calibration"]["foreground_fraction"] is not None  # synth_data has masks
    assert cal["eval"]["source"] == str(synth_data) and "gap" in cal
    parity = art.manifest.metrics["parity"]
    assert parity["images"] == 8 and "metric" in parity
    assert parity["passed"] and parity["mask_iou_mean"] >= 0.5  # what the gate guarantees, on any CPU


def test_calibration_images_are_picked_reproducibly(synth_data):
    spec = ModelSpec().with_size(32)
    a = calibration.load_set(synth_data, spec, 5, seed=0)
    b = calibration.load_set(synth_data, spec, 5, seed=0)
    c = calibration.load_set(synth_data, spec, 5, seed=1)
    assert a.names == b.names and a.names != c.names and a.names == sorted(a.names)
    assert len(calibration.load_set(synth_data, spec, 100).names) == 24  # all, when the folder holds fewer
    synthetic = calibration.load_set(None, spec, 3)
    assert synthetic.source == "synthetic" and synthetic.images[0].shape == (32, 32, 3)
    assert next(synthetic.batches(spec)).shape == (1, 3, 32, 32)


def test_calibration_and_parity_images_can_come_from_one_split(synth_data, tmp_path):
    from edgecut.errors import InputError
    from edgecut.exporters import parity

    spec = ModelSpec().with_size(32)
    train = set((synth_data / "splits" / "train.txt").read_text().split())
    val = set((synth_data / "splits" / "val.txt").read_text().split())
    cset = calibration.load_set(synth_data, spec, 100, split="train")
    assert set(cset.names) == train and cset.available == len(train) and cset.source.endswith(":train")
    assert {im.name for im in parity.load_images(synth_data, spec, split="val")} == val
    rep = calibration.report(cset, synth_data, eval_split="val")
    assert rep["eval"]["available"] == len(val) and rep["eval"]["source"].endswith(":val")
    plain = tmp_path / "plain"
    (plain).mkdir()
    (plain / "a.png").write_bytes((synth_data / "images" / f"{sorted(val)[0]}.png").read_bytes())
    with pytest.raises(InputError, match="no split 'val'"):
        parity.load_images(plain, spec, split="val")


def test_calibration_report_flags_a_darker_set(synth_data, tmp_path):
    from edgecut import io

    dark = tmp_path / "dark"
    for i in range(4):
        io.write_image(dark / f"{i}.png", np.full((64, 96, 3), 20, np.uint8))
    rep = calibration.report(calibration.load_set(dark, ModelSpec(), 4), synth_data)
    assert rep["calibration"]["foreground_fraction"] is None  # no masks beside plain images
    assert rep["calibration"]["size"]["most_common"] == [[64, 96, 4]]
    assert rep["gap"]["brightness"] < -0.1 and rep["gap"]["size_ratio"] == pytest.approx(6.0)
    text = " ".join(rep["warnings"])
    assert "brightness" in text and "area" in text and "only 4 calibration" in text


def test_int8_student_runs_every_conv_in_int8_on_onnxruntime(synth_data, tmp_path):
    """uint8 activations: ONNX Runtime's CPU provider fuses every Q/DQ convolution of the MobileNetV3
    student into QLinearConv (with int8 activations it ran 22 of 79 in float; see exporters/onnx.py)."""
    import onnxruntime as ort

    torch.manual_seed(0)
    model = build(TINY_STUDENT, pretrained=False).eval()
    parent = save_model(tmp_path / "torch", model, TINY_STUDENT, model.default_spec.with_size(64))
    art = export(parent, tmp_path / "int8", ExportConfig(format="onnx", precision="int8", threads=1,
                                                         calib=CalibConfig(data=synth_data, count=4),
                                                         parity=ParityConfig(tolerances={"mask_iou": 0.0})))
    q = onnx.load(str(art.model_path))
    inits = {t.name: t for t in q.graph.initializer}
    zero_points = {inits[n.input[2]].data_type for n in q.graph.node if n.op_type == "QuantizeLinear"}
    assert zero_points == {onnx.TensorProto.UINT8}
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(art.model_path), so, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]
    convs = sum(n.op_type == "Conv" for n in q.graph.node)
    assert "Conv" not in ops and ops.count("QLinearConv") == convs > 0


def test_int8_exclusions(trained, synth_data, tmp_path):
    art = export(trained, tmp_path / "ex", ExportConfig(format="onnx", precision="int8",
                                                        calib=CalibConfig(data=synth_data, count=4, exclude_op_types=("ConvTranspose",)),
                                                        parity=ParityConfig(tolerances={"mask_iou": 0.5}), threads=1))
    q = onnx.load(str(art.model_path))
    floats = {t.name for t in q.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    producers = {o: n.op_type for n in q.graph.node for o in n.output}
    ops = {n.op_type: n for n in q.graph.node}
    assert "ConvTranspose" in ops and ops["ConvTranspose"].input[1] in floats  # weights left in float
    assert producers[ops["Conv"].input[1]] == "DequantizeLinear"  # the rest is quantised
    with pytest.raises(EdgecutError, match="no node named 'nope'"):
        export(trained, tmp_path / "bad", ExportConfig(format="onnx", precision="int8",
                                                       calib=CalibConfig(data=synth_data, count=4, exclude_nodes=("nope",))))
    assert not (tmp_path / "bad").exists()


# --------------------------------------------------------------------------- the runner refuses bad files


def test_corrupt_and_truncated_onnx_give_one_clear_error(onnx_fp32, tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07this is not a protobuf" * 10)
    data = onnx_fp32.model_path.read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    for path in (junk, cut):
        with pytest.raises(InputError, match="corrupt or truncated|not a complete ONNX") as e:
            runtime.load(path)
        assert str(path) in str(e.value)
    # inside an artifact the manifest's size gives it away first
    art_dir = tmp_path / "art"
    art_dir.mkdir()
    (art_dir / "edgecut.json").write_bytes((onnx_fp32.path / "edgecut.json").read_bytes())
    (art_dir / "model.onnx").write_bytes(data[:-100])
    with pytest.raises(InputError, match="truncated or modified") as e:
        runtime.load(art_dir)
    assert "model.onnx" in str(e.value)


def _external_model(folder: Path, location: str) -> Path:
    """A one-node model whose weight claims to live in ``location``."""
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 3, 1, 1], [1.0, 2.0, 3.0])
    graph = helper.make_graph([helper.make_node("Mul", ["input", "w"], ["logits"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3, "h", "w"])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    helper.set_model_props(model, {SPEC_KEY: '{"input_size": [8, 8], "size_divisor": 1}'})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "w.bin").write_bytes(np.asarray([1, 2, 3], np.float32).tobytes())
    w = model.graph.initializer[0]
    w.ClearField("float_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "12")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_external_data_outside_the_folder_is_refused(tmp_path):
    ok = runtime.load(_external_model(tmp_path / "ok", "w.bin"), threads=1)  # beside the model: fine
    assert ok(np.ones((1, 3, 8, 8), np.float32))[0, :, 0, 0].tolist() == [1.0, 2.0, 3.0]
    (tmp_path / "secret.bin").write_bytes(b"\0" * 12)
    for location in ("../secret.bin", str(tmp_path / "secret.bin"), "sub/../../secret.bin"):
        with pytest.raises(UnsafeFileError, match="outside the model's folder"):
            runtime.load(_external_model(tmp_path / "bad", location))
    with pytest.raises(InputError, match="missing"):
        runtime.load(_external_model(tmp_path / "gone", "nothere.bin"))


def test_execution_providers_follow_the_device():
    from edgecut.runtime.onnxruntime_runner import providers_for

    cpu, cuda, trt = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
    assert providers_for("cpu", [cpu]) == [cpu] and providers_for("auto", [cpu]) == [cpu]
    assert providers_for("auto", [cuda, cpu]) == [cuda, cpu]
    assert providers_for("cuda:1", [cuda, cpu]) == [(cuda, {"device_id": 1}), cpu]
    assert providers_for("tensorrt", [trt, cuda, cpu]) == [trt, cuda, cpu]
    with pytest.raises(ModelError, match="onnxruntime-gpu"):
        providers_for("cuda", [cpu])
    with pytest.raises(ModelError, match="cpu, cuda"):
        providers_for("npu", [cpu])


def test_missing_backend_names_the_extra(monkeypatch, trained, tmp_path):
    real = _optional.available
    monkeypatch.setattr(_optional, "available", lambda m: m != "onnxruntime" and real(m))
    with pytest.raises(MissingBackendError, match=r"edgecut\[onnx\]"):
        export(trained, tmp_path / "no-ort", ExportConfig(format="onnx", precision="fp32"))
    assert not (tmp_path / "no-ort").exists()
    # onnxslim is optional: the export goes on, unsimplified, and says so
    monkeypatch.setattr(_optional, "available", lambda m: m != "onnxslim" and real(m))
    monkeypatch.setattr("edgecut.exporters.onnx.available", _optional.available)
    art = export(trained, tmp_path / "no-slim", ExportConfig(format="onnx", precision="fp32", threads=1))
    step = art.manifest.lineage[-1].params
    assert step["simplified"] is False and any("onnxslim is not installed" in n for n in step["notes"])
    assert "onnxslim" not in art.manifest.tools


# --------------------------------------------------------------------------- failures leave nothing valid


def test_parity_failure_leaves_no_artifact(trained, synth_data, tmp_path):
    out = tmp_path / "strict"
    with pytest.raises(ParityError) as e:  # an impossible bar, set explicitly
        export(trained, out, ExportConfig(format="onnx", precision="int8", calib=CalibConfig(data=synth_data, count=4),
                                          parity=ParityConfig(data=synth_data, tolerances={"max_abs_diff": 1e-9}),
                                          threads=1))
    msg = str(e.value)
    assert "max abs diff" in msg and "on image '" in msg and "max_abs_diff=1e-09" in msg
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".staging" in p.name]


def test_defaults_and_explicit_tolerances():
    assert resolve_tolerances("fp32") == {"max_abs_diff": 1e-4}
    assert resolve_tolerances("fp16") == {"mask_iou": 0.999}
    assert resolve_tolerances("int8", {"mask_iou": 0.9, "metric_drop": 0.01}) == {"mask_iou": 0.9, "metric_drop": 0.01}
    assert parse_tolerances(["mask_iou=0.95", "max_abs_diff=1e-3"]) == {"mask_iou": 0.95, "max_abs_diff": 1e-3}
    for bad in (["iou=0.9"], ["mask_iou"], ["mask_iou=high"]):
        with pytest.raises(EdgecutError):
            parse_tolerances(bad)


def test_mask_iou_bounds_the_mean_and_mask_iou_min_the_worst_image():
    from edgecut.exporters.parity import _failures

    report = {"max_abs_diff": 0.3, "max_abs_diff_image": "a", "mask_iou_mean": 0.989, "mask_iou_min": 0.971,
              "mask_iou_min_image": "0921", "checks": 64}
    assert _failures(report, resolve_tolerances("int8")) == []  # one edgy image does not refuse a good export
    (msg,) = _failures(report, {"mask_iou": 0.99})
    assert "mean mask IoU" in msg and "0.9890" in msg and "'0921'" in msg
    (msg,) = _failures(report, resolve_tolerances("int8", {"mask_iou_min": 0.98}))
    assert "0.9710 on image '0921'" in msg and "mask_iou_min=0.98" in msg


def _fake_measure(parent_ms: float, export_ms: float):
    """A stand-in for timing.measure: the parent is timed first, then the export."""
    from edgecut.runtime import timing

    calls: list[float] = []

    def measure(fn, config=None, sync=None):
        fn()
        calls.append(parent_ms if not calls else export_ms)
        return timing.summarize([calls[-1] / 1e3] * 3, 0.01, 1)

    return measure


def test_require_faster(monkeypatch, onnx_fp32, tmp_path):
    from edgecut.runtime import timing

    monkeypatch.setattr(timing, "measure", _fake_measure(2.0, 3.0))
    with pytest.raises(EdgecutError, match="slower than its parent"):
        export(onnx_fp32, tmp_path / "slow", ExportConfig(format="onnx", precision="int8", calib=CalibConfig(count=4),
                                                          parity=ParityConfig(tolerances={"mask_iou": 0.5}),
                                                          require_faster=True, threads=1))
    assert not (tmp_path / "slow").exists()
    monkeypatch.setattr(timing, "measure", _fake_measure(4.0, 2.0))
    art = export(onnx_fp32, tmp_path / "fast", ExportConfig(format="onnx", precision="int8",
                                                            calib=CalibConfig(count=4),
                                                            parity=ParityConfig(tolerances={"mask_iou": 0.5}),
                                                            require_faster=True, threads=1))
    speed = art.manifest.metrics["speed_vs_parent"]
    assert speed["speedup"] == pytest.approx(2.0) and speed["threads"] == 1
    assert art.manifest.lineage[-1].parent_sha256 == onnx_fp32.sha256  # int8 from the fp32 ONNX artifact
    assert art.manifest.lineage[-1].params["from"] == "onnx"


def test_out_folder_is_not_clobbered(onnx_fp32, trained, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        export(trained, out, ExportConfig(format="onnx", precision="fp32"))
    assert (out / "keep.txt").read_text() == "mine"
    art = export(trained, out, ExportConfig(format="onnx", precision="fp32", overwrite=True, threads=1))
    assert not (out / "keep.txt").exists() and art.manifest.format == "onnx"
    with pytest.raises(EdgecutError, match="unknown export format 'nope'"):
        export(trained, tmp_path / "again", ExportConfig(format="nope", precision="fp32"))
    with pytest.raises(EdgecutError, match="supports precision"):
        export(trained, tmp_path / "again", ExportConfig(format="onnx", precision="bf16"))


# --------------------------------------------------------------------------- the command


def test_cli_export_end_to_end(trained, synth_data, tmp_path):
    out = tmp_path / "cli-int8"
    res = CliRunner().invoke(app, [
        "export", str(trained.path), "--out", str(out), "--precision", "int8", "--calib", str(synth_data),
        "--calib-count", "8", "--calib-method", "percentile", "--parity-data", str(synth_data),
        "--tolerance", "mask_iou=0.8", "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert "calibration: 8 of 24 images" in res.output and "parity on 24 image(s)" in res.output
    val = (synth_data / "splits" / "val.txt").read_text().split()
    res = CliRunner().invoke(app, [
        "export", str(trained.path), "--out", str(tmp_path / "split"), "--precision", "int8", "--calib",
        str(synth_data), "--calib-split", "train", "--calib-count", "8", "--parity-data", str(synth_data),
        "--parity-split", "val", "--tolerance", "mask_iou=0.8", "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert f"parity on {len(val)} image(s) ({synth_data}:val)" in res.output
    art = load_artifact(out, verify=True)
    assert (art.manifest.format, art.manifest.precision) == ("onnx", "int8")
    assert art.manifest.metrics["parity"]["tolerances"] == {"mask_iou": 0.8}


def test_cli_export_errors_are_one_line(tiny_artifact, tmp_path):
    code = ("import sys; from edgecut.cli import main; sys.argv = ['edgecut', 'export', sys.argv[1], '--out', "
            "sys.argv[2], '--tolerance', 'iou=0.5']; main()")
    p = subprocess.run([sys.executable, "-c", code, str(tiny_artifact.path), str(tmp_path / "x")],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "unknown tolerance 'iou'" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.slow
@needs_qemu
def test_int8_onnx_computes_the_same_on_a_cpu_without_vnni(trained, synth_data, tmp_path):
    """7-bit weights: ONNX Runtime's AVX2 int8 kernels (no VNNI) cannot saturate, so the model an
    AVX-512 machine exported and checked is the model an AVX2-only machine runs."""
    art = export(trained, tmp_path / "int8", ExportConfig(format="onnx", precision="int8",
                                                          calib=CalibConfig(data=synth_data, count=8),
                                                          parity=ParityConfig(data=synth_data, count=8,
                                                                              tolerances=LOW_BAR), threads=1))
    x = random_batch(32, 32, n=4)
    np.testing.assert_allclose(outputs_on_avx2(art, x, tmp_path), runtime.load(art, threads=1)(x), atol=1e-5)
