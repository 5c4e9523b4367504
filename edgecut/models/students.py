"""MobileNet-backbone students: a light U-Net decoder or an LR-ASPP head on a MobileNet encoder.

Backbones from torchvision (``.features`` only): MobileNetV2 (Sandler et al., CVPR 2018) and MobileNetV3-Large /
Small (Howard et al., ICCV 2019). :class:`MobileNetEncoder` cuts them into five stages at strides 2 to 32 and
declares ``out_channels`` and ``strides``; the heads are built from those alone, so any backbone with that contract
plugs in: :class:`UNetDecoder` (U-Net skips, Ronneberger et al., MICCAI 2015, with depthwise-separable blocks) or
:class:`LRASPPHead` (Lite R-ASPP). ``mobilenet_v3_large_relu_unet`` is the U-Net student made for INT8 kernels.
Every model pads its input (replicate) to a multiple of 32 and crops the one-channel logits back, so any H x W
works; ``feature_taps`` maps stride -> submodule name for distillation; forwards never use channel counts.

Details and measured reasons: docs/design-decisions.md#students
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from edgecut import io
from edgecut.artifact import ModelSpec
from edgecut.errors import ModelError
from edgecut.models.registry import register_model

BACKBONES = ("mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small")  # torchvision builder names
DECODER_CHANNELS = (96, 64, 32, 24)  # U-Net decoder widths at strides 16, 8, 4, 2
DECODER_BLOCKS = 2  # depthwise-separable blocks per decoder stage
LRASPP_CHANNELS = 128  # width of the LR-ASPP high-level branch (torchvision's default)
UPSAMPLES = ("bilinear", "nearest")  # decoder x2 upsampling
HEADS = ("bilinear", "shuffle")  # 1x1 conv then bilinear x2, or 3x3 conv to 4 channels then PixelShuffle(2)


# --------------------------------------------------------------------------- backbone weights


def _backbone_weights(arch: str, name: str, width_mult: float):
    """The torchvision weights enum member ``name``, checked to be in the torch hub cache.

    Nothing is downloaded here: a missing file is one clear error naming where it belongs.
    """
    from torchvision.models import get_model_weights

    enum = get_model_weights(arch)
    try:
        weights = enum[str(name).removeprefix(f"{enum.__name__}.")]  # "DEFAULT" is an alias member
    except KeyError:
        raise ModelError(f"{arch} has no torchvision weights {name!r}; "
                         f"weights_backbone is one of: {', '.join(enum.__members__)}") from None
    if width_mult != 1.0:
        raise ModelError(f"ImageNet weights for {arch} exist for width_mult=1.0 only, got width_mult={width_mult}; "
                         "drop weights_backbone or use width_mult=1.0")
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    if not path.is_file():
        raise ModelError(f"ImageNet weights for {arch} ({name}) are not in the torch hub cache: expected {path}; "
                         f"download {weights.url} to that path, or drop weights_backbone to start from random weights")
    return weights, path


def _features(arch: str, width_mult: float, weights: str | None) -> nn.Sequential:
    """torchvision's ``arch(...).features`` (the classifier is dropped)."""
    import torchvision.models

    if arch not in BACKBONES:
        raise ModelError(f"unknown backbone {arch!r}; known: {', '.join(BACKBONES)}")
    if not width_mult > 0:
        raise ModelError(f"width_mult must be positive, got {width_mult}")
    build = getattr(torchvision.models, arch)
    if weights is None:
        return build(weights=None, width_mult=width_mult).features
    enum_member, path = _backbone_weights(arch, weights, width_mult)
    try:
        return build(weights=enum_member, width_mult=width_mult).features
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as e:
        raise ModelError(f"{path}: cannot be read as {arch} weights ({io.first_line(e)}); "
                         "delete it and download it again, or drop weights_backbone") from None


# --------------------------------------------------------------------------- encoder


def _stride(layer: nn.Module) -> int:
    return math.prod(m.stride[0] for m in layer.modules() if isinstance(m, nn.Conv2d))


def _last_conv(module: nn.Module) -> nn.Conv2d:
    # In an inverted residual the projection conv comes after the expand, depthwise and SE convs.
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)][-1]


