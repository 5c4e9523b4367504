"""U^2-Net and U^2-Netp (Qin et al., Pattern Recognition 2020, "U^2-Net: Going deeper with nested
U-structure for salient object detection"): latency references for the benchmark tables.

RSU-L blocks (residual U-blocks: a small U-Net inside one stage) in an outer U of six encoder and five decoder
stages, side convs to one channel and a 1x1 conv fusing them. U^2-Netp (rembg's ``u2netp``): ~1.13 M params;
U^2-Net: ~44 M. Pooling is ``ceil_mode`` and every upsampling bilinear to the size of the map it joins, so any
H x W works; exported models are fed multiples of 32. ``forward`` returns the fused logits (no sigmoid), N x 1 x H
x W; :meth:`U2Net.side_outputs` also returns the six side logits. Module names follow the authors' reference code,
so its published state dicts (``u2netp.pth``) load as they are.

The architecture in detail: docs/design-decisions.md#u2net
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from edgecut.artifact import ModelSpec
from edgecut.models.registry import register_model

BLOCKS = ("RSU7", "RSU6", "RSU5", "RSU4", "RSU4F", "RSU4F")  # En_1..En_6; De_i uses En_i's block
# (mid, out) channels of En_1..En_6, then of De_1..De_5 (a decoder's input is its two inputs' sum)
U2NETP_ENCODER = ((16, 64),) * 6
U2NETP_DECODER = ((16, 64),) * 5
U2NET_ENCODER = ((32, 64), (32, 128), (64, 256), (128, 512), (256, 512), (256, 512))
U2NET_DECODER = ((16, 64), (32, 64), (64, 128), (128, 256), (256, 512))


def _upsample_like(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=ref.shape[2:], mode="bilinear", align_corners=False)


class REBNCONV(nn.Module):
    """3x3 conv (dilated) + batch norm + ReLU."""

    def __init__(self, cin: int, cout: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv_s1 = nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation)
        self.bn_s1 = nn.BatchNorm2d(cout)
        self.relu_s1 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu_s1(self.bn_s1(self.conv_s1(x)))


class RSU(nn.Module):
    """RSU-L: convs ``rebnconv1..L`` down (pooling before 2..L-1), ``rebnconv{L-1..1}d`` up."""

    def __init__(self, height: int, cin: int, cmid: int, cout: int) -> None:
        super().__init__()
        if height < 3:
            raise ValueError(f"an RSU block needs height >= 3, got {height}")
        self.height = height
        self.pool = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.rebnconvin = REBNCONV(cin, cout)
        self.rebnconv1 = REBNCONV(cout, cmid)
        for i in range(2, height):
            setattr(self, f"rebnconv{i}", REBNCONV(cmid, cmid))
        setattr(self, f"rebnconv{height}", REBNCONV(cmid, cmid, dilation=2))
        for i in range(height - 1, 1, -1):
            setattr(self, f"rebnconv{i}d", REBNCONV(2 * cmid, cmid))
        self.rebnconv1d = REBNCONV(2 * cmid, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hxin = self.rebnconvin(x)
        skips = [self.rebnconv1(hxin)]
        for i in range(2, self.height):
            skips.append(getattr(self, f"rebnconv{i}")(self.pool(skips[-1])))
        y = getattr(self, f"rebnconv{self.height}")(skips[-1])  # dilated, same size: no pooling
        for i in range(self.height - 1, 0, -1):
            skip = skips[i - 1]
            if i < self.height - 1:
                y = _upsample_like(y, skip)
            y = getattr(self, f"rebnconv{i}d")(torch.cat([y, skip], dim=1))
        return y + hxin


class RSU4F(nn.Module):
    """RSU-4 with dilations 1, 2, 4, 8 instead of pooling: every map keeps the input's size."""

    def __init__(self, cin: int, cmid: int, cout: int) -> None:
        super().__init__()
        self.rebnconvin = REBNCONV(cin, cout)
        self.rebnconv1 = REBNCONV(cout, cmid, dilation=1)
        self.rebnconv2 = REBNCONV(cmid, cmid, dilation=2)
        self.rebnconv3 = REBNCONV(cmid, cmid, dilation=4)
        self.rebnconv4 = REBNCONV(cmid, cmid, dilation=8)
        self.rebnconv3d = REBNCONV(2 * cmid, cmid, dilation=4)
        self.rebnconv2d = REBNCONV(2 * cmid, cmid, dilation=2)
        self.rebnconv1d = REBNCONV(2 * cmid, cout, dilation=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hxin = self.rebnconvin(x)
        hx1 = self.rebnconv1(hxin)
        hx2 = self.rebnconv2(hx1)
        hx3 = self.rebnconv3(hx2)
        hx4 = self.rebnconv4(hx3)
        hx3d = self.rebnconv3d(torch.cat([hx4, hx3], dim=1))
        hx2d = self.rebnconv2d(torch.cat([hx3d, hx2], dim=1))
        return self.rebnconv1d(torch.cat([hx2d, hx1], dim=1)) + hxin


def _block(kind: str, cin: int, cmid: int, cout: int) -> nn.Module:
    return RSU4F(cin, cmid, cout) if kind == "RSU4F" else RSU(int(kind.removeprefix("RSU")), cin, cmid, cout)


class U2Net(nn.Module):
    """Encoder ``stage1..6``, decoder ``stage5d..1d``, ``side1..6`` and the fusing ``outconv``.

    ``encoder`` holds (mid, out) channels of En_1..En_6, ``decoder`` those of De_1..De_5.
    """

    def __init__(self, encoder: Sequence[Sequence[int]], decoder: Sequence[Sequence[int]],
                 in_channels: int = 3) -> None:
        super().__init__()
        if len(encoder) != len(BLOCKS) or len(decoder) != len(BLOCKS) - 1:
            raise ValueError(f"U^2-Net needs {len(BLOCKS)} encoder and {len(BLOCKS) - 1} decoder (mid, out) pairs, "
                             f"got {len(encoder)} and {len(decoder)}")
        self.levels = len(BLOCKS)
        self.pool = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        cin = in_channels
        for i, (kind, (mid, out)) in enumerate(zip(BLOCKS, encoder), start=1):
            setattr(self, f"stage{i}", _block(kind, cin, mid, out))
            cin = out
        for i in range(self.levels - 1, 0, -1):  # De_i joins the level below and En_i's output
            mid, out = decoder[i - 1]
            setattr(self, f"stage{i}d", _block(BLOCKS[i - 1], cin + encoder[i - 1][1], mid, out))
            cin = out
        side_in = [out for _, out in decoder] + [encoder[-1][1]]  # De_1..De_5, En_6
        for i, c in enumerate(side_in, start=1):
            setattr(self, f"side{i}", nn.Conv2d(c, 1, 3, padding=1))
        self.outconv = nn.Conv2d(self.levels, 1, 1)
        self.divisor = 2 ** (self.levels - 1)
        self.default_spec = ModelSpec(size_divisor=self.divisor)

    @property
    def feature_taps(self) -> dict[int, str]:
        """Stride -> name (in ``named_modules()``) of the encoder stage whose output is that feature."""
        return {2**i: f"stage{i + 1}" for i in range(self.levels)}

    def side_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[fused, side1, ..., side6]: seven N x 1 x H x W logit maps (the paper's deep supervision)."""
        enc, y = [], x
        for i in range(1, self.levels + 1):
            y = getattr(self, f"stage{i}")(self.pool(y) if i > 1 else y)
            enc.append(y)
        dec = {self.levels: y}  # the map each side conv reads: De_1..De_5, and En_6's
        for i in range(self.levels - 1, 0, -1):
            y = getattr(self, f"stage{i}d")(torch.cat([_upsample_like(y, enc[i - 1]), enc[i - 1]], dim=1))
            dec[i] = y
        # side1..side6 after the decoder, in the reference code's order (an exported graph keeps it)
        sides = [getattr(self, f"side{i}")(dec[i]) for i in range(1, self.levels + 1)]
        sides = [sides[0], *(_upsample_like(s, sides[0]) for s in sides[1:])]
        return [self.outconv(torch.cat(sides, dim=1)), *sides]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.side_outputs(x)[0]


@register_model
def u2netp(*, in_channels: int = 3) -> U2Net:
    """U^2-Netp, the small U^2-Net (rembg's ``u2netp``): ~1.13 M params."""
    return U2Net(U2NETP_ENCODER, U2NETP_DECODER, in_channels=in_channels)


@register_model
def u2net(*, in_channels: int = 3) -> U2Net:
    """U^2-Net, the paper's full model: ~44 M params."""
    return U2Net(U2NET_ENCODER, U2NET_DECODER, in_channels=in_channels)
