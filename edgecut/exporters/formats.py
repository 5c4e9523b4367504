"""The format table: one row per export format, one plain function each.

:data:`FORMATS` maps a format name to an :class:`ExportFormat`: its file suffix, the
precisions and devices it supports, the extra it needs, the formats it converts from, and the
function that writes its model file (``fn(parent, workdir, config) -> Exported``; the idea of
ultralytics' ``export_formats()``, as a dict of small dataclasses). The functions import their
backends when called, so reading the table stays cheap; a new format is one row and one function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgecut.artifact import FORMAT_PRECISIONS, Artifact
from edgecut.exporters.options import ExportConfig, Exported


@dataclass(frozen=True)
class ExportFormat:
    """One row of the format table."""

    name: str
    suffix: str  # suffix of the model file
    precisions: tuple[str, ...]
    devices: tuple[str, ...]  # where its Runner executes (none: nothing here runs it, see runtime.base.NOT_RUN_HERE)
    extra: str | None  # pip extra of edgecut that installs its backend (None: core only)
    modules: tuple[str, ...]  # import names that must be present to export
    fn: Callable[[Artifact, Path, ExportConfig], Exported]
    parents: tuple[str, ...] = ("torch",)  # formats it converts from
    groups: tuple[str, ...] = ()  # format-specific ExportConfig groups it reads (others must stay default)
    why_not: tuple[tuple[str, str], ...] = ()  # (precision, reason) for precisions it refuses with a reason
    fixed_size: str | None = None  # why --dynamic is refused (None: the format takes dynamic H and W)
    minmax_only: str | None = None  # INT8 calibrates min/max over every op (what does it); None: all methods
    int8_modules: tuple[str, ...] = ()  # import names INT8 needs besides ``modules``
    converter_env: str | None = None  # converter environment it runs in (edgecut env setup NAME)

    def needs(self, precision: str) -> tuple[str, ...]:
        """The import names an export at ``precision`` needs (checked before any work)."""
        return self.modules + (self.int8_modules if precision == "int8" else ())


def _onnx(parent: Artifact, workdir: Path, config: ExportConfig) -> Exported:
    from edgecut.exporters.onnx import export_onnx

    return export_onnx(parent, workdir, config)


def _openvino(parent: Artifact, workdir: Path, config: ExportConfig) -> Exported:
    from edgecut.exporters.openvino import export_openvino

    return export_openvino(parent, workdir, config)


def _ort(parent: Artifact, workdir: Path, config: ExportConfig) -> Exported:
    from edgecut.exporters.ort_mobile import export_ort

    return export_ort(parent, workdir, config)


def _ncnn(parent: Artifact, workdir: Path, config: ExportConfig) -> Exported:
    from edgecut.exporters.ncnn import export_ncnn

    return export_ncnn(parent, workdir, config)


def _tflite(parent: Artifact, workdir: Path, config: ExportConfig) -> Exported:
    from edgecut.exporters.litert import export_litert

    return export_litert(parent, workdir, config)


def _executorch(parent: Artifact, workdir: Path, config: ExportConfig) -> Exported:
    from edgecut.exporters.executorch import export_executorch

    return export_executorch(parent, workdir, config)


def _coreml(parent: Artifact, workdir: Path, config: ExportConfig) -> Exported:
    from edgecut.exporters.coreml import export_coreml

    return export_coreml(parent, workdir, config)


def _tensorrt(parent: Artifact, workdir: Path, config: ExportConfig) -> Exported:
    from edgecut.exporters.tensorrt import export_tensorrt

    return export_tensorrt(parent, workdir, config)


FORMATS: dict[str, ExportFormat] = {
    "onnx": ExportFormat("onnx", ".onnx", FORMAT_PRECISIONS["onnx"], ("cpu", "cuda", "tensorrt"), "onnx",
                         ("onnx", "onnxruntime"), _onnx, parents=("torch", "torchscript", "pt2", "onnx"),
                         groups=("onnx",)),
    # ONNX Runtime mobile: the ONNX model at that precision, converted by onnxruntime's own tool
    "ort": ExportFormat("ort", ".ort", FORMAT_PRECISIONS["ort"], ("cpu",), "onnx", ("onnx", "onnxruntime"), _ort,
                        parents=("torch", "torchscript", "pt2", "onnx")),
    # via the fp32 ONNX; int8 also needs nncf (checked when quantising: fp32 / fp16 do without it)
    "openvino": ExportFormat("openvino", ".xml", FORMAT_PRECISIONS["openvino"], ("cpu",), "openvino",
                             ("onnx", "openvino"), _openvino, parents=("torch", "torchscript", "pt2", "onnx"), groups=("openvino",),
                             int8_modules=("nncf",)),
    # ncnn's graph + weights, traced by torch.jit and converted by the pnnx binary; int8 quantised as ncnn's tools do
    "ncnn": ExportFormat("ncnn", ".param", FORMAT_PRECISIONS["ncnn"], ("cpu",), "ncnn", ("pnnx", "ncnn"), _ncnn,
                         parents=("torch", "torchscript")),
    # LiteRT: litert-torch in edgecut's litert converter environment; run here by ai-edge-litert
    "tflite": ExportFormat("tflite", ".tflite", FORMAT_PRECISIONS["tflite"], ("cpu",), "litert", ("ai_edge_litert",),
                           _tflite, parents=("torch",), groups=("litert",), fixed_size="LiteRT exports have a fixed "
                           "input size here", minmax_only="LiteRT INT8 calibrates with min/max ranges over every "
                           "supported op", converter_env="litert"),
    # ExecuTorch: torch.export, lowered to XNNPACK; INT8 by PT2E with the XNNPACK quantizer
    "executorch": ExportFormat("executorch", ".pte", FORMAT_PRECISIONS["executorch"], ("cpu",), "executorch",
                               ("executorch",), _executorch, parents=("torch",),
                               fixed_size="ExecuTorch exports have a fixed input size here",
                               minmax_only="ExecuTorch INT8 calibrates with min/max observers over every quantisable op",
                               why_not=(("fp16", "XNNPACK runs fp16 on ARM cores that have it; edgecut exports "
                                                 "fp32 or int8 ExecuTorch programs"),)),
    # an ML program for iOS / macOS, via torch.export; Core ML cannot run on Linux: no Runner, no parity here
    "coreml": ExportFormat("coreml", ".mlpackage", FORMAT_PRECISIONS["coreml"], (), "coreml", ("coremltools",),
                           _coreml, parents=("torch",), fixed_size="Core ML exports have a fixed input size (the "
                           "Neural Engine compiles fixed shapes)"),
    # an engine built on this machine's CUDA GPU from the (fp32 or Q/DQ int8) ONNX; parity runs with --device cuda
    "tensorrt": ExportFormat("tensorrt", ".engine", FORMAT_PRECISIONS["tensorrt"], ("cuda",), "tensorrt",
                             ("tensorrt",), _tensorrt, parents=("torch", "torchscript", "pt2", "onnx"), groups=("tensorrt",)),
}