def _simplify(module: nn.Module, relu: bool, se: bool) -> None:
    """In place: every hard-swish becomes a ReLU (``relu``), every squeeze-excitation an identity (not ``se``)."""
    from torchvision.ops.misc import SqueezeExcitation

    for name, child in module.named_children():
        if relu and isinstance(child, nn.Hardswish):
            setattr(module, name, nn.ReLU(inplace=True))
        elif not se and isinstance(child, SqueezeExcitation):
            setattr(module, name, nn.Identity())
        else:
            _simplify(child, relu, se)


class MobileNetEncoder(nn.Module):
    """torchvision MobileNet ``.features`` cut into five stages at strides 2, 4, 8, 16, 32.

    A stage starts at a layer that halves the resolution and runs up to the next one, so its
    output is the last (deepest) feature map at its stride. Stage 5 keeps the final 1x1 conv
    of ``.features``, with its activation (why, measured: docs/design-decisions.md#students-encoder).

    ``relu`` replaces every hard-swish with a ReLU and ``se=False`` drops the squeeze-excitation
    blocks (V3 only has them; V2 has ReLU6 and no SE already). ImageNet weights still load into
    the convolutions, but they were learned with hard-swish and SE: a start for fine-tuning.
    """

    strides = (2, 4, 8, 16, 32)

    def __init__(self, arch: str = "mobilenet_v3_large", width_mult: float = 1.0, weights: str | None = None,
                 relu: bool = False, se: bool = True) -> None:
        super().__init__()
        features = _features(arch, width_mult, weights)
        if relu or not se:
            _simplify(features, relu, se)
        stages: list[list[nn.Module]] = []
        for layer in features:
            if _stride(layer) > 1 or not stages:
                stages.append([])
            stages[-1].append(layer)
        got = [math.prod(_stride(m) for s in stages[: i + 1] for m in s) for i in range(len(stages))]
        if tuple(got) != self.strides:
            raise ModelError(f"{arch}: stages at strides {got}, expected {self.strides}")
        self.stages = nn.ModuleList(nn.Sequential(*s) for s in stages)

    @property
    def out_channels(self) -> tuple[int, ...]:
        """Channels of each stage's output, read from its last conv (so it follows pruning)."""
        return tuple(_last_conv(s).out_channels for s in self.stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


# --------------------------------------------------------------------------- heads


class SeparableConv(nn.Sequential):
    """3x3 depthwise conv + BN + ReLU, then 1x1 pointwise conv + BN + ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )


class DecoderBlock(nn.Module):
    """Upsample x2 (``upsample``: bilinear or nearest), concatenate the skip, ``blocks`` separable convs."""

    def __init__(self, cin: int, cskip: int, cout: int, blocks: int = DECODER_BLOCKS,
                 upsample: str = "bilinear") -> None:
        super().__init__()
        self.conv = nn.Sequential(SeparableConv(cin + cskip, cout),
                                  *(SeparableConv(cout, cout) for _ in range(blocks - 1)))
        self.mode = _choice("upsample", upsample, UPSAMPLES)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if self.mode == "nearest":
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.conv(torch.cat([x, skip], dim=1))


def _choice(what: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ModelError(f"{what}={value!r}: use {' or '.join(map(repr, allowed))}")
    return value


class UNetDecoder(nn.Module):
    """From the deepest feature up through each shallower skip; returns the stride-2 map."""

    def __init__(self, encoder_channels: Sequence[int], decoder_channels: Sequence[int] = DECODER_CHANNELS,
                 blocks: int = DECODER_BLOCKS, upsample: str = "bilinear") -> None:
        super().__init__()
        skips = list(encoder_channels[-2::-1])  # strides 16, 8, 4, 2
        if len(decoder_channels) != len(skips) or min(decoder_channels) < 1:
            raise ModelError(f"decoder_channels needs {len(skips)} positive widths (strides 16, 8, 4, 2), "
                             f"got {list(decoder_channels)}")
        cins = [encoder_channels[-1], *decoder_channels[:-1]]
        self.blocks = nn.ModuleList(DecoderBlock(ci, cs, co, blocks, upsample)
                                    for ci, cs, co in zip(cins, skips, decoder_channels))

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        for block, skip in zip(self.blocks, feats[-2::-1]):
            x = block(x, skip)
        return x


class LRASPPHead(nn.Module):
    """Lite R-ASPP: high-level features gated by their global average, plus a low-level 1x1.

    Returns one-channel logits at the low feature's stride. The high branch is classified
    before it is upsampled (1 channel instead of ``inter_channels``: the same result, since a
    1x1 conv and bilinear upsampling commute).
    """

    def __init__(self, low_channels: int, high_channels: int, inter_channels: int = LRASPP_CHANNELS,
                 scale: int = 4) -> None:
        super().__init__()
        self.cbr = nn.Sequential(nn.Conv2d(high_channels, inter_channels, 1, bias=False),
                                 nn.BatchNorm2d(inter_channels), nn.ReLU(inplace=True))
        self.scale = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(high_channels, inter_channels, 1, bias=False),
                                   nn.Sigmoid())
        self.low_classifier = nn.Conv2d(low_channels, 1, 1)
        self.high_classifier = nn.Conv2d(inter_channels, 1, 1)
        self.up = scale  # high stride / low stride

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        x = self.high_classifier(self.cbr(high) * self.scale(high))
        x = F.interpolate(x, scale_factor=float(self.up), mode="bilinear", align_corners=False)
        return self.low_classifier(low) + x


# --------------------------------------------------------------------------- models


class _Student(nn.Module):
    """Shared by the students: padding to the encoder's stride and the feature taps."""

    encoder: MobileNetEncoder

    def __init__(self, encoder: MobileNetEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.divisor = encoder.strides[-1]
        self.default_spec = ModelSpec(size_divisor=self.divisor)

    @property
    def feature_taps(self) -> dict[int, str]:
        """Stride -> name (in ``named_modules()``) of the module whose output is that feature."""
        return {s: f"encoder.stages.{i}" for i, s in enumerate(self.encoder.strides)}

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pad_h, pad_w = (-h) % self.divisor, (-w) % self.divisor
        if pad_h or pad_w:  # any input size works; exported models see multiples of divisor
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        out = self.logits(x)
        return out[..., :h, :w] if (pad_h or pad_w) else out


class MobileNetUNet(_Student):
    """MobileNet encoder + light U-Net decoder, ending at stride 2.

    ``head="bilinear"``: a 1x1 conv to one channel, upsampled x2 bilinearly (the 1x1 head runs
    before the upsampling: the same logits at a quarter of the cost). ``head="shuffle"``: a 3x3
    conv to 4 channels, rearranged into the 2x2 pixels of each stride-2 position
    (``PixelShuffle``, a pure reshuffle). A 3x3 conv can express the 1x1 conv plus bilinear x2
    (away from the border), so nothing is lost; what is gained is that no one-channel
    full-size interpolation is left, which OpenVINO runs in float in a 16-channel blocked layout.
    """

    def __init__(self, encoder: MobileNetEncoder, decoder_channels: Sequence[int] = DECODER_CHANNELS,
                 blocks: int = DECODER_BLOCKS, upsample: str = "bilinear", head: str = "bilinear") -> None:
        super().__init__(encoder)
        self.decoder = UNetDecoder(encoder.out_channels, decoder_channels, blocks, upsample)
        self.up = encoder.strides[0]
        self.shuffle = _choice("head", head, HEADS) == "shuffle"
        if self.shuffle:
            self.head = nn.Sequential(nn.Conv2d(decoder_channels[-1], self.up * self.up, 3, padding=1),
                                      nn.PixelShuffle(self.up))
        else:
            self.head = nn.Conv2d(decoder_channels[-1], 1, 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(self.decoder(self.encoder(x)))
        if self.shuffle:
            return y
        return F.interpolate(y, scale_factor=float(self.up), mode="bilinear", align_corners=False)


class MobileNetLRASPP(_Student):
    """MobileNet encoder + LR-ASPP head: low level at stride 8, high level at stride 32.

    The paper and torchvision dilate the last stage to keep it at stride 16; here the encoder
    keeps its contract (stride 32, no dilation: the last stage costs 4x less).
    """

    low_stride, high_stride = 8, 32

    def __init__(self, encoder: MobileNetEncoder, inter_channels: int = LRASPP_CHANNELS) -> None:
        super().__init__(encoder)
        self.low, self.high = encoder.strides.index(self.low_stride), encoder.strides.index(self.high_stride)
        ch = encoder.out_channels
        self.head = LRASPPHead(ch[self.low], ch[self.high], inter_channels, self.high_stride // self.low_stride)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        y = self.head(feats[self.low], feats[self.high])
        return F.interpolate(y, scale_factor=float(self.low_stride), mode="bilinear", align_corners=False)


# --------------------------------------------------------------------------- registered builders
# Options are stored in edgecut.json: plain JSON values (lists are accepted for tuples).
# weights_backbone names torchvision ImageNet weights ("IMAGENET1K_V1", "DEFAULT", ...); they
# must already be in torch.hub.get_dir()/checkpoints (see _backbone_weights).


MAX_WIDTH_MULT = 8.0  # torchvision's own tables stop at 1.4; a value from a file is checked before any build
MAX_CHANNELS = 8192


def _sized(width_mult: float, channels: Sequence[int]) -> None:
    """Refuse options that would size a model beyond any real one (a manifest's sha256 does not cover them)."""
    if not 0 < width_mult <= MAX_WIDTH_MULT:
        raise ValueError(f"width_mult must be above 0 and at most {MAX_WIDTH_MULT}, got {width_mult}")
    if not all(isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= MAX_CHANNELS for c in channels):
        raise ValueError(f"channel counts must be integers from 1 to {MAX_CHANNELS}, got {list(channels)}")


def _unet(arch: str, width_mult: float, decoder_channels: Sequence[int], weights_backbone: str | None, *,
          relu: bool = False, se: bool = True, upsample: str = "bilinear", head: str = "bilinear"):
    _sized(width_mult, decoder_channels)
    return MobileNetUNet(MobileNetEncoder(arch, width_mult, weights_backbone, relu=relu, se=se),
                         tuple(decoder_channels), upsample=upsample, head=head)


def _lraspp(arch: str, width_mult: float, inter_channels: int, weights_backbone: str | None):
    _sized(width_mult, [inter_channels])
    return MobileNetLRASPP(MobileNetEncoder(arch, width_mult, weights_backbone), inter_channels)


@register_model
def mobilenet_v3_large_unet(*, width_mult: float = 1.0, decoder_channels: Sequence[int] = DECODER_CHANNELS,
                            weights_backbone: str | None = None) -> MobileNetUNet:
    """MobileNetV3-Large + light U-Net decoder: the default student (~0.6 GMACs at 320 px)."""
    return _unet("mobilenet_v3_large", width_mult, decoder_channels, weights_backbone)


@register_model
def mobilenet_v3_large_relu_unet(*, width_mult: float = 1.0, decoder_channels: Sequence[int] = DECODER_CHANNELS,
                                 se: bool = False, upsample: str = "nearest", head: str = "shuffle",
                                 weights_backbone: str | None = None) -> MobileNetUNet:
    """The MobileNetV3-Large U-Net made for INT8: ReLU for hard-swish, no squeeze-excitation,
    nearest decoder upsampling, a pixel-shuffle head (benchmarks/int8_student.py measures each).
    ``se``, ``upsample`` and ``head`` undo each change on its own. Why each change, from the INT8
    kernels' profiles: docs/design-decisions.md#students-int8
    """
    return _unet("mobilenet_v3_large", width_mult, decoder_channels, weights_backbone, relu=True, se=se,
                 upsample=upsample, head=head)


@register_model
def mobilenet_v3_small_unet(*, width_mult: float = 1.0, decoder_channels: Sequence[int] = DECODER_CHANNELS,
                            weights_backbone: str | None = None) -> MobileNetUNet:
    """MobileNetV3-Small + light U-Net decoder."""
    return _unet("mobilenet_v3_small", width_mult, decoder_channels, weights_backbone)


@register_model
def mobilenet_v2_unet(*, width_mult: float = 1.0, decoder_channels: Sequence[int] = DECODER_CHANNELS,
                      weights_backbone: str | None = None) -> MobileNetUNet:
    """MobileNetV2 + light U-Net decoder."""
    return _unet("mobilenet_v2", width_mult, decoder_channels, weights_backbone)


@register_model
def mobilenet_v3_large_lraspp(*, width_mult: float = 1.0, inter_channels: int = LRASPP_CHANNELS,
                              weights_backbone: str | None = None) -> MobileNetLRASPP:
    """MobileNetV3-Large + LR-ASPP head (coarser edges than the U-Net decoder, cheaper)."""
    return _lraspp("mobilenet_v3_large", width_mult, inter_channels, weights_backbone)


@register_model
def mobilenet_v3_small_lraspp(*, width_mult: float = 1.0, inter_channels: int = LRASPP_CHANNELS,
                              weights_backbone: str | None = None) -> MobileNetLRASPP:
    """MobileNetV3-Small + LR-ASPP head: the cheapest student."""
    return _lraspp("mobilenet_v3_small", width_mult, inter_channels, weights_backbone)
