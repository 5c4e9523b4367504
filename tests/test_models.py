"""Model registry, the U-Net, MAC counting and loading a user's model (edgecut.models)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from edgecut import io
from edgecut.artifact import ModelSpec
from edgecut.errors import EdgecutError, InputError, ModelError
from edgecut.models.profile import count_macs, count_params
from edgecut.models.registry import builder_options, create_model, list_models
from edgecut.models.store import LoadedModel, load_model

TINY = {"width": 4, "depth": 2}


def _tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = create_model("unet", **TINY).eval()
    # non-trivial batch-norm statistics, so a wrong buffer load would show in the outputs
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


def _x(h: int = 32, w: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _same_outputs(a: nn.Module, b: nn.Module, x: torch.Tensor) -> None:
    ya, yb = a(x), b(x)
    assert ya.shape == yb.shape
    assert torch.allclose(ya, yb, rtol=1e-5, atol=1e-6), float((ya - yb).abs().max())


# --------------------------------------------------------------------------- registry and U-Net


def test_full_size_unet_has_about_31m_params():
    with torch.device("meta"):  # no memory, no init: parameters are counted from shapes
        model = create_model("unet")
    n = count_params(model)
    assert 30_000_000 <= n <= 32_000_000, n
    assert model.divisor == 16 and model.default_spec.size_divisor == 16


def test_width_and_depth_shrink_the_unet():
    with torch.device("meta"):
        full = count_params(create_model("unet"))
        half = count_params(create_model("unet", width=32))
        shallow = count_params(create_model("unet", depth=3))
    assert half < full / 3
    assert shallow < full / 3
    assert count_params(create_model("unet", **TINY)) < 20_000


@pytest.mark.parametrize("hw", [(32, 32), (37, 45), (1, 1), (20, 64)])
def test_tiny_unet_keeps_input_size(hw):
    model = _tiny()
    with torch.no_grad():
        y = model(_x(*hw))
    assert y.shape == (1, 1, *hw)
    assert torch.isfinite(y).all()


def test_padding_path_matches_crop_of_padded_input():
    """An odd size is padded (replicate) up to the divisor and cropped back."""
    model = _tiny()
    x = _x(37, 45)
    with torch.no_grad():
        y = model(x)
        padded = torch.nn.functional.pad(x, (0, 3, 0, 3), mode="replicate")  # 40 x 48: multiples of 4
        y_ref = model(padded)[..., :37, :45]
    assert torch.equal(y, y_ref)


def test_bilinear_variant_runs():
    model = create_model("unet", width=4, depth=2, bilinear=True).eval()
    with torch.no_grad():
        assert model(_x(16, 24)).shape == (1, 1, 16, 24)


def test_unet_rejects_bad_sizes():
    from edgecut.errors import ModelError

    for bad in ({"width": 0}, {"depth": 0}, {"width": 10**9}, {"depth": 40}, {"width": "4"}):
        with pytest.raises(ModelError, match="cannot be built"):  # one clear error, before anything is allocated
            create_model("unet", **bad)


def test_unknown_arch_lists_known_ones():
    with pytest.raises(ModelError) as e:
        create_model("resnet9000")
    assert "resnet9000" in str(e.value) and "unet" in str(e.value)
    assert isinstance(e.value, EdgecutError)


def test_unknown_option_lists_options():
    with pytest.raises(ModelError) as e:
        create_model("unet", widht=8, colour=1)
    msg = str(e.value)
    assert "widht" in msg and "colour" in msg
    for opt in ("width", "depth", "in_channels", "bilinear"):
        assert opt in msg


def test_list_models_and_options():
    assert "unet" in list_models()
    assert builder_options("unet") == {"width": 64, "depth": 4, "in_channels": 3, "bilinear": False}


# --------------------------------------------------------------------------- MACs


def test_count_macs_of_one_conv():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_macs(conv, (16, 16)) == 3 * 8 * 9 * 16 * 16


def test_count_macs_scales_with_area_and_keeps_mode():
    model = _tiny().train()
    m32 = count_macs(model, (32, 32))
    m64 = count_macs(model, (64, 64))
    assert m32 > 0
    assert abs(m64 - 4 * m32) <= 0.01 * m64
    assert model.training  # restored
    bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)][0]
    assert int(bn.num_batches_tracked) == 0  # counted in eval mode: statistics untouched


# --------------------------------------------------------------------------- load_model


def test_load_model_from_artifact(tmp_path):
    from edgecut.models.store import save_model

    model = _tiny(7)
    arch = {"name": "unet", "kwargs": TINY}
    art = save_model(tmp_path / "m", model, arch, model.default_spec.with_size(32))
    loaded = load_model(art.path)
    assert isinstance(loaded, LoadedModel)
    assert loaded.artifact is not None and loaded.artifact.path == art.path
    assert loaded.arch == arch
    assert loaded.spec.input_size == (32, 32) and loaded.spec.size_divisor == 4
    assert not loaded.module.training
    _same_outputs(loaded.module, model, _x(37, 45))


def test_load_model_from_safetensors_and_arch(tmp_path):
    model = _tiny(3)
    p = io.save_weights(tmp_path / "w.safetensors", model.state_dict())
    loaded = load_model(p, arch="unet", arch_kwargs=TINY)
    assert loaded.artifact is None and loaded.arch == {"name": "unet", "kwargs": TINY}
    assert loaded.spec == model.default_spec
    assert not loaded.module.training
    _same_outputs(loaded.module, model, _x(37, 45))


def test_load_model_from_pt_state_dict_and_arch(tmp_path):
    model = _tiny(4)
    torch.save({"state_dict": model.state_dict(), "epoch": 1}, tmp_path / "ckpt.pt")
    spec = ModelSpec(input_size=(64, 64), size_divisor=4)
    loaded = load_model(tmp_path / "ckpt.pt", arch="unet", arch_kwargs=TINY, spec=spec)
    assert loaded.spec == spec
    _same_outputs(loaded.module, model, _x())


def test_weights_without_arch_ask_for_arch(tmp_path):
    p = io.save_weights(tmp_path / "w.safetensors", _tiny().state_dict())
    with pytest.raises(InputError) as e:
        load_model(p)
    assert "--arch" in str(e.value) and str(p) in str(e.value)


def test_weights_that_do_not_fit_the_arch(tmp_path):
    p = io.save_weights(tmp_path / "w.safetensors", _tiny().state_dict())
    with pytest.raises(InputError) as e:
        load_model(p, arch="unet", arch_kwargs={"width": 8, "depth": 2})
    assert "do not fit" in str(e.value) and str(p) in str(e.value)
    with pytest.raises(InputError):
        load_model(p, arch="unet", arch_kwargs={"width": 4, "depth": 3})  # missing keys


def test_unknown_arch_for_weights(tmp_path):
    p = io.save_weights(tmp_path / "w.safetensors", _tiny().state_dict())
    with pytest.raises(ModelError, match="unet"):
        load_model(p, arch="nonet")


def test_load_model_missing_and_plain_folder(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_model(tmp_path / "absent.safetensors", arch="unet")
    with pytest.raises(InputError, match="edgecut.json"):
        load_model(tmp_path)


def test_load_model_from_torchscript(tmp_path):
    model = _tiny(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about the padding branch, jit deprecation
        traced = torch.jit.trace(model, _x())
        p = tmp_path / "model.ts"
        torch.jit.save(traced, str(p))
        loaded = load_model(p)  # no --arch needed
    assert loaded.arch is None and loaded.artifact is None
    assert loaded.spec == ModelSpec()
    assert isinstance(loaded.module, torch.jit.ScriptModule)
    _same_outputs(loaded.module, model, _x(seed=9))


def test_pt_state_dict_is_not_mistaken_for_torchscript(tmp_path):
    p = tmp_path / "w.pt"
    torch.save(_tiny().state_dict(), p)
    with pytest.raises(InputError, match="--arch"):
        load_model(p)
