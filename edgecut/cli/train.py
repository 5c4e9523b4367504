"""``edgecut train``: a model (the U-Net teacher by default) trained on a data set, as an artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

import edgecut.cli.options as options
from edgecut.cli.app import app, console
from edgecut.cli.options import (Autocast, Batch, Ema, Epochs, ResumeRun, SaveEvery, Seed, TorchThreads, TrainDevice,
                                 TrainSplit, ValSplit, Workers)


@app.command()
def train(
    data: Annotated[Path, typer.Option(help="Data set folder (images/ + masks/, optional splits/).")],
    out: Annotated[Path, typer.Option(help="Run folder; becomes the model artifact.")],
    arch: Annotated[str, typer.Option(help="Registered architecture.")] = "unet",
    width: Annotated[Optional[int], typer.Option(help="Base width (unet: 64 is the full-size teacher).")] = None,
    depth: Annotated[Optional[int], typer.Option(help="Number of down stages (unet: 4).")] = None,
    size: Annotated[int, typer.Option(help="Training input side in pixels.")] = 320,
    epochs: Epochs = 20,
    batch: Batch = 8,
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate.")] = 1e-3,
    ema: Ema = None,
    precision: Autocast = "auto",
    device: TrainDevice = "auto",
    threads: TorchThreads = None,
    workers: Workers = 0,
    train_split: TrainSplit = None,
    val_split: ValSplit = None,
    seed: Seed = 0,
    save_every: SaveEvery = 0,
    resume: ResumeRun = False,
) -> None:
    """Train a model (the U-Net teacher by default) with BCE + Dice; the result is an artifact."""
    config = options.train_config(**locals())
    from edgecut.training.run import train as train_fn

    summary(train_fn(data, out, config, resume=resume))


def summary(art) -> None:
    """One line on a trained artifact: size, cost, best validation scores."""
    m = art.manifest
    val = m.metrics.get("val", {})
    summary = ", ".join(f"{k} {val[k]:.4f}" for k in ("iou", "mae", "s_measure") if k in val)
    console.print(f"artifact {art.path}: {m.params:,} params, {m.macs / 1e9:.2f} GMACs at {m.spec.input_size}"
                  + (f"; best val {summary}" if summary else ""))
