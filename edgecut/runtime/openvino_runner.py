"""The OpenVINO Runner: an IR (``model.xml`` + ``model.bin``) compiled for the CPU.

Settings are explicit and recorded on the Runner (:attr:`OpenVinoRunner.config`): ``INFERENCE_NUM_THREADS`` is
``threads`` (default: the CPUs this process may use), ``PERFORMANCE_HINT`` LATENCY and ``NUM_STREAMS`` 1 (one
request at a time, as every Runner is measured), and ``INFERENCE_PRECISION_HINT`` f32 for every artifact precision,
read back (:attr:`inference_precision`) and checked. A model is checked before OpenVINO compiles it: the ``.xml``
must look like an IR, both files must have the size recorded in ``edgecut.json``, and any error OpenVINO raises
while reading is one :class:`~edgecut.errors.InputError` naming the ``.xml`` or the ``.bin``. A bare ``.xml``
written by edgecut carries its ModelSpec in the IR's ``rt_info`` (:data:`RT_SECTION`), so it loads without its
``edgecut.json``.

Why f32 must be asked for, and why the sizes are checked: docs/design-decisions.md#openvino-runner
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from edgecut._optional import require
from edgecut.artifact import Artifact, ModelSpec, spec_from_json
from edgecut.errors import InputError, ModelError
from edgecut.env import default_threads
from edgecut.batches import in_batches_of
from edgecut.runtime.base import checked_batch, fixed_size_agrees

RT_SECTION = "edgecut"  # rt_info section of the IR holding spec / precision / parent_sha256
WEIGHTS_SUFFIX = ".bin"
INFERENCE_PRECISION = "f32"  # see the module docstring: never the CPU's silent bf16 default
DEVICES = {"cpu": "CPU", "auto": "CPU"}  # edgecut device -> OpenVINO device (the CPU plugin only, for now)


def weights_path(xml: str | os.PathLike) -> Path:
    """``model.xml`` -> ``model.bin``, where OpenVINO looks for the weights."""
    return Path(xml).with_suffix(WEIGHTS_SUFFIX)


def ov_message(e: BaseException) -> str:
    """OpenVINO's error without its ``Exception from src/...cpp:N:`` and ``Check '...' failed`` lines."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    keep = [ln for ln in lines if not re.match(r"(Exception from |Check '.*' failed at )\S+", ln)]
    return " ".join(keep or lines or [type(e).__name__])[:300]


def _blames_weights(message: str) -> bool:
    return bool(re.search(r"bin file|weights", message, re.IGNORECASE))


def read_model(xml: str | os.PathLike):
    """Read an IR, with one :class:`InputError` naming the file for anything wrong with it."""
    ov = require("openvino", "running OpenVINO models")
    xml = Path(xml)
    weights = weights_path(xml)
    if not xml.is_file():
        raise InputError(xml, "OpenVINO model file not found")
    if not weights.is_file():
        raise InputError(weights, f"the weights of {xml.name} are missing", "copy the .bin beside the .xml")
    with open(xml, "rb") as f:
        head = f.read(4096)
    if b"<net" not in head:
        raise InputError(xml, "not an OpenVINO IR .xml (no <net> element): corrupt, truncated or another format",
                         "re-export it or copy it again")
    try:
        return ov.Core().read_model(str(xml), str(weights))
    except Exception as e:  # OpenVINO raises RuntimeError with its C++ check text
        msg = ov_message(e)
        bad = weights if _blames_weights(msg) else xml
        raise InputError(bad, f"OpenVINO cannot read this model: corrupt or truncated ({msg})",
                         "re-export it or copy it again") from None


def read_rt(model, key: str) -> str | None:
    """A value edgecut stored in the IR's ``rt_info`` (see :func:`edgecut.exporters.openvino.stamp`)."""
    path = [RT_SECTION, key]
    return model.get_rt_info(path).astype(str) if model.has_rt_info(path) else None


def read_spec(model, path: str | os.PathLike | None = None) -> ModelSpec | None:
    """The ModelSpec stored in an IR's ``rt_info``, if any (an invalid one is an
    :class:`~edgecut.errors.InputError` naming ``path``)."""
    raw = read_rt(model, "spec")
    return None if raw is None else spec_from_json(raw, path, f"rt_info {RT_SECTION}/spec")


