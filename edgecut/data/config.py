"""The data steps' configs: :class:`SynthConfig` and :class:`CompositeConfig` (light: no OpenCV, so a recipe is
checked in a fraction of a second)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_SIZE, MAX_SIZE = 32, 2048  # side of a synthetic image
MAX_COUNT = 1_000_000  # images of one synthetic set


@dataclass(frozen=True)
class SynthConfig:
    """A synthetic data set: how many shots, how large, which random streams."""

    count: int = 256  # images (and masks)
    size: int = 256  # side in pixels
    seed: int = 0  # the same seed gives the same bytes
    val_fraction: float = 0.2  # share of the names listed in splits/val.txt

    def validate(self) -> None:
        """The checks :func:`generate` makes, before anything is written (a recipe: at its line)."""
        from edgecut.errors import EdgecutError

        try:
            checked_int("count", self.count, 1, MAX_COUNT)
            checked_int("size", self.size, MIN_SIZE, MAX_SIZE)
            checked_int("seed", self.seed, 0)
        except ValueError as e:
            raise EdgecutError(str(e)) from None
        if isinstance(self.val_fraction, bool) or not (isinstance(self.val_fraction, (int, float))
                                                       and 0.0 <= self.val_fraction < 1.0):
            raise EdgecutError(f"val_fraction must be a number in [0, 1), got {self.val_fraction!r}")


@dataclass(frozen=True)
class CompositeConfig:
    """Composites of a labelled folder's foregrounds on backgrounds (the same folder's photos by default)."""

    count: int = 800  # composites to make
    split: str | None = "train"  # which of the data's images give foregrounds (and backgrounds): never val
    backgrounds: str | None = None  # another folder of photos to paste on (with masks/: their foreground is removed)
    seed: int = 0  # the same seed and sources give the same bytes


def checked_int(name: str, value: object, lo: int, hi: int | None = None) -> int:
    """``value`` as an int in [lo, hi]; a ValueError naming ``name`` otherwise (a bool is no integer)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        span = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise ValueError(f"{name} must be {span}, got {value}")
    return int(value)
