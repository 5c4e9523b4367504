"""The parent's torch module, and its ``torch.export`` program at batch 1: what the converters that
start from ``torch.export`` (LiteRT, ExecuTorch, Core ML) take, made one way."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgecut.errors import ModelError

if TYPE_CHECKING:
    from edgecut.artifact import Artifact


def torch_module(parent: Artifact):
    """The parent's module in float32 on the CPU, in eval mode."""
    from edgecut.models.store import load_model

    return load_model(parent.path).module.float().cpu().eval()


def sample(size: tuple[int, int]):
    """The seeded 1 x 3 x H x W input every trace and export uses."""
    import torch

    return torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))


def batch1_program(module, size: tuple[int, int], who: object, converter: str):
    """``torch.export`` of ``module`` at batch 1 and ``size``; one error naming ``who`` and the converter."""
    import torch

    try:
        with torch.no_grad():
            return torch.export.export(module, (sample(size),))
    except Exception as e:  # torch.export names the construct it cannot capture
        raise ModelError(f"{who}: torch.export failed, so {converter} cannot convert it: "
                         f"{str(e).strip().splitlines()[0][:300]}") from None
