"""ONNX Runtime mobile export: ``model.ort`` (ORT format) + ``required_operators.config``.

The ORT format is what ONNX Runtime's mobile packages and minimal builds load: a flatbuffer of the already-optimised
graph. ``required_operators.config`` lists the operators the model uses, so that a build with ``--minimal_build
--include_ops_by_config required_operators.config`` has those kernels only. Route: the ONNX model at the asked
precision (:func:`edgecut.exporters.onnx.export_onnx`, or an FP32 or INT8 Q/DQ ONNX artifact as it is), then
``onnxruntime.tools.convert_onnx_models_to_ort`` with optimisation style ``Fixed`` and target platform ``arm``; the
file runs on x86 too, and the parity gate runs it here. The ModelSpec stays in the model's metadata
(``edgecut.spec``), so a bare ``.ort`` file loads.

Why ``Fixed`` and ``arm``: docs/design-decisions.md#ort-mobile
"""

from __future__ import annotations

import contextlib
import io as _io
import logging
import shutil
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from edgecut import io
from edgecut._optional import require
from edgecut.errors import EdgecutError, ModelError
from edgecut.exporters.config import ExportConfig, Exported
from edgecut.io import first_line

if TYPE_CHECKING:
    from edgecut.artifact import Artifact

MODEL_FILE = "model.ort"
OPERATORS_FILE = "required_operators.config"
TARGET_PLATFORM = "arm"
STYLE = "Fixed"


def export_ort(parent: Artifact, workdir: Path, config: ExportConfig) -> Exported:
    """The ``ort`` row of the format table: ``workdir/model.ort`` + ``required_operators.config``."""
    from edgecut.exporters.onnx import MODEL_FILE as ONNX_FILE
    from edgecut.exporters.onnx import export_onnx, self_contained

    require("onnxruntime", "ONNX Runtime mobile export")
    m = parent.manifest
    if m.format == "onnx" and m.precision != "fp32":  # fp16 or Q/DQ int8: convert as it is
        if config.precision != m.precision:
            raise EdgecutError(f"{parent.path} is a {m.precision} ONNX model: export it to ort as {m.precision}, "
                               f"or convert its fp32 parent to {config.precision}")
        if config.calib.data is not None:
            raise EdgecutError(f"{parent.path} is already {m.precision}: calibration does not apply")
        self_contained(parent.model_path, workdir / ONNX_FILE)
        base = Exported(files={}, model_file=ONNX_FILE, spec=parent.spec, params={"from": f"onnx {m.precision}"})
    else:
        base = export_onnx(parent, workdir, replace(config, format="onnx"))  # writes workdir/model.onnx
    out = workdir / ".ort"
    out.mkdir()
    convert(workdir / ONNX_FILE, out)
    (out / "model.ort").replace(workdir / MODEL_FILE)
    lines = (out / "model.required_operators.config").read_text().splitlines()
    io.write_text(workdir / OPERATORS_FILE, "\n".join(  # its comment names the staging folder: name the file only
        f"# - {MODEL_FILE}" if ln.startswith("# - ") else ln for ln in lines) + "\n")
    shutil.rmtree(out)
    (workdir / ONNX_FILE).unlink()
    params = {"via": "onnx", "converter": "onnxruntime.tools.convert_onnx_models_to_ort",
              "optimization_style": STYLE, "target_platform": TARGET_PLATFORM,
              "operators": [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")],
              **{k: v for k, v in base.params.items() if k != "nodes"}}
    return Exported(files={MODEL_FILE: workdir / MODEL_FILE, OPERATORS_FILE: workdir / OPERATORS_FILE},
                    model_file=MODEL_FILE, spec=base.spec, params=params, metrics=base.metrics, notes=base.notes,
                    tools=tuple(dict.fromkeys(("onnxruntime", *base.tools))))


def convert(onnx_path: Path, out: Path) -> None:
    """``onnx_path`` -> ``out/model.ort`` and ``out/model.required_operators.config``."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    log = logging.getLogger("ort_format_model.utils")  # the config writer logs at INFO
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(_io.StringIO()):  # the converter prints each step
            convert_onnx_models_to_ort(onnx_path, output_dir=out, optimization_styles=[OptimizationStyle[STYLE]],
                                       target_platform=TARGET_PLATFORM)
    except Exception as e:  # onnxruntime raises its own Fail / InvalidGraph types
        raise ModelError(f"onnxruntime could not convert the ONNX model to ORT format: {first_line(e, 300)}") from None
    finally:
        log.setLevel(level)
    if not (out / "model.ort").is_file():
        raise ModelError(f"onnxruntime's converter wrote no model.ort for {onnx_path.name}")
