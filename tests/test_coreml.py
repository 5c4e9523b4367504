"""Core ML (``--format coreml``): the package, its conversion report, and the refusals (Core ML cannot run on Linux)."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from conftest import TINY_STUDENT
from edgecut.artifact import load_artifact
from edgecut.cli import app
from edgecut.errors import EdgecutError, InputError, MissingBackendError
from edgecut.exporters import ExportConfig, export
from edgecut.models.store import build, save_model

ct = pytest.importorskip("coremltools", reason="Core ML export needs the coreml extra: pip install 'edgecut[coreml]'")


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    torch.manual_seed(0)
    model = build(TINY_STUDENT, pretrained=False).eval()
    return save_model(tmp_path_factory.mktemp("coreml") / "torch", model, TINY_STUDENT, model.default_spec.with_size(64))


@pytest.fixture(scope="module")
def fp16(student, tmp_path_factory):
    return export(student, tmp_path_factory.mktemp("coreml") / "fp16", ExportConfig(format="coreml", precision="fp16"))


def test_fp16_package_holds_the_program_its_spec_and_a_conversion_report(student, fp16):
    m = fp16.manifest
    assert (m.format, m.precision) == ("coreml", "fp16")
    assert m.model_file == "model.mlpackage/Data/com.apple.CoreML/model.mlmodel"
    assert {"model.mlpackage/Manifest.json", "model.mlpackage/Data/com.apple.CoreML/weights/weight.bin"} <= set(m.files)
    assert m.metrics["parity"] == {"passed": None, "checked": False, "reason": m.metrics["parity"]["reason"]}
    assert "Apple devices only" in m.metrics["parity"]["reason"]
    report = m.metrics["conversion"]
    assert report["compute_precision"] == "float16" and report["operations"]["conv"] > 5
    assert not m.spec.dynamic_size and m.lineage[-1].params["via"] == "torch.export"
    model = ct.models.MLModel(str(fp16.path / "model.mlpackage"), skip_model_load=True)
    assert model.user_defined_metadata["edgecut.spec"] == m.spec.model_dump_json()
    desc = model.get_spec().description
    (inp,), (out,) = desc.input, desc.output
    assert (inp.name, list(inp.type.multiArrayType.shape)) == ("input", [1, 3, 64, 64])
    assert out.name == m.spec.output
    float32 = ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    assert inp.type.multiArrayType.dataType == float32 and out.type.multiArrayType.dataType == float32
    # every packaged file is verified on load and is part of the model's identity, not the model file alone
    assert load_artifact(fp16.path).sha256 == fp16.sha256 != m.files[m.model_file].sha256


def test_int8_quantises_the_weights_only(student, fp16, tmp_path):
    art = export(student, tmp_path / "int8", ExportConfig(format="coreml", precision="int8"))
    report = art.manifest.metrics["conversion"]
    assert report["operations"].get("constexpr_affine_dequantize", 0) > 0 and report["compute_precision"] == "float16"
    weights = "model.mlpackage/Data/com.apple.CoreML/weights/weight.bin"
    assert art.manifest.files[weights].size < fp16.manifest.files[weights].size


def test_running_it_here_is_refused_with_the_reason(fp16, synth_data, tmp_path):
    for args in (["eval", str(fp16.path), "--data", str(synth_data)],
                 ["bench", str(fp16.path), "--out", str(tmp_path / "b.jsonl")],
                 ["remove", str(synth_data / "images"), "--model", str(fp16.path), "--out", str(tmp_path / "o")]):
        res = CliRunner().invoke(app, args)
        assert isinstance(res.exception, EdgecutError) and "Apple devices only" in str(res.exception), args
    assert not (tmp_path / "b.jsonl").exists() and not (tmp_path / "o").exists()


def test_bundles_refuse_it_and_point_to_the_app(fp16, tmp_path):
    from edgecut.targets.bundle import bundle

    with pytest.raises(InputError, match="runs inside an app"):
        bundle(fp16.path, tmp_path / "b", "ios")


def test_refusals_before_any_work(student, tmp_path, monkeypatch):
    with pytest.raises(EdgecutError, match="fixed input size"):
        export(student, tmp_path / "dyn", ExportConfig(format="coreml", dynamic=True))
    with pytest.raises(EdgecutError, match="--require-faster"):
        export(student, tmp_path / "fast", ExportConfig(format="coreml", require_faster=True))
    from edgecut import _optional

    real = _optional.available
    monkeypatch.setattr(_optional, "available", lambda m: m != "coremltools" and real(m))
    with pytest.raises(MissingBackendError, match=r"edgecut\[coreml\]"):
        export(student, tmp_path / "x", ExportConfig(format="coreml"))
    assert not any((tmp_path / n).exists() for n in ("dyn", "fast", "x"))


def test_export_for_ios_takes_core_ml_fp16(student, tmp_path):
    res = CliRunner().invoke(app, ["export", str(student.path), "--out", str(tmp_path / "a"), "--target", "ios"])
    assert res.exit_code == 0, res.output
    assert "no parity was measured" in res.output
    m = load_artifact(tmp_path / "a").manifest
    assert (m.format, m.precision) == ("coreml", "fp16")
