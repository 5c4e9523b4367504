"""The ONNX Runtime Runner: CPU, or CUDA / TensorRT execution providers when present.

Threads are explicit: ``intra_op_num_threads`` is ``threads`` (default: the CPUs this process may use) and
``inter_op_num_threads`` is 1 with sequential execution, so a measurement says what it ran with.

A model file is inspected before ONNX Runtime sees it: it must parse as an ONNX model (a corrupt or truncated file
is one :class:`~edgecut.errors.InputError` naming it), and tensors stored as external data must point to files
inside the model's folder (``../`` or absolute locations are refused unread with
:class:`~edgecut.errors.UnsafeFileError`). A bare ``.onnx`` written by edgecut carries its ModelSpec in
``metadata_props`` (:data:`SPEC_KEY`), so it can be run without its ``edgecut.json``. ORT-format files (``.ort``,
ONNX Runtime mobile) run through the same Runner: they are checked for their flatbuffer identifier instead, and
keep the ModelSpec in the same metadata.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgecut import io
from edgecut._optional import require
from edgecut.artifact import Artifact, ModelSpec, spec_from_json
from edgecut.errors import InputError, ModelError, UnsafeFileError
from edgecut.env import default_threads
from edgecut.batches import in_batches_of
from edgecut.runtime.base import checked_batch, fixed_size_agrees

SPEC_KEY = "edgecut.spec"  # metadata_props key holding the ModelSpec as JSON
PRECISION_KEY = "edgecut.precision"
ORT_SUFFIX = ".ort"  # ONNX Runtime's own (mobile) format: a flatbuffer ...
ORT_IDENTIFIER = b"ORTM"  # ... with this file identifier at bytes 4-8


def _ort_message(e: BaseException) -> str:
    """onnxruntime's error without its source-file and C++-signature noise."""
    msg = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", io.first_line(e, 2000))
    msg = re.sub(r"/onnxruntime_src/\S+:\d+ [^\s(]+\([^)]*\)\s*", "", msg)
    return msg[:300]


def _tensors(graph) -> Iterator[Any]:
    """Every tensor of a graph and its subgraphs that may hold external data."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for g in attr.graphs:
                yield from _tensors(g)


def inspect_model(path: str | os.PathLike):
    """Parse ``path`` without its external data, and check where that data would be read from."""
    onnx = require("onnx", "reading ONNX models")
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "ONNX model file not found")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError, or anything a malformed file provokes
        raise InputError(path, f"not a readable ONNX model: corrupt or truncated ({io.first_line(e)})",
                         "re-export it or copy it again") from None
    if not model.graph.node or not model.graph.output or not model.opset_import:
        raise InputError(path, "not a complete ONNX model (no graph, outputs or opset): truncated or not ONNX",
                         "re-export it or copy it again")
    folder = path.parent.resolve()
    for tensor in _tensors(model.graph):
        if not uses_external_data(tensor):
            continue
        location = ExternalDataInfo(tensor).location
        target = (folder / location).resolve() if location else None
        if not location or Path(location).is_absolute() or target is None or not target.is_relative_to(folder):
            raise UnsafeFileError(path, f"refused: tensor {tensor.name!r} reads external data from {location!r}, "
                                  "outside the model's folder", "keep external data files beside the .onnx file")
        if not target.is_file():
            raise InputError(path, f"external data file {location!r} of tensor {tensor.name!r} is missing",
                             "copy it beside the .onnx file")
    return model


def inspect_ort_file(path: Path) -> None:
    """An ORT-format file (ONNX Runtime mobile) must exist and carry the format's flatbuffer identifier."""
    if not path.is_file():
        raise InputError(path, "ORT model file not found")
    with path.open("rb") as f:
        head = f.read(8)
    if head[4:8] != ORT_IDENTIFIER:
        raise InputError(path, "not an ORT-format model (no 'ORTM' flatbuffer identifier): corrupt or not ORT",
                         "re-export it with 'edgecut export --format ort' or copy it again")


def _session_spec(session, path: Path) -> ModelSpec:
    """The ModelSpec in a loaded model's metadata (how a bare .ort file says how to feed it)."""
    text = session.get_modelmeta().custom_metadata_map.get(SPEC_KEY)
    if text is None:
        raise InputError(path, f"model without an edgecut spec ({SPEC_KEY} in its metadata)",
                         "give the artifact folder written by 'edgecut export'")
    return spec_from_json(text, path, f"metadata {SPEC_KEY}")


