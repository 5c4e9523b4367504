"""The TensorRT Runner: a serialized engine on a CUDA GPU, buffers in torch CUDA memory.

The engine is deserialised with ``trt.Runtime``; inputs and outputs live in torch CUDA
tensors (torch is a core dependency, so no pycuda), the input shape is set per call within
the engine's optimization profile, and ``execute_async_v3`` runs on a torch CUDA stream that
the copies share. An engine built for another GPU model or TensorRT version is refused with
the reason and the way out (rebuild it here with the command in ``trtexec.txt``) before
TensorRT would fail on it less clearly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgecut._optional import require
from edgecut.artifact import Artifact, ModelSpec
from edgecut.errors import InputError, ModelError


def compatibility(built_for: Mapping[str, Any] | None, here: Mapping[str, Any]) -> str | None:
    """Why an engine built for ``built_for`` will not run ``here``, or None (a pure function)."""
    if not built_for:
        return None
    if built_for.get("tensorrt") and built_for["tensorrt"] != here.get("tensorrt"):
        return (f"the engine was built with TensorRT {built_for['tensorrt']}, this machine has "
                f"{here.get('tensorrt')}")
    if built_for.get("compute_capability") and built_for["compute_capability"] != here.get("compute_capability"):
        return (f"the engine was built for {built_for.get('gpu')} (compute capability "
                f"{built_for['compute_capability']}), this GPU is {here.get('gpu')} (compute capability "
                f"{here.get('compute_capability')})")
    return None


def build_target(device_index: int = 0) -> dict[str, Any]:
    """TensorRT version, GPU name and compute capability of this machine's GPU ``device_index``."""
    import torch

    trt = require("tensorrt", "TensorRT engines")
    major, minor = torch.cuda.get_device_capability(device_index)
    return {"tensorrt": trt.__version__, "gpu": torch.cuda.get_device_name(device_index),
            "compute_capability": f"{major}.{minor}"}


def built_for(art: Artifact) -> dict[str, Any] | None:
    """What the artifact's engine was built for (the last tensorrt export step's ``built_for``)."""
    for step in reversed(art.manifest.lineage):
        if step.params.get("format") == "tensorrt":
            return step.params.get("built_for")
    return None


class TensorRTRunner:
    backend = "tensorrt"

    def __init__(self, path: str | os.PathLike, spec: ModelSpec, device: str = "cuda", precision: str = "fp32",
                 target: Mapping[str, Any] | None = None) -> None:
        trt = require("tensorrt", "running TensorRT engines")
        import torch

        self.path = Path(path)
        kind, _, index = device.partition(":")
        if kind not in ("cuda", "tensorrt", "auto"):
            raise ModelError(f"device {device!r}: a TensorRT engine runs on a CUDA GPU (--device cuda[:N])")
        if not torch.cuda.is_available():
            raise ModelError(f"{self.path}: a TensorRT engine needs a CUDA GPU and this machine has none")
        self.torch_device = torch.device("cuda", int(index) if index.isdigit() else 0)
        self.device = f"cuda:{self.torch_device.index}"
        self.spec, self.precision = spec, precision
        self.threads = None  # the GPU runs it; recorded as such
        problem = compatibility(target, build_target(self.torch_device.index))
        if problem:
            raise ModelError(f"{self.path}: {problem}. Rebuild the engine on this machine: run the command in "
                             "trtexec.txt in the artifact folder, or 'edgecut export --format tensorrt' here")
        if not self.path.is_file():
            raise InputError(self.path, "TensorRT engine file not found")
        self._logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(self.torch_device):
            self._runtime = trt.Runtime(self._logger)  # outlives the engine it made
            self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                raise InputError(self.path, "TensorRT cannot deserialise this engine (corrupt, or built by another "
                                 "TensorRT version or for another GPU)", "rebuild it with the command in trtexec.txt")
            self.context = self.engine.create_execution_context()
            self.stream = torch.cuda.Stream(self.torch_device)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"{self.path}: expected one input and one output, got {inputs} and {outputs}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.profile = [tuple(s) for s in self.engine.get_tensor_profile_shape(self.input_name, 0)]  # min, opt, max
        dtypes = {trt.float32: torch.float32, trt.float16: torch.float16}
        self._in_dtype = dtypes.get(self.engine.get_tensor_dtype(self.input_name))
        self._out_dtype = dtypes.get(self.engine.get_tensor_dtype(self.output_name))
        if self._in_dtype is None or self._out_dtype is None:
            raise ModelError(f"{self.path}: engine inputs and outputs must be float32 or float16")

    @classmethod
    def from_artifact(cls, art: Artifact, device: str = "cuda", threads: int | None = None) -> TensorRTRunner:
        del threads  # a GPU engine has no CPU thread setting
        path = art.model_path
        entry = art.manifest.files.get(art.manifest.model_file)
        if entry is not None and path.is_file() and path.stat().st_size != entry.size:
            raise InputError(path, f"is {path.stat().st_size} bytes but edgecut.json says {entry.size}: "
                             "truncated or modified", "copy the artifact folder again")
        return cls(path, art.spec, device=device, precision=art.manifest.precision, target=built_for(art))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        x = np.ascontiguousarray(batch, dtype=np.float32)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ModelError(f"expected a N x 3 x H x W batch, got shape {x.shape}")
        lo, _, hi = self.profile
        if any(not a <= s <= b for a, s, b in zip(lo, x.shape, hi)):
            raise ModelError(f"{self.path}: input {'x'.join(map(str, x.shape))} is outside the engine's profile "
                             f"{'x'.join(map(str, lo))} .. {'x'.join(map(str, hi))} (export with --dynamic, or "
                             "rebuild with other shapes)")
        d = self.spec.size_divisor
        if x.shape[2] % d or x.shape[3] % d:
            raise ModelError(f"{self.path}: input {x.shape[2]}x{x.shape[3]} is not a multiple of {d} "
                             "(spec.size_divisor)")
        with torch.cuda.device(self.torch_device), torch.cuda.stream(self.stream):
            xt = torch.from_numpy(x).to(self.torch_device, dtype=self._in_dtype).contiguous()
            if not self.context.set_input_shape(self.input_name, tuple(xt.shape)):
                raise ModelError(f"{self.path}: TensorRT refused input shape {tuple(xt.shape)}")
            y = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=self._out_dtype,
                            device=self.torch_device)
            self.context.set_tensor_address(self.input_name, xt.data_ptr())
            self.context.set_tensor_address(self.output_name, y.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise ModelError(f"{self.path}: TensorRT execution failed (its log above says why)")
            out = y.float().cpu()  # on the stream: waits for the engine before copying
        self.stream.synchronize()
        return out.numpy()
