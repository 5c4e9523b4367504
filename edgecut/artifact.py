"""Artifact: a directory holding one model file plus ``edgecut.json``.

The manifest says what the model file is and how to feed it (:class:`ModelSpec`), how big
and costly it is (params, MACs), where it came from (lineage: every step, its settings and
the sha256 of its parent) and the sha256 and size of every file, so a copy can be checked.
Every pipeline step reads artifacts and writes artifacts; the manifest is written last, so a
directory with an ``edgecut.json`` is always complete.

Pre- and post-processing are methods of the spec and nowhere else: training, export,
runtimes and the end-user cut-out all call them.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgecut import io
from edgecut.errors import InputError, UnsafeFileError

MANIFEST = "edgecut.json"
SCHEMA_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ModelSpec(BaseModel):
    """How to feed a model and read its output. Saved with every model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_size: tuple[int, int] = (320, 320)  # (H, W) the model is run at
    dynamic_size: bool = True  # other H, W are accepted (multiples of size_divisor)
    size_divisor: int = 16  # H and W must be multiples of this (2 ** number of downsamplings)
    channel_order: Literal["RGB"] = "RGB"
    layout: Literal["NCHW"] = "NCHW"
    scale: float = 1 / 255  # uint8 pixels times scale gives the value range [0, 1]
    mean: tuple[float, float, float] = IMAGENET_MEAN  # subtracted after scaling
    std: tuple[float, float, float] = IMAGENET_STD  # divided after subtracting the mean
    output: Literal["logits", "probability"] = "logits"  # one channel, N x 1 x H x W
    threshold: float = 0.5  # probability above which a pixel is foreground

    @field_validator("input_size")
    @classmethod
    def _positive(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 1:
            raise ValueError(f"input_size must be positive, got {v}")
        return v

    def with_size(self, size: int | Sequence[int]) -> ModelSpec:
        """The same spec at another input size (rounded up to the size divisor)."""
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        d = self.size_divisor
        return self.model_copy(update={"input_size": (-(-h // d) * d, -(-w // d) * d)})

    def preprocess(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """HxWx3 uint8 RGB image(s) -> float32 NCHW batch at ``input_size``, normalised."""
        import cv2

        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = [images]
        h, w = self.input_size
        batch = np.empty((len(images), 3, h, w), dtype=np.float32)
        mean = np.asarray(self.mean, np.float32)
        inv_std = 1.0 / np.asarray(self.std, np.float32)
        for i, img in enumerate(images):
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise ValueError(f"expected HxWx3 uint8 RGB, got {img.shape} {img.dtype}")
            interp = cv2.INTER_AREA if img.shape[0] > h or img.shape[1] > w else cv2.INTER_LINEAR
            x = cv2.resize(img, (w, h), interpolation=interp).astype(np.float32) * self.scale
            batch[i] = ((x - mean) * inv_std).transpose(2, 0, 1)
        return batch

    def to_probability(self, output: np.ndarray) -> np.ndarray:
        """Model output (N x 1 x H x W) -> probabilities N x H x W in [0, 1], float32."""
        out = np.asarray(output, dtype=np.float32)
        if out.ndim == 4:
            if out.shape[1] != 1:
                raise ValueError(f"expected one output channel, got shape {out.shape}")
            out = out[:, 0]
        if self.output == "logits":
            out = 0.5 * (1.0 + np.tanh(0.5 * out))  # sigmoid without overflow warnings
        return np.clip(out, 0.0, 1.0)

    @staticmethod
    def resize_back(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """A probability map resized to an image's own (H, W)."""
        import cv2

        if prob.shape == tuple(shape):
            return prob
        return cv2.resize(prob, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


class Step(BaseModel):
    """One step of an artifact's history."""

    model_config = ConfigDict(extra="allow")

    step: str  # train, prune, distill, export, ...
    params: dict[str, Any] = Field(default_factory=dict)  # the settings it ran with
    parent_sha256: str | None = None  # sha256 of the parent's model file
    time: str = Field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))


class FileEntry(BaseModel):
    sha256: str
    size: int


class Manifest(BaseModel):
    """The contents of ``edgecut.json``."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    format: str  # torch, torchscript, onnx, openvino, tensorrt, ...
    precision: str = "fp32"
    model_file: str  # name of the model file inside the artifact directory
    arch: dict[str, Any] | None = None  # {"name": registry name, "kwargs": {...}} for torch weights
    spec: ModelSpec = Field(default_factory=ModelSpec)
    params: int | None = None
    macs: int | None = None  # multiply-accumulates of one image at spec.input_size
    lineage: list[Step] = Field(default_factory=list)
    files: dict[str, FileEntry] = Field(default_factory=dict)
    tools: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)  # e.g. {"val": {...}, "data": "..."}
    created: str = Field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))


@dataclass(frozen=True)
class Artifact:
    """A loaded artifact directory."""

    path: Path
    manifest: Manifest

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest.model_file

    @property
    def spec(self) -> ModelSpec:
        return self.manifest.spec

    @property
    def sha256(self) -> str:
        entry = self.manifest.files.get(self.manifest.model_file)
        return entry.sha256 if entry else io.sha256_file(self.model_path)

    def verify(self) -> None:
        """Check every listed file against its recorded size and sha256."""
        for name, entry in self.manifest.files.items():
            p = self.path / name
            if not p.is_file():
                raise InputError(p, "listed in edgecut.json but missing", "copy the whole artifact folder")
            if p.stat().st_size != entry.size or io.sha256_file(p) != entry.sha256:
                raise InputError(p, "does not match the sha256 in edgecut.json (modified or corrupt)",
                                 "re-copy or re-create the artifact")


def is_artifact(path: str | os.PathLike) -> bool:
    return (Path(path) / MANIFEST).is_file()


def load_artifact(path: str | os.PathLike, verify: bool = False) -> Artifact:
    """Read and validate ``path/edgecut.json``."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "not found", "give an artifact directory (one holding edgecut.json)")
    if not is_artifact(path):
        raise InputError(path, "not an edgecut artifact (no edgecut.json)",
                         "give the folder written by 'edgecut train' or another edgecut step")
    raw = io.read_json(path / MANIFEST)
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise InputError(path / MANIFEST, f"invalid manifest: {where}: {first['msg']}") from None
    if manifest.schema_version > SCHEMA_VERSION:
        raise InputError(path / MANIFEST, f"written by a newer edgecut (schema {manifest.schema_version})",
                         "upgrade edgecut")
    root = path.resolve()
    for name in (manifest.model_file, *manifest.files):
        if not (path / name).resolve().is_relative_to(root):
            raise UnsafeFileError(path / MANIFEST, f"file {name!r} lies outside the artifact folder",
                                  "an artifact's files must be inside its folder")
    art = Artifact(path, manifest)
    if not art.model_path.is_file():
        raise InputError(art.model_path, "model file named in edgecut.json is missing",
                         "copy the whole artifact folder")
    if verify:
        art.verify()
    return art


def write_artifact(path: str | os.PathLike, manifest: Manifest, files: Mapping[str, bytes | Path]) -> Artifact:
    """Write model files atomically, then the manifest (with sizes and sha256) last.

    ``files`` maps names inside the artifact to bytes or to a finished file to move in.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    entries: dict[str, FileEntry] = {}
    for name, content in files.items():
        dest = path / name
        if isinstance(content, (bytes, bytearray)):
            io.write_bytes(dest, bytes(content))
        else:
            os.replace(content, dest)
        entries[name] = FileEntry(sha256=io.sha256_file(dest), size=dest.stat().st_size)
    tools = manifest.tools or tool_versions()
    manifest = manifest.model_copy(update={"files": {**manifest.files, **entries}, "tools": tools})
    io.write_json(path / MANIFEST, manifest.model_dump(mode="json"))
    return Artifact(path, manifest)


def tool_versions(*extra: str) -> dict[str, str]:
    """Versions of the tools that made an artifact."""
    out = {"python": platform.python_version()}
    for dist in ("edgecut", "torch", "torchvision", "numpy", "onnx", "onnxruntime", *extra):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out
