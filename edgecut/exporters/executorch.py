"""ExecuTorch export: a torch artifact -> ``model.pte`` (PyTorch's on-device runtime), FP32 or INT8.

Route: ``torch.export`` at batch 1 and the spec's size, ``to_edge_transform_and_lower`` with the XNNPACK partitioner
(ExecuTorch's CPU backend on Android and iOS), ``to_executorch``. FP32 is the program as it is; INT8 is PT2E
quantisation with ExecuTorch's ``XNNPACKQuantizer`` (symmetric per-channel int8 weights, int8 activations),
calibrated on the calibration images through the spec's preprocessing; input and output stay float32. The input
size is fixed (``--dynamic`` is refused). ``executorch`` is an extra; its runtime runs the parity check here. The
``.pte`` holds no edgecut spec (``edgecut.json`` does), and the arm64 bundle runner does not run ``.pte`` files.

Details: docs/design-decisions.md#executorch
"""

from __future__ import annotations

import contextlib
import io as _io
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecut._optional import require
from edgecut.errors import ModelError
from edgecut.exporters.config import ExportConfig, Exported
from edgecut.exporters.program import batch1_program, torch_module

if TYPE_CHECKING:
    from edgecut.artifact import Artifact

MODEL_FILE = "model.pte"


def export_executorch(parent: Artifact, workdir: Path, config: ExportConfig) -> Exported:
    """The ``executorch`` row of the format table: ``workdir/model.pte``."""
    import torch

    require("executorch", "ExecuTorch export")
    calib = config.calib
    spec = parent.spec.model_copy(update={"dynamic_size": False})
    metrics: dict[str, Any] = {}
    notes: list[str] = []
    with _quiet(), torch.no_grad():
        program = batch1_program(torch_module(parent), spec.input_size, parent.path, "ExecuTorch")
        if config.precision == "int8":
            import edgecut.exporters.calibration as calibration

            cset = calibration.load_set(calib.data, spec, calib.count, config.seed, calib.split)
            report = calibration.report(cset, config.parity.data, config.seed, config.parity.split)
            report["method"] = "minmax"  # the XNNPACK quantizer's observers
            metrics["calibration"] = report
            notes.extend(report["warnings"])
            program = batch1_program(_quantize(program, cset.batches(spec)), spec.input_size, parent.path,
                                     "ExecuTorch")
        buffer = _lower(program, parent)
    (workdir / MODEL_FILE).write_bytes(buffer)
    from importlib.metadata import version

    params = {"via": "torch.export", "backend": "XnnpackPartitioner", "executorch": version("executorch"),
              "quantizer": "XNNPACKQuantizer symmetric per-channel (PT2E)" if config.precision == "int8" else None}
    return Exported(files={MODEL_FILE: workdir / MODEL_FILE}, model_file=MODEL_FILE, spec=spec, params=params,
                    metrics=metrics, notes=notes, tools=("executorch",))


def _quantize(program, batches):
    """PT2E: observers from the XNNPACK quantizer, the calibration batches through them, then int8 ops."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                          get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(program.module(), quantizer)
    for batch in batches:
        prepared(torch.from_numpy(batch))
    return convert_pt2e(prepared)


def _lower(program, parent: Artifact) -> bytes:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    try:
        return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer
    except Exception as e:  # exir raises its own types, naming the op it cannot lower
        raise ModelError(f"{parent.path}: ExecuTorch could not lower it: {str(e).strip()[:300]}") from None


@contextlib.contextmanager
def _quiet():
    """torch.export's and exir's warnings and prints stay off the terminal (errors still raise)."""
    levels = {name: logging.getLogger(name).level for name in ("torch", "executorch", "torchao")}
    for name in levels:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(_io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
