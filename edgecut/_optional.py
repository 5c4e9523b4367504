"""Lazy imports: heavy optional backends with an install hint (:func:`require`), and ``"module:attr"``
references (:func:`load`). ``import edgecut`` must stay fast: OpenVINO, TensorRT, onnxruntime and
friends are imported inside the functions that need them.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from edgecut.errors import MissingBackendError

# import name -> the pip extra of edgecut that installs it
EXTRAS: dict[str, str] = {
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "onnxslim": "onnx",
    "openvino": "openvino",
    "nncf": "openvino",
    "tensorrt": "tensorrt",
    "torch_pruning": "prune",
    "pnnx": "ncnn",
    "ncnn": "ncnn",
    "coremltools": "coreml",
    "ai_edge_litert": "litert",
    "executorch": "executorch",
}


def available(module: str) -> bool:
    """Whether ``module`` can be imported here, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def ensure(module: str, purpose: str = "") -> None:
    """Raise one clear error naming the extra to install unless ``module`` is installed (without importing it)."""
    if not available(module):
        extra = EXTRAS.get(module.split(".")[0])
        how = f"pip install 'edgecut[{extra}]'" if extra else f"pip install {module}"
        why = f" for {purpose}" if purpose else ""
        raise MissingBackendError(f"{module} is needed{why} but is not installed: {how}")


def require(module: str, purpose: str = "") -> ModuleType:
    """Import an optional backend or raise one clear error naming the extra to install."""
    ensure(module, purpose)
    return importlib.import_module(module)


def load(ref: str):
    """What a ``"package.module:attr"`` reference names, imported on first use: the one way edgecut loads
    lazily (the format table's exporters and Runners, the step table's functions and configs, the public API)."""
    module, _, attr = ref.partition(":")
    obj = importlib.import_module(module)
    return getattr(obj, attr) if attr else obj
