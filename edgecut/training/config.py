"""The training settings: the loop's (:class:`LoopConfig`) and the ``train`` step's (:class:`TrainConfig`).

Plain frozen dataclasses without torch, so a recipe or a command line can be checked against
them in a fraction of a second.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

CACHE_MAX_IMAGES = 2000  # decoded 400x300 photos: about 0.7 GB


@dataclass(frozen=True)
class LoopConfig:
    epochs: int = 20
    batch_size: int = 8
    lr: float = 1e-3  # peak learning rate of AdamW
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0  # linear warm-up length, then cosine decay to min_lr_ratio * lr
    min_lr_ratio: float = 0.01
    grad_clip: float | None = 1.0  # max global gradient norm; None: no clipping
    ema_decay: float | None = None  # e.g. 0.999: validate and ship an exponential moving average
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: the fastest here, timed (training/loop.py)
    channels_last: bool = True
    seed: int = 0
    workers: int = 0  # data-loader processes
    save_every: int = 0  # also checkpoint every N steps inside an epoch (0: by time only)
    save_interval_s: float = 120.0  # checkpoint at least this often inside an epoch
    select_metric: str = "iou"  # validation metric (higher is better) that picks the best weights
    device: str = "auto"  # auto, cpu, cuda, cuda:1, ...

    def resume_key(self) -> dict[str, Any]:
        """Settings that must not change between a run and its resumption."""
        keep = ("epochs", "batch_size", "lr", "weight_decay", "warmup_epochs", "min_lr_ratio", "grad_clip",
                "ema_decay", "precision", "channels_last", "seed")
        return {k: getattr(self, k) for k in keep}


@dataclass(frozen=True)
class TrainConfig:
    """What ``train`` builds and how it trains it."""

    arch: str = "unet"  # registered architecture (edgecut info --list-archs)
    arch_kwargs: Mapping[str, Any] = field(default_factory=dict)  # its options, e.g. {"width": 16}
    size: int = 320  # training input side (rounded up to the architecture's size divisor)
    train_split: str | None = None  # default: splits/train.txt when present
    val_split: str | None = None  # default: splits/val.txt when present; none: no validation, last weights shipped
    threads: int | None = None  # torch CPU threads
    cache: bool | None = None  # keep decoded images in memory; None: when there are at most CACHE_MAX_IMAGES
    loop: LoopConfig = LoopConfig()  # epochs, batch, learning rate, precision, device, ...
