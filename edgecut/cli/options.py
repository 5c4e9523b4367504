"""Options several commands take, each written once: its flag, type and help. A command gives the default,
read from the config the option sets (``epochs: Epochs = TRAIN.loop.epochs``), so no default is written twice;
where the command line spells a setting its own way (a list as ``1,2,4``, a percent), None stands for the
config's default.

A command's options reach the function that builds its config as one mapping, the values typer parsed
(``ctx.params``); :func:`loop_config` sets the training-loop options the training commands share.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from edgecut.errors import EdgecutError

if TYPE_CHECKING:
    from edgecut.training.config import LoopConfig

# training: train, distill, prune, qat
TrainData = Annotated[Path, typer.Option("--data", help="Data set folder (images/ + masks/, optional splits/).")]
TrainSize = Annotated[int, typer.Option("--size", help="Training input side in pixels.")]
TrainSplit = Annotated[Optional[str], typer.Option(
    "--train-split", help="Split file or name (default: splits/train.txt if present).")]
ValSplit = Annotated[Optional[str], typer.Option(
    "--val-split", help="Split file or name (default: splits/val.txt if present).")]
Epochs = Annotated[int, typer.Option("--epochs", help="Training epochs.")]
Batch = Annotated[int, typer.Option("--batch", help="Batch size (per process under torchrun).")]
Lr = Annotated[float, typer.Option("--lr", help="Peak AdamW learning rate.")]
Ema = Annotated[Optional[float], typer.Option("--ema", help="EMA decay, e.g. 0.999.")]
Autocast = Annotated[str, typer.Option(
    "--precision", help="auto | bf16 | fp16 | fp32 (autocast; auto: the fastest here, timed on the first batch).")]
TrainDevice = Annotated[str, typer.Option("--device", help="Training device: auto | cpu | cuda | cuda:N")]
TorchThreads = Annotated[Optional[int], typer.Option("--threads", help="Torch CPU threads.")]
Workers = Annotated[int, typer.Option("--workers", help="Data-loader processes.")]
Seed = Annotated[int, typer.Option("--seed", help="Seeds the weights, the data order and the augmentation.")]
SaveEvery = Annotated[int, typer.Option("--save-every", help="Also checkpoint every N steps inside an epoch.")]
ResumeRun = Annotated[bool, typer.Option("--resume", help="Continue the run in --out exactly where it stopped.")]

# exports and their checks: qat, export
Dynamic = Annotated[bool, typer.Option(
    "--dynamic", help="Let H and W vary in the exported model (batch always does).")]
ParityCount = Annotated[Optional[int], typer.Option(
    "--parity-count", help="Use this many of --parity-data's images (seeded).")]
Tolerance = Annotated[Optional[list[str]], typer.Option(
    "--tolerance", help="Lower the parity bar: KEY=VALUE with max_abs_diff, mask_iou (mean), mask_iou_min (worst "
                        "image) or metric_drop (repeatable).")]
OverwriteOut = Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --out.")]

# running a model: eval, bench, remove, info, target
ArtifactArg = Annotated[Optional[Path], typer.Argument(help="Artifact directory.")]
DataSplit = Annotated[Optional[str], typer.Option("--split", help="Split file (or name in data/splits/).")]
RunThreads = Annotated[Optional[int], typer.Option(
    "--threads", help="CPU threads of the runner (default: all this process may use).")]
RunDevice = Annotated[str, typer.Option("--device", help="cpu | cuda[:N] (onnxruntime also tensorrt[:N]).")]
RUN_DEVICE = "cpu"  # --device's default where a Runner runs the model
Identity = Annotated[Optional[Path], typer.Option(
    "--identity", help="ssh: the private key the device accepts (default: your ssh agent and config).")]
DevicePython = Annotated[str, typer.Option(
    "--device-python", help="ssh: the device's Python, with the bundle's requirements installed.")]
DEVICE_PYTHON = "python3"  # --device-python's default

# data sets: data synth, data composite
SameBytesSeed = Annotated[int, typer.Option("--seed", help="Same seed, same bytes.")]

LOOP_OPTIONS = {"epochs": "epochs", "batch": "batch_size", "lr": "lr", "ema": "ema_decay", "precision": "precision",
                "device": "device", "workers": "workers", "seed": "seed", "save_every": "save_every"}


def loop_config(base: LoopConfig, values: Mapping[str, Any]) -> LoopConfig:
    """``base`` with the training-loop options among ``values`` (an option a command lacks, or None, keeps base's)."""
    chosen = {field: values[option] for option, field in LOOP_OPTIONS.items() if values.get(option) is not None}
    return dataclasses.replace(base, **chosen)


def given(**kwargs: Any) -> dict[str, Any]:
    """The keyword arguments that are not None: what was given, the rest left to the config's defaults."""
    return {k: v for k, v in kwargs.items() if v is not None}


def ints(text: str | None, what: str) -> tuple[int, ...]:
    """'1,2,4' -> (1, 2, 4)."""
    if not text:
        return ()
    try:
        return tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise EdgecutError(f"{what} {text!r}: give integers separated by commas, e.g. 1,2,4") from None
