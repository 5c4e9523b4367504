"""The training settings: the loop's (:class:`LoopConfig`) and the ``train`` step's (:class:`TrainConfig`).

Plain frozen dataclasses without torch, so a recipe or a command line can be checked against
them in a fraction of a second.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from edgecut.errors import EdgecutError

CACHE_MAX_IMAGES = 2000  # decoded 400x300 photos: about 0.7 GB
MAX_SIDE = 10_000  # a training side above this would not fit one image of a batch in memory (io.MAX_PIXELS)
MAX_BATCH = 4096
MAX_EPOCHS = 100_000


def check_range(name: str, value: Any, lo: float | None = None, hi: float | None = None, *, integer: bool = False,
                above: bool = False) -> None:
    """One :class:`EdgecutError` when ``value`` is no finite number in [lo, hi] (``above``: lo excluded)."""
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
        raise EdgecutError(f"{name} must be {'an integer' if integer else 'a finite number'}, got {value!r}")
    if lo is not None and (value <= lo if above else value < lo) or hi is not None and value > hi:
        span = (f"above {lo}" if above else f"at least {lo}") if hi is None else \
            f"{'above' if above else 'from'} {lo} {'up to' if above else 'to'} {hi}"
        raise EdgecutError(f"{name} must be {span}, got {value}")


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

    def validate(self) -> None:
        check_range("epochs", self.epochs, 0, MAX_EPOCHS, integer=True)
        check_range("batch_size", self.batch_size, 1, MAX_BATCH, integer=True)
        check_range("lr", self.lr, 0, above=True)
        check_range("weight_decay", self.weight_decay, 0)
        check_range("warmup_epochs", self.warmup_epochs, 0)
        check_range("min_lr_ratio", self.min_lr_ratio, 0, 1)
        if self.grad_clip is not None:
            check_range("grad_clip", self.grad_clip, 0, above=True)
        if self.ema_decay is not None:
            check_range("ema_decay", self.ema_decay, 0, 1, above=True)
        check_range("seed", self.seed, integer=True)
        check_range("workers", self.workers, 0, 256, integer=True)
        check_range("save_every", self.save_every, 0, integer=True)
        check_range("save_interval_s", self.save_interval_s, 0, above=True)

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

    def validate(self) -> None:
        check_range("size", self.size, 1, MAX_SIDE, integer=True)
        if self.threads is not None:
            check_range("threads", self.threads, 1, 4096, integer=True)
        self.loop.validate()
