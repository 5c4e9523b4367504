"""Runners: one way to execute a model on every backend.

``load(artifact, device, threads) -> Runner``; ``runner(batch)`` takes a float32 NCHW numpy
batch already normalised per the ModelSpec and returns the one-channel output (N x 1 x H x W)
as numpy (the contract is in :mod:`edgecut.runtime.base`). Benchmarks, accuracy, parity checks
and ``edgecut remove`` go through Runners only. Each backend's module is imported only when an
artifact of its format is loaded.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgecut.artifact import Artifact, load_artifact
from edgecut.runtime.base import BACKENDS, FORMAT_BACKENDS, AtSize, Runner, backend_for, checked_batch, spec_at

__all__ = ["load", "Runner", "BACKENDS", "FORMAT_BACKENDS", "AtSize", "backend_for", "checked_batch", "spec_at"]


def load(artifact: Artifact | str | os.PathLike, device: str = "cpu", threads: int | None = None,
         backend: str | None = None) -> Runner:
    """A Runner for ``artifact`` on ``device``; the backend follows the artifact's format.

    A bare ``.onnx`` or ``.ort`` file written by edgecut (its spec in its metadata) also loads, and so
    does a bare OpenVINO ``.xml`` (its spec in ``rt_info``, its ``.bin`` beside it)."""
    if not isinstance(artifact, Artifact) and Path(artifact).suffix in (".onnx", ".ort") and Path(artifact).is_file():
        from edgecut.runtime.onnxruntime_runner import OnnxRuntimeRunner

        return OnnxRuntimeRunner(artifact, device=device, threads=threads)
    if not isinstance(artifact, Artifact) and Path(artifact).suffix == ".xml" and Path(artifact).is_file():
        from edgecut.runtime.openvino_runner import OpenVinoRunner

        return OpenVinoRunner(artifact, device=device, threads=threads)
    art = artifact if isinstance(artifact, Artifact) else load_artifact(Path(artifact))
    backend = backend_for(art, backend)
    if backend == "torch":
        from edgecut.runtime.torch_runner import TorchRunner

        return TorchRunner.from_artifact(art, device=device, threads=threads)
    if backend == "onnxruntime":
        from edgecut.runtime.onnxruntime_runner import OnnxRuntimeRunner

        return OnnxRuntimeRunner.from_artifact(art, device=device, threads=threads)
    if backend == "openvino":
        from edgecut.runtime.openvino_runner import OpenVinoRunner

        return OpenVinoRunner.from_artifact(art, device=device, threads=threads)
    if backend == "executorch":
        from edgecut.runtime.executorch_runner import ExecuTorchRunner

        return ExecuTorchRunner.from_artifact(art, device=device, threads=threads)
    if backend == "litert":
        from edgecut.runtime.litert_runner import LiteRTRunner

        return LiteRTRunner.from_artifact(art, device=device, threads=threads)
    if backend == "opencv":
        from edgecut.runtime.classical_runner import ClassicalRunner

        return ClassicalRunner.from_artifact(art, device=device, threads=threads)
    if backend == "ncnn":
        from edgecut.runtime.ncnn_runner import NcnnRunner

        return NcnnRunner.from_artifact(art, device=device, threads=threads)
    from edgecut.runtime.tensorrt_runner import TensorRTRunner

    return TensorRTRunner.from_artifact(art, device=device, threads=threads)
