"""The one format table: every model format edgecut reads, writes or runs, and everything about it.

A row names its precisions, the backend and Runner that run it here (``"module:attr"``, resolved
by :func:`edgecut._optional.load`), the function that exports to it, the packages both need, what it
cannot do and why, and the runtime a device bundle runs it with. Nothing here imports a backend, so
every layer reads the table cheaply. A new format is one row, its exporter module and its Runner.
"""

from __future__ import annotations

from dataclasses import dataclass

TORCH_SOURCES = ("torch", "torchscript", "pt2")  # formats torch loads as modules
ONNX_PARENTS = (*TORCH_SOURCES, "onnx")


@dataclass(frozen=True)
class Format:
    """One row of the table."""

    name: str
    suffix: str  # of its model file
    precisions: tuple[str, ...]  # what its model file can hold
    backend: str | None  # what runs it here (None: nothing here can; ``not_run_here`` says why)
    runner: str | None  # "module:Class" of its Runner (``from_artifact(art, device, threads)``)
    runtime_module: str | None = None  # import name the backend needs
    exporter: str | None = None  # "module:function" writing it: ``fn(parent, workdir, config) -> Exported``
    # (None: edgecut reads or runs the format but does not export to it)
    devices: tuple[str, ...] = ("cpu",)  # where its Runner executes
    extra: str | None = None  # pip extra of edgecut that installs what it needs
    modules: tuple[str, ...] = ()  # import names an export to it needs
    int8_modules: tuple[str, ...] = ()  # ... and what its INT8 needs besides
    converter_env: str | None = None  # converter environment its export runs in (edgecut env setup NAME)
    parents: tuple[str, ...] = ("torch",)  # formats it converts from
    groups: tuple[str, ...] = ()  # format-specific ExportConfig groups it reads (others must stay default)
    why_not: tuple[tuple[str, str], ...] = ()  # (precision, reason) for precisions it refuses with a reason
    fixed_size: str | None = None  # why --dynamic is refused (None: it takes dynamic H and W)
    minmax_only: str | None = None  # INT8 calibrates min/max over every op (what does it); None: all methods
    accuracy_control: bool = False  # INT8 that keeps layers in float until an IoU budget holds
    not_run_here: str | None = None  # why no Runner exists on this kind of machine
    device_package: str | None = None  # pip package a bundle's runner.py runs it with on a device

    def needs(self, precision: str) -> tuple[str, ...]:
        """The import names an export at ``precision`` needs (checked before any work)."""
        return self.modules + (self.int8_modules if precision == "int8" else ())


def _torch_source(name: str, suffix: str, precisions: tuple[str, ...] = ("fp32",)) -> Format:
    return Format(name, suffix, precisions, "torch", "edgecut.runtime.torch_runner:TorchRunner", "torch",
                  devices=("cpu", "cuda"))


