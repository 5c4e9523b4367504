"""The settings of the compression steps: :class:`PruneConfig`, :class:`DistillConfig`, :class:`QATConfig`,
:class:`ConvertConfig`, and of the pruning sensitivity analysis (:class:`SensitivityConfig`).

Plain frozen dataclasses without torch, so a recipe or a command line can be checked against
them in a fraction of a second; the steps themselves are in prune.py, distill.py, qat.py and to_torch.py.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from edgecut.errors import EdgecutError, InputError, ModelError
from edgecut.exporters.config import ParityConfig
from edgecut.training.config import MAX_SIDE, LoopConfig, check_range

Importance = Literal["l1", "l2", "bn", "taylor"]
IMPORTANCES = ("l1", "l2", "bn", "taylor")


# fine-tuning after each pruning step: no epochs unless asked for, a smaller peak learning rate
PRUNE_LOOP = LoopConfig(epochs=0, lr=3e-4, warmup_epochs=0.2)
METHOD_FIELDS = ("ratio", "target_macs", "importance", "scope", "steps", "round_to", "max_layer_ratio", "layer_ratios",
                 "ignore")  # what decides which channels go (prune_model reads these)


@dataclass(frozen=True)
class PruneConfig:
    """Which channels go (ratio, MACs target or per-layer plan; ranking; schedule), and how the
    pruned model is fine-tuned and measured."""

    ratio: float | None = 0.5  # share of each group's channels removed (uniform) or of all channels (global)
    target_macs: float | None = None  # instead of ratio: prune until MACs (in G, at the MACs size) are at most this
    importance: Importance = "l2"  # channel ranking: l1 / l2 weight norm, bn: BN scale, taylor: |w * grad|
    scope: Literal["uniform", "global"] = "uniform"  # uniform: same ratio per group; global: rank all together
    steps: int = 1  # iterative schedule: prune (then fine-tune) this many times to reach the target
    round_to: int | None = 8  # kept channels are a multiple of this (vector units, tensor cores)
    max_layer_ratio: float = 0.9  # global scope: no group loses a larger share than this
    layer_ratios: Mapping[str, float] = field(default_factory=dict)  # per-group plan: root layer -> ratio
    ignore: tuple[str, ...] = ()  # layers (qualified names) whose output channels are kept whole
    data: str | None = None  # folder data set: fine-tuning, validation, taylor; None: prune only
    train_split: str | None = None  # default: splits/train.txt when present
    val_split: str | None = None  # default: splits/val.txt when present
    bn_batches: int = 0  # after each step, re-estimate batch-norm statistics on this many training batches
    kd: bool = False  # fine-tune by distillation from the model before pruning (its stored answers) beside the masks
    loop: LoopConfig = PRUNE_LOOP  # fine-tuning after each step (loop.epochs of them; 0: none)
    threads: int | None = None  # torch CPU threads (fine-tuning and latency)
    latency: bool = True  # measure batch-1 torch CPU latency before and after

    def method(self) -> dict[str, Any]:
        """The settings that decide which channels go."""
        return {k: getattr(self, k) for k in METHOD_FIELDS}

    def validate(self) -> None:
        if self.importance not in IMPORTANCES:
            raise ModelError(f"unknown importance {self.importance!r}; choose one of {', '.join(IMPORTANCES)}")
        if self.scope not in ("uniform", "global"):
            raise ModelError(f"unknown scope {self.scope!r}; choose uniform or global")
        if self.steps < 1:
            raise ModelError(f"steps must be at least 1, got {self.steps}")
        if self.round_to is not None and self.round_to < 1:
            raise ModelError(f"round_to must be at least 1, got {self.round_to}")
        if self.target_macs is not None and self.target_macs <= 0:
            raise ModelError(f"target MACs must be positive, got {self.target_macs}")
        if self.target_macs is None and not self.layer_ratios and self.ratio is None:
            raise ModelError("give a pruning ratio, a MACs target or a per-layer plan")
        for name, r in {"ratio": self.ratio, **self.layer_ratios}.items():
            if r is not None and not 0 <= r < 1:
                raise ModelError(f"pruning ratio {r} for {name} must be in [0, 1): a ratio of 1 removes the "
                                 "whole group")
        if not 0 < self.max_layer_ratio < 1:
            raise ModelError(f"max_layer_ratio must be in (0, 1), got {self.max_layer_ratio}")
        if self.data is None and (self.loop.epochs or self.bn_batches):
            raise InputError(None, "fine-tuning and batch-norm recalibration need data",
                             "pass --data DIR with --finetune-epochs or --recalibrate-bn")
        check_range("steps", self.steps, 1, 1000, integer=True)
        check_range("bn_batches", self.bn_batches, 0, integer=True)
        self.loop.validate()


@dataclass(frozen=True)
class SensitivityConfig:
    """The sensitivity analysis: each prunable group pruned alone at each ratio, scored on held-out images."""

    ratios: tuple[float, ...] = (0.25, 0.5, 0.75)  # tried per group
    importance: Importance = "l2"  # channel ranking, as PruneConfig.importance
    round_to: int | None = None  # kept channels are a multiple of this; None: no rounding
    ignore: tuple[str, ...] = ()  # layers whose output channels are kept whole
    split: str | None = None  # split of the data set the images come from; None: its training split
    images: int = 100  # held-out images scored per trial (picked reproducibly)
    metric: str = "iou"  # higher is better
    max_drop: float | None = None  # also write plan.json: per group the largest ratio within this drop


KD_FIELDS = ("temperature", "alpha", "feature_kd", "feature_weight", "boundary_weight", "boundary_width", "edge_gain",
             "pseudo_label", "unlabeled_weight", "teacher_cache")  # what the objective reads; a resumed run keeps them


@dataclass(frozen=True)
class DistillConfig:
    """The student, the distillation terms and how the student is trained."""

    student: str = "mobilenet_v3_large_unet"  # registered architecture, or a torch artifact to start from
    student_kwargs: Mapping[str, Any] = field(default_factory=dict)  # the architecture's options (not for an artifact)
    size: int = 320  # training input side (rounded up so every model accepts it)
    temperature: float = 2.0  # softens both outputs in the KD term; 1 is plain, Hinton et al. used 2-20
    alpha: float = 0.5  # weight of the KD term; (1 - alpha) weighs the ground-truth BCE + Dice
    feature_kd: bool = False  # also match intermediate features (needs feature_taps on both models)
    feature_weight: float = 1.0  # weight of the feature term when feature_kd is on
    boundary_weight: float = 0.0  # weight of the edge-band BCE term (0: off)
    boundary_width: int = 3  # half-width in pixels of the edge band at the training size
    edge_gain: float = 4.0  # pixels in the edge band weigh 1 + edge_gain in the boundary term
    pseudo_label: Literal["hard", "soft"] = "hard"  # teachers' mask for unlabelled images: thresholded or not
    unlabeled_weight: float = 1.0  # weight of a teacher-labelled image against a labelled one in the gt terms
    unlabeled: str | tuple[str, ...] | None = None  # folder(s) of images (masks ignored): the teachers label them
    teacher_cache: bool | None = None  # teachers' answers computed once and stored (soft_labels.py); None: on
    # unless feature_kd (features are read on the fly, from the very crop the student sees)
    train_split: str | None = None  # of the labelled data; default: splits/train.txt when present
    val_split: str | None = None  # default: splits/val.txt when present
    threads: int | None = None  # torch CPU threads
    cache: bool | None = None  # keep decoded images in memory; None: when there are at most CACHE_MAX_IMAGES
    loop: LoopConfig = LoopConfig()  # epochs, batch, learning rate, precision, device, ...

    def kd_settings(self) -> dict[str, Any]:
        """The distillation terms (what :class:`DistillObjective` reads)."""
        return {**{k: getattr(self, k) for k in KD_FIELDS}, "teacher_cache": self.stored_teachers}

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise EdgecutError(f"temperature must be positive, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise EdgecutError(f"alpha must lie in [0, 1], got {self.alpha}")
        if min(self.feature_weight, self.boundary_weight, self.edge_gain, self.unlabeled_weight) < 0:
            raise EdgecutError("feature_weight, boundary_weight, edge_gain and unlabeled_weight must not be negative")
        if self.boundary_width < 1:
            raise EdgecutError(f"boundary_width must be at least 1 pixel, got {self.boundary_width}")
        if self.pseudo_label not in ("hard", "soft"):
            raise EdgecutError(f"pseudo_label must be 'hard' or 'soft', got {self.pseudo_label!r}")
        if self.feature_kd and self.teacher_cache:
            raise EdgecutError("feature distillation reads the teachers' features on each augmented crop, which no "
                               "store holds: drop --teacher-cache on (or --feature-kd)")

    @property
    def unlabeled_folders(self) -> tuple[str, ...]:
        """The folders of images the teachers label (``unlabeled`` as a tuple)."""
        u = self.unlabeled
        return () if not u else (str(u),) if isinstance(u, (str, os.PathLike)) else tuple(str(p) for p in u)

    @property
    def stored_teachers(self) -> bool:
        """Whether the teachers' answers come from the soft-label store (else: on the fly)."""
        return (not self.feature_kd) if self.teacher_cache is None else self.teacher_cache

    def validate(self) -> None:
        check_range("size", self.size, 1, MAX_SIDE, integer=True)
        check_range("boundary_width", self.boundary_width, 1, MAX_SIDE, integer=True)
        self.loop.validate()


