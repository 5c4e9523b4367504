"""The settings of ``edgecut import`` (:class:`ImportConfig`): what the file is, which output to
read, and the input spec, each field given or left to be measured."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from edgecut.errors import EdgecutError

SPEC_FIELDS = ("input_size", "dynamic_size", "size_divisor", "scale", "mean", "std", "output", "threshold")


@dataclass(frozen=True)
class ImportConfig:
    """How to rebuild the model, which of its outputs is the mask, and how to feed it. A spec field
    left None is read from the file (ONNX metadata, a fixed input shape), measured (the output
    range, whether other sizes run) or taken from the architecture's defaults; the manifest says which."""

    arch: str | None = None  # a state dict's registered architecture (edgecut info --list-archs)
    class_path: str | None = None  # or its own class: "package.module:Class" or "path/to/file.py:Class"
    kwargs: Mapping[str, Any] = field(default_factory=dict)  # the options the class or architecture is built with
    output_index: int | None = None  # a model returning a tuple / list: the mask's position
    output_key: str | None = None  # a model returning a dict (or an ONNX model with several outputs): its name
    output_channel: int | None = None  # a multi-channel output: the mask's channel
    output: Literal["logits", "probability"] | None = None  # None: measured from the output range
    size: tuple[int, int] | None = None  # (H, W) the model runs at; None: the file's, or the architecture's
    dynamic: bool | None = None  # other H, W run too; None: the file says, or measured at a second size
    mean: tuple[float, float, float] | None = None  # per channel, subtracted after scaling
    std: tuple[float, float, float] | None = None  # per channel, divided after subtracting the mean
    scale: float | None = None  # uint8 pixels times this (1/255: 0..1)
    size_divisor: int | None = None  # H and W multiples of this when dynamic
    threshold: float | None = None  # probability above which a pixel is foreground
    data: str | None = None  # images (and masks) the model is run on to check its spec; None: synthetic photos
    count: int = 8  # of those images
    force: bool = False  # import a model whose check failed anyway (the warning is kept in the manifest)
    overwrite: bool = False  # replace what is in out

    def validate(self) -> None:
        if self.arch and self.class_path:
            raise EdgecutError("give --arch (a registered architecture) or --class (your own), not both")
        if self.output_index is not None and self.output_key is not None:
            raise EdgecutError("give --output-index or --output-key, not both")
        if self.output_index is not None and self.output_index < 0 or \
                self.output_channel is not None and self.output_channel < 0:
            raise EdgecutError("--output-index and --output-channel count from 0")
        if self.count < 1:
            raise EdgecutError(f"count must be at least 1, got {self.count}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise EdgecutError(f"size is (H, W), both positive; got {self.size}")

    def selection(self) -> dict[str, int | str] | None:
        """The output selection as the architecture records it (``Arch.output``), or None."""
        out: dict[str, int | str] = {}
        if self.output_index is not None:
            out["index"] = self.output_index
        if self.output_key is not None:
            out["key"] = self.output_key
        if self.output_channel is not None:
            out["channel"] = self.output_channel
        return out or None

    def given_spec(self) -> dict[str, Any]:
        """The spec fields given explicitly."""
        given = {"input_size": tuple(self.size) if self.size else None, "dynamic_size": self.dynamic,
                 "size_divisor": self.size_divisor, "scale": self.scale,
                 "mean": tuple(self.mean) if self.mean else None, "std": tuple(self.std) if self.std else None,
                 "output": self.output, "threshold": self.threshold}
        return {k: v for k, v in given.items() if v is not None}
