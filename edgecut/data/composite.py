"""More training images from a few real ones: foregrounds cut out by their masks and pasted on
other photos' backgrounds (their own foreground inpainted away), with the pasted mask.

Composite ``i`` is a pure function of the sources, the seed and ``i`` (its own random stream
``np.random.default_rng([seed, i])``): which foreground on which background, its scale (a share
of the background's shorter side), position, mirror, and a one-pixel feathered edge. The folder
has the usual layout (``images/``, ``masks/``) and ``composite.json``; a second run with the same
settings completes it, one with other settings is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from edgecut import io
from edgecut.data.config import CompositeConfig
from edgecut.data.folder import Sample, find_samples, load_pair
from edgecut.errors import EdgecutError, InputError
from edgecut.progress import Tracker

VERSION = 1
SCALE = (0.45, 0.9)  # the foreground's longer side, as a share of the background's shorter side
INPAINT_RADIUS = 5  # px: cv2.inpaint's neighbourhood when the background's own foreground is removed


def _background(sample: Sample) -> np.ndarray:
    """The photo with its own foreground (when it has a mask) inpainted away."""
    image, mask = load_pair(sample)
    if mask is None or not (mask > 127).any():
        return image
    hole = cv2.dilate((mask > 127).astype(np.uint8) * 255, np.ones((9, 9), np.uint8))
    return cv2.inpaint(image, hole, INPAINT_RADIUS, cv2.INPAINT_TELEA)


def render(fg: Sample, bg: Sample, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One composite: (H x W x 3 uint8 on ``bg``'s size, H x W mask 0/255)."""
    back = _background(bg).astype(np.float32)
    image, mask = load_pair(fg)
    if mask is None:
        raise InputError(fg.image, "has no mask: a foreground is cut out by its mask", "give a labelled folder")
    ys, xs = np.nonzero(mask > 127)
    if not len(ys):
        raise InputError(fg.mask, "is empty: nothing to cut out", "leave it out of the split")
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    obj, alpha = image[y0:y1, x0:x1], (mask[y0:y1, x0:x1] > 127).astype(np.float32)
    if rng.random() < 0.5:
        obj, alpha = obj[:, ::-1], alpha[:, ::-1]
    bh, bw = back.shape[:2]
    side = rng.uniform(*SCALE) * min(bh, bw)
    k = min(side / max(obj.shape[:2]), bw / obj.shape[1], bh / obj.shape[0])
    h, w = max(1, round(obj.shape[0] * k)), max(1, round(obj.shape[1] * k))
    obj = cv2.resize(np.ascontiguousarray(obj), (w, h), interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
    alpha = cv2.resize(np.ascontiguousarray(alpha), (w, h), interpolation=cv2.INTER_LINEAR)
    soft = cv2.GaussianBlur(alpha, (3, 3), 0.7)  # a one-pixel feathered edge, as a real cut-out has
    top, left = int(rng.integers(0, bh - h + 1)), int(rng.integers(0, bw - w + 1))
    region = back[top:top + h, left:left + w]
    back[top:top + h, left:left + w] = region * (1 - soft[..., None]) + obj.astype(np.float32) * soft[..., None]
    out_mask = np.zeros((bh, bw), np.uint8)
    out_mask[top:top + h, left:left + w] = np.where(alpha >= 0.5, 255, 0)
    return np.clip(back + 0.5, 0, 255).astype(np.uint8), out_mask


@io.writes_out
def composite(data: str | os.PathLike, out: str | os.PathLike, config: CompositeConfig = CompositeConfig(), *,
              resume: bool = False, progress: bool = True) -> Path:
    """Write ``config.count`` composites of ``data``'s foregrounds into ``out``; return ``out``."""
    del resume  # a folder of the same settings is always completed
    if config.count < 1:
        raise EdgecutError(f"count must be at least 1, got {config.count}")
    fgs = [s for s in find_samples(data, config.split) if s.mask is not None]
    bgs = find_samples(config.backgrounds, masks=False) if config.backgrounds else fgs
    if len(fgs) < 1 or len(bgs) < 2 and not config.backgrounds:
        raise InputError(data, "has too few labelled images to composite", "give a folder with images/ and masks/")
    root = Path(out)
    meta = {"generator": "edgecut.data.composite", "version": VERSION, "data": str(Path(data).resolve()),
            "split": config.split, "backgrounds": str(Path(config.backgrounds).resolve()) if config.backgrounds
            else None, "count": config.count, "seed": config.seed, "foregrounds": len(fgs), "backdrops": len(bgs)}
    _claim(root, meta)
    with Tracker("composites", config.count, enabled=progress) as bar:
        for i in range(config.count):
            name = f"{i:05d}"
            img_path, mask_path = root / "images" / f"{name}.jpg", root / "masks" / f"{name}.png"
            if not (img_path.is_file() and mask_path.is_file()):
                rng = np.random.default_rng([config.seed, i])
                f = int(rng.integers(len(fgs)))
                b = int(rng.integers(len(bgs)))
                if bgs is fgs and b == f:  # another photo's background
                    b = (b + 1 + int(rng.integers(len(bgs) - 1))) % len(bgs)
                image, mask = render(fgs[f], bgs[b], rng)
                io.write_bytes(img_path, io.encode_image(image, ".jpg"), fsync=False)
                io.write_bytes(mask_path, io.encode_image(mask, ".png"), fsync=False)
            bar.advance()
    return root


def _claim(root: Path, meta: dict) -> None:
    """Make ``root`` ours (composite.json) unless it holds something else."""
    path = root / "composite.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if old != meta:
            raise InputError(root, "holds composites made with other settings (composite.json)",
                             "choose a new --out or delete it")
        return
    if root.exists() and any(root.iterdir()):
        raise InputError(root, "exists and is not a composite folder", "choose a new --out or delete it")
    io.write_json(path, meta)
