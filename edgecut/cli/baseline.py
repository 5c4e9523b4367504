"""``edgecut baseline``: a classical baseline (Otsu, GrabCut) as an artifact, scored and timed like the models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgecut.classical import BaselineConfig
from edgecut.cli.app import app, console

BASELINE = BaselineConfig()  # the defaults the options below show


@app.command()
def baseline(
    method: Annotated[str, typer.Argument(help="otsu (Otsu's threshold) or grabcut (OpenCV's GrabCut).")],
    out: Annotated[Path, typer.Option(help="Folder to write the baseline artifact into.")],
    iterations: Annotated[int, typer.Option(help="grabcut: rounds of GrabCut.")] = BASELINE.iterations,
    margin: Annotated[float, typer.Option(help="grabcut: the start rectangle's inset from each side "
                                               "(fraction).")] = BASELINE.margin,
    blur: Annotated[int, typer.Option(help="otsu: Gaussian blur kernel side before the threshold (odd; 1: "
                                           "none).")] = BASELINE.blur,
    size: Annotated[int, typer.Option(help="Input side bench and eval use unless given --size.")] = BASELINE.size,
) -> None:
    """Write a classical baseline (no network) as an artifact, to score and time beside the models."""
    from edgecut.classical import baseline as baseline_fn

    art = baseline_fn(out, BaselineConfig(method=method, iterations=iterations, margin=margin, blur=blur, size=size))
    console.print(f"wrote the {method} baseline to {art.path}: edgecut bench {art.path} --data DIR")
