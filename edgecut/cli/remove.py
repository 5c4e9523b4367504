"""``edgecut remove``: backgrounds cut out of image files and folders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgecut.cli.app import app, console, err
from edgecut.cli.options import RUN_DEVICE, RunDevice, RunThreads
from edgecut.cutout import RemoveConfig
from edgecut.errors import EdgecutError

REMOVE = RemoveConfig()  # the defaults the options below show (--bg and --batch as text; --overwrite off)


@app.command()
def remove(
    inputs: Annotated[list[Path], typer.Argument(help="Image files or folders of images.")],
    model: Annotated[Path, typer.Option(help="Artifact directory of the model that cuts out.")],
    out: Annotated[Path, typer.Option(help="Output folder (one cut-out per input).")],
    format: Annotated[str, typer.Option(help="rgba | mask | composite")] = REMOVE.format,
    bg: Annotated[str, typer.Option(help="Background for --format composite: name, #RRGGBB or R,G,B.")] = "white",
    encoding: Annotated[str, typer.Option(help="png (lossless) | webp | jpg (composite and mask "
                                               "only).")] = REMOVE.encoding,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Cut out again images whose output exists (default: "
                                                                "skip them; a stopped run resumes).")] = False,
    threads: RunThreads = None,
    workers: Annotated[Optional[int], typer.Option(help="Threads for decoding, resizing and encoding, beside the "
                                                        "model's --threads (default: the cores split between the "
                                                        "two; 0: one image at a time).")] = REMOVE.workers,
    batch: Annotated[str, typer.Option(help="Images per inference call, or auto (several where the model "
                                            "takes a batch).")] = "1",
    device: RunDevice = RUN_DEVICE,
    alpha: Annotated[str, typer.Option(help="probability | minmax (each map stretched to 0..1 first, as rembg does: "
                                            "the same model gives rembg's cut-outs).")] = REMOVE.alpha,
) -> None:
    """Cut out backgrounds: files or folders in, cut-outs at the original size out, decoding,
    inference and encoding overlapping; failures are listed at the end and the rest go on."""
    from rich.markup import escape

    from edgecut.cutout import expand_inputs, load_for_cutouts, parse_color, remove_background

    if format not in ("rgba", "mask", "composite"):
        raise EdgecutError(f"--format {format!r}: use rgba, mask or composite")
    color = parse_color(bg)
    files = expand_inputs(inputs)
    # the cores split between the model and the image work, or all to a model that is the bottleneck
    runner, image_threads = load_for_cutouts(model, device=device, threads=threads, workers=workers,
                                             probe=files[0] if len(files) > 8 else None)
    config = RemoveConfig(format=format, bg=color, encoding=encoding, alpha=alpha,  # type: ignore[arg-type]
                          overwrite=overwrite, workers=image_threads, batch=batch)
    report = remove_background(files, runner, out, config)
    line = f"wrote {len(report.written)} cut-out(s) to {out}"
    if report.written and report.seconds > 0:
        line += f" ({report.images_per_s:.1f} images/s)"
    if report.skipped:
        line += f"; {len(report.skipped)} already there, skipped (--overwrite redoes them)"
    if report.failed:
        line += f"; {len(report.failed)} input(s) failed:"
    console.print(escape(line), highlight=False)
    for _, msg in report.failed:  # at the end, after every other image was cut out
        err.print(f"[red]error[/red] {escape(msg)}", highlight=False)
    if report.failed:
        raise typer.Exit(1)
