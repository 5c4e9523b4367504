"""What an export is asked to do: :class:`ExportConfig` and its groups, and what a format function returns.

Format functions (``fn(parent, workdir, config) -> Exported``) read these; nothing here imports a
backend, so the format table and the command line can describe every option cheaply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from edgecut.artifact import ModelSpec
from edgecut.errors import EdgecutError

PRECISIONS = ("fp32", "fp16", "int8")
CALIB_METHODS = ("minmax", "entropy", "percentile")  # each backend says which it implements


@dataclass(frozen=True)
class CalibConfig:
    """Where INT8 activation ranges come from."""

    data: Path | None = None  # image folder (or data set root with images/); None: synthetic product photos
    count: int = 64  # images drawn from the folder (seeded; all of them when it holds fewer)
    split: str | None = None  # only this split of a data set folder (e.g. train: calibrate on what you train on)
    method: str = "minmax"  # minmax | entropy | percentile
    percentile: float = 99.999  # percentile method: share of |activations| kept inside the range
    exclude_nodes: tuple[str, ...] = ()  # node names left in float
    exclude_op_types: tuple[str, ...] = ()  # op types left in float (e.g. "Resize")


@dataclass(frozen=True)
class ParityConfig:
    """What the export is compared with its parent on, and how close it must be (:mod:`edgecut.exporters.parity`)."""

    data: Path | None = None  # images (a folder, or a data set with images/ [+ masks/]); None: synthetic photos
    count: int | None = None  # images drawn from it (seeded); None: all of a folder, 8 synthetic ones
    split: str | None = None  # only this split of a data set folder (e.g. val)
    tolerances: Mapping[str, float] = field(default_factory=dict)  # overrides of the precision's defaults


@dataclass(frozen=True)
class OnnxOptions:
    """ONNX settings beyond the opset; see :mod:`edgecut.exporters.onnx`."""

    rembg: bool = False  # the file rembg runs as a custom model (u2net_custom): 320 x 320, the probability out


@dataclass(frozen=True)
class OpenVinoOptions:
    """OpenVINO INT8 (NNCF) settings; see :mod:`edgecut.exporters.openvino`."""

    preset: str = "mixed"  # mixed: symmetric weights, asymmetric activations | performance: symmetric both
    max_drop: float | None = None  # accuracy control: largest absolute drop of mean mask IoU; None: plain PTQ
    val_data: Path | None = None  # images + masks the drop is measured on; None: the parity folder, else synthetic
    val_split: str | None = None  # only this split of val_data


@dataclass(frozen=True)
class TensorRTOptions:
    """How an engine is built; see :mod:`edgecut.exporters.tensorrt`."""

    max_batch: int = 8  # largest batch of the optimization profile (optimised for batch 1)
    workspace_mib: int = 1024  # builder scratch memory limit
    int8_source: Literal["qdq", "calibrator"] = "qdq"  # explicit Q/DQ (preferred) or implicit calibration
    machine_cache: bool = True  # reuse and update the per-machine timing cache


@dataclass(frozen=True)
class LiteRTOptions:
    """LiteRT INT8 settings; see :mod:`edgecut.exporters.litert_worker`."""

    int8: Literal["static", "dynamic"] = "static"  # static: full-integer, calibrated | dynamic: int8 weights,
    # activations quantised at run time (no calibration; measured 3.4x slower than FP32 on x86 XNNPACK)


@dataclass(frozen=True)
class ExportConfig:
    """One export: the format and precision, and how it is made and checked."""

    format: str = "onnx"  # a key of edgecut.exporters.FORMATS
    precision: str = "fp32"  # fp32 | fp16 | int8
    dynamic: bool = False  # batch is always dynamic; True also lets H and W vary
    opset: int | None = None  # None: the format's default
    simplify: bool = True  # run the format's graph simplifier when installed (onnxslim for ONNX)
    calib: CalibConfig = CalibConfig()
    parity: ParityConfig = ParityConfig()
    onnx: OnnxOptions = OnnxOptions()  # read by the onnx format only
    openvino: OpenVinoOptions = OpenVinoOptions()  # read by the openvino format only
    tensorrt: TensorRTOptions = TensorRTOptions()  # read by the tensorrt format only
    litert: LiteRTOptions = LiteRTOptions()  # read by the tflite format only
    require_faster: bool = False  # refuse an export slower than its parent on this machine
    device: str = "cpu"  # where the parity and speed checks run: cpu | cuda[:N] | tensorrt[:N]
    threads: int | None = None  # threads of both runners during the checks
    seed: int = 0  # picks the calibration and parity images
    overwrite: bool = False  # replace a non-empty out folder

    def set_options(self, group: str) -> list[str]:
        """The options of a format-specific group (onnx, openvino, tensorrt, litert) set to anything but their defaults."""
        given, default = getattr(self, group), type(getattr(self, group))()
        return [f.name for f in fields(given) if getattr(given, f.name) != getattr(default, f.name)]

    def validate(self) -> None:
        if self.precision not in PRECISIONS:
            raise EdgecutError(f"precision {self.precision!r}: use {', '.join(PRECISIONS)}")
        if self.calib.method not in CALIB_METHODS:
            raise EdgecutError(f"calibration method {self.calib.method!r}: use {', '.join(CALIB_METHODS)}")
        if self.litert.int8 not in ("static", "dynamic"):
            raise EdgecutError(f"litert int8 {self.litert.int8!r}: use static or dynamic")
        if self.calib.count < 1:
            raise EdgecutError(f"calib_count must be at least 1, got {self.calib.count}")
        from edgecut.training.config import check_range

        check_range("calib count", self.calib.count, 1, 100_000, integer=True)
        if self.parity.count is not None:
            check_range("parity count", self.parity.count, 1, 100_000, integer=True)
        if self.threads is not None:
            check_range("threads", self.threads, 1, 4096, integer=True)
        check_range("seed", self.seed, integer=True)


FORMAT_GROUPS = ("onnx", "openvino", "tensorrt", "litert")  # ExportConfig fields that only their format reads


@dataclass
class Exported:
    """What a format function wrote into the staging folder."""

    files: dict[str, Path]  # name inside the artifact -> finished file in the staging folder
    model_file: str  # which of them is the model
    spec: ModelSpec  # how to feed it (dynamic_size follows the export)
    params: dict[str, Any] = field(default_factory=dict)  # settings recorded in the lineage step
    metrics: dict[str, Any] = field(default_factory=dict)  # e.g. {"calibration": {...}}
    notes: list[str] = field(default_factory=list)  # things the user should read
    tools: tuple[str, ...] = ()  # extra distributions whose versions go into the manifest
