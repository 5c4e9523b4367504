"""``edgecut import``: a user's model file in, an artifact out, its input spec given or measured."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from edgecut.cli.app import app, console, err
from edgecut.cli.options import OverwriteOut
from edgecut.errors import EdgecutError, InputError
from edgecut.intake.config import ImportConfig

IMPORT = ImportConfig()  # the defaults the options below show (None: given, or measured)


@app.command("import")
def import_cmd(
    ctx: typer.Context,
    model: Annotated[Path, typer.Argument(help="Your model: a state dict (.pth/.pt/.safetensors; with --class or "
                                                "--arch), TorchScript, a torch.export program (.pt2) or ONNX.")],
    out: Annotated[Path, typer.Option(help="Folder for the artifact.")],
    class_: Annotated[Optional[str], typer.Option("--class", help="A state dict's own class: path/to/file.py:Class "
                                                                  "or package.module:Class.")] = IMPORT.class_path,
    arch: Annotated[Optional[str], typer.Option(help="Or its registered architecture (edgecut info "
                                                     "--list-archs).")] = IMPORT.arch,
    kwargs: Annotated[Optional[str], typer.Option(help="Options the class is built with, as JSON, e.g. "
                                                       "'{\"width\": 32}'.")] = None,
    output_index: Annotated[Optional[int], typer.Option(help="A model returning a tuple: the mask's "
                                                             "position.")] = IMPORT.output_index,
    output_key: Annotated[Optional[str], typer.Option(help="A model returning a dict (or named ONNX outputs): the "
                                                           "mask's name.")] = IMPORT.output_key,
    output_channel: Annotated[Optional[int], typer.Option(help="A multi-channel output: the mask's "
                                                               "channel.")] = IMPORT.output_channel,
    output: Annotated[Optional[str], typer.Option(help="logits | probability (default: measured from the "
                                                       "outputs).")] = IMPORT.output,
    size: Annotated[Optional[tuple[int, int]], typer.Option(help="Input H W (default: the file's, or the "
                                                                 "architecture's).")] = IMPORT.size,
    dynamic: Annotated[Optional[bool], typer.Option("--dynamic/--fixed-size", help="Other input sizes run too "
                                                                                    "(default: measured).")]
    = IMPORT.dynamic,
    mean: Annotated[Optional[tuple[float, float, float]], typer.Option(help="Per-channel mean after "
                                                                            "scaling.")] = IMPORT.mean,
    std: Annotated[Optional[tuple[float, float, float]], typer.Option(help="Per-channel std.")] = IMPORT.std,
    scale: Annotated[Optional[float], typer.Option(help="Pixel scale (1/255 = 0.00392...: values "
                                                        "0..1).")] = IMPORT.scale,
    size_divisor: Annotated[Optional[int], typer.Option(help="Input H and W must be multiples of "
                                                             "this.")] = IMPORT.size_divisor,
    threshold: Annotated[Optional[float], typer.Option(help="Foreground above this probability.")] = IMPORT.threshold,
    data: Annotated[Optional[Path], typer.Option(help="Images (and masks) the model is run on to check its spec "
                                                      "(default: synthetic product photos).")] = IMPORT.data,
    count: Annotated[int, typer.Option(help="Of those images.")] = IMPORT.count,
    force: Annotated[bool, typer.Option("--force", help="Import a model whose check failed; the warning is "
                                                        "kept.")] = IMPORT.force,
    overwrite: OverwriteOut = IMPORT.overwrite,
) -> None:
    """Bring your own model in: an artifact every stage reads, its input spec given or measured."""
    config = import_config(ctx.params)
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


def import_config(values: Mapping[str, Any]) -> ImportConfig:
    """The ``import`` step's config from the command's option values."""
    from edgecut.parsing import loads_json

    v, kwargs = values, values["kwargs"]
    try:
        parsed = loads_json(kwargs, "--kwargs", fix="write e.g. '{\"width\": 32}'") if kwargs else {}
    except InputError as e:
        raise EdgecutError(str(e)) from None
    if not isinstance(parsed, dict):
        raise EdgecutError(f"--kwargs is a JSON object of options, got {kwargs!r}")
    if v["output"] not in (None, "logits", "probability"):
        raise EdgecutError(f"--output is logits or probability, not {v['output']!r}")
    size, mean, std, data = v["size"], v["mean"], v["std"], v["data"]
    return ImportConfig(arch=v["arch"], class_path=v["class_"], kwargs=parsed, output_index=v["output_index"],
                        output_key=v["output_key"], output_channel=v["output_channel"], output=v["output"],
                        size=tuple(size) if size else None, dynamic=v["dynamic"], mean=tuple(mean) if mean else None,
                        std=tuple(std) if std else None, scale=v["scale"], size_divisor=v["size_divisor"],
                        threshold=v["threshold"], data=str(data) if data else None, count=v["count"],
                        force=v["force"], overwrite=v["overwrite"])
