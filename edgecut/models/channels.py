"""Channel configurations: how a structurally pruned model is described without pickling it.

A pruned model is its registry architecture plus, for every layer whose width changed, the
layer's new channel counts::

    {"name": "unet", "kwargs": {"width": 64}, "channels": {"inc.0": {"in": 3, "out": 32, "groups": 1}, ...}}

``build`` (models/store.py) creates the registry model and then swaps each listed layer for
an empty one of the same kind with the recorded channels, so the safetensors weights load
strictly. This works for any model whose forward reads shapes from its layers rather than
from numbers fixed at construction (the U-Net and the students do).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from edgecut.errors import ModelError

# The layer kinds whose widths a pruned model may change, and that ``apply_channels`` rebuilds.
RESIZABLE = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm,
             nn.PReLU)


def layer_channels(layer: nn.Module) -> dict[str, int]:
    """The channel counts of one resizable layer."""
    if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)):
        return {"in": layer.in_channels, "out": layer.out_channels, "groups": layer.groups}
    if isinstance(layer, nn.Linear):
        return {"in": layer.in_features, "out": layer.out_features}
    if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return {"out": layer.num_features}
    if isinstance(layer, nn.GroupNorm):
        return {"out": layer.num_channels, "groups": layer.num_groups}
    if isinstance(layer, nn.PReLU):
        return {"out": layer.num_parameters}
    raise TypeError(f"not a resizable layer: {type(layer).__name__}")


def channel_config(model: nn.Module, reference: nn.Module) -> dict[str, dict[str, int]]:
    """The layers of ``model`` whose channels differ from the same-named layers of ``reference``."""
    ref = dict(reference.named_modules())
    config = {}
    for name, layer in model.named_modules():
        if isinstance(layer, RESIZABLE):
            if name not in ref or type(ref[name]) is not type(layer):
                raise ModelError(f"layer {name!r} ({type(layer).__name__}) is not in the architecture it was "
                                 "pruned from; only channel counts may change")
            now = layer_channels(layer)
            if now != layer_channels(ref[name]):
                config[name] = now
    return config


def apply_channels(model: nn.Module, config: dict[str, dict[str, Any]]) -> nn.Module:
    """Replace each layer named in ``config`` with a freshly initialised one of those widths."""
    modules = dict(model.named_modules())
    for name, ch in config.items():
        old = modules.get(name)
        if old is None or not isinstance(old, RESIZABLE):
            raise ModelError(f"the channel configuration names layer {name!r}, which the architecture "
                             f"{type(model).__name__} does not have as a conv, linear or norm layer")
        parent_name, _, attr = name.rpartition(".")
        parent = modules[parent_name] if parent_name else model
        new = _resized(old, ch)
        if isinstance(parent, (nn.Sequential, nn.ModuleList)) and attr.isdigit():
            parent[int(attr)] = new
        else:
            setattr(parent, attr, new)
    return model


def _resized(old: nn.Module, ch: dict[str, Any]) -> nn.Module:
    def has_bias(m: nn.Module) -> bool:
        return getattr(m, "bias", None) is not None

    if isinstance(old, (nn.Conv1d, nn.Conv2d)):
        return type(old)(ch["in"], ch["out"], old.kernel_size, stride=old.stride, padding=old.padding,
                         dilation=old.dilation, groups=ch["groups"], bias=has_bias(old), padding_mode=old.padding_mode)
    if isinstance(old, nn.ConvTranspose2d):
        return nn.ConvTranspose2d(ch["in"], ch["out"], old.kernel_size, stride=old.stride, padding=old.padding,
                                  output_padding=old.output_padding, groups=ch["groups"], bias=has_bias(old),
                                  dilation=old.dilation)
    if isinstance(old, nn.Linear):
        return nn.Linear(ch["in"], ch["out"], bias=has_bias(old))
    if isinstance(old, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return type(old)(ch["out"], eps=old.eps, momentum=old.momentum, affine=old.affine,
                         track_running_stats=old.track_running_stats)
    if isinstance(old, nn.GroupNorm):
        return nn.GroupNorm(ch["groups"], ch["out"], eps=old.eps, affine=old.affine)
    return nn.PReLU(ch["out"])
