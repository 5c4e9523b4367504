"""The candidates of a search, as recipe steps: what each one builds and how it is named.

A candidate is one artifact measured at one input size: a chain of recipe steps (prune, distill,
qat, export) from the user's model, ending in the step whose output is measured. Chains share
steps by name (every INT8 export of ``pruned-0.5`` reads the one ``pruned-0.5`` step), so the
recipe runner builds each model once and a later search finds it cached.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from edgecut.search.config import OptimizeConfig

# every export's parity bar in a search: the search judges each candidate by its own val IoU, so parity only stops a
# broken export (a wrong conversion moves probabilities by tenths); the agreement is recorded. Beside the export
# defaults (fp32 1e-4, fp16 0.999), U^2-Netp's pruned copy exported to ONNX failed at 4.6e-4 and its FP16 at 0.992.
SEARCH_PARITY = {"fp32": {"max_abs_diff": 0.01}, "fp16": {"mask_iou": 0.98}, "int8": {"mask_iou": 0.5}}


@dataclass
class Candidate:
    """One thing to measure: a chain of recipe steps and the input size it runs at."""

    name: str
    base: str  # the torch model it comes from: "model", "pruned-0.3", "student-mobilenet_v3_small_unet"
    format: str
    precision: str
    method: str  # fp32 | fp16 | ptq (INT8 post-training) | ac (INT8, accuracy-controlled) | qat
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)  # the chain, in order: name -> recipe entry
    size: int | None = None  # input side it runs at; None: its spec's
    dynamic: bool = False

    @property
    def artifact_step(self) -> str:
        return list(self.steps)[-1]

    def digest(self, model_sha256: str, data: str, measuring: dict[str, Any]) -> str:
        """What its measurement depends on: the chain, the model, the data and how it is measured."""
        blob = json.dumps([self.steps, self.size, model_sha256, data, measuring], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Builder:
    """Makes the recipe entries of every kind of candidate for one search."""

    def __init__(self, config: OptimizeConfig, side: int, search_split: str, train_split: str | None,
                 teacher: str = "@model") -> None:
        """``teacher``: the recipe input that is pruned and taught from: ``@model``, or ``@source`` for an ONNX
        model (its file, whose answers the soft-label store may hold already; prune converts it itself)."""
        self.config, self.side, self.search, self.train = config, side, search_split, train_split
        self.teacher = teacher

    def _parity(self, precision: str) -> dict[str, Any]:
        return {"data": "@data", "split": self.search, "count": self.config.parity_count,
                "tolerances": dict(SEARCH_PARITY[precision])}

    def base_steps(self, base: str) -> dict[str, dict[str, Any]]:
        """The steps that make ``base`` (none for the model itself)."""
        c = self.config
        if base == "model":
            return {}
        if base.startswith("pruned-"):
            ratio = float(base[len("pruned-"):])
            return {base: {"step": "prune", "model": self.teacher, "data": "@data", "ratio": ratio,
                           "epochs": c.finetune_epochs, "val_split": self.search, "latency": False, "seed": c.seed,
                           "kd": True}}  # fine-tuned on its own answers beside the masks
        student = base[len("student-"):]
        entry = {"step": "distill", "teachers": [self.teacher], "data": "@data", "student": student, "size": self.side,
                 "epochs": c.distill_epochs, "val_split": self.search, "seed": c.seed}
        if c.distill_lr is not None:
            entry["lr"] = c.distill_lr
        return {base: entry}

    def export(self, base: str, fmt: str, method: str, *, size: int | None = None, dynamic: bool = False) -> Candidate:
        """``base`` exported to ``fmt`` by ``method`` (fp32, fp16, ptq, ac), run at ``size``."""
        precision = {"fp32": "fp32", "fp16": "fp16"}.get(method, "int8")
        entry: dict[str, Any] = {"step": "export", "model": f"@{base}", "format": fmt, "precision": precision,
                                 "parity": self._parity(precision), "seed": self.config.seed}
        if dynamic:
            entry["dynamic"] = True
        if precision == "int8":
            entry["calib"] = {"data": "@data", "split": self.train, "count": self.config.calib_count}
        if method == "ac":
            entry["openvino"] = {"max_drop": self.config.max_iou_drop, "val_data": "@data", "val_split": self.search}
        step = f"{base}.{fmt}.{method}" + (".dynamic" if dynamic else "")
        name = step + (f"@{size}" if size else "")
        return Candidate(name, base, fmt, precision, method, {**self.base_steps(base), step: entry}, size, dynamic)

    def qat(self, base: str, fmt: str) -> Candidate:
        """``base`` fine-tuned with fake quantisation (an INT8 ONNX model), converted to ``fmt`` if not ONNX."""
        c = self.config
        steps = {**self.base_steps(base), f"{base}.qat": {
            "step": "qat", "model": f"@{base}", "data": "@data", "epochs": c.qat_epochs, "val_split": self.search,
            "calib_count": c.calib_count, "parity": self._parity("int8")}}
        if fmt != "onnx":
            steps[f"{base}.{fmt}.qat"] = {"step": "export", "model": f"@{base}.qat", "format": fmt, "precision": "int8",
                                          "parity": self._parity("int8")}
        return Candidate(f"{base}.{fmt}.qat", base, fmt, "int8", "qat", steps)