FORMATS: dict[str, Format] = {
    "torch": _torch_source("torch", ".safetensors", ("fp32", "bf16", "fp16")),  # bf16 / fp16 run under autocast
    "torchscript": _torch_source("torchscript", ".pt"),
    "pt2": _torch_source("pt2", ".pt2"),  # a torch.export program (torch.export.save)
    "onnx": Format("onnx", ".onnx", ("fp32", "fp16", "int8"), "onnxruntime",
                   "edgecut.runtime.onnxruntime_runner:OnnxRuntimeRunner", "onnxruntime",
                   "edgecut.exporters.onnx:export_onnx", ("cpu", "cuda", "tensorrt"), "onnx", ("onnx", "onnxruntime"),
                   parents=ONNX_PARENTS, groups=("onnx",), device_package="onnxruntime"),
    # ONNX Runtime mobile: the ONNX model at that precision, converted by onnxruntime's own tool
    "ort": Format("ort", ".ort", ("fp32", "fp16", "int8"), "onnxruntime",
                  "edgecut.runtime.onnxruntime_runner:OnnxRuntimeRunner", "onnxruntime",
                  "edgecut.exporters.ort_mobile:export_ort", extra="onnx", modules=("onnx", "onnxruntime"),
                  parents=ONNX_PARENTS, device_package="onnxruntime"),
    # via the fp32 ONNX; INT8 by NNCF
    "openvino": Format("openvino", ".xml", ("fp32", "fp16", "int8"), "openvino",
                       "edgecut.runtime.openvino_runner:OpenVinoRunner", "openvino",
                       "edgecut.exporters.openvino:export_openvino", extra="openvino", modules=("onnx", "openvino"),
                       int8_modules=("nncf",), parents=ONNX_PARENTS, groups=("openvino",), accuracy_control=True,
                       device_package="openvino"),
    # ncnn's graph + weights, traced by torch.jit and converted by the pnnx binary; INT8 as ncnn's tools do
    "ncnn": Format("ncnn", ".param", ("fp32", "fp16", "int8"), "ncnn", "edgecut.runtime.ncnn_runner:NcnnRunner", "ncnn",
                   "edgecut.exporters.ncnn:export_ncnn", extra="ncnn", modules=("pnnx", "ncnn"),
                   parents=("torch", "torchscript"), device_package="ncnn"),
    # LiteRT: litert-torch in edgecut's litert converter environment; run here by ai-edge-litert
    "tflite": Format("tflite", ".tflite", ("fp32", "fp16", "int8"), "litert",
                     "edgecut.runtime.litert_runner:LiteRTRunner", "ai_edge_litert",
                     "edgecut.exporters.litert:export_litert", extra="litert", modules=("ai_edge_litert",),
                     converter_env="litert", groups=("litert",),
                     fixed_size="LiteRT exports have a fixed input size here",
                     minmax_only="LiteRT INT8 calibrates with min/max ranges over every supported op",
                     device_package="ai-edge-litert"),
    # ExecuTorch: torch.export, lowered to XNNPACK; INT8 by PT2E with the XNNPACK quantizer
    "executorch": Format("executorch", ".pte", ("fp32", "int8"), "executorch",
                         "edgecut.runtime.executorch_runner:ExecuTorchRunner", "executorch",
                         "edgecut.exporters.executorch:export_executorch", extra="executorch", modules=("executorch",),
                         fixed_size="ExecuTorch exports have a fixed input size here",
                         minmax_only="ExecuTorch INT8 calibrates with min/max observers over every quantisable op",
                         why_not=(("fp16", "XNNPACK runs fp16 on ARM cores that have it; edgecut exports "
                                           "fp32 or int8 ExecuTorch programs"),)),
    # an ML program for iOS / macOS, via torch.export; nothing on Linux runs it: no Runner, no parity here
    "coreml": Format("coreml", ".mlpackage", ("fp32", "fp16", "int8"), None, None,
                     exporter="edgecut.exporters.coreml:export_coreml", devices=(), extra="coreml",
                     modules=("coremltools",), fixed_size="Core ML exports have a fixed input size (the Neural "
                     "Engine compiles fixed shapes)",
                     not_run_here="Core ML models run on Apple devices only (iOS, macOS): coremltools has no Core ML "
                                  "runtime on Linux; open model.mlpackage in Xcode, or run it with coremltools on a "
                                  "Mac"),
    # an engine built on this machine's CUDA GPU from the (fp32 or Q/DQ int8) ONNX; parity runs with --device cuda
    "tensorrt": Format("tensorrt", ".engine", ("fp32", "fp16", "int8"), "tensorrt",
                       "edgecut.runtime.tensorrt_runner:TensorRTRunner", "tensorrt",
                       "edgecut.exporters.tensorrt:export_tensorrt", ("cuda",), "tensorrt", ("tensorrt",),
                       parents=ONNX_PARENTS, groups=("tensorrt",)),
    # a classical baseline (Otsu, GrabCut): model.json names the method (edgecut.classical)
    "classical": Format("classical", ".json", ("fp32",), "opencv", "edgecut.runtime.classical_runner:ClassicalRunner",
                        "cv2"),
}

EXPORT_FORMATS = {name: f for name, f in FORMATS.items() if f.exporter is not None}
BACKENDS = tuple(dict.fromkeys(f.backend for f in FORMATS.values() if f.backend))
BUNDLED = tuple(name for name, f in FORMATS.items() if f.device_package)  # what a bundle's runner.py runs
