"""``edgecut import``: a user's model file in, an artifact out, its input spec given or measured."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

import edgecut.cli.options as options
from edgecut.cli.app import app, console, err


@app.command("import")
def import_cmd(
    model: Annotated[Path, typer.Argument(help="Your model: a state dict (.pth/.pt/.safetensors; with --class or "
                                                "--arch), TorchScript, a torch.export program (.pt2) or ONNX.")],
    out: Annotated[Path, typer.Option(help="Folder for the artifact.")],
    class_: Annotated[Optional[str], typer.Option("--class", help="A state dict's own class: path/to/file.py:Class "
                                                                  "or package.module:Class.")] = None,
    arch: Annotated[Optional[str], typer.Option(help="Or its registered architecture (edgecut info --list-archs).")] = None,
    kwargs: Annotated[Optional[str], typer.Option(help="Options the class is built with, as JSON, e.g. "
                                                       "'{\"width\": 32}'.")] = None,
    output_index: Annotated[Optional[int], typer.Option(help="A model returning a tuple: the mask's position.")] = None,
    output_key: Annotated[Optional[str], typer.Option(help="A model returning a dict (or named ONNX outputs): the "
                                                           "mask's name.")] = None,
    output_channel: Annotated[Optional[int], typer.Option(help="A multi-channel output: the mask's channel.")] = None,
    output: Annotated[Optional[str], typer.Option(help="logits | probability (default: measured from the outputs).")] = None,
    size: Annotated[Optional[tuple[int, int]], typer.Option(help="Input H W (default: the file's, or the "
                                                                 "architecture's).")] = None,
    dynamic: Annotated[Optional[bool], typer.Option("--dynamic/--fixed-size", help="Other input sizes run too "
                                                                                    "(default: measured).")] = None,
    mean: Annotated[Optional[tuple[float, float, float]], typer.Option(help="Per-channel mean after scaling.")] = None,
    std: Annotated[Optional[tuple[float, float, float]], typer.Option(help="Per-channel std.")] = None,
    scale: Annotated[Optional[float], typer.Option(help="Pixel scale (1/255 = 0.00392...: values 0..1).")] = None,
    size_divisor: Annotated[Optional[int], typer.Option(help="Input H and W must be multiples of this.")] = None,
    threshold: Annotated[Optional[float], typer.Option(help="Foreground above this probability.")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Images (and masks) the model is run on to check its spec "
                                                      "(default: synthetic product photos).")] = None,
    count: Annotated[int, typer.Option(help="Of those images.")] = 8,
    force: Annotated[bool, typer.Option("--force", help="Import a model whose check failed; the warning is kept.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --out.")] = False,
) -> None:
    """Bring your own model in: an artifact every stage reads, its input spec given or measured."""
    config = options.import_config(**locals())
    from edgecut.intake.importer import import_model

    art = import_model(model, out, config)
    m = art.manifest
    report = m.metrics["import"]
    lo, hi = report["output_range"]
    console.print(f"imported {escape(str(model))} ({report['kind']}) as a {m.format} artifact in {escape(str(out))}: "
                  f"{m.params or 0:,} params" + (f", {m.macs / 1e9:.3f} GMACs" if m.macs else ""), highlight=False)
    fg = report["foreground_fraction"]
    line = (f"ran on {report['images']} image(s) ({report['data']}): outputs in [{lo:.4g}, {hi:.4g}], foreground "
            f"{fg['min']:.2f}-{fg['max']:.2f} of each image")
    if "mask_iou_mean" in report:
        line += f", IoU vs masks {report['mask_iou_mean']:.4f}"
    console.print(line, highlight=False)
    spec = m.spec.model_dump()
    for key, source in report["spec_source"].items():
        console.print(f"  {key:13s} {str(spec[key]):28s} {source}", highlight=False)
    for warning in report["warnings"]:
        err.print(f"[yellow]warning[/yellow] {escape(warning)} (imported with --force)", highlight=False)
