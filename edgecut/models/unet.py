"""The classic U-Net teacher (Ronneberger, Fischer and Brox, MICCAI 2015).

Four down and four up stages, base width 64, two 3x3 conv + batch norm + ReLU per stage,
transposed-conv upsampling and skip concatenation: about 31 M parameters, with padding so
the output has the input's size. ``width`` and ``depth`` shrink it (tests use width 4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgecut.artifact import ModelSpec
from edgecut.models.registry import register_model


MAX_WIDTH = 4096  # the classic teacher is 64; a width from a file is checked before anything is built
MAX_DEPTH = 8  # 2 ** 8 = 256 px: the smallest input a depth-8 U-Net takes


class DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )


class Down(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.MaxPool2d(2), DoubleConv(cin, cout))


class Up(nn.Module):
    """Upsample by 2, concatenate the skip, two convs."""

    def __init__(self, cin: int, cskip: int, cout: int, bilinear: bool = False) -> None:
        super().__init__()
        if bilinear:
            self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                    nn.Conv2d(cin, cin // 2, 1, bias=False))
        else:
            self.up = nn.ConvTranspose2d(cin, cin // 2, kernel_size=2, stride=2)
        self.conv = DoubleConv(cin // 2 + cskip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    def __init__(self, in_channels: int = 3, width: int = 64, depth: int = 4, bilinear: bool = False) -> None:
        super().__init__()
        if not (1 <= depth <= MAX_DEPTH and 1 <= width <= MAX_WIDTH):
            raise ValueError(f"depth must be 1 to {MAX_DEPTH} and width 1 to {MAX_WIDTH}, got depth={depth} "
                             f"width={width}")
        chans = [width * 2**i for i in range(depth + 1)]
        self.inc = DoubleConv(in_channels, chans[0])
        self.downs = nn.ModuleList(Down(chans[i], chans[i + 1]) for i in range(depth))
        self.ups = nn.ModuleList(Up(chans[i + 1], chans[i], chans[i], bilinear) for i in reversed(range(depth)))
        self.head = nn.Conv2d(chans[0], 1, kernel_size=1)
        self.divisor = 2**depth
        self.default_spec = ModelSpec(size_divisor=self.divisor)

    @property
    def feature_taps(self) -> dict[int, str]:
        """Stride -> submodule whose output is the feature map at that stride (feature distillation)."""
        return {1: "inc", **{2 ** (i + 1): f"downs.{i}" for i in range(len(self.downs))}}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pad_h, pad_w = (-h) % self.divisor, (-w) % self.divisor
        if pad_h or pad_w:  # any input size works; exported models see multiples of divisor
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up in self.ups:
            y = up(y, skips.pop())
        out = self.head(y)
        return out[..., :h, :w] if (pad_h or pad_w) else out


@register_model
def unet(*, width: int = 64, depth: int = 4, in_channels: int = 3, bilinear: bool = False) -> UNet:
    """Full-size U-Net teacher: width 64, depth 4 is the classic ~31 M parameter model."""
    return UNet(in_channels=in_channels, width=width, depth=depth, bilinear=bilinear)
