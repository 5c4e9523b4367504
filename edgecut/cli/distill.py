"""``edgecut distill``: one or more teachers distilled into a small student."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

import edgecut.cli.options as options
from edgecut.cli.app import app
from edgecut.cli.options import (Autocast, Batch, Ema, Epochs, ResumeRun, SaveEvery, Seed, TorchThreads, TrainDevice,
                                 TrainSplit, ValSplit, Workers)
from edgecut.cli.train import summary


@app.command()
def distill(
    teacher: Annotated[list[Path], typer.Option(help="Teacher artifact; repeat for several (their probabilities are averaged).")],
    student: Annotated[str, typer.Option(help="Student architecture (see info --list-archs), or a torch artifact to start from.")],
    out: Annotated[Path, typer.Option(help="Run folder; becomes the student artifact.")],
    data: Annotated[Optional[Path], typer.Option(help="Labelled data set folder (images/ + masks/, optional splits/).")] = None,
    unlabeled: Annotated[Optional[list[Path]], typer.Option(help="Folder with images/ (masks ignored): the teachers "
                                                                 "label them; repeat for several.")] = None,
    width_mult: Annotated[Optional[float], typer.Option(help="Student width multiplier (MobileNet students).")] = None,
    width: Annotated[Optional[int], typer.Option(help="Student base width (unet).")] = None,
    depth: Annotated[Optional[int], typer.Option(help="Student down stages (unet).")] = None,
    size: Annotated[int, typer.Option(help="Training input side in pixels.")] = 320,
    epochs: Epochs = 20,
    batch: Batch = 8,
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate.")] = 1e-3,
    temperature: Annotated[Optional[float], typer.Option(help="KD temperature T (default 2).")] = None,
    alpha: Annotated[Optional[float], typer.Option(help="Weight of the KD term; 1 - alpha weighs the labels (default 0.5).")] = None,
    feature_kd: Annotated[bool, typer.Option("--feature-kd", help="Also match features at shared strides.")] = False,
    feature_weight: Annotated[Optional[float], typer.Option(help="Weight of the feature term (default 1; implies --feature-kd).")] = None,
    boundary_weight: Annotated[Optional[float], typer.Option(help="Weight of the edge-band BCE term (default 0: off).")] = None,
    teacher_cache: Annotated[str, typer.Option(help="auto | on | off: the teachers' answers computed once per image "
                                                    "and stored (auto: on, off with --feature-kd).")] = "auto",
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
    """Distill one or more teachers into a small student (KD, optional feature and edge terms).

    Runs under torchrun (python -m torch.distributed.run --nproc_per_node N -m edgecut.cli distill ...)."""
    config = options.distill_config(**locals())
    from edgecut.compress.distill import distill as distill_fn
    from edgecut.training.distributed import world

    art = distill_fn(teacher, data, out, config, resume=resume)
    if world()[0] == 0:  # under torchrun rank 0 speaks
        summary(art)
