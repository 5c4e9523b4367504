"""edgecut: make background-removal networks small and fast for edge devices, and prove it.

The public API, one name at a time. ``import edgecut`` is light: torch, onnxruntime,
OpenVINO and TensorRT are imported only when a function that needs them is first used.
"""

from __future__ import annotations

from typing import Any

from edgecut.steps import STEPS

__version__ = "0.1.0"

# public name -> module that defines it; every step's front function and config come from the step table
_API = {
    "EdgecutError": "edgecut.errors",
    "InputError": "edgecut.errors",
    "ModelError": "edgecut.errors",
    "MissingBackendError": "edgecut.errors",
    "ModelSpec": "edgecut.artifact",
    "Artifact": "edgecut.artifact",
    "load_artifact": "edgecut.artifact",
    "create_model": "edgecut.models.registry",
    "list_models": "edgecut.models.registry",
    "load_model": "edgecut.models.store",
    "save_model": "edgecut.models.store",
    "LoopConfig": "edgecut.training.config",
    "CalibConfig": "edgecut.exporters.config",
    "ParityConfig": "edgecut.exporters.config",
    "evaluate": "edgecut.measure.accuracy",
    "read_records": "edgecut.measure.record",
    "optimize": "edgecut.search.optimize",
    "OptimizeConfig": "edgecut.search.config",
    "STEPS": "edgecut.steps",
    "remove_background": "edgecut.cutout",
    "RemoveConfig": "edgecut.cutout",
    "Profile": "edgecut.targets.profiles",
    "load_profile": "edgecut.targets.profiles",
    "bundle": "edgecut.targets.bundle",
    "verify_bundle": "edgecut.targets.bundle",
    "SegMetrics": "edgecut.metrics",
}

_STEP_API = {ref.rpartition(":")[2]: ref for kind in STEPS.values() for ref in (kind.fn, kind.config_ref)}

__all__ = ["__version__", *_API, *_STEP_API]


def __getattr__(name: str) -> Any:
    from edgecut._optional import load

    ref = f"{_API[name]}:{name}" if name in _API else _STEP_API.get(name)
    if ref is None:
        raise AttributeError(f"module 'edgecut' has no attribute {name!r}")
    value = load(ref)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
