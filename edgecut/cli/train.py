"""``edgecut train``: a model (the U-Net teacher by default) trained on a data set, as an artifact."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from edgecut.cli.app import app, console
from edgecut.cli.options import (Autocast, Batch, Ema, Epochs, Lr, ResumeRun, SaveEvery, Seed, TorchThreads, TrainData,
                                 TrainDevice, TrainSize, TrainSplit, ValSplit, Workers, given, loop_config)
from edgecut.training.config import TrainConfig

TRAIN = TrainConfig()  # the defaults the options below show


@app.command()
def train(
    ctx: typer.Context,
    data: TrainData,
    out: Annotated[Path, typer.Option(help="Run folder; becomes the model artifact.")],
    arch: Annotated[str, typer.Option(help="Registered architecture.")] = TRAIN.arch,
    width: Annotated[Optional[int], typer.Option(help="Base width (unet: 64 is the full-size teacher).")] = None,
    depth: Annotated[Optional[int], typer.Option(help="Number of down stages (unet: 4).")] = None,
    size: TrainSize = TRAIN.size,
    epochs: Epochs = TRAIN.loop.epochs,
    batch: Batch = TRAIN.loop.batch_size,
    lr: Lr = TRAIN.loop.lr,
    ema: Ema = TRAIN.loop.ema_decay,
    precision: Autocast = TRAIN.loop.precision,
    device: TrainDevice = TRAIN.loop.device,
    threads: TorchThreads = TRAIN.threads,
    workers: Workers = TRAIN.loop.workers,
    train_split: TrainSplit = TRAIN.train_split,
    val_split: ValSplit = TRAIN.val_split,
    seed: Seed = TRAIN.loop.seed,
    save_every: SaveEvery = TRAIN.loop.save_every,
    resume: ResumeRun = False,
) -> None:
    """Train a model (the U-Net teacher by default) with BCE + Dice; the result is an artifact."""
    config = train_config(ctx.params)
    from edgecut.training.train import train as train_fn

    summary(train_fn(data, out, config, resume=resume))


def train_config(values: Mapping[str, Any]) -> TrainConfig:
    """The ``train`` step's config from the command's option values."""
    return TrainConfig(arch=values["arch"], arch_kwargs=given(width=values["width"], depth=values["depth"]),
                       size=values["size"], train_split=values["train_split"], val_split=values["val_split"],
                       threads=values["threads"], loop=loop_config(TRAIN.loop, values))


def summary(art) -> None:
    """One line on a trained artifact: size, cost, best validation scores."""
    m = art.manifest
    val = m.metrics.get("val", {})
    scores = ", ".join(f"{k} {val[k]:.4f}" for k in ("iou", "mae", "s_measure") if k in val)
    console.print(f"artifact {art.path}: {m.params:,} params, {m.macs / 1e9:.2f} GMACs at {m.spec.input_size}"
                  + (f"; best val {scores}" if scores else ""))
