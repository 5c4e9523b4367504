"""INT8 calibration images, and a report on how well they stand for the evaluation images.

Static quantisation fixes every activation range from the calibration images, so a set that
is darker, emptier or smaller than what the model will see costs accuracy quietly. The report
puts numbers on it: foreground fraction (from masks, when the folder has them), brightness
(mean Rec. 601 luma in [0, 1]) and the distribution of image sizes, for the calibration set
and, when given, an evaluation folder, with a warning for each large gap.

Images are picked reproducibly: the folder's files sorted by name, then ``count`` of them
drawn without replacement by a seeded generator. Without a folder, synthetic product photos
from a set of their own (not the one parity checks on) are used, and the report says so.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecut.artifact import ModelSpec

SYNTHETIC_SEED = 1  # the synthetic calibration set (parity uses another one)
EVAL_SAMPLE = 200  # evaluation images described at most (drawn with the same seed)
GAPS = {  # report a warning when calibration and evaluation differ by more than this
    "brightness": 0.10,  # difference of mean brightness
    "foreground_fraction": 0.15,  # difference of mean foreground fraction
    "size_ratio": 2.0,  # ratio of median image areas
}


@dataclass(frozen=True)
class CalibSet:
    source: str  # folder path, or "synthetic"
    names: list[str]
    images: list[np.ndarray]  # HxWx3 uint8 RGB, own size
    masks: list[np.ndarray] | None  # HxW uint8, when every image has one
    available: int  # images the folder holds

    def batches(self, spec: ModelSpec):
        """One preprocessed batch (1 x 3 x H x W at the spec's size) per image."""
        for image in self.images:
            yield spec.preprocess(image)


def load_set(folder: str | os.PathLike | None, spec: ModelSpec, count: int, seed: int = 0,
             split: str | None = None) -> CalibSet:
    """The calibration images: ``count`` drawn from ``folder`` (its ``split``, when given), or synthetic ones."""
    if folder is None:
        from edgecut.data.synth import MAX_SIZE, MIN_SIZE, render

        side = min(max(max(spec.input_size), MIN_SIZE), MAX_SIZE)
        pairs = [render(i, side, seed=SYNTHETIC_SEED) for i in range(count)]
        return CalibSet("synthetic", [f"synthetic-{i:03d}" for i in range(count)], [p[0] for p in pairs],
                        [p[1] for p in pairs], count)
    return _from_folder(folder, count, seed, split)


def _from_folder(folder: str | os.PathLike, count: int, seed: int, split: str | None = None) -> CalibSet:
    from edgecut.data.folder import load_pair, subset
    from edgecut.exporters.parity import describe_source, image_samples

    samples = image_samples(folder, split)
    chosen = subset(samples, count, seed)
    pairs = [load_pair(s) for s in chosen]
    masks = [m for _, m in pairs]
    return CalibSet(describe_source(folder, split), [s.name for s in chosen], [img for img, _ in pairs],
                    masks if all(m is not None for m in masks) else None, len(samples))


def _stats(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()), "max": float(a.max())}


def describe(images: Sequence[np.ndarray], masks: Sequence[np.ndarray] | None) -> dict[str, Any]:
    """Foreground fraction, brightness and size distribution of a set of images."""
    luma = np.asarray([0.299, 0.587, 0.114], np.float32) / 255.0
    sizes = [img.shape[:2] for img in images]
    hs, ws = np.asarray([s[0] for s in sizes]), np.asarray([s[1] for s in sizes])
    out: dict[str, Any] = {
        "count": len(images),
        "brightness": _stats([float((img.reshape(-1, 3) @ luma).mean()) for img in images]),
        "foreground_fraction": _stats([float((m > 127).mean()) for m in masks]) if masks else None,
        "size": {"height": {"min": int(hs.min()), "median": float(np.median(hs)), "max": int(hs.max())},
                 "width": {"min": int(ws.min()), "median": float(np.median(ws)), "max": int(ws.max())},
                 "distinct": len(set(sizes)),
                 "most_common": [[h, w, n] for (h, w), n in Counter(sizes).most_common(3)]},
    }
    return out


def report(calib: CalibSet, eval_folder: str | os.PathLike | None = None, seed: int = 0,
           eval_split: str | None = None) -> dict[str, Any]:
    """The calibration report: the set described, and compared with ``eval_folder`` (its ``eval_split``) if given."""
    rep: dict[str, Any] = {"source": calib.source, "available": calib.available, "names": calib.names,
                           "calibration": describe(calib.images, calib.masks), "warnings": []}
    if calib.source == "synthetic":
        rep["warnings"].append("calibrated on synthetic product photos: give --calib DIR with images like "
                               "the ones the model will see")
    if len(calib.names) < 16:
        rep["warnings"].append(f"only {len(calib.names)} calibration image(s): ranges may not cover real inputs")
    if eval_folder is None:
        rep["eval"] = None
        return rep
    ev = _from_folder(Path(eval_folder), EVAL_SAMPLE, seed, eval_split)
    rep["eval"] = {"source": ev.source, "available": ev.available, **describe(ev.images, ev.masks)}
    c, e = rep["calibration"], rep["eval"]
    gaps: dict[str, float] = {"brightness": c["brightness"]["mean"] - e["brightness"]["mean"]}
    if c["foreground_fraction"] and e["foreground_fraction"]:
        gaps["foreground_fraction"] = c["foreground_fraction"]["mean"] - e["foreground_fraction"]["mean"]
    area = lambda d: d["size"]["height"]["median"] * d["size"]["width"]["median"]  # noqa: E731
    gaps["size_ratio"] = area(c) / area(e)
    rep["gap"] = gaps
    for key, limit in GAPS.items():
        if key not in gaps:
            continue
        value = gaps[key]
        if key == "size_ratio" and max(value, 1 / value) > limit:
            rep["warnings"].append(f"calibration images are {value:.2f}x the area of the evaluation images")
        elif key != "size_ratio" and abs(value) > limit:
            rep["warnings"].append(f"calibration and evaluation images differ in mean {key.replace('_', ' ')} "
                                   f"by {value:+.3f}")
    return rep
