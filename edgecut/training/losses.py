"""Segmentation and distillation losses on one-channel logits.

Ground truth: binary cross-entropy plus soft Dice (or IoU), as in the seed articles.
Distillation (Hinton, Vinyals and Dean 2015, "Distilling the knowledge in a neural network";
Romero et al. 2015, "FitNets"): a pixel-wise KD term between temperature-softened student and
teacher probabilities, a feature term between normalised intermediate features, and an
edge-band weighted BCE that spends more of the loss where masks are hardest: at their borders.

Every loss is a plain function of tensors and returns a scalar; ``sample_weight`` (N,)
weighs images in the batch (e.g. labelled against teacher-labelled ones).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def _batch_mean(per_image: torch.Tensor, sample_weight: torch.Tensor | None) -> torch.Tensor:
    """Mean over the batch, or the ``sample_weight``-weighted mean (0 when all weights are 0)."""
    if sample_weight is None:
        return per_image.mean()
    w = sample_weight.float().reshape(-1)
    return (per_image * w).sum() / w.sum().clamp_min(1e-12)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0,
                   sample_weight: torch.Tensor | None = None) -> torch.Tensor:
    """1 - soft Dice per image, averaged over the batch."""
    p = torch.sigmoid(logits.float()).flatten(1)
    t = target.float().flatten(1)
    inter = (p * t).sum(1)
    return _batch_mean(1 - (2 * inter + eps) / (p.sum(1) + t.sum(1) + eps), sample_weight)


def soft_iou_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0,
                  sample_weight: torch.Tensor | None = None) -> torch.Tensor:
    """1 - soft IoU (Jaccard) per image, averaged over the batch."""
    p = torch.sigmoid(logits.float()).flatten(1)
    t = target.float().flatten(1)
    inter = (p * t).sum(1)
    return _batch_mean(1 - (inter + eps) / (p.sum(1) + t.sum(1) - inter + eps), sample_weight)


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor, overlap: str = "dice",
                  bce_weight: float = 1.0, overlap_weight: float = 1.0,
                  sample_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy plus an overlap term (Dice or IoU): the seed articles' loss."""
    if sample_weight is None:
        bce = F.binary_cross_entropy_with_logits(logits.float(), target.float())
    else:
        per_pixel = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
        bce = _batch_mean(per_pixel.flatten(1).mean(1), sample_weight)
    region_loss = soft_dice_loss if overlap == "dice" else soft_iou_loss
    return bce_weight * bce + overlap_weight * region_loss(logits, target, sample_weight=sample_weight)


# ------------------------------------------------------------------------------ distillation


def soften(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Probability of a one-channel logit at temperature T: sigmoid(logit / T)."""
    return torch.sigmoid(logits.float() / temperature)


def ensemble_probability(teacher_logits: Sequence[torch.Tensor], temperature: float = 1.0) -> torch.Tensor:
    """Several teachers' opinion: the mean of their (softened) probabilities, not of their
    logits, so one over-confident teacher cannot outvote the others."""
    if not teacher_logits:
        raise ValueError("no teacher outputs to average")
    return torch.stack([soften(z, temperature) for z in teacher_logits]).mean(0)


def kd_loss(student_logits: torch.Tensor, teacher_prob: torch.Tensor, temperature: float = 1.0,
            sample_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Pixel-wise knowledge distillation (Hinton et al. 2015) for one-channel sigmoid outputs.

    Binary cross-entropy between the student's probability softened at ``temperature``,
    sigmoid(s / T), and the teacher's ``teacher_prob`` softened at the same T, minus the
    teacher's own entropy (a constant that does not change the gradient); that is the
    binary KL divergence, zero exactly when the student matches the teacher. Scaled by T^2
    so its gradient keeps its size as T changes.
    """
    t = teacher_prob.float().clamp(0.0, 1.0)
    s = student_logits.float() / temperature
    cross = F.binary_cross_entropy_with_logits(s, t, reduction="none")
    entropy = -(torch.xlogy(t, t) + torch.xlogy(1 - t, 1 - t))
    per_image = (cross - entropy).flatten(1).mean(1)
    return temperature**2 * _batch_mean(per_image, sample_weight)


def edge_band(mask: torch.Tensor, width: int = 3) -> torch.Tensor:
    """Pixels within ``width`` of a mask edge: the morphological gradient (max-pool minus
    min-pool over a (2 width + 1) square) of the mask binarised at 0.5; N x 1 x H x W in {0, 1}."""
    m = (mask.float() > 0.5).float()
    k = 2 * width + 1
    dilated = F.max_pool2d(m, k, stride=1, padding=width)
    eroded = -F.max_pool2d(-m, k, stride=1, padding=width)
    return dilated - eroded


def boundary_weights(mask: torch.Tensor, width: int = 3, edge_gain: float = 4.0) -> torch.Tensor:
    """Per-pixel weights 1 + ``edge_gain`` inside the edge band of ``mask`` and 1 elsewhere."""
    return 1.0 + edge_gain * edge_band(mask, width)


def boundary_loss(logits: torch.Tensor, target: torch.Tensor, width: int = 3, edge_gain: float = 4.0,
                  sample_weight: torch.Tensor | None = None) -> torch.Tensor:
    """BCE weighted by :func:`boundary_weights` of ``target`` (a weighted mean per image):
    thin parts and soft edges count ``1 + edge_gain`` times more than flat regions."""
    w = boundary_weights(target, width, edge_gain)
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    per_image = (w * bce).flatten(1).sum(1) / w.flatten(1).sum(1)
    return _batch_mean(per_image, sample_weight)


def standardise(feature: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Each channel of each image to zero mean and unit variance over its pixels, so student
    and teacher features of different scales can be compared."""
    f = feature.float()
    mean = f.mean((2, 3), keepdim=True)
    var = f.var((2, 3), keepdim=True, unbiased=False)
    return (f - mean) / torch.sqrt(var + eps)


def feature_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor,
                 sample_weight: torch.Tensor | None = None) -> torch.Tensor:
    """MSE between a student feature already mapped to the teacher's channels (by a 1x1 conv
    adapter) and the teacher feature at the same stride, both :func:`standardise`d; the
    student's is resized (bilinear) when the spatial sizes differ."""
    s, t = student_feature.float(), teacher_feature.float()
    if s.shape[1] != t.shape[1]:
        raise ValueError(f"student feature has {s.shape[1]} channels, teacher {t.shape[1]}: adapt it first")
    if s.shape[-2:] != t.shape[-2:]:
        s = F.interpolate(s, size=t.shape[-2:], mode="bilinear", align_corners=False)
    per_image = (standardise(s) - standardise(t)).pow(2).flatten(1).mean(1)
    return _batch_mean(per_image, sample_weight)


class SegmentationObjective:
    """The default training objective: model(image) -> logits, BCE + Dice against the mask."""

    def __init__(self, overlap: str = "dice") -> None:
        if overlap not in ("dice", "iou"):
            raise ValueError(f"overlap must be 'dice' or 'iou', got {overlap!r}")
        self.overlap = overlap

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(batch["image"])
        loss = bce_dice_loss(logits, batch["mask"], self.overlap)
        return loss, {"loss": float(loss.detach())}


def as_logits(output: torch.Tensor, spec) -> torch.Tensor:
    """A model's one-channel output as float logits (a probability output is inverted)."""
    out = output.float()
    if spec.output == "probability":
        p = out.clamp(1e-6, 1 - 1e-6)
        return torch.log(p) - torch.log1p(-p)
    return out
