"""An ONNX model as torch layers: a registered architecture filled from its graph, checked against ONNX Runtime."""

from __future__ import annotations

import pytest
import torch

from edgecut.artifact import load_artifact
from edgecut.compress.config import ConvertConfig
from edgecut.compress.to_torch import convert, to_torch
from edgecut.errors import ModelError


def _import_onnx(module, tmp_path, name, size=64, **import_kw):
    """``module`` exported as most people do (eval mode, batch-norm folded, batch 1), then imported."""
    from edgecut.intake.config import ImportConfig
    from edgecut.intake.importer import import_model

    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(module.eval(), (torch.zeros(1, 3, size, size),), str(path), dynamo=False)
    return import_model(path, tmp_path / name, ImportConfig(force=True, **import_kw), progress=False)


@pytest.fixture(scope="module")
def u2netp_onnx(tmp_path_factory):
    from edgecut.models.registry import create_model

    torch.manual_seed(3)
    model = create_model("u2netp")
    for m in model.modules():  # batch norms that are not the identity, as a trained model's
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return model, _import_onnx(model, tmp_path_factory.mktemp("u2"), "u2netp", output="logits")


@pytest.mark.slow
def test_u2netp_from_its_onnx_graph_gives_onnxruntime_s_masks(u2netp_onnx, synth_data, tmp_path):
    model, art = u2netp_onnx
    converted = to_torch(art, ConvertConfig(data=str(synth_data), count=4))
    assert converted.arch["name"] == "u2netp" and converted.report["layers"] == 119
    assert converted.report["passed"] and converted.report["max_abs_diff"] < 1e-3
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (converted.module.eval()(x) - model.eval()(x)).abs().max() < 1e-3  # the folded norms undone exactly
    out = convert(art, tmp_path / "torch", ConvertConfig(count=2))
    m = out.manifest
    assert m.format == "torch" and m.arch["name"] == "u2netp" and m.lineage[-1].step == "convert"
    assert m.lineage[-1].parent_sha256 == art.sha256 and m.lineage[-1].params["passed"]


@pytest.mark.slow
def test_a_graph_that_is_not_the_architecture_s_output_is_refused_with_the_numbers(tmp_path):
    from edgecut.models.registry import create_model

    class Shifted(torch.nn.Module):  # the same layers, another output (as a model with one more op after them)
        def __init__(self):
            super().__init__()
            self.net = create_model("u2netp")

        def forward(self, x):
            return self.net(x) * 3.0 + 0.5

    art = _import_onnx(Shifted(), tmp_path, "shifted", output="logits")
    with pytest.raises(ModelError, match="max abs diff .* mean mask IoU"):
        to_torch(art, ConvertConfig(count=2))


def test_a_graph_no_architecture_has_is_refused_naming_what_was_tried(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(5, 1, 1))
    art = _import_onnx(net, tmp_path, "odd", output="logits")
    with pytest.raises(ModelError, match="no registered architecture matches .*u2netp: 119 convolutions"):
        to_torch(art)


def test_an_edgecut_onnx_export_comes_back_with_its_options(trained, synth_data, tmp_path):
    from edgecut.exporters import ExportConfig, export

    onnx_art = export(trained, tmp_path / "onnx", ExportConfig(format="onnx"), progress=False)
    converted = to_torch(onnx_art, ConvertConfig(data=str(synth_data), count=4))
    assert converted.arch == trained.manifest.arch and converted.report["passed"]


@pytest.mark.slow
def test_an_onnx_model_is_pruned_through_its_torch_layers_and_fine_tuned_by_kd(trained, synth_data, tmp_path):
    from edgecut.compress.config import PruneConfig
    from edgecut.compress.prune import prune
    from edgecut.exporters import ExportConfig, export
    from edgecut.training.config import LoopConfig

    onnx_art = export(trained, tmp_path / "onnx", ExportConfig(format="onnx"), progress=False)
    config = PruneConfig(ratio=0.5, round_to=None, data=str(synth_data), kd=True, latency=False,
                         loop=LoopConfig(epochs=1, batch_size=4, lr=3e-4, precision="fp32"))
    pruned = prune(onnx_art, tmp_path / "pruned", config, progress=False)
    steps = [s.step for s in pruned.manifest.lineage]
    assert steps[-2:] == ["convert", "prune"] and pruned.manifest.lineage[-2].params["passed"]
    assert pruned.manifest.format == "torch" and pruned.manifest.params < trained.manifest.params
    assert pruned.manifest.lineage[-1].params["finetune"]["kd"] is True
    assert load_artifact(tmp_path / "pruned").manifest.metrics["val"]["iou"] >= 0.0
