"""MobileNet-backbone students (edgecut.models.students): encoder contract, heads, taps, weights."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_STUDENT
from torch import nn

from edgecut.errors import ModelError
from edgecut.models.profile import count_macs, count_params
from edgecut.models.registry import builder_options, create_model, list_models
from edgecut.models.store import build, load_model, save_model
from edgecut.models.students import MobileNetEncoder

STUDENTS = ("mobilenet_v3_large_unet", "mobilenet_v3_small_unet", "mobilenet_v2_unet",
            "mobilenet_v3_large_lraspp", "mobilenet_v3_small_lraspp", "mobilenet_v3_large_relu_unet")
SMALL = {"width_mult": 0.35}  # a small width for fast tests; default heads


def _student(name: str, seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    model = create_model(name, **{**SMALL, **kwargs}).eval()
    # non-trivial batch-norm statistics, so a wrong buffer load would show in the outputs
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


def _x(h: int = 64, w: int = 96, seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_students_are_registered():
    assert set(STUDENTS) <= set(list_models())


# --------------------------------------------------------------------------- encoder contract


@pytest.mark.parametrize("name", STUDENTS)
def test_encoder_declares_what_it_returns(name):
    """Declared channels and strides match the real features, at a non-square input."""
    enc = _student(name).encoder
    assert enc.strides == (2, 4, 8, 16, 32)
    with torch.no_grad():
        feats = enc(_x(64, 96))
    assert len(feats) == len(enc.strides) == len(enc.out_channels)
    for f, c, s in zip(feats, enc.out_channels, enc.strides):
        assert f.shape == (1, c, 64 // s, 96 // s)


def test_encoder_channels_come_from_the_layers():
    with torch.device("meta"):  # shapes only
        assert MobileNetEncoder("mobilenet_v3_large").out_channels == (16, 24, 40, 112, 960)
        assert MobileNetEncoder("mobilenet_v3_small").out_channels == (16, 16, 24, 48, 576)
        assert MobileNetEncoder("mobilenet_v2").out_channels == (16, 24, 32, 96, 1280)
        assert MobileNetEncoder("mobilenet_v3_large", width_mult=0.5).out_channels == (8, 16, 24, 56, 480)


def test_encoder_rejects_unknown_backbone_and_bad_width():
    with pytest.raises(ModelError, match="mobilenet_v3_large"):
        MobileNetEncoder("resnet18")
    with pytest.raises(ModelError, match="width_mult"):
        create_model("mobilenet_v3_small_unet", width_mult=0)


# --------------------------------------------------------------------------- outputs


@pytest.mark.parametrize("name", STUDENTS)
@pytest.mark.parametrize("hw", [(64, 96), (50, 70), (1, 1)])
def test_output_is_one_channel_logits_at_input_size(name, hw):
    with torch.no_grad():
        y = _student(name)(_x(*hw))
    assert y.shape == (1, 1, *hw)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", ["mobilenet_v3_small_unet", "mobilenet_v3_small_lraspp"])
def test_padding_path_matches_crop_of_padded_input(name):
    model = _student(name)
    assert model.default_spec.size_divisor == model.divisor == 32
    x = _x(50, 70)
    with torch.no_grad():
        y = model(x)
        y_ref = model(nn.functional.pad(x, (0, 26, 0, 14), mode="replicate"))[..., :50, :70]  # 64 x 96
    assert torch.equal(y, y_ref)


def test_batch_and_train_mode():
    model = _student("mobilenet_v3_small_unet").train()
    y = model(_x().repeat(2, 1, 1, 1))
    assert y.shape == (2, 1, 64, 96)
    y.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_decoder_and_head_options():
    m = _student("mobilenet_v3_small_unet", decoder_channels=[8, 8, 8, 4])
    assert [b.conv[-1][-3].out_channels for b in m.decoder.blocks] == [8, 8, 8, 4]
    assert _student("mobilenet_v3_small_lraspp", inter_channels=16).head.cbr[0].out_channels == 16
    with pytest.raises(ModelError, match="decoder_channels"):
        create_model("mobilenet_v3_small_unet", decoder_channels=[8, 8, 8])
    with pytest.raises(ModelError, match="decoder_channels"):
        create_model("mobilenet_v3_small_unet", decoder_channels=[8, 8, 0, 8])


def test_int8_friendly_student_has_no_hardswish_se_or_bilinear():
    from torchvision.ops.misc import SqueezeExcitation

    m = _student("mobilenet_v3_large_relu_unet")
    kinds = {type(x) for x in m.modules()}
    assert nn.Hardswish not in kinds and SqueezeExcitation not in kinds and nn.PixelShuffle in kinds
    assert {b.mode for b in m.decoder.blocks} == {"nearest"}
    base = _student("mobilenet_v3_large_unet")
    assert nn.Hardswish in {type(x) for x in base.modules()}
    # each change undone on its own: SE back, bilinear decoder, bilinear head
    back = _student("mobilenet_v3_large_relu_unet", se=True, upsample="bilinear", head="bilinear")
    assert SqueezeExcitation in {type(x) for x in back.modules()} and nn.PixelShuffle not in {type(x) for x in
                                                                                              back.modules()}
    assert back.encoder.out_channels == base.encoder.out_channels
    with pytest.raises(ModelError, match="upsample='cubic'"):
        create_model("mobilenet_v3_large_relu_unet", upsample="cubic")
    with pytest.raises(ModelError, match="head="):
        create_model("mobilenet_v3_large_relu_unet", head="deconv")


def test_shuffle_head_can_be_the_bilinear_head():
    """A 3x3 conv to 4 channels + PixelShuffle(2) holds the 1x1 head + bilinear x2 exactly (inside the border)."""
    torch.manual_seed(0)
    feats = torch.randn(1, 8, 12, 14)
    one = nn.Conv2d(8, 1, 1)
    want = nn.functional.interpolate(one(feats), scale_factor=2.0, mode="bilinear", align_corners=False)
    taps = (torch.tensor([0.25, 0.75, 0.0]), torch.tensor([0.0, 0.75, 0.25]))  # offsets -1, 0, +1 per sub-pixel
    conv = nn.Conv2d(8, 4, 3, padding=1)
    with torch.no_grad():
        for k in range(4):
            conv.weight[k] = one.weight[0] * torch.outer(taps[k // 2], taps[k % 2])
        conv.bias.fill_(one.bias.item())
        got = nn.PixelShuffle(2)(conv(feats))
    torch.testing.assert_close(got[..., 2:-2, 2:-2], want[..., 2:-2, 2:-2])


# --------------------------------------------------------------------------- feature taps


def _tapped(model: nn.Module, x: torch.Tensor) -> dict[int, torch.Tensor]:
    modules = dict(model.named_modules())
    got: dict[int, torch.Tensor] = {}
    hooks = [modules[name].register_forward_hook(lambda m, i, o, s=s: got.__setitem__(s, o))
             for s, name in model.feature_taps.items()]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return got


@pytest.mark.parametrize("name", STUDENTS)
def test_feature_taps_give_features_at_their_stride(name):
    model = _student(name)
    assert sorted(model.feature_taps) == [2, 4, 8, 16, 32]
    got = _tapped(model, _x(64, 96))
    for s, f in got.items():
        assert f.shape[-2:] == (64 // s, 96 // s), (s, f.shape)
    assert sorted(got) == [2, 4, 8, 16, 32]


def test_unet_feature_taps():
    model = create_model("unet", width=4, depth=2).eval()
    assert model.feature_taps == {1: "inc", 2: "downs.0", 4: "downs.1"}
    got = _tapped(model, _x(32, 48))
    assert {s: tuple(f.shape[-2:]) for s, f in got.items()} == {1: (32, 48), 2: (16, 24), 4: (8, 12)}


# --------------------------------------------------------------------------- options and storage


@pytest.mark.parametrize("name", STUDENTS)
def test_options_are_json(name):
    opts = builder_options(name)
    assert {"width_mult", "weights_backbone"} <= set(opts)
    assert opts["weights_backbone"] is None and opts["width_mult"] == 1.0
    assert json.loads(json.dumps(opts)) == {k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()}


@pytest.mark.parametrize("name", STUDENTS)
def test_save_load_round_trip(tmp_path, name):
    model = _student(name, seed=7)
    arch = {"name": name, "kwargs": json.loads(json.dumps({**SMALL}))}
    art = save_model(tmp_path / "m", model, arch, model.default_spec.with_size(64))
    assert art.manifest.spec.size_divisor == 32 and art.manifest.params == count_params(model)
    loaded = load_model(art.path)  # a fresh model built from edgecut.json, weights from safetensors
    assert loaded.module is not model and not loaded.module.training
    x = _x(50, 70, seed=3)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), model(x))


def test_tiny_student():
    model = build(TINY_STUDENT).eval()
    assert count_params(model) < 100_000
    with torch.no_grad():
        assert model(_x(64, 64)).shape == (1, 1, 64, 64)


# --------------------------------------------------------------------------- backbone weights


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """An empty torch hub cache; any download attempt fails the test."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def no_download(*a, **k):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return tmp_path


