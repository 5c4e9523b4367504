"""The classical Runner: Otsu's threshold or GrabCut (OpenCV) on each image of a batch.

The artifact's ``model.json`` names the method and its settings (:mod:`edgecut.classical`). The
batch is RGB in [0, 1] (the spec's mean 0 and std 1); the output is a probability of 0 or 1 per
pixel. ``threads`` is OpenCV's thread count (``cv2.setNumThreads``), set before each batch: it is
process-wide in OpenCV. GrabCut's k-means starts from OpenCV's random generator, seeded with 0
before each image, so the same image gives the same mask on every run and machine.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgecut.artifact import Artifact, ModelSpec
from edgecut.env import default_threads
from edgecut.errors import InputError, ModelError
from edgecut.runtime.base import checked_batch


def read_settings(path: str | os.PathLike) -> dict:
    """``model.json``: the method and its settings, checked."""
    from edgecut.classical import METHODS

    from edgecut import io

    path = Path(path)
    if not path.exists():
        raise InputError(path, "baseline file not found", "copy the whole artifact folder again")
    try:
        settings = io.read_json(path, max_bytes=1 << 20)
    except InputError as e:
        raise InputError(path, f"is not a readable baseline file ({e.problem})", "write it again with edgecut baseline") from None
    if not isinstance(settings, dict) or settings.get("method") not in METHODS:
        raise InputError(path, f"names no known method (edgecut has {', '.join(METHODS)})",
                         "write it again with edgecut baseline")
    return settings


def border_share(mask: np.ndarray) -> float:
    """Share of the image border's pixels that ``mask`` marks."""
    edge = np.concatenate([mask[0], mask[-1], mask[1:-1, 0], mask[1:-1, -1]])
    return float(edge.mean()) if edge.size else 0.0


def otsu(rgb: np.ndarray, blur: int = 5) -> np.ndarray:
    """Foreground (bool H x W) of one uint8 RGB image by Otsu's threshold; the border's side is background."""
    import cv2

    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if blur > 1:
        grey = cv2.GaussianBlur(grey, (blur, blur), 0)
    _, above = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    above = above.astype(bool)
    return ~above if border_share(above) > 0.5 else above


def grabcut(rgb: np.ndarray, iterations: int = 5, margin: float = 0.05) -> np.ndarray:
    """Foreground (bool H x W) of one uint8 RGB image by GrabCut from a rectangle ``margin`` inside the border."""
    import cv2

    h, w = rgb.shape[:2]
    dx, dy = max(1, round(w * margin)), max(1, round(h * margin))
    rect = (dx, dy, max(1, w - 2 * dx), max(1, h - 2 * dy))
    mask = np.zeros((h, w), np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    try:
        cv2.grabCut(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), mask, rect, bgd, fgd, iterations, cv2.GC_INIT_WITH_RECT)
    except cv2.error:  # a flat image (one colour): GrabCut cannot fit its two models; nothing is foreground
        return np.zeros((h, w), bool)
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)


class ClassicalRunner:
    backend = "opencv"

    def __init__(self, path: str | os.PathLike, spec: ModelSpec, device: str = "cpu",
                 threads: int | None = None) -> None:
        if device.partition(":")[0] not in ("cpu", "auto"):
            raise ModelError(f"the classical baselines run on the CPU, not {device!r}")
        self.path, self.spec, self.device = Path(path), spec, "cpu"
        self.settings = read_settings(self.path)
        self.threads = int(threads or default_threads())

    @classmethod
    def from_artifact(cls, art: Artifact, device: str = "cpu", threads: int | None = None) -> ClassicalRunner:
        return cls(art.model_path, art.spec, device=device, threads=threads)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import cv2

        x = checked_batch(batch, self.path, self.spec)
        cv2.setNumThreads(self.threads)
        s = self.spec
        pixels = (x * np.asarray(s.std, np.float32)[:, None, None] + np.asarray(s.mean, np.float32)[:, None, None]) / s.scale
        images = np.clip(np.rint(pixels), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
        out = np.empty((x.shape[0], 1, *x.shape[2:]), np.float32)
        for i, rgb in enumerate(images):
            rgb = np.ascontiguousarray(rgb)
            if self.settings["method"] == "otsu":
                fg = otsu(rgb, int(self.settings.get("blur", 5)))
            else:
                fg = grabcut(rgb, int(self.settings.get("iterations", 5)), float(self.settings.get("margin", 0.05)))
            out[i, 0] = fg
        return out
