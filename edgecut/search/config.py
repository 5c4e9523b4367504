"""What ``edgecut optimize`` searches and how it measures (light: no torch)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgecut.errors import EdgecutError

STUDENTS = ("mobilenet_v3_small_unet", "mobilenet_v3_large_unet")  # cheapest first


@dataclass(frozen=True)
class OptimizeConfig:
    """The search: the target, the accuracy budget, the time budget and the candidates' axes."""

    target: str = "x86-avx512"  # a device profile (export_targets/), or arm64-emu
    max_iou_drop: float = 0.01  # largest absolute drop of val IoU from the model's own
    budget_minutes: float = 30.0  # no new candidate starts after this (a started one finishes)
    prune_ratios: tuple[float, ...] = (0.3, 0.5)  # structured pruning ratios, each fine-tuned
    finetune_epochs: int = 2  # of every pruned model
    students: tuple[str, ...] = STUDENTS  # registered students, distilled from the model
    distill_epochs: int = 8
    # students start from scratch here: at the loop's 1e-3 U^2-Netp's student stood at val IoU 0.0006 after 4 of 8
    # epochs (320 px, ECSSD train); at 3e-3 a student of the ECSSD teacher reached 0.398 in 4 (benchmarks/README.md)
    distill_lr: float | None = 0.003  # None: the training loop's default
    qat_epochs: int = 2  # of an INT8 candidate that post-training quantisation left outside the budget
    sizes: tuple[int, ...] | None = None  # input sides tried beside the model's own; None: 3/4 of it
    threads: tuple[int, ...] = ()  # thread counts tried; (): the profile's (or the runtime's default)
    formats: tuple[str, ...] = ()  # only these of the profile's formats; (): all it lists that can be made here
    calib_count: int = 32  # training images that calibrate INT8
    parity_count: int = 16  # images of every export's parity check
    val_split: str | None = None  # the images the search scores on; None: splits/val.txt
    holdout: str | None = None  # the images the winner is checked on; None: every other val image
    min_time_s: float = 0.5  # of each latency measurement (local targets)
    arm_images: int = 4  # images run on arm64-emu for parity (instructions come from one inference)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.max_iou_drop < 1:
            raise EdgecutError(f"max_iou_drop is an absolute IoU drop in [0, 1), e.g. 0.01; got {self.max_iou_drop}")
        if not (math.isfinite(self.budget_minutes) and self.budget_minutes > 0):
            raise EdgecutError(f"budget_minutes must be positive, got {self.budget_minutes}")
        if any(not 0 < r < 1 for r in self.prune_ratios):
            raise EdgecutError(f"prune ratios are shares of channels in (0, 1), got {list(self.prune_ratios)}")
        for name in ("finetune_epochs", "distill_epochs", "qat_epochs"):
            if getattr(self, name) < 1:
                raise EdgecutError(f"{name} must be at least 1, got {getattr(self, name)}")
        if any(s < 8 for s in self.sizes or ()) or any(t < 1 for t in self.threads):
            raise EdgecutError("sizes are input sides of at least 8 pixels and threads at least 1")
        if self.calib_count < 1 or self.parity_count < 1 or self.arm_images < 1:
            raise EdgecutError("calib_count, parity_count and arm_images must be at least 1")