def test_missing_backbone_weights_name_the_file_and_fix(hub_dir):
    with pytest.raises(ModelError) as e:
        create_model("mobilenet_v3_small_unet", weights_backbone="IMAGENET1K_V1")
    msg = str(e.value)
    assert str(hub_dir / "checkpoints" / "mobilenet_v3_small-047dcff4.pth") in msg
    assert "download" in msg and "weights_backbone" in msg


def test_backbone_weights_load_from_the_hub_cache(hub_dir):
    import torchvision

    torch.manual_seed(3)
    ref = torchvision.models.mobilenet_v3_small().state_dict()
    (hub_dir / "checkpoints").mkdir()
    torch.save(ref, hub_dir / "checkpoints" / "mobilenet_v3_small-047dcff4.pth")
    for name in ("DEFAULT", "IMAGENET1K_V1"):
        model = create_model("mobilenet_v3_small_lraspp", weights_backbone=name)
        flat = [t for s in model.encoder.stages for t in s.state_dict().values()]
        assert len(flat) == sum(k.startswith("features.") for k in ref)
        assert all(torch.equal(a, b) for a, b in zip(flat, (v for k, v in ref.items() if k.startswith("features."))))


def test_corrupt_cached_weights_and_bad_options(hub_dir):
    (hub_dir / "checkpoints").mkdir()
    path = hub_dir / "checkpoints" / "mobilenet_v3_small-047dcff4.pth"
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ModelError, match="delete it"):
        create_model("mobilenet_v3_small_unet", weights_backbone="IMAGENET1K_V1")
    with pytest.raises(ModelError, match="IMAGENET1K_V1"):
        create_model("mobilenet_v3_small_unet", weights_backbone="IMAGENET21K")
    with pytest.raises(ModelError, match="width_mult=1.0"):
        create_model("mobilenet_v3_small_unet", width_mult=0.5, weights_backbone="DEFAULT")


# --------------------------------------------------------------------------- cost


def test_default_student_is_under_a_fiftieth_of_the_teacher_at_320():
    with torch.device("meta"):  # shapes only: no arithmetic, no memory
        teacher = count_macs(create_model("unet"), (320, 320))
        student = create_model("mobilenet_v3_large_unet")
    macs = count_macs(student, (320, 320))
    assert 74e9 < teacher < 77e9
    assert macs <= teacher / 50, (macs, teacher)
    assert macs <= 0.7e9 and count_params(student) < 4_000_000
