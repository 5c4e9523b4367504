"""Segmentation losses on one-channel logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per image, averaged over the batch."""
    p = torch.sigmoid(logits.float()).flatten(1)
    t = target.float().flatten(1)
    inter = (p * t).sum(1)
    return (1 - (2 * inter + eps) / (p.sum(1) + t.sum(1) + eps)).mean()


def soft_iou_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft IoU (Jaccard) per image, averaged over the batch."""
    p = torch.sigmoid(logits.float()).flatten(1)
    t = target.float().flatten(1)
    inter = (p * t).sum(1)
    return (1 - (inter + eps) / (p.sum(1) + t.sum(1) - inter + eps)).mean()


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor, overlap: str = "dice",
                  bce_weight: float = 1.0, overlap_weight: float = 1.0) -> torch.Tensor:
    """Binary cross-entropy plus an overlap term (Dice or IoU): the seed articles' loss."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float())
    region = soft_dice_loss(logits, target) if overlap == "dice" else soft_iou_loss(logits, target)
    return bce_weight * bce + overlap_weight * region


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
