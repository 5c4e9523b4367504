"""``edgecut convert``: an ONNX model as a torch model, for pruning, QAT and feature distillation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from edgecut.cli.app import app, console
from edgecut.compress.config import ConvertConfig

CONVERT = ConvertConfig()  # the defaults the options below show


@app.command("convert")
def convert_cmd(
    model: Annotated[Path, typer.Argument(help="An fp32 ONNX artifact (edgecut import model.onnx ...).")],
    out: Annotated[Path, typer.Option(help="Folder for the torch artifact.")],
    data: Annotated[Optional[Path], typer.Option(help="Images the conversion is checked on against ONNX Runtime "
                                                      "(default: synthetic photos).")] = CONVERT.data,
    split: Annotated[Optional[str], typer.Option(help="Only this split of --data's data set (e.g. "
                                                      "val).")] = CONVERT.split,
    count: Annotated[int, typer.Option(help="Images checked.")] = CONVERT.count,
    arch: Annotated[Optional[str], typer.Option(help="Registered architecture to fill (default: each is "
                                                     "tried).")] = CONVERT.arch,
) -> None:
    """An ONNX model as a torch model (a registered architecture filled from its graph), for pruning, QAT and
    feature distillation; refused with the numbers unless its masks are ONNX Runtime's."""
    from edgecut.compress.to_torch import convert

    config = ConvertConfig(data=str(data) if data else None, split=split, count=count, arch=arch)
    art = convert(model, out, config)
    check = art.manifest.lineage[-1].params
    console.print(escape(f"converted {model} into {art.manifest.arch['name']} ({check['layers']} layers) in {out}: "
                         f"max abs diff {check['max_abs_diff']:.2g}, mean mask IoU {check['mask_iou_mean']:.4f} "
                         f"against ONNX Runtime on {check['images']} images ({check['data']})"), highlight=False)
