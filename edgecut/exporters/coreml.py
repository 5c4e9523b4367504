"""Core ML export: a torch artifact -> ``model.mlpackage`` (an ML program for iOS 16 / macOS 13 and later).

Route: ``torch.export`` at the spec's input size (batch 1), then ``coremltools.convert`` to an ML program. Input
``input`` and output (``logits`` or ``probability``) are float32 multi-arrays, fed what
:meth:`~edgecut.artifact.ModelSpec.preprocess` makes; the spec is also in the model's metadata (``edgecut.spec``).
Precisions: fp16 (the default on Apple devices), fp32, and int8 weight-only (W8A16). The input size is fixed
(``--dynamic`` is refused). Core ML has no runtime on Linux: no parity is measured, the manifest says so, ``eval``,
``bench`` and ``remove`` refuse the artifact, and the conversion report is recorded instead. The artifact lists
every file of the package with its sha256; its model file is the package's ``model.mlmodel``.

Each precision, and what the report holds: docs/design-decisions.md#coreml
"""

from __future__ import annotations

import contextlib
import io as _io
import logging
import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecut._optional import require
from edgecut.errors import ModelError
from edgecut.exporters.config import ExportConfig, Exported
from edgecut.exporters.program import batch1_program, torch_module
from edgecut.formats import FORMATS

if TYPE_CHECKING:
    from edgecut.artifact import Artifact

PACKAGE = "model.mlpackage"
PROGRAM = f"{PACKAGE}/Data/com.apple.CoreML/model.mlmodel"
DEPLOYMENT_TARGET = "iOS16"  # the first with int8 weight constants in ML programs (iOS 16, macOS 13)
SPEC_KEY = "edgecut.spec"


def export_coreml(parent: Artifact, workdir: Path, config: ExportConfig) -> Exported:
    """The ``coreml`` row of the format table: ``workdir/model.mlpackage`` and its conversion report."""
    with _quiet() as said:
        ct = require("coremltools", "Core ML export")
        program = batch1_program(torch_module(parent), parent.spec.input_size, parent.path,
                                 "coremltools").run_decompositions({})
        spec = parent.spec.model_copy(update={"dynamic_size": False})
        import numpy as np

        fp32 = config.precision == "fp32"
        try:
            ml = ct.convert(program, inputs=[ct.TensorType(name="input", shape=(1, 3, *spec.input_size),
                                                           dtype=np.float32)],
                            outputs=[ct.TensorType(name=spec.output, dtype=np.float32)], convert_to="mlprogram",
                            minimum_deployment_target=getattr(ct.target, DEPLOYMENT_TARGET),
                            compute_precision=ct.precision.FLOAT32 if fp32 else ct.precision.FLOAT16)
            if config.precision == "int8":
                from coremltools.optimize.coreml import OpLinearQuantizerConfig, OptimizationConfig, \
                    linear_quantize_weights

                ml = linear_quantize_weights(ml, OptimizationConfig(global_config=OpLinearQuantizerConfig(
                    mode="linear_symmetric", dtype="int8", granularity="per_channel")))
        except Exception as e:  # coremltools raises its own types, naming the op it cannot convert
            raise ModelError(f"{parent.path}: coremltools could not convert it: {str(e).strip()[:300]}") from None
        ml.user_defined_metadata[SPEC_KEY] = spec.model_dump_json()
        ml.short_description = f"edgecut {parent.manifest.arch.get('name') if parent.manifest.arch else 'model'}: " \
                               f"one-channel {spec.output} of a background-removal network"
        ml.save(str(workdir / PACKAGE))
    files = {p.relative_to(workdir).as_posix(): p for p in sorted((workdir / PACKAGE).rglob("*")) if p.is_file()}
    if PROGRAM not in files:
        raise ModelError(f"coremltools wrote no {PROGRAM}")
    report = conversion_report(ml, config.precision, ct.__version__, said)
    params = {"converter": "coremltools.convert", "via": "torch.export", "deployment_target": DEPLOYMENT_TARGET,
              "compute_precision": report["compute_precision"], "weights": report["weights"]}
    notes = [f"not run here: {FORMATS['coreml'].not_run_here}; no parity was measured"]
    return Exported(files=files, model_file=PROGRAM, spec=spec, params=params, metrics={"conversion": report},
                    notes=notes, tools=("coremltools",))


def conversion_report(ml, precision: str, version: str, said: list[str]) -> dict[str, Any]:
    """What the ML program holds: operation counts, compute precision, weight storage, coremltools' warnings."""
    spec = ml.get_spec()
    ops = Counter(op.type for f in spec.mlProgram.functions.values() for block in f.block_specializations.values()
                  for op in block.operations)
    compute = "float32" if precision == "fp32" else "float16"
    weights = {"fp32": "float32", "fp16": "float16", "int8": "int8 per-channel symmetric (W8A16)"}[precision]
    return {"coremltools": version, "deployment_target": DEPLOYMENT_TARGET, "compute_precision": compute,
            "weights": weights, "specification_version": spec.specificationVersion,
            "operations": dict(sorted(((k, v) for k, v in ops.items() if k != "const"), key=lambda kv: -kv[1])),
            "constants": ops.get("const", 0), "warnings": said, "parity": "not measured: " + FORMATS["coreml"].not_run_here}


@contextlib.contextmanager
def _quiet():
    """coremltools' progress bars, its import-time notes about the macOS-only runtime, and its warnings
    are kept out of the terminal; the warnings that matter (an untested torch) go into the report."""
    said: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            msg = record.getMessage()
            if "libcoremlpython" not in msg and "scikit-learn" not in msg and msg not in said:
                said.append(msg[:300])

    log = logging.getLogger("coremltools")
    handler, level, propagate = Keep(), log.level, log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(_io.StringIO()):
            warnings.simplefilter("always")
            yield said
        for w in caught:
            msg = str(w.message)
            if "coremltools" in w.filename and msg not in said:
                said.append(msg[:300])
    finally:
        log.removeHandler(handler)
        log.propagate, log.level = propagate, level

