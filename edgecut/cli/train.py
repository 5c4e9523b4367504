"""Commands that make models: ``data synth``, ``train``, ``baseline``, ``distill``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgecut.cli.app import app, console, data_app, err
import edgecut.cli.options as options
from edgecut.cli.options import (Autocast, Batch, Ema, Epochs, ResumeRun, SaveEvery, Seed, TorchThreads, TrainDevice,
                                 TrainSplit, ValSplit, Workers)
from edgecut.errors import EdgecutError


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option(help="Folder to write images/, masks/, splits/ into.")],
    count: Annotated[int, typer.Option(help="Number of images.")] = 256,
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = 256,
    seed: Annotated[int, typer.Option(help="Same seed, same bytes.")] = 0,
    val_fraction: Annotated[float, typer.Option(help="Share of images listed in splits/val.txt.")] = 0.2,
) -> None:
    """Generate synthetic studio product photos with exact masks (deterministic by seed)."""
    from edgecut.data.synth import generate

    try:
        generate(out, count, size, seed, val_fraction=val_fraction, progress=True)
    except (ValueError, FileExistsError) as e:
        raise EdgecutError(str(e)) from None
    console.print(f"wrote {count} images and masks to {out}")


@data_app.command("composite")
def data_composite(
    data: Annotated[Path, typer.Argument(help="Labelled folder (images/ + masks/) whose foregrounds are cut out.")],
    out: Annotated[Path, typer.Option(help="Folder to write images/ and masks/ into.")],
    count: Annotated[int, typer.Option(help="Number of composites.")] = 800,
    split: Annotated[Optional[str], typer.Option(help="Which images give foregrounds and backgrounds (never val).")] = "train",
    backgrounds: Annotated[Optional[Path], typer.Option(help="Other photos to paste on (default: the same images, "
                                                             "their own foreground inpainted away).")] = None,
    seed: Annotated[int, typer.Option(help="Same seed, same bytes.")] = 0,
) -> None:
    """Paste a labelled folder's foregrounds on other photos' backgrounds: more images for a teacher to label."""
    from edgecut.data.composite import CompositeConfig, composite

    config = CompositeConfig(count=count, split=split, backgrounds=str(backgrounds) if backgrounds else None, seed=seed)
    composite(data, out, config)
    console.print(f"wrote {count} composites and their masks to {out}")


@data_app.command("check")
def data_check(
    data: Annotated[Path, typer.Argument(help="Data set folder (images/ + masks/, optional splits/).")],
    split: Annotated[Optional[str], typer.Option(help="Only this split (a file or a name in splits/).")] = None,
) -> None:
    """Decode every image and mask; list each mask that is not 8-bit grayscale (and how it is read) and
    every pair that cannot be used (exit code 1 when there is one)."""
    from rich.markup import escape

    from edgecut.data.folder import check_data
    from edgecut.io import MASK_ENCODINGS, MASK_RULE

    found = check_data(data, split)
    console.print(f"{len(found.samples)} image/mask pair(s) in {escape(str(data))}"
                  + (f" ({escape(split)})" if split else ""), highlight=False)
    if found.encodings:
        console.print(f"{len(found.encodings)} mask(s) not 8-bit grayscale, read by the rule: {MASK_RULE}",
                      highlight=False, soft_wrap=True)
        for path, encoding in sorted(found.encodings.items()):
            console.print(f"  {escape(str(path))} {MASK_ENCODINGS[encoding]}", highlight=False, soft_wrap=True)
    for line in found.unusable:
        err.print(f"[red]error[/red] {escape(line)}", highlight=False, soft_wrap=True)
    if found.unusable:
        raise typer.Exit(1)
    if not found.encodings:
        console.print("every mask is 8-bit grayscale, as the layout asks", highlight=False)


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
    from edgecut.training.train import train as train_fn

    _summary(train_fn(data, out, config, resume=resume))


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
        _summary(art)


def _summary(art) -> None:
    """One line on a trained artifact: size, cost, best validation scores."""
    m = art.manifest
    val = m.metrics.get("val", {})
    summary = ", ".join(f"{k} {val[k]:.4f}" for k in ("iou", "mae", "s_measure") if k in val)
    console.print(f"artifact {art.path}: {m.params:,} params, {m.macs / 1e9:.2f} GMACs at {m.spec.input_size}"
                  + (f"; best val {summary}" if summary else ""))
