"""Runners: one way to execute a model on every backend.

``load(artifact, device, threads) -> Runner``; ``runner(batch)`` takes a float32 NCHW numpy
batch already normalised per the ModelSpec and returns the one-channel output (N x 1 x H x W)
as numpy. Benchmarks, accuracy, parity checks and ``edgecut remove`` go through Runners only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

from edgecut.artifact import Artifact, ModelSpec, load_artifact
from edgecut.errors import ModelError


# artifact format -> default backend
BACKENDS = {"torch": "torch", "torchscript": "torch", "onnx": "onnxruntime", "openvino": "openvino",
            "tensorrt": "tensorrt"}


def checked_batch(batch: np.ndarray, path: os.PathLike | str, spec: ModelSpec,
                  fixed_hw: tuple[int | None, int | None] = (None, None)) -> np.ndarray:
    """``batch`` as contiguous float32 N x 3 x H x W that the exported model at ``path`` accepts:
    its fixed input size if it has one, else multiples of the spec's size divisor."""
    x = np.ascontiguousarray(batch, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ModelError(f"expected a N x 3 x H x W batch, got shape {x.shape}")
    h, w = x.shape[2:]
    if fixed_hw != (None, None) and (h, w) != fixed_hw:
        raise ModelError(f"{path} was exported for {fixed_hw[0]}x{fixed_hw[1]} inputs only, "
                         f"got {h}x{w} (export with --dynamic for other sizes)")
    d = spec.size_divisor
    if h % d or w % d:
        raise ModelError(f"{path}: input {h}x{w} is not a multiple of {d} (spec.size_divisor)")
    return x


class Runner(Protocol):
    backend: str
    device: str
    spec: ModelSpec

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


def load(artifact: Artifact | str | os.PathLike, device: str = "cpu", threads: int | None = None,
         backend: str | None = None) -> Runner:
    """A Runner for ``artifact`` on ``device``; the backend follows the artifact's format.

    A bare ``.onnx`` file written by edgecut (its spec in ``metadata_props``) also loads, and so
    does a bare OpenVINO ``.xml`` (its spec in ``rt_info``, its ``.bin`` beside it)."""
    if not isinstance(artifact, Artifact) and Path(artifact).suffix == ".onnx" and Path(artifact).is_file():
        from edgecut.runtime.onnxruntime_runner import OnnxRuntimeRunner

        return OnnxRuntimeRunner(artifact, device=device, threads=threads)
    if not isinstance(artifact, Artifact) and Path(artifact).suffix == ".xml" and Path(artifact).is_file():
        from edgecut.runtime.openvino_runner import OpenVinoRunner

        return OpenVinoRunner(artifact, device=device, threads=threads)
    art = artifact if isinstance(artifact, Artifact) else load_artifact(Path(artifact))
    backend = backend or BACKENDS.get(art.manifest.format, art.manifest.format)
    if backend == "torch":
        from edgecut.runtime.torch_runner import TorchRunner

        return TorchRunner.from_artifact(art, device=device, threads=threads)
    if backend == "onnxruntime":
        from edgecut.runtime.onnxruntime_runner import OnnxRuntimeRunner

        return OnnxRuntimeRunner.from_artifact(art, device=device, threads=threads)
    if backend == "openvino" and art.manifest.format == "openvino":
        from edgecut.runtime.openvino_runner import OpenVinoRunner

        return OpenVinoRunner.from_artifact(art, device=device, threads=threads)
    if backend == "tensorrt" and art.manifest.format == "tensorrt":
        from edgecut.runtime.tensorrt_runner import TensorRTRunner

        return TensorRTRunner.from_artifact(art, device=device, threads=threads)
    raise ModelError(f"{art.path}: no runner for format {art.manifest.format!r} with backend {backend!r}")