def compile_config(threads: int) -> dict[str, Any]:
    """The CPU plugin settings every OpenVINO Runner (and edgecut's INT8 validation) compiles with."""
    return {"INFERENCE_NUM_THREADS": int(threads), "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
            "INFERENCE_PRECISION_HINT": INFERENCE_PRECISION}


def _check_files(art: Artifact) -> None:
    """Both IR files against the sizes in ``edgecut.json`` (their sha256 is checked when the artifact loads)."""
    xml = art.model_path
    for path in (xml, weights_path(xml)):
        entry = art.manifest.files.get(path.name)
        if entry is None or not path.is_file():
            continue  # read_model names a missing file
        if path.stat().st_size != entry.size:
            raise InputError(path, f"is {path.stat().st_size} bytes but edgecut.json says {entry.size}: "
                             "truncated or modified", "copy the artifact folder again")


class OpenVinoRunner:
    backend = "openvino"

    def __init__(self, path: str | os.PathLike, spec: ModelSpec | None = None, device: str = "cpu",
                 threads: int | None = None, precision: str | None = None) -> None:
        ov = require("openvino", "running OpenVINO models")
        self.path = Path(path)
        model = read_model(self.path)
        spec = spec or read_spec(model, self.path)
        if spec is None:
            raise InputError(self.path, f"OpenVINO IR without an edgecut spec (rt_info {RT_SECTION}/spec)",
                             "give the artifact folder written by 'edgecut export'")
        self.spec = spec
        self.precision = precision or read_rt(model, "precision") or "fp32"
        target = DEVICES.get(device.partition(":")[0])
        if target is None:
            raise ModelError(f"device {device!r}: edgecut runs OpenVINO models on cpu (or auto); this OpenVINO "
                             f"sees {', '.join(ov.Core().available_devices)}")
        self.device = "cpu"
        self.threads = threads or default_threads()
        self.config = compile_config(self.threads)
        core = ov.Core()
        try:
            self.compiled = core.compile_model(model, target, self.config)
        except Exception as e:
            raise InputError(self.path, f"OpenVINO cannot compile this model ({ov_message(e)})",
                             "re-export it with this OpenVINO version") from None
        got = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.inference_precision = str(getattr(got, "type_name", got))  # an openvino.Type: "f32", "bf16", ...
        if self.inference_precision != INFERENCE_PRECISION:
            raise ModelError(f"{self.path}: OpenVINO compiled it with inference precision {self.inference_precision} "
                             f"although {INFERENCE_PRECISION} was asked for")
        self.request = self.compiled.create_infer_request()
        shape = self.compiled.input(0).get_partial_shape()
        self._fixed_hw = tuple(d.get_length() if d.is_static else None for d in (shape[2], shape[3]))
        self.fixed_batch = shape[0].get_length() if shape[0].is_static else None
        fixed_size_agrees(self.path, self.spec, self._fixed_hw)
        self._ov = ov
        self._input: np.ndarray | None = None  # a view of the request's input tensor, while the shape holds

    @classmethod
    def from_artifact(cls, art: Artifact, device: str = "cpu", threads: int | None = None) -> OpenVinoRunner:
        _check_files(art)
        return cls(art.model_path, art.spec, device=device, threads=threads, precision=art.manifest.precision)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """One synchronous inference. The batch is copied into an input tensor the request keeps
        (a new one only when the shape changes) and the output copied out of the request's own,
        which the next call overwrites: the cheapest path per call that keeps calls independent
        (``request.infer({0: x})`` costs more; docs/measuring.md)."""
        x = checked_batch(batch, self.path, self.spec, self._fixed_hw)
        return in_batches_of(self._infer, x, self.fixed_batch)  # a model exported for one batch size

    def _infer(self, x: np.ndarray) -> np.ndarray:
        if self._input is None or self._input.shape != x.shape:
            tensor = self._ov.Tensor(self._ov.Type.f32, self._ov.Shape(list(x.shape)))
            self.request.set_input_tensor(tensor)
            self._input = tensor.data
        np.copyto(self._input, x)
        try:
            self.request.infer()
        except Exception as e:  # a corrupt model can compile and still fail in a kernel
            raise ModelError(f"{self.path}: OpenVINO failed to run it ({ov_message(e)})") from None
        return np.array(self.request.get_output_tensor(0).data, dtype=np.float32)  # a copy
