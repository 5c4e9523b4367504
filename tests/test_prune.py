"""Structured pruning: importance criteria, scopes, schedules, plans, save/reload, errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from conftest import TINY_STUDENT, TINY_UNET
from edgecut.compress.config import PruneConfig, SensitivityConfig
from edgecut.compress.pruning import (plan_from_sensitivity, prunable_groups, prune_model, read_plan,
                                      recalibrate_batchnorm, sensitivity, write_sensitivity)
from edgecut.errors import EdgecutError, ModelError
from edgecut.models.channels import channel_config
from edgecut.models.profile import count_macs
from edgecut.models.store import build, load_model, save_model

pytest.importorskip("torch_pruning")


def tiny(arch=TINY_UNET, seed=0):
    torch.manual_seed(seed)
    model = build(arch).eval()
    with torch.no_grad():  # non-trivial BN scales so "bn" importance ranks something
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.2, 1.5)
                m.running_var.uniform_(0.5, 1.5)
    return model


def x_of(side=32):
    return torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(1))


def rebuilt(model, arch):
    """The pruned model built again from its architecture description, weights loaded strictly."""
    desc = {**arch, "channels": channel_config(model, build(arch))}
    clone = build(json.loads(json.dumps(desc))).eval()
    clone.load_state_dict(model.state_dict(), strict=True)
    return clone


def grad_batches():
    g = torch.Generator().manual_seed(2)
    return [(torch.randn(2, 3, 32, 32, generator=g), (torch.rand(2, 1, 32, 32, generator=g) > 0.5).float())]


@pytest.mark.parametrize("importance", ["l1", "l2", "bn", "taylor"])
def test_each_importance_prunes_consistently(importance):
    model, x = tiny(), x_of()
    before = count_macs(model, (32, 32))
    prune_model(model, x[:1], PruneConfig(ratio=0.5, importance=importance, round_to=None), grad_batches=grad_batches())
    after = count_macs(model, (32, 32))
    assert after < 0.6 * before
    assert model(x).shape == (2, 1, 32, 32)
    assert model.head.out_channels == 1  # the output head keeps its channels
    torch.testing.assert_close(rebuilt(model, TINY_UNET)(x), model(x))


def test_importance_criteria_choose_different_channels():
    kept = {}
    for imp in ("l1", "bn", "taylor"):
        model = tiny()
        prune_model(model, x_of()[:1], PruneConfig(ratio=0.5, importance=imp, round_to=None), grad_batches=grad_batches())
        kept[imp] = model.downs[1][1][0].weight.detach().clone()
    assert not all(torch.equal(kept["l1"], kept[k]) for k in ("bn", "taylor"))


def test_uniform_halves_every_group_global_ranks_across_groups():
    x = x_of()[:1]
    base = prunable_groups(tiny(), x)
    uni = tiny()
    prune_model(uni, x, PruneConfig(ratio=0.5, round_to=None))
    assert prunable_groups(uni, x) == {k: v // 2 for k, v in base.items()}
    glob = tiny()
    prune_model(glob, x, PruneConfig(ratio=0.5, scope="global", round_to=None))
    widths = prunable_groups(glob, x)
    assert sum(widths.values()) < sum(base.values())
    assert widths != {k: v // 2 for k, v in base.items()}  # not the same share everywhere
    assert all(v >= 1 for v in widths.values())


def test_round_to_keeps_multiples():
    model = tiny({"name": "unet", "kwargs": {"width": 8, "depth": 2}})
    x = x_of()[:1]
    prune_model(model, x, PruneConfig(ratio=0.3, round_to=4))
    assert all(v % 4 == 0 for v in prunable_groups(model, x).values())


def test_iterative_steps_reach_the_same_widths_and_call_back():
    x = x_of()[:1]
    once, steps = tiny(), tiny()
    prune_model(once, x, PruneConfig(ratio=0.5, round_to=None))
    seen = []
    prune_model(steps, x, PruneConfig(ratio=0.5, round_to=None, steps=3),
          on_step=lambda k, m: seen.append((k, count_macs(m, (32, 32)))))
    assert [k for k, _ in seen] == [1, 2, 3]
    assert seen[0][1] > seen[1][1] > seen[2][1]
    assert prunable_groups(steps, x) == prunable_groups(once, x)


def test_resume_from_a_finished_step():
    x = x_of()[:1]
    full, part = tiny(), tiny()
    original = prunable_groups(part, x)
    config = PruneConfig(ratio=0.5, round_to=None, steps=2)
    prune_model(full, x, config)
    prune_model(part, x, PruneConfig(ratio=0.25, round_to=None))  # what step 1 of 2 leaves
    prune_model(part, x, config, start_step=1, original=original)
    assert prunable_groups(part, x) == prunable_groups(full, x)


def test_target_macs_is_met_closely():
    model, x = tiny(), x_of()[:1]
    before = count_macs(model, (32, 32))
    target = 0.4 * before
    prune_model(model, x, PruneConfig(ratio=None, target_macs=target / 1e9, round_to=None))
    after = count_macs(model, (32, 32))
    assert 0.25 * before < after <= target


def test_layer_plan_prunes_only_named_groups():
    model, x = tiny(), x_of()[:1]
    base = prunable_groups(model, x)
    prune_model(model, x, PruneConfig(ratio=None, layer_ratios={"downs.1.1.0": 0.5}, round_to=None))
    widths = prunable_groups(model, x)
    assert widths["downs.1.1.0"] == base["downs.1.1.0"] // 2
    assert {k: v for k, v in widths.items() if k != "downs.1.1.0"} == \
        {k: v for k, v in base.items() if k != "downs.1.1.0"}


def test_student_with_depthwise_convs_prunes_and_reloads(tmp_path):
    model, x = tiny(TINY_STUDENT), x_of(64)
    before = count_macs(model, (64, 64))
    prune_model(model, x[:1], PruneConfig(ratio=0.5, round_to=None))
    assert count_macs(model, (64, 64)) < 0.7 * before
    for m in model.modules():  # depthwise stays depthwise
        if isinstance(m, nn.Conv2d) and m.groups > 1:
            assert m.groups == m.in_channels == m.out_channels
    arch = {**TINY_STUDENT, "channels": channel_config(model, build(TINY_STUDENT))}
    save_model(tmp_path / "s", model, arch, model.default_spec.with_size(64))
    torch.testing.assert_close(load_model(tmp_path / "s").module(x), model(x))


def test_conv_before_a_pixel_shuffle_keeps_its_channels(tmp_path):
    """Torch-Pruning leaves the conv a PixelShuffle rearranges at r * r channels: the shuffle stays whole."""
    arch = {"name": "mobilenet_v3_large_relu_unet", "kwargs": {"width_mult": 0.25, "decoder_channels": [16, 8, 8, 8]}}
    model, x = tiny(arch), x_of(64)
    prune_model(model, x[:1], PruneConfig(ratio=0.5, round_to=None))
    assert model.head[0].out_channels == 4 and model(x).shape == (len(x), 1, 64, 64)
    arch = {**arch, "channels": channel_config(model, build(arch))}
    save_model(tmp_path / "s", model, arch, model.default_spec.with_size(64))
    torch.testing.assert_close(load_model(tmp_path / "s").module(x), model(x))


def test_pruned_model_reloads_in_a_fresh_process(tmp_path):
    model, x = tiny(), x_of()
    prune_model(model, x[:1], PruneConfig(ratio=0.5, round_to=None))
    arch = {**TINY_UNET, "channels": channel_config(model, build(TINY_UNET))}
    save_model(tmp_path / "m", model, arch, model.default_spec.with_size(32))
    np.testing.assert_array_equal(_outputs_in_fresh_process(tmp_path / "m", x, tmp_path), model(x).detach().numpy())


def test_batchnorm_recalibration_matches_the_batch_statistics():
    model, x = tiny(), x_of()
    prune_model(model, x[:1], PruneConfig(ratio=0.5, round_to=None))
    bn = model.inc[1]
    momentum = bn.momentum
    assert recalibrate_batchnorm(model, [x[:1], x[1:]]) == 2
    assert not model.training and not bn.training and bn.momentum == momentum
    with torch.no_grad():  # the first BN's mean is the mean over both images of its input
        feats = model.inc[0](x)
    torch.testing.assert_close(bn.running_mean, feats.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    w = bn.weight.detach().clone()
    recalibrate_batchnorm(model, [x])
    assert torch.equal(bn.weight, w)  # weights untouched


class Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gain = nn.Parameter(torch.ones(1, 8, 1, 1))
        self.head = nn.Conv2d(8, 1, 1)

    def forward(self, x):
        return self.head(self.conv(x) * self.gain)


def test_unsupported_layer_is_named():
    with pytest.raises(ModelError, match=r"layer '' \(Scaled\).*--ignore"):
        prune_model(Scaled(), x_of()[:1], PruneConfig(ratio=0.5, round_to=None))


def test_ratio_that_empties_a_group_is_an_error():
    with pytest.raises(ModelError, match="would remove all .* channels .*round-to"):
        prune_model(tiny(), x_of()[:1], PruneConfig(ratio=0.5, round_to=8))
    with pytest.raises(ModelError, match="whole group"):
        prune_model(tiny(), x_of()[:1], PruneConfig(ratio=1.0))
    with pytest.raises(ModelError, match="needs data"):
        prune_model(tiny(), x_of()[:1], PruneConfig(ratio=0.5, importance="taylor", round_to=None))
    with pytest.raises(ModelError, match="unknown importance"):
        prune_model(tiny(), x_of()[:1], PruneConfig(ratio=0.5, importance="l3"))  # type: ignore[arg-type]


def test_sensitivity_rows_and_plan(tmp_path):
    model, x = tiny(), x_of()
    y = model(x).detach()

    @torch.no_grad()
    def agreement(m):  # higher is better: 1 - mean abs change of the output
        return 1.0 - float((torch.sigmoid(m(x)) - torch.sigmoid(y)).abs().mean())

    base, rows = sensitivity(model, x[:1], agreement, SensitivityConfig(ratios=(0.5,)), progress=False)
    assert base == pytest.approx(1.0)
    groups = prunable_groups(model, x[:1])
    assert {r.layer for r in rows} == {k for k, v in groups.items() if v >= 2}
    assert all(0 < r.macs_saved < 1 and r.kept == r.channels // 2 for r in rows)
    plan = plan_from_sensitivity(rows, max_drop=sorted(r.drop for r in rows)[len(rows) // 2])
    assert plan and all(v == 0.5 for v in plan.values()) and len(plan) < len(rows)
    files = write_sensitivity(tmp_path, base, rows, "agreement", plan, 0.01)
    assert {f.name for f in files} >= {"sensitivity.json", "sensitivity.csv", "sensitivity.md", "plan.json"}
    assert read_plan(tmp_path / "plan.json") == plan
    (tmp_path / "bad.json").write_text('{"ratios": 1}')
    with pytest.raises(EdgecutError, match="bad.json.*not a pruning plan"):
        read_plan(tmp_path / "bad.json")


def _outputs_in_fresh_process(artifact, x, tmp_path):
    np.save(tmp_path / "x.npy", x.numpy())
    code = ("import sys, numpy as np, torch; torch.set_num_threads(1); from edgecut.models.store import load_model; "
            "m = load_model(sys.argv[1]).module; x = torch.from_numpy(np.load(sys.argv[2])); "
            "np.save(sys.argv[3], m(x).detach().numpy())")
    subprocess.run([sys.executable, "-c", code, str(artifact), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                   check=True)
    return np.load(tmp_path / "y.npy")


@pytest.mark.slow
def test_full_size_unet_half_channels_cuts_macs_3_5x(tmp_path):
    arch = {"name": "unet", "kwargs": {}}
    model = build(arch).eval()
    before = count_macs(model, (320, 320))
    prune_model(model, torch.randn(1, 3, 64, 64), PruneConfig(ratio=0.5, round_to=8))
    after = count_macs(model, (320, 320))
    assert before / after >= 3.5
    desc = {**arch, "channels": channel_config(model, build(arch))}
    save_model(tmp_path / "m", model, desc, model.default_spec.with_size(64))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        np.testing.assert_array_equal(_outputs_in_fresh_process(tmp_path / "m", x, tmp_path), model(x).numpy())


def _cli(*args):
    from typer.testing import CliRunner

    from edgecut.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_prune_finetune_steps_and_resume(tiny_artifact, synth_data, tmp_path):
    args = ["--ratio", "0.5", "--round-to", "1", "--steps", "2", "--data", synth_data, "--finetune-epochs", "1",
            "--batch", "4", "--no-latency", "--recalibrate-bn", "2", "--precision", "fp32"]  # two runs compared
    res = _cli("prune", tiny_artifact.path, "--out", tmp_path / "a", *args)
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "a" / "prune_report.json").read_text())
    assert report["macs_reduction"] > 2.5 and "val" in report["after"]
    assert report["steps"]["1"]["bn_recalibration_images"] == 8 and "val_before_finetune" in report["steps"]["2"]
    manifest = json.loads((tmp_path / "a" / "edgecut.json").read_text())
    assert manifest["lineage"][-1]["step"] == "prune"
    assert manifest["lineage"][-1]["parent_sha256"] == tiny_artifact.sha256
    # stop after step 1: drop what step 2 and the end wrote, then resume
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    for p in ("edgecut.json", "model.safetensors", "prune_report.json"):
        (tmp_path / "b" / p).unlink()
    shutil.rmtree(tmp_path / "b" / "steps" / "2")
    res = _cli("prune", tiny_artifact.path, "--out", tmp_path / "b", *args, "--resume")
    assert res.exit_code == 0, res.output
    a, b = (load_model(tmp_path / d).module.state_dict() for d in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    res = _cli("prune", tiny_artifact.path, "--out", tmp_path / "b", *args)  # no --resume: refuse, keep files
    assert isinstance(res.exception, EdgecutError) and "--resume" in str(res.exception)
    assert (tmp_path / "b" / "edgecut.json").exists()


def test_cli_sensitivity_then_plan(tiny_artifact, synth_data, tmp_path):
    res = _cli("prune", tiny_artifact.path, "--out", tmp_path / "sens", "--sensitivity", "--data", synth_data,
               "--ratios", "0.5", "--images", "8", "--round-to", "1", "--max-drop", "1.0")
    assert res.exit_code == 0, res.output
    plan = read_plan(tmp_path / "sens" / "plan.json")
    assert plan and set(plan.values()) == {0.5}
    res = _cli("prune", tiny_artifact.path, "--out", tmp_path / "p", "--plan", tmp_path / "sens" / "plan.json",
               "--round-to", "1", "--no-latency")
    assert res.exit_code == 0, res.output
    assert load_model(tmp_path / "p").module(torch.zeros(1, 3, 32, 32)).shape == (1, 1, 32, 32)


def test_pruned_student_exports_to_onnx_with_parity(tmp_path, synth_data):
    from edgecut.exporters import ExportConfig, ParityConfig, export

    model = tiny(TINY_STUDENT)
    prune_model(model, x_of(64)[:1], PruneConfig(ratio=0.5, round_to=None))
    arch = {**TINY_STUDENT, "channels": channel_config(model, build(TINY_STUDENT))}
    save_model(tmp_path / "pruned", model, arch, model.default_spec.with_size(64))
    onnx_art = export(tmp_path / "pruned", tmp_path / "onnx", ExportConfig(format="onnx", precision="fp32",
                                                                           parity=ParityConfig(data=synth_data),
                                                                           threads=1))
    assert onnx_art.manifest.format == "onnx"
    assert onnx_art.manifest.metrics["parity"]["max_abs_diff"] <= 1e-4
