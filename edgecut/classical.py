"""Classical baselines: Otsu's threshold and GrabCut (OpenCV), as artifacts every stage can read.

Two artifacts of format ``classical`` (backend ``opencv``): ``model.json`` names the method and its settings, and
the Runner (:mod:`edgecut.runtime.classical_runner`) applies it to each image, so ``eval``, ``bench``, ``compare``
and ``remove`` score and time them like any model. ``otsu``: blurred grey levels split at Otsu's threshold, the
side that holds most of the border taken as background. ``grabcut``: GrabCut from a rectangle ``margin`` inside
the border, ``iterations`` rounds, seeded per image. They take RGB in [0, 1] (mean 0, std 1) at any size and
return a probability of 0 or 1 per pixel; export, prune and distill refuse them.

Why they exist, and each method's details: docs/design-decisions.md#classical
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from edgecut import io
from edgecut.artifact import Artifact, Manifest, ModelSpec, Step, is_artifact, load_artifact, tool_versions, write_artifact
from edgecut.errors import EdgecutError

FORMAT = "classical"
MODEL_FILE = "model.json"
METHODS = ("otsu", "grabcut")


@dataclass(frozen=True)
class BaselineConfig:
    """Which classical method, and its settings."""

    method: str = "otsu"  # one of METHODS
    iterations: int = 5  # grabcut: rounds of GrabCut
    margin: float = 0.05  # grabcut: the rectangle's inset from each side, as a fraction of the side
    blur: int = 5  # otsu: Gaussian blur kernel side before thresholding (odd; 1: none)
    size: int = 320  # the input side bench and eval use unless told otherwise

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise EdgecutError(f"unknown baseline {self.method!r}; edgecut has {', '.join(METHODS)}")
        if not 1 <= self.iterations <= 100:
            raise EdgecutError(f"grabcut iterations must be 1-100, got {self.iterations}")
        if not 0 <= self.margin < 0.5:
            raise EdgecutError(f"grabcut margin must be in [0, 0.5), got {self.margin}")
        if self.blur < 1 or self.blur % 2 == 0:
            raise EdgecutError(f"otsu blur must be an odd kernel side >= 1, got {self.blur}")
        if self.size < 8:
            raise EdgecutError(f"size must be at least 8 pixels, got {self.size}")

    def settings(self) -> dict:
        """What the Runner reads from ``model.json``."""
        if self.method == "otsu":
            return {"method": "otsu", "blur": self.blur}
        return {"method": "grabcut", "iterations": self.iterations, "margin": self.margin}


def spec(size: int) -> ModelSpec:
    """RGB in [0, 1] at any size; a probability out."""
    return ModelSpec(input_size=(size, size), dynamic_size=True, size_divisor=1, mean=(0.0, 0.0, 0.0),
                     std=(1.0, 1.0, 1.0), output="probability", threshold=0.5)


@io.writes_out
def baseline(out: str | os.PathLike, config: BaselineConfig = BaselineConfig(), *, resume: bool = False,
             progress: bool = True) -> Artifact:
    """Write the baseline ``config`` names as an artifact in ``out`` (instant: nothing is trained)."""
    del resume, progress  # nothing to resume or show: the artifact is written at once
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (is_artifact(out) and load_artifact(out, verify=False).manifest.format
                                                   == FORMAT):
        raise EdgecutError(f"{out} holds other files or another model; choose an empty or new folder "
                           "(a baseline is written only over a baseline)")
    settings = config.settings()
    manifest = Manifest(format=FORMAT, precision="fp32", model_file=MODEL_FILE, spec=spec(config.size),
                        lineage=[Step(step="baseline", params=settings)], tools=tool_versions("opencv-python-headless"),
                        metrics={"classical": settings})
    write_artifact(out, manifest, {MODEL_FILE: json.dumps(settings, indent=2).encode()})
    return load_artifact(out)
