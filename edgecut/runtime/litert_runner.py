"""The LiteRT Runner: a ``.tflite`` model through ai-edge-litert's interpreter on the CPU.

Settings are explicit and recorded (:attr:`LiteRTRunner.options`): ``num_threads`` is ``threads``
(default: the CPUs this process may use) and the op resolver is the builtin one with the XNNPACK
delegate applied by default (LiteRT's CPU path on phones). The model's input is fixed at batch
1: a batch is run image by image. A full-integer INT8 model takes and gives int8 tensors: the
Runner quantises the input and dequantises the output with those tensors' own scale and zero
point, as an app does.

A ``.tflite`` written by edgecut carries no edgecut spec: the Runner loads an artifact folder
(its spec in ``edgecut.json``). The file must be a TFLite flatbuffer (identifier ``TFL3``),
and its input must be N x 3 x H x W (litert-torch keeps torch's NCHW layout).
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

IDENTIFIER = b"TFL3"  # bytes 4-8 of every TFLite flatbuffer


def _quantization(detail: dict) -> tuple[float, int, int, int] | None:
    """(scale, zero point, min, max) of a quantised integer tensor; None for a float one."""
    if not np.issubdtype(detail["dtype"], np.integer):
        return None
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return float(scale), int(zero), int(info.min), int(info.max)


class LiteRTRunner:
    backend = "litert"

    def __init__(self, path: str | os.PathLike, spec: ModelSpec, device: str = "cpu", threads: int | None = None,
                 precision: str = "fp32") -> None:
        require("ai_edge_litert", "running LiteRT models")
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        if device.partition(":")[0] not in ("cpu", "auto"):
            raise ModelError(f"device {device!r}: edgecut runs LiteRT models on the cpu")
        self.path, self.spec, self.precision, self.device = Path(path), spec, precision, "cpu"
        self.threads = threads or default_threads()
        self.options = {"num_threads": self.threads, "op_resolver": "BUILTIN (XNNPACK delegate)"}
        if not self.path.is_file():
            raise InputError(self.path, "LiteRT model file not found", "copy the whole artifact folder again")
        with open(self.path, "rb") as f:
            head = f.read(8)
        if head[4:8] != IDENTIFIER:
            raise InputError(self.path, "not a TFLite flatbuffer (no TFL3 identifier): corrupt or another format",
                             "re-export it or copy it again")
        try:
            with native_stderr_quiet():  # LiteRT's C++ logs "INFO: Created TensorFlow Lite XNNPACK delegate"
                self.interpreter = Interpreter(model_path=str(self.path), num_threads=self.threads,
                                               experimental_op_resolver_type=OpResolverType.BUILTIN)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise InputError(self.path, f"LiteRT cannot load this model: {str(e).strip()[:300]}",
                             "re-export it or copy it again") from None
        (inp,), (out,) = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        shape = tuple(int(d) for d in inp["shape"])
        if len(shape) != 4 or shape[:2] != (1, 3):
            raise ModelError(f"{self.path}: input shape {shape}, expected 1 x 3 x H x W")
        self._in, self._out, self._fixed_hw = inp["index"], out["index"], shape[2:]
        self._in_dtype = inp["dtype"]
        self._in_q, self._out_q = _quantization(inp), _quantization(out)  # full-integer INT8: int8 input and output

    @classmethod
    def from_artifact(cls, art: Artifact, device: str = "cpu", threads: int | None = None) -> LiteRTRunner:
        return cls(art.model_path, art.spec, device=device, threads=threads, precision=art.manifest.precision)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = checked_batch(batch, self.path, self.spec, self._fixed_hw)
        out = []
        for i in range(x.shape[0]):
            image = x[i:i + 1]
            if self._in_q:  # what an app does with a full-integer model: quantise with the input's own scale
                scale, zero, lo, hi = self._in_q
                image = np.clip(np.round(image / scale) + zero, lo, hi).astype(self._in_dtype)
            self.interpreter.set_tensor(self._in, image)
            self.interpreter.invoke()
            y = self.interpreter.get_tensor(self._out)
            if self._out_q:
                scale, zero, _, _ = self._out_q
                y = (y.astype(np.float32) - zero) * scale
            out.append(np.array(y, dtype=np.float32))  # a copy
        y = np.concatenate(out)
        if y.shape != (x.shape[0], 1, *x.shape[2:]):
            raise ModelError(f"{self.path}: LiteRT returned shape {y.shape[1:]} for a {x.shape[2]}x{x.shape[3]} input")
        return y
