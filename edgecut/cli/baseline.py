"""``edgecut baseline``: a classical baseline (Otsu, GrabCut) as an artifact, scored and timed like the models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgecut.cli.app import app, console


@app.command()
def baseline(
    method: Annotated[str, typer.Argument(help="otsu (Otsu's threshold) or grabcut (OpenCV's GrabCut).")],
    out: Annotated[Path, typer.Option(help="Folder to write the baseline artifact into.")],
    iterations: Annotated[int, typer.Option(help="grabcut: rounds of GrabCut.")] = 5,
    margin: Annotated[float, typer.Option(help="grabcut: the start rectangle's inset from each side (fraction).")] = 0.05,
    blur: Annotated[int, typer.Option(help="otsu: Gaussian blur kernel side before the threshold (odd; 1: none).")] = 5,
    size: Annotated[int, typer.Option(help="Input side bench and eval use unless given --size.")] = 320,
) -> None:
    """Write a classical baseline (no network) as an artifact, to score and time beside the models."""
    from edgecut.classical import BaselineConfig, baseline as baseline_fn

    art = baseline_fn(out, BaselineConfig(method=method, iterations=iterations, margin=margin, blur=blur, size=size))
    console.print(f"wrote the {method} baseline to {art.path}: edgecut bench {art.path} --data DIR")