def read_spec(model, path: str | os.PathLike | None = None) -> ModelSpec | None:
    """The ModelSpec stored in an ONNX model's ``metadata_props``, if any (an invalid one is an
    :class:`~edgecut.errors.InputError` naming ``path``)."""
    for prop in model.metadata_props:
        if prop.key == SPEC_KEY:
            return spec_from_json(prop.value, path, f"metadata_props {SPEC_KEY}")
    return None


def providers_for(device: str, available: list[str]) -> list[Any]:
    """Execution providers for ``device``: cpu, cuda[:N], tensorrt[:N] or auto."""
    kind, _, index = device.partition(":")
    if kind == "auto":
        kind = "cuda" if "CUDAExecutionProvider" in available else "cpu"
    opts = {"device_id": int(index)} if index.isdigit() else {}
    chain = {"cpu": ["CPUExecutionProvider"],
             "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
             "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]}.get(kind)
    if chain is None:
        raise ModelError(f"device {device!r}: onnxruntime runs on cpu, cuda[:N], tensorrt[:N] or auto")
    if chain[0] not in available:
        raise ModelError(f"device {device!r} needs onnxruntime's {chain[0]}, but this onnxruntime offers only "
                         f"{', '.join(available)} (install onnxruntime-gpu with CUDA, or use --device cpu)")
    return [(p, opts) if p != "CPUExecutionProvider" and opts else p for p in chain if p in available]


class OnnxRuntimeRunner:
    backend = "onnxruntime"

    def __init__(self, path: str | os.PathLike, spec: ModelSpec | None = None, device: str = "cpu",
                 threads: int | None = None, precision: str = "fp32") -> None:
        ort = require("onnxruntime", "running ONNX models")
        self.path = Path(path)
        if self.path.suffix == ORT_SUFFIX:
            inspect_ort_file(self.path)
        else:
            model = inspect_model(self.path)
            spec = spec or read_spec(model, self.path)
            if spec is None:
                raise InputError(self.path, f"ONNX model without an edgecut spec ({SPEC_KEY} in metadata_props)",
                                 "give the artifact folder written by 'edgecut export'")
            del model
        self.precision = precision
        self.threads = threads or default_threads()
        providers = providers_for(device, ort.get_available_providers())
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3  # errors only; they reach the user as exceptions anyway
        try:
            self.session = ort.InferenceSession(str(self.path), so, providers=providers)
        except Exception as e:  # onnxruntime raises its own Fail / InvalidGraph / NotImplemented types
            raise InputError(self.path, f"onnxruntime cannot load this model ({_ort_message(e)})",
                             "re-export it; check the onnxruntime version supports its opset") from None
        self.spec = spec or _session_spec(self.session, self.path)
        got = self.session.get_providers()[0]
        wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
        if got != wanted:
            raise ModelError(f"{self.path}: onnxruntime fell back to {got} instead of {wanted} "
                             "(CUDA / TensorRT libraries missing?)")
        index = device.partition(":")[2] or "0"
        kinds = {"CPUExecutionProvider": "cpu", "CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "tensorrt"}
        self.device = "cpu" if wanted == "CPUExecutionProvider" else f"{kinds[wanted]}:{index}"
        self.providers = self.session.get_providers()
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self._fixed_hw = tuple(d if isinstance(d, int) else None for d in inp.shape[2:4])
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
        fixed_size_agrees(self.path, self.spec, self._fixed_hw)

    @classmethod
    def from_artifact(cls, art: Artifact, device: str = "cpu", threads: int | None = None) -> OnnxRuntimeRunner:
        path = art.model_path
        entry = art.manifest.files.get(art.manifest.model_file)
        if entry is not None and path.is_file() and path.stat().st_size != entry.size:
            raise InputError(path, f"is {path.stat().st_size} bytes but edgecut.json says {entry.size}: "
                             "truncated or modified", "copy the artifact folder again")
        return cls(path, art.spec, device=device, threads=threads, precision=art.manifest.precision)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = checked_batch(batch, self.path, self.spec, self._fixed_hw)
        return in_batches_of(self._run, x, self.fixed_batch)  # a model exported for one batch size

    def _run(self, x: np.ndarray) -> np.ndarray:
        try:
            out = self.session.run(None, {self.input_name: x})[0]
        except Exception as e:  # a corrupt model can load and still fail in a kernel
            raise ModelError(f"{self.path}: onnxruntime failed to run it ({_ort_message(e)})") from None
        return np.asarray(out, dtype=np.float32)
