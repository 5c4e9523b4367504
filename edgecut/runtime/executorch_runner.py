"""The ExecuTorch Runner: a ``.pte`` program through ExecuTorch's Python runtime on the CPU.

The program's XNNPACK delegate runs on XNNPACK's thread pool, which is one per process: the
Runner sets it to ``threads`` (default: the CPUs this process may use) with
``_unsafe_reset_threadpool`` and records the count it reads back (:attr:`ExecuTorchRunner.threads`).
The method takes batch 1: a batch is run image by image. The file must be an ExecuTorch program
(flatbuffer identifier ``ET12``); its spec is in the artifact's ``edgecut.json``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgecut._optional import require
from edgecut.artifact import Artifact, ModelSpec
from edgecut.env import default_threads
from edgecut.errors import InputError, ModelError
from edgecut.runtime.base import checked_batch, native_stderr_quiet

IDENTIFIER = b"ET"  # bytes 4-6 of an ExecuTorch program flatbuffer ("ET12", the version follows)


class ExecuTorchRunner:
    backend = "executorch"

    def __init__(self, path: str | os.PathLike, spec: ModelSpec, device: str = "cpu", threads: int | None = None,
                 precision: str = "fp32") -> None:
        require("executorch", "running ExecuTorch programs")
        import torch

        if device.partition(":")[0] not in ("cpu", "auto"):
            raise ModelError(f"device {device!r}: edgecut runs ExecuTorch programs on the cpu")
        self.path, self.spec, self.precision, self.device = Path(path), spec, precision, "cpu"
        if not self.path.is_file():
            raise InputError(self.path, "ExecuTorch program not found", "copy the whole artifact folder again")
        with open(self.path, "rb") as f:
            head = f.read(8)
        if head[4:6] != IDENTIFIER:
            raise InputError(self.path, "not an ExecuTorch program (no ET identifier): corrupt or another format",
                             "re-export it or copy it again")
        with native_stderr_quiet():  # its CPU probe logs every /sys file it cannot open
            from executorch.extension.pybindings import portable_lib
            from executorch.runtime import Runtime

            portable_lib._unsafe_reset_threadpool(int(threads or default_threads()))
            self.threads = int(portable_lib._threadpool_get_thread_count())
            try:
                self.method = Runtime.get().load_program(self.path).load_method("forward")
            except (RuntimeError, ValueError) as e:
                raise InputError(self.path, f"ExecuTorch cannot load this program: {str(e).strip()[:300]}",
                                 "re-export it or copy it again") from None
        self._torch = torch
        self._fixed_hw = tuple(spec.input_size)

    @classmethod
    def from_artifact(cls, art: Artifact, device: str = "cpu", threads: int | None = None) -> ExecuTorchRunner:
        return cls(art.model_path, art.spec, device=device, threads=threads, precision=art.manifest.precision)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = checked_batch(batch, self.path, self.spec, self._fixed_hw)
        out = []
        for i in range(x.shape[0]):
            try:
                (y,) = self.method.execute([self._torch.from_numpy(x[i:i + 1])])
            except RuntimeError as e:
                raise ModelError(f"{self.path}: ExecuTorch failed to run it ({str(e).strip()[:200]})") from None
            out.append(y.numpy().astype(np.float32, copy=True))
        y = np.concatenate(out)
        if y.shape != (x.shape[0], 1, *x.shape[2:]):
            raise ModelError(f"{self.path}: ExecuTorch returned shape {y.shape[1:]} for a {x.shape[2]}x{x.shape[3]} "
                             "input")
        return y
