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
import hashlib
import math
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgecut import io
from edgecut.formats import FORMATS
from edgecut.errors import EdgecutError, InputError, NonFiniteOutput, UnsafeFileError

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
        if v[0] * v[1] > io.MAX_PIXELS:  # a batch of one would not fit in memory
            raise ValueError(f"input_size {v[0]}x{v[1]} is above the cap of {io.MAX_PIXELS} pixels that "
                             "edgecut reads images at")
        return v

    @field_validator("size_divisor")
    @classmethod
    def _divisor(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"size_divisor must be at least 1, got {v}")
        return v

    @field_validator("scale", "std")
    @classmethod
    def _nonzero(cls, v):
        values = v if isinstance(v, tuple) else (v,)
        if not all(math.isfinite(x) and x > 0 for x in values):
            raise ValueError(f"must be positive and finite (it divides or scales every pixel), got {v}")
        return v

    @field_validator("mean")
    @classmethod
    def _finite(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(math.isfinite(x) for x in v):
            raise ValueError(f"must be finite, got {v}")
        return v

    @field_validator("threshold")
    @classmethod
    def _probability(cls, v: float) -> float:
        if not 0.0 < v < 1.0:
            raise ValueError(f"threshold is a probability strictly between 0 and 1, got {v}")
        return v

    @model_validator(mode="after")
    def _finite_pixels(self) -> ModelSpec:
        # preprocess's own float32 arithmetic at the darkest and brightest pixel: a scale, mean or std
        # that overflows it (1e308, 1e-300) would feed the model infinities, and ReLU can turn those
        # into finite but meaningless masks
        with np.errstate(all="ignore"):
            gain, offset = self._affine()
            values = np.array([[0.0], [255.0]], np.float32) * gain + offset
        if not np.isfinite(values).all():
            raise ValueError(f"scale {self.scale}, mean {self.mean} and std {self.std} overflow float32: preprocessed "
                             "pixels would be infinite")
        return self

    def with_size(self, size: int | Sequence[int]) -> ModelSpec:
        """The same spec at another input size (rounded up to the size divisor), checked as a spec is
        (a size that is not positive, or above the pixel cap, is one :class:`EdgecutError`)."""
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        d = self.size_divisor
        try:
            return self.model_validate({**self.model_dump(), "input_size": (-(-h // d) * d, -(-w // d) * d)})
        except ValidationError as e:
            raise EdgecutError(f"input size {h}x{w}: {first_error(e, with_field=False)}") from None

    def preprocess(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """HxWx3 uint8 RGB image(s) -> float32 NCHW batch at ``input_size``, normalised."""
        import cv2

        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = [images]
        h, w = self.input_size
        batch = np.empty((len(images), 3, h, w), dtype=np.float32)
        gain, offset = (v[:, None, None] for v in self._affine())
        for i, img in enumerate(images):
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise ValueError(f"expected HxWx3 uint8 RGB, got {img.shape} {img.dtype}")
            interp = cv2.INTER_AREA if img.shape[0] > h or img.shape[1] > w else cv2.INTER_LINEAR
            x = cv2.resize(img, (w, h), interpolation=interp)
            # one multiply-add per plane, written into the batch: (x * scale - mean) / std with its
            # channels last took 2 ms at 320 px, this 0.2 (the result within 1e-6)
            np.multiply(x.transpose(2, 0, 1), gain, out=batch[i])
            batch[i] += offset
        return batch

    def _affine(self) -> tuple[np.ndarray, np.ndarray]:
        """Per channel, preprocess's gain and offset: ``pixel * gain + offset`` is ``(pixel * scale - mean) / std``."""
        std = np.asarray(self.std, np.float64)
        gain = (self.scale / std).astype(np.float32)
        offset = (-np.asarray(self.mean, np.float64) / std).astype(np.float32)
        return gain, offset

    def to_probability(self, output: np.ndarray) -> np.ndarray:
        """Model output (N x 1 x H x W) -> probabilities N x H x W in [0, 1], float32."""
        out = np.asarray(output, dtype=np.float32)
        if out.ndim == 4:
            if out.shape[1] != 1:
                raise ValueError(f"expected one output channel, got shape {out.shape}")
            out = out[:, 0]
        bad = np.isnan(out) if self.output == "logits" else ~np.isfinite(out)  # an infinite logit is a sure 0 or 1
        if bad.any():
            raise NonFiniteOutput(f"the model's output holds {int(bad.sum())} NaN or infinite value(s) in "
                                  f"{out.size} pixels: its weights are broken, or its spec divides by zero "
                                  "(check mean/std/scale in edgecut.json)")
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


class Arch(BaseModel):
    """How to build the module: a registered architecture (its builder's name) or a user's class
    (``class_path``), its options, the layers pruning resized, and which output to read."""

    model_config = ConfigDict(extra="forbid")

    name: str  # registry name; for a user's class, the class's name (shown, not used to build)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    channels: dict[str, dict[str, int]] | None = None  # layer -> channel counts (models/channels.py)
    class_path: str | None = None  # "package.module:Class", or "/abs/path/file.py:Class" (see models/store.py)
    class_sha256: str | None = None  # of the class's file when class_path names a file: it must not change
    output: dict[str, int | str] | None = None  # {"index": N} | {"key": NAME}, and/or {"channel": C}

    @field_validator("output")
    @classmethod
    def _output(cls, v: dict[str, int | str] | None) -> dict[str, int | str] | None:
        if v is not None:
            unknown = set(v) - {"index", "key", "channel"}
            if unknown or ("index" in v and "key" in v) or not v:
                raise ValueError(f"output selection {v}: give index or key, and/or channel")
        return v


class Manifest(BaseModel):
    """The contents of ``edgecut.json``."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    format: str  # a row of edgecut.formats.FORMATS: torch, torchscript, pt2, onnx, ort, openvino, ncnn, tflite, ...
    precision: str = "fp32"  # one that the format holds (its row's precisions)
    model_file: str  # name of the model file inside the artifact directory
    arch: dict[str, Any] | None = None  # {"name", "kwargs", "channels"?, "class_path"?, ...}: how to build it (Arch)
    spec: ModelSpec  # how to feed the model: never guessed
    params: int | None = Field(default=None, ge=0)
    macs: int | None = Field(default=None, ge=0)  # multiply-accumulates of one image at spec.input_size
    lineage: list[Step] = Field(default_factory=list)
    files: dict[str, FileEntry] = Field(default_factory=dict)
    tools: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)  # e.g. {"val": {...}, "data": "..."}
    created: str = Field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

    @field_validator("arch")
    @classmethod
    def _arch(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            Arch.model_validate(v)  # the shape only; the builder checks its options' values
        return v

    @model_validator(mode="after")
    def _format_holds_precision(self) -> Manifest:
        row = FORMATS.get(self.format)
        if row is None:
            raise ValueError(f"format {self.format!r} is not one edgecut knows ({', '.join(FORMATS)})")
        allowed = row.precisions
        if self.precision not in allowed:
            raise ValueError(f"a {self.format} model is {' / '.join(allowed)}, not precision {self.precision!r}")
        return self


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
        """The model's identity (lineage, bench records, caches): its model file's sha256 when that is the
        only file, else one digest over every file's name and sha256. ncnn's and OpenVINO's graph files
        do not hold the weights, so an FP16 or INT8 model can share its graph file with the FP32 one."""
        files = self.manifest.files
        if set(files) - {self.manifest.model_file}:
            return hashlib.sha256("".join(f"{name} {files[name].sha256}\n" for name in sorted(files)).encode()).hexdigest()
        entry = files.get(self.manifest.model_file)
        return entry.sha256 if entry else io.sha256_file(self.model_path)

    def verify(self) -> None:
        """Check every listed file (the model file must be one) against its recorded size and sha256."""
        if self.manifest.model_file not in self.manifest.files:
            raise InputError(self.path / MANIFEST, f"lists no sha256 for its model file {self.manifest.model_file!r}",
                             "re-export or restore the artifact")
        for name, entry in self.manifest.files.items():
            p = self.path / name
            if not p.is_file():
                raise InputError(p, "listed in edgecut.json but missing", "copy the whole artifact folder")
            fix = "re-export or restore it (or pass --no-verify if you changed it on purpose)"
            if p.stat().st_size != entry.size:
                raise InputError(p, f"is {p.stat().st_size} bytes but edgecut.json says {entry.size}: truncated or "
                                 "modified", fix)
            if verified_sha256(p) != entry.sha256:
                raise InputError(p, "does not match the sha256 in edgecut.json: modified or corrupt", fix)


NO_VERIFY = "EDGECUT_NO_VERIFY"  # set to 1 (edgecut --no-verify): artifacts load without checking their files
_HASHED: dict[tuple, str] = {}  # (path, size, mtime, inode) -> sha256: each file is hashed once per process


def verification_on() -> bool:
    return os.environ.get(NO_VERIFY, "") in ("", "0")


def verified_sha256(path: Path) -> str:
    """The sha256 of ``path``, computed once per process for a file that has not changed since."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _HASHED:
        _HASHED[key] = io.sha256_file(path)
    return _HASHED[key]


def first_error(e: ValidationError, whole: str = "spec", with_field: bool = True) -> str:
    """A validation error's first problem in words: ``field.path: message`` (``whole`` when it is no one field's)."""
    first = e.errors()[0]
    msg = first["msg"].removeprefix("Value error, ")
    if not with_field:
        return msg
    return f"{'.'.join(str(x) for x in first['loc']) or whole}: {msg}"


def spec_from_json(text: str | bytes, path: str | os.PathLike, where: str) -> ModelSpec:
    """The ModelSpec a model file carries as JSON (in ``where``: ONNX metadata_props, OpenVINO rt_info),
    or one :class:`InputError` naming the file when that JSON is not a valid spec."""
    if len(text) > 1 << 20:
        raise InputError(path, f"its edgecut spec in its {where} is {len(text)} bytes long, not a spec",
                         "re-export it, or give the artifact folder with its edgecut.json")
    try:
        return ModelSpec.model_validate_json(text)
    except ValidationError as e:
        raise InputError(path, f"invalid edgecut spec in its {where}: {first_error(e)}",
                         "re-export it, or give the artifact folder with its edgecut.json") from None


def is_artifact(path: str | os.PathLike) -> bool:
    return (Path(path) / MANIFEST).is_file()


def load_artifact(path: str | os.PathLike, verify: bool | None = None) -> Artifact:
    """Read and validate ``path/edgecut.json``; check every file against it (``verify``, default: unless
    ``EDGECUT_NO_VERIFY`` is set) before anything uses them."""
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
        raise InputError(path / MANIFEST, f"invalid manifest: {first_error(e, 'manifest')}",
                         "restore edgecut.json, or re-create the artifact") from None
    if manifest.schema_version > SCHEMA_VERSION:
        raise InputError(path / MANIFEST, f"written by a newer edgecut (schema {manifest.schema_version})",
                         "upgrade edgecut")
    root = path.resolve()
    for name in (manifest.model_file, *manifest.files):
        shown = repr(name) if len(name) <= 300 else f"{name[:100]!r}... ({len(name)} characters)"
        try:
            where = (path / name).resolve()
            (path / name).exists()  # a name too long for the file system passes resolve() and fails here
        except (OSError, ValueError, RuntimeError) as e:  # a NUL byte, a name too long, a symlink loop (3.11)
            raise InputError(path / MANIFEST, f"file {shown} cannot be opened ({io.first_line(e, 80)})",
                             "restore edgecut.json, or re-create the artifact") from None
        if not where.is_relative_to(root):
            raise UnsafeFileError(path / MANIFEST, f"file {shown} lies outside the artifact folder",
                                  "an artifact's files must be inside its folder")
        if where == root:
            raise InputError(path / MANIFEST, f"file {shown} names the artifact folder itself, not a file in it",
                             "restore edgecut.json, or re-create the artifact")
    art = Artifact(path, manifest)
    if not art.model_path.is_file():
        raise InputError(art.model_path, "model file named in edgecut.json is missing",
                         "copy the whole artifact folder")
    if verification_on() if verify is None else verify:
        art.verify()
    return art


def write_artifact(path: str | os.PathLike, manifest: Manifest, files: Mapping[str, bytes | Path]) -> Artifact:
    """Write model files atomically, then the manifest (with sizes and sha256) last.

    ``files`` maps names inside the artifact to bytes or to a finished file to move in.
    """
    path = Path(path)
    io.make_dirs(path)
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
