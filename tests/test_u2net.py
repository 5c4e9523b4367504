"""U^2-Net and U^2-Netp (edgecut.models.u2net): sizes, outputs, side outputs, taps, export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_batch, torch_out
from torch import nn

from edgecut import runtime
from edgecut.artifact import IMAGENET_MEAN, IMAGENET_STD
from edgecut.models.profile import count_macs, count_params
from edgecut.models.registry import builder_options, create_model, list_models
from edgecut.models.store import build, load_model, save_model
from edgecut.models.u2net import RSU, RSU4F, U2Net

U2NETP = {"name": "u2netp", "kwargs": {}}


def _u2netp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = create_model("u2netp").eval()
    # non-trivial batch-norm statistics, so a wrong buffer load would show in the outputs
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


def _x(h: int = 64, w: int = 64, n: int = 1, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- registry and size


def test_registered_with_options_and_spec():
    assert {"u2netp", "u2net"} <= set(list_models())
    assert builder_options("u2netp") == builder_options("u2net") == {"in_channels": 3}
    model = build(U2NETP)
    assert isinstance(model, U2Net)
    spec = model.default_spec
    assert spec.size_divisor == model.divisor == 32
    assert spec.input_size == (320, 320) and (spec.mean, spec.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert spec.output == "logits"


def test_u2netp_has_the_published_size():
    """The paper's U^2-Net-dagger: 1.13 M params, 4.7 MB of fp32 weights."""
    with torch.device("meta"):
        model = create_model("u2netp")
    n = count_params(model)
    assert abs(n - 1.13e6) <= 0.02 * 1.13e6, n
    assert n * 4 < 4.7e6
    assert 19e9 < count_macs(model, (320, 320)) < 21e9


def test_full_u2net_has_about_44m_params():
    with torch.device("meta"):  # shapes only: no memory, no init
        model = create_model("u2net")
    assert 43_500_000 <= count_params(model) <= 44_500_000
    assert model.default_spec.size_divisor == 32


def test_state_dict_uses_the_reference_names():
    """The authors' module names, so their published state dicts load as they are."""
    with torch.device("meta"):
        keys = set(create_model("u2netp").state_dict())
    assert {"stage1.rebnconvin.conv_s1.weight", "stage1.rebnconv7.bn_s1.running_var", "stage1d.rebnconv6d.conv_s1.bias",
            "stage6.rebnconv4.conv_s1.weight", "stage5d.rebnconv3d.bn_s1.weight", "side6.weight",
            "outconv.weight"} <= keys
    assert not any("rebnconv8" in k or "stage7" in k or "side7" in k for k in keys)


def test_blocks_keep_their_input_size_and_dilations():
    rsu, rsu4f = RSU(5, 4, 3, 6).eval(), RSU4F(4, 3, 6).eval()
    assert rsu.rebnconv5.conv_s1.dilation == (2, 2) and rsu.rebnconv4.conv_s1.dilation == (1, 1)
    assert [getattr(rsu4f, f"rebnconv{i}").conv_s1.dilation[0] for i in range(1, 5)] == [1, 2, 4, 8]
    with torch.no_grad():
        assert rsu(torch.randn(1, 4, 19, 13)).shape == rsu4f(torch.randn(1, 4, 19, 13)).shape == (1, 6, 19, 13)
    with pytest.raises(ValueError, match="height"):
        RSU(2, 4, 3, 6)


# --------------------------------------------------------------------------- outputs


@pytest.mark.parametrize("hw", [(64, 64), (48, 80), (37, 45), (1, 1)])
def test_output_is_one_channel_logits_at_input_size(hw):
    """Any size works: ceil-mode pooling and bilinear upsampling to each skip's size."""
    with torch.no_grad():
        y = _u2netp()(_x(*hw))
    assert y.shape == (1, 1, *hw)
    assert torch.isfinite(y).all()


def test_train_mode_gives_logits_and_gradients():
    model = _u2netp().train()
    y = model(_x(64, 64, n=2))
    assert y.shape == (2, 1, 64, 64) and torch.isfinite(y).all()
    y.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_side_outputs_are_the_fused_map_then_six_sides():
    model = _u2netp()
    x = _x(48, 80)
    with torch.no_grad():
        maps = model.side_outputs(x)
        fused = model(x)
    assert len(maps) == 7
    assert all(m.shape == (1, 1, 48, 80) and torch.isfinite(m).all() for m in maps)
    assert torch.equal(maps[0], fused)
    assert torch.allclose(fused, model.outconv(torch.cat(maps[1:], dim=1)), atol=1e-6)


# --------------------------------------------------------------------------- feature taps


def test_feature_taps_give_features_at_their_stride():
    model = _u2netp()
    modules = dict(model.named_modules())
    assert model.feature_taps == {1: "stage1", 2: "stage2", 4: "stage3", 8: "stage4", 16: "stage5", 32: "stage6"}
    got: dict[int, torch.Tensor] = {}
    hooks = [modules[name].register_forward_hook(lambda m, i, o, s=s: got.__setitem__(s, o))
             for s, name in model.feature_taps.items()]
    try:
        with torch.no_grad():
            model(_x(64, 96))
    finally:
        for h in hooks:
            h.remove()
    assert {s: tuple(f.shape[1:]) for s, f in got.items()} == {s: (64, 64 // s, 96 // s) for s in model.feature_taps}


# --------------------------------------------------------------------------- storage and export


def test_save_load_round_trip(tmp_path):
    model = _u2netp(7)
    art = save_model(tmp_path / "m", model, U2NETP, model.default_spec.with_size(64))
    assert art.manifest.params == count_params(model) and art.manifest.spec.size_divisor == 32
    loaded = load_model(art.path)
    assert loaded.module is not model and not loaded.module.training
    x = _x(50, 70, seed=3)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), model(x))


@pytest.mark.slow  # ~4 s: trace, onnxslim and the parity check on 8 images
def test_onnx_fp32_export_matches_torch(tmp_path):
    from edgecut.exporters import ExportConfig, export

    model = _u2netp(3)
    parent = save_model(tmp_path / "torch", model, U2NETP, model.default_spec.with_size(64))
    art = export(parent, tmp_path / "onnx", ExportConfig(format="onnx", precision="fp32", threads=1))
    parity = art.manifest.metrics["parity"]
    assert parity["passed"] and parity["max_abs_diff"] <= 1e-4
    x = random_batch(64, 64, n=2)
    np.testing.assert_allclose(runtime.load(art, threads=1)(x), torch_out(parent, x), atol=1e-4)
