"""The ncnn Runner: an ncnn graph (``model.ncnn.param`` + ``model.ncnn.bin``) on the CPU.

Settings are explicit and recorded (:attr:`NcnnRunner.options`): ``num_threads`` is ``threads`` (default: the CPUs
this process may use); an fp32 artifact runs with ncnn's fp16 and bf16 storage and arithmetic off, so it computes
what its name says (ncnn turns fp16 storage on by default where the CPU has it, as it does bf16 storage where
asked); an fp16 artifact turns fp16 storage, packing and arithmetic on, which ncnn applies where the CPU supports
them; int8 inference is on for an int8 artifact only (its float layers run in float32). ncnn runs one image at a
time: a batch is run image by image.

ncnn's files carry no metadata, so the Runner loads an artifact folder (its spec is in ``edgecut.json``). The
``.param`` must start with ncnn's magic line and both files must have the sizes recorded in ``edgecut.json``: ncnn
reads a truncated ``.bin`` without complaint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgecut._optional import require
from edgecut.artifact import Artifact, ModelSpec
from edgecut.env import default_threads
from edgecut.errors import InputError, ModelError
from edgecut.runtime.base import checked_batch

MAGIC = "7767517"  # the first line of every ncnn .param file


def weights_path(param: str | os.PathLike) -> Path:
    """``model.ncnn.param`` -> ``model.ncnn.bin``."""
    return Path(param).with_suffix(".bin")


def runtime_options(precision: str, threads: int) -> dict[str, Any]:
    """The ``ncnn.Option`` fields every ncnn Runner sets (see the module docstring)."""
    half = precision == "fp16"
    return {"num_threads": int(threads), "use_fp16_storage": half, "use_fp16_packed": half,
            "use_fp16_arithmetic": half, "use_bf16_storage": False, "use_bf16_packed": False,
            "use_int8_inference": precision == "int8"}


def _check_files(art: Artifact) -> None:
    for path in (art.model_path, weights_path(art.model_path)):
        entry = art.manifest.files.get(path.name)
        if not path.is_file():
            raise InputError(path, "ncnn model file not found", "copy the whole artifact folder again")
        if entry is not None and path.stat().st_size != entry.size:
            raise InputError(path, f"is {path.stat().st_size} bytes but edgecut.json says {entry.size}: "
                             "truncated or modified", "copy the artifact folder again")


class NcnnRunner:
    backend = "ncnn"

    def __init__(self, path: str | os.PathLike, spec: ModelSpec, device: str = "cpu", threads: int | None = None,
                 precision: str = "fp32") -> None:
        ncnn = require("ncnn", "running ncnn models")
        if device.partition(":")[0] not in ("cpu", "auto"):
            raise ModelError(f"device {device!r}: edgecut runs ncnn models on the cpu")
        self.path, self.spec, self.precision, self.device = Path(path), spec, precision, "cpu"
        self.threads = threads or default_threads()
        self.options = runtime_options(precision, self.threads)
        with open(self.path, "rb") as f:
            head = f.read(16)
        if not head.startswith(MAGIC.encode()):
            raise InputError(self.path, "not an ncnn .param file (no 7767517 magic): corrupt or another format",
                             "re-export it or copy it again")
        self.net = ncnn.Net()
        for key, value in self.options.items():
            setattr(self.net.opt, key, value)
        if self.net.load_param(str(self.path)) != 0:
            raise InputError(self.path, "ncnn cannot parse this graph: corrupt or from a newer ncnn",
                             "re-export it or upgrade ncnn")
        weights = weights_path(self.path)
        if self.net.load_model(str(weights)) != 0:
            raise InputError(weights, "ncnn cannot read these weights: corrupt or truncated", "copy them again")
        self._in, self._out = self.net.input_names()[0], self.net.output_names()[0]
        self._fixed_hw = (None, None) if spec.dynamic_size else tuple(spec.input_size)
        self._ncnn = ncnn

    @classmethod
    def from_artifact(cls, art: Artifact, device: str = "cpu", threads: int | None = None) -> NcnnRunner:
        _check_files(art)
        return cls(art.model_path, art.spec, device=device, threads=threads, precision=art.manifest.precision)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = checked_batch(batch, self.path, self.spec, self._fixed_hw)
        out = []
        for image in x:  # ncnn.Mat wraps the array without copying: it must stay referenced until extract
            chw = np.ascontiguousarray(image)
            with self.net.create_extractor() as ex:
                ex.input(self._in, self._ncnn.Mat(chw))
                ret, mat = ex.extract(self._out)
                if ret != 0:
                    raise ModelError(f"{self.path}: ncnn failed to run it (extract returned {ret})")
                y = np.array(mat, dtype=np.float32)  # a copy: the Mat dies with the extractor
            out.append(y.reshape(1, *x.shape[2:]) if y.size == x.shape[2] * x.shape[3] else y)
        y = np.stack(out)
        if y.shape != (x.shape[0], 1, *x.shape[2:]):
            raise ModelError(f"{self.path}: ncnn returned shape {y.shape[1:]} for a {x.shape[2]}x{x.shape[3]} input")
        return y
