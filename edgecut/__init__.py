"""edgecut: make background-removal networks small and fast for edge devices, and prove it.

The public API, one name at a time. ``import edgecut`` is light: torch, onnxruntime,
OpenVINO and TensorRT are imported only when a function that needs them is first used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
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
    "ImportConfig": "edgecut.intake.config",
    "import_model": "edgecut.intake.importer",
    "LoopConfig": "edgecut.training.config",
    "TrainConfig": "edgecut.training.config",
    "train": "edgecut.training.run",
    "PruneConfig": "edgecut.compress.configs",
    "prune": "edgecut.compress.prune_run",
    "DistillConfig": "edgecut.compress.configs",
    "distill": "edgecut.compress.distill",
    "QATConfig": "edgecut.compress.configs",
    "qat": "edgecut.compress.qat",
    "ExportConfig": "edgecut.exporters.options",
    "CalibConfig": "edgecut.exporters.options",
    "ParityConfig": "edgecut.exporters.options",
    "export": "edgecut.exporters",
    "evaluate": "edgecut.measure.accuracy",
    "BenchConfig": "edgecut.measure.run",
    "bench": "edgecut.measure.run",
    "read_records": "edgecut.measure.record",
    "compare": "edgecut.report",
    "CompareConfig": "edgecut.report",
    "optimize": "edgecut.search.run",
    "OptimizeConfig": "edgecut.search.config",
    "baseline": "edgecut.classical",
    "BaselineConfig": "edgecut.classical",
    "synth": "edgecut.data.synth",
    "SynthConfig": "edgecut.data.synth",
    "STEPS": "edgecut.steps",
    "remove_background": "edgecut.cutout",
    "Profile": "edgecut.targets.profiles",
    "load_profile": "edgecut.targets.profiles",
    "bundle": "edgecut.targets.bundle",
    "verify_bundle": "edgecut.targets.bundle",
    "SegMetrics": "edgecut.metrics",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'edgecut' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
