"""LiteRT export: a torch artifact -> ``model.tflite`` (Android's default runtime), FP32, FP16 or INT8.

``litert-torch`` (Google's converter, the successor of ai-edge-torch) lowers a ``torch.export`` program straight to
LiteRT ops. It cannot live beside edgecut's pinned set (:mod:`edgecut.converters.envs`), so: (1) edgecut takes the parent's
module through ``torch.export`` at batch 1 and the spec's size and, for INT8, writes the preprocessed calibration
images; (2) :mod:`edgecut.exporters.litert_worker` converts in the ``litert`` converter environment and writes
``model.tflite`` and a report; (3) the parity gate runs the file here through ai-edge-litert's interpreter (the
``litert`` extra). Precisions: FP32; FP16 weights; INT8 full-integer (calibrated) or, with ``litert.int8="dynamic"``
(``--litert-int8 dynamic``), dynamic-range. The input size is fixed (``--dynamic`` is refused).

Why from torch rather than ONNX, and each precision: docs/design-decisions.md#litert
"""

from __future__ import annotations

import json
import subprocess
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import edgecut.converters.envs as envs
from edgecut._optional import require
from edgecut.env import default_threads
from edgecut.errors import EdgecutError, ModelError
from edgecut.exporters.config import ExportConfig, Exported
from edgecut.exporters.program import batch1_program, torch_module

if TYPE_CHECKING:
    from edgecut.artifact import Artifact

MODEL_FILE = "model.tflite"
TIMEOUT_S = 1800  # conversion takes seconds to a minute for these models; a hang is an error


def export_litert(parent: Artifact, workdir: Path, config: ExportConfig) -> Exported:
    """The ``tflite`` row of the format table: ``workdir/model.tflite``."""
    dynamic_range = config.litert.int8 == "dynamic"
    if dynamic_range and config.precision != "int8":
        raise EdgecutError("--litert-int8 applies to --precision int8 only")
    if dynamic_range and config.calib.data is not None:
        raise EdgecutError("dynamic-range INT8 quantises activations at run time: --calib does not apply")
    require("ai_edge_litert", "LiteRT export (its parity check runs the model)")
    worker_python = envs.require("litert", "LiteRT export")
    import torch

    spec = parent.spec.model_copy(update={"dynamic_size": False})
    stage = workdir / ".litert"
    stage.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = batch1_program(torch_module(parent), spec.input_size, parent.path, "litert-torch")
        torch.export.save(program, str(stage / "model.pt2"))
    job: dict[str, Any] = {"program": str(stage / "model.pt2"), "input": [1, 3, *spec.input_size],
                           "out": str(workdir / MODEL_FILE), "precision": config.precision, "calib": None,
                           "threads": config.threads or default_threads(), "report": str(stage / "report.json"),
                           "int8": config.litert.int8}
    metrics: dict[str, Any] = {}
    notes: list[str] = []
    if config.precision == "int8" and not dynamic_range:
        import numpy as np

        import edgecut.exporters.calibration as calibration

        calib = config.calib
        cset = calibration.load_set(calib.data, spec, calib.count, config.seed, calib.split)
        report = calibration.report(cset, config.parity.data, config.seed, config.parity.split)
        report["method"] = "minmax"  # ai-edge-quantizer's MIN_MAX_UNIFORM_QUANT
        np.save(stage / "calib.npy", np.concatenate(list(cset.batches(spec))))
        job["calib"] = str(stage / "calib.npy")
        metrics["calibration"] = report
        notes.extend(report["warnings"])
    (stage / "job.json").write_text(json.dumps(job))
    worker = Path(__file__).with_name("litert_worker.py")
    try:
        done = subprocess.run([str(worker_python), str(worker), str(stage / "job.json")], capture_output=True,
                              text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ModelError(f"{parent.path}: the LiteRT conversion did not finish in {TIMEOUT_S} s") from None
    if done.returncode != 0 or not (workdir / MODEL_FILE).is_file():
        why = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or ["no output"])[-1]
        raise ModelError(f"{parent.path}: litert-torch could not convert it ({why[:400]})")
    conversion = json.loads((stage / "report.json").read_text())
    for tmp in stage.iterdir():
        tmp.unlink()
    stage.rmdir()
    metrics["conversion"] = conversion
    recipe = {"fp32": None, "fp16": "weight-only float16 (float casting)",
              "int8": "dynamic_wi8_afp32" if dynamic_range else "static_wi8_ai8"}[config.precision]
    params = {"converter": conversion["converter"], "via": "torch.export", "quantizer": conversion.get("quantizer"),
              "recipe": recipe, "operators": sum(conversion["operators"].values())}
    return Exported(files={MODEL_FILE: workdir / MODEL_FILE}, model_file=MODEL_FILE, spec=spec, params=params,
                    metrics=metrics, notes=notes, tools=("ai-edge-litert",))
