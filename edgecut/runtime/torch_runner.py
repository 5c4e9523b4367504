"""The torch Runner: eager PyTorch, fp32 (or an autocast precision), explicit threads."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgecut.artifact import Artifact, ModelSpec
from edgecut.env import resolve_device


class TorchRunner:
    backend = "torch"

    def __init__(self, module: nn.Module, spec: ModelSpec, device: str = "cpu", threads: int | None = None,
                 precision: str = "fp32") -> None:
        if threads:
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()  # what the CPU ops use (set above, or torch's default)
        self.device = str(resolve_device(device))
        self.spec = spec
        self.precision = precision
        self.module = module.to(self.device).eval()
        self._amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.path = None  # the artifact folder, when loaded from one

    @classmethod
    def from_artifact(cls, art: Artifact, device: str = "cpu", threads: int | None = None) -> TorchRunner:
        from edgecut.models.store import load_model

        loaded = load_model(art)
        runner = cls(loaded.module, loaded.spec, device=device, threads=threads, precision=art.manifest.precision)
        runner.path = art.path
        return runner

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        dev = torch.device(self.device).type
        with torch.autocast(dev, dtype=self._amp or torch.float32, enabled=self._amp is not None):
            y = self.module(x)
        return y.float().cpu().numpy()
