"""``edgecut distill``: one or more teachers distilled into a small student."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from edgecut.cli.app import app
from edgecut.cli.options import (Autocast, Batch, Ema, Epochs, Lr, ResumeRun, SaveEvery, Seed, TorchThreads,
                                 TrainDevice, TrainSize, TrainSplit, ValSplit, Workers, given, loop_config)
from edgecut.cli.train import summary
from edgecut.compress.config import DistillConfig
from edgecut.errors import EdgecutError

DISTILL = DistillConfig()  # the defaults the options below show
TEACHER_CACHE = {"auto": None, "on": True, "off": False}  # --teacher-cache: DistillConfig.teacher_cache
CACHE_NAME = {v: k for k, v in TEACHER_CACHE.items()}


@app.command()
def distill(
    ctx: typer.Context,
    teacher: Annotated[list[Path], typer.Option(help="Teacher artifact; repeat for several (their probabilities are "
                                                     "averaged).")],
    student: Annotated[str, typer.Option(help="Student architecture (see info --list-archs), or a torch artifact to "
                                              "start from.")],
    out: Annotated[Path, typer.Option(help="Run folder; becomes the student artifact.")],
    data: Annotated[Optional[Path], typer.Option(help="Labelled data set folder (images/ + masks/, optional "
                                                      "splits/).")] = None,
    unlabeled: Annotated[Optional[list[Path]], typer.Option(help="Folder with images/ (masks ignored): the teachers "
                                                                 "label them; repeat for several.")] = None,
    width_mult: Annotated[Optional[float], typer.Option(help="Student width multiplier (MobileNet students).")] = None,
    width: Annotated[Optional[int], typer.Option(help="Student base width (unet).")] = None,
    depth: Annotated[Optional[int], typer.Option(help="Student down stages (unet).")] = None,
    size: TrainSize = DISTILL.size,
    epochs: Epochs = DISTILL.loop.epochs,
    batch: Batch = DISTILL.loop.batch_size,
    lr: Lr = DISTILL.loop.lr,
    temperature: Annotated[float, typer.Option(help="KD temperature T.")] = DISTILL.temperature,
    alpha: Annotated[float, typer.Option(help="Weight of the KD term; 1 - alpha weighs the labels.")] = DISTILL.alpha,
    feature_kd: Annotated[bool, typer.Option("--feature-kd", help="Also match features at shared "
                                                                  "strides.")] = DISTILL.feature_kd,
    feature_weight: Annotated[Optional[float], typer.Option(
        help=f"Weight of the feature term (default {DISTILL.feature_weight:g}; implies --feature-kd).")] = None,
    boundary_weight: Annotated[float, typer.Option(help="Weight of the edge-band BCE term (0: "
                                                        "off).")] = DISTILL.boundary_weight,
    teacher_cache: Annotated[str, typer.Option(help="auto | on | off: the teachers' answers computed once per image "
                                                    "and stored (auto: on, off with --feature-kd).")]
    = CACHE_NAME[DISTILL.teacher_cache],
    ema: Ema = DISTILL.loop.ema_decay,
    precision: Autocast = DISTILL.loop.precision,
    device: TrainDevice = DISTILL.loop.device,
    threads: TorchThreads = DISTILL.threads,
    workers: Workers = DISTILL.loop.workers,
    train_split: TrainSplit = DISTILL.train_split,
    val_split: ValSplit = DISTILL.val_split,
    seed: Seed = DISTILL.loop.seed,
    save_every: SaveEvery = DISTILL.loop.save_every,
    resume: ResumeRun = False,
) -> None:
    """Distill one or more teachers into a small student (KD, optional feature and edge terms).

    Runs under torchrun (python -m torch.distributed.run --nproc_per_node N -m edgecut.cli distill ...)."""
    config = distill_config(ctx.params)
    from edgecut.compress.distill import distill as distill_fn
    from edgecut.training.distributed import world

    art = distill_fn(teacher, data, out, config, resume=resume)
    if world()[0] == 0:  # under torchrun rank 0 speaks
        summary(art)


def distill_config(values: Mapping[str, Any]) -> DistillConfig:
    """The ``distill`` step's config from the command's option values."""
    if values["teacher_cache"] not in TEACHER_CACHE:
        raise EdgecutError(f"--teacher-cache {values['teacher_cache']!r}: give auto, on or off")
    unlabeled = values["unlabeled"]
    return DistillConfig(
        student=values["student"], size=values["size"],
        student_kwargs=given(width_mult=values["width_mult"], width=values["width"], depth=values["depth"]),
        temperature=values["temperature"], alpha=values["alpha"], boundary_weight=values["boundary_weight"],
        feature_kd=values["feature_kd"] or values["feature_weight"] is not None,
        **given(feature_weight=values["feature_weight"]), teacher_cache=TEACHER_CACHE[values["teacher_cache"]],
        unlabeled=tuple(str(u) for u in unlabeled) if unlabeled else None, train_split=values["train_split"],
        val_split=values["val_split"], threads=values["threads"], loop=loop_config(DISTILL.loop, values))