# fine-tuning a trained model: a small learning rate, fp32 (see the module docstring), no weight
# decay (it would shrink the quantizer scales too), a short warm-up
QAT_LOOP = LoopConfig(epochs=3, lr=1e-4, weight_decay=0.0, warmup_epochs=0.1, precision="fp32")


QUANT_FIELDS = ("calib_count", "signed_activations", "fold_batchnorm", "dynamic", "opset")  # fixed by qat_setup.json


@dataclass(frozen=True)
class QATConfig:
    """Where the quantizers go, how the fake-quantised model is fine-tuned, and how its export is checked."""

    calib_count: int = 64  # training images (unaugmented, seeded pick) that set the initial ranges
    signed_activations: bool = False  # int8 activations everywhere (TensorRT takes no uint8); else uint8 after ReLU
    fold_batchnorm: bool = True  # fold Conv2d + BatchNorm2d pairs before quantizing
    dynamic: bool = False  # batch is always dynamic; True also lets H and W vary in the ONNX model
    opset: int = 18  # of the exported ONNX model (QuantizeLinear with int8 / uint8 and per-axis scales)
    train_split: str | None = None  # default: splits/train.txt when present (the calibration images come from it)
    val_split: str | None = None  # default: splits/val.txt when present
    parity: ParityConfig = ParityConfig()  # data None: PARITY_COUNT images of the training data set
    threads: int | None = None  # torch CPU threads
    cache: bool | None = None  # keep decoded images in memory; None: when there are at most CACHE_MAX_IMAGES
    loop: LoopConfig = QAT_LOOP  # fine-tuning: a small learning rate, fp32, no weight decay

    def quant_settings(self) -> dict[str, Any]:
        """What decides where the quantizers go: a resumed run must keep it."""
        return {k: getattr(self, k) for k in QUANT_FIELDS}

    def validate(self) -> None:
        if self.calib_count < 1:
            raise EdgecutError(f"calib_count must be at least 1, got {self.calib_count}")
        if not 13 <= self.opset <= 20:  # per-axis QuantizeLinear came with opset 13
            raise EdgecutError(f"opset {self.opset}: QAT exports opset 13 to 20")
        check_range("calib_count", self.calib_count, 1, 100_000, integer=True)
        self.loop.validate()


CONVERT_TOLERANCES = {"max_abs_diff": 1e-3, "mask_iou": 0.999}  # of probabilities; float sums reordered, BN folded


@dataclass(frozen=True)
class ConvertConfig:
    """What the conversion is checked on and how close it must be."""

    data: str | None = None  # images (a folder or a data set); None: synthetic product photos
    split: str | None = None  # only this split of a data set folder
    count: int = 16  # images checked
    arch: str | None = None  # registered architecture to fill; None: every one is tried
    tolerances: dict[str, float] = field(default_factory=lambda: dict(CONVERT_TOLERANCES))
