"""OpenVINO export: a torch (or fp32 ONNX) artifact -> ``model.xml`` + ``model.bin`` (FP32, FP16, INT8).

Route: the FP32 ONNX that :func:`edgecut.exporters.onnx.export_onnx` writes, ``openvino.convert_model`` on it, then
``openvino.save_model`` (``compress_to_fp16`` always passed: False for FP32, True for FP16's half-precision weights).
INT8: ``nncf.quantize`` on calibration images (:mod:`edgecut.exporters.calibration`), preset ``mixed`` or
``performance``, ``minmax`` or ``percentile`` ranges (``entropy`` is refused), full bias correction; ``--exclude``
and ``--exclude-op`` keep nodes in float. An INT8 Q/DQ ONNX parent is converted as it is, with no calibration. With
``max_drop``: ``nncf.quantize_with_accuracy_control`` on mask IoU; the drop is measured again and an export that
misses it is refused. Settings, the IoU before and after and the reverted operations go into ``edgecut.json``.

Measured reasons and details (and OpenVINO's telemetry): docs/design-decisions.md#openvino-export
"""

from __future__ import annotations

import contextlib
import io as _io
import logging
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecut._optional import require
from edgecut.env import default_threads
from edgecut.errors import EdgecutError, InputError, ModelError
from edgecut.exporters.config import CalibConfig, ExportConfig, Exported
from edgecut.runtime.openvino_runner import RT_SECTION, WEIGHTS_SUFFIX, compile_config

if TYPE_CHECKING:
    from edgecut.artifact import Artifact, ModelSpec

MODEL_FILE = "model.xml"
WEIGHTS_FILE = "model" + WEIGHTS_SUFFIX
PRESETS = ("mixed", "performance")
NNCF_METHODS = ("minmax", "percentile")  # the calibration methods NNCF has a range estimator for
ONNX_OP_TYPES: dict[str, tuple[str, ...]] = {  # --exclude-op in ONNX terms -> the OpenVINO op types they become
    "Conv": ("Convolution", "GroupConvolution"),
    "ConvTranspose": ("ConvolutionBackpropData", "GroupConvolutionBackpropData"),
    "Resize": ("Interpolate",),
    "Gemm": ("MatMul",),
    "Mul": ("Multiply",),
    "Sub": ("Subtract",),
    "Div": ("Divide",),
    "GlobalAveragePool": ("ReduceMean",),
    "AveragePool": ("AvgPool",),
    "HardSwish": ("HSwish",),
}
VAL_MAX_IMAGES = 300  # accuracy control validates on at most this many images of the folder (seeded pick)
VAL_SYNTHETIC = 16  # synthetic validation photos when no folder is given
VAL_SYNTHETIC_SEED = 4  # their set (calibration uses 1, parity 2)
NOT_COUNTED = {"Constant", "Parameter", "Result", "Convert"}  # left out of the op census in the lineage


def export_openvino(parent: Artifact, workdir: Path, config: ExportConfig) -> Exported:
    """The ``openvino`` row of the format table: ``workdir/model.xml`` + ``model.bin``."""
    from edgecut.exporters.onnx import MODEL_FILE as ONNX_FILE
    from edgecut.exporters.onnx import export_onnx

    ov = require("openvino", "OpenVINO export")
    if config.precision == "int8":
        require("nncf", "OpenVINO INT8 quantisation")  # before any work is done
    vino = config.openvino
    if vino.max_drop is not None and config.precision != "int8":
        raise EdgecutError(f"max_drop (accuracy control) is for int8, not {config.precision}")
    if vino.val_data is not None and vino.max_drop is None:
        raise EdgecutError("val_data is the accuracy-control set: give max_drop too (or drop val_data)")
    if vino.max_drop is not None and not 0.0 <= vino.max_drop < 1.0:
        raise EdgecutError(f"max_drop {vino.max_drop:g}: an absolute IoU drop, from 0 to below 1 (e.g. 0.01)")
    if vino.preset not in PRESETS:
        raise EdgecutError(f"preset {vino.preset!r}: use {' or '.join(PRESETS)}")
    if config.precision == "int8" and config.calib.method not in NNCF_METHODS:
        raise EdgecutError(f"calibration method {config.calib.method!r} is not available for OpenVINO (NNCF has "
                           f"no KL-entropy range estimator): use {' or '.join(NNCF_METHODS)}")

    m = parent.manifest
    if m.format == "onnx" and m.precision == "int8":  # a Q/DQ model (QAT, or ONNX Runtime PTQ): convert as it is
        if config.precision != "int8":
            raise EdgecutError(f"{parent.path} is an INT8 Q/DQ ONNX model: export it with precision int8 "
                               f"(OpenVINO runs its QuantizeLinear/DequantizeLinear pairs as int8), not "
                               f"{config.precision}")
        if config.calib.data is not None or vino.max_drop is not None:
            raise EdgecutError(f"{parent.path} is already quantized (Q/DQ): calibration and max_drop do not apply")
        base = _from_qdq(parent, workdir, config)
    else:
        base = export_onnx(parent, workdir, replace(config, precision="fp32"))  # writes workdir/model.onnx
    onnx_path = workdir / ONNX_FILE
    spec = base.spec
    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as e:  # OpenVINO's converter raises its own error types
        raise ModelError(f"{parent.path}: openvino.convert_model failed on the exported ONNX: "
                         f"{str(e).strip()[:300]}") from None
    params: dict[str, Any] = {"via": "onnx", "converter": "openvino.convert_model",
                              **{k: v for k, v in base.params.items() if k != "nodes"}}
    metrics: dict[str, Any] = {}
    notes = list(base.notes)
    tools = ["openvino", *base.tools]
    if config.precision == "fp16":
        notes.append("fp16 IR: weights stored in half precision; OpenVINO's x86 CPU plugin computes in f32 "
                     "(edgecut's Runner asks for f32 explicitly)")
    elif config.precision == "int8" and "qdq" in base.params:
        params["int8_source"] = "qdq"  # OpenVINO turns each Q/DQ pair into a FakeQuantize and runs int8 kernels
        notes.append("int8 from the parent's Q/DQ nodes: its scales are kept, no NNCF calibration")
    elif config.precision == "int8":
        model, report = to_int8(model, spec, config)
        metrics["calibration"] = report
        notes.extend(report["warnings"])
        params["nncf"] = {"preset": vino.preset, "subset_size": len(report["names"]),
                          "range_estimator": report["range_estimator"],
                          "ignored_scope": report["ignored_scope"], "bias_correction": "full", "target_device": "ANY"}
        if "accuracy_control" in report:
            metrics["accuracy_control"] = report.pop("accuracy_control")
            params["nncf"]["max_drop"] = vino.max_drop
            params["nncf"]["drop_type"] = "absolute"
        tools.append("nncf")
    stamp(model, spec, config.precision, parent.sha256)
    xml = workdir / MODEL_FILE
    ov.save_model(model, str(xml), compress_to_fp16=config.precision == "fp16")
    onnx_path.unlink()
    params["ops"] = dict(sorted(Counter(op.get_type_name() for op in model.get_ordered_ops()
                                        if op.get_type_name() not in NOT_COUNTED).items()))
    return Exported(files={MODEL_FILE: xml, WEIGHTS_FILE: workdir / WEIGHTS_FILE}, model_file=MODEL_FILE,
                    spec=spec, params=params, metrics=metrics, notes=notes, tools=tuple(tools))


def _from_qdq(parent: Artifact, workdir: Path, config: ExportConfig) -> Exported:
    """An INT8 Q/DQ ONNX parent, copied as it is to ``workdir/model.onnx`` for ``convert_model``."""
    from edgecut.exporters.onnx import MODEL_FILE as ONNX_FILE
    from edgecut.exporters.onnx import self_contained
    from edgecut.exporters.qdq import summary

    onnx = require("onnx", "OpenVINO export")
    if config.dynamic and not parent.spec.dynamic_size:
        raise EdgecutError(f"{parent.path} was exported with fixed H and W; export its torch parent with "
                           "--dynamic instead")
    self_contained(parent.model_path, workdir / ONNX_FILE)
    qdq = summary(onnx.load(str(workdir / ONNX_FILE), load_external_data=False))
    return Exported(files={}, model_file=ONNX_FILE, spec=parent.spec, params={"from": "onnx", "qdq": qdq},
                    tools=("onnx",))


def stamp(model, spec: ModelSpec, precision: str, parent_sha256: str) -> None:
    """Write the ModelSpec (and precision, parent) into the IR's ``rt_info``: a bare .xml says how to feed it."""
    for key, value in (("spec", spec.model_dump_json()), ("precision", precision), ("parent_sha256", parent_sha256)):
        model.set_rt_info(value, [RT_SECTION, key])


# --------------------------------------------------------------------------- INT8


def to_int8(model, spec: ModelSpec, config: ExportConfig):
    """NNCF post-training quantisation (with accuracy control when ``max_drop`` is set); (model, report)."""
    nncf = require("nncf", "OpenVINO INT8 quantisation")
    import edgecut.exporters.calibration as calibration

    calib, vino = config.calib, config.openvino
    scope, scope_report = ignored_scope(model, calib)
    cset = calibration.load_set(calib.data, spec, calib.count, config.seed, calib.split)
    report = calibration.report(cset, config.parity.data, config.seed, config.parity.split)
    estimator, estimator_name = range_estimator(calib)
    common = {"preset": getattr(nncf.QuantizationPreset, vino.preset.upper()), "subset_size": len(cset.images),
              "ignored_scope": scope, "fast_bias_correction": False}  # see the module docstring
    advanced = nncf.AdvancedQuantizationParameters(activations_range_estimator_params=estimator)
    calib_data = nncf.Dataset(list(cset.batches(spec)))
    try:
        with _nncf_quiet() as log:
            if vino.max_drop is None:
                quantized = nncf.quantize(model, calib_data, advanced_parameters=advanced, **common)
            else:
                val_source, items = validation_items(vino.val_data or config.parity.data, spec, config.seed,
                                                     vino.val_split if vino.val_data else config.parity.split)
                validate = iou_validation(spec)
                quantized = nncf.quantize_with_accuracy_control(
                    model, calib_data, nncf.Dataset(items, lambda item: item[0]), validate,
                    max_drop=vino.max_drop, drop_type=nncf.DropType.ABSOLUTE,
                    advanced_quantization_parameters=advanced, **common)
    except nncf.ValidationError as e:  # e.g. an ignored scope NNCF cannot apply
        raise ModelError(f"NNCF refused the quantisation settings: {str(e).strip()[:300]}") from None
    report.update(method=calib.method, preset=vino.preset, range_estimator=estimator_name, ignored_scope=scope_report,
                  quantizers=sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ordered_ops()))
    if vino.max_drop is not None:
        report["accuracy_control"] = accuracy_report(model, quantized, items, validate, vino.max_drop, val_source,
                                                     log)
        ac = report["accuracy_control"]
        if not ac["met"]:
            raise ModelError(f"accuracy control could not keep the IoU drop within max_drop={vino.max_drop:g} on "
                             f"{ac['images']} validation image(s) ({val_source}): fp32 {ac['fp32']:.4f} -> int8 "
                             f"{ac['int8']:.4f} (drop {ac['drop']:.4f}) after reverting {ac['reverted_ops']} "
                             "operation(s) to float. Nothing was written; raise --max-drop, calibrate on more "
                             "representative images, or --exclude sensitive layers")
    return quantized, report


def range_estimator(calib: CalibConfig):
    """NNCF's activation range estimator for ``calib.method`` (and its name for the report)."""
    from nncf.quantization.range_estimator import (AggregatorType, RangeEstimatorParameters,
                                                   RangeEstimatorParametersSet, StatisticsCollectorParameters,
                                                   StatisticsType)

    if calib.method == "minmax":
        return RangeEstimatorParametersSet.MINMAX, "MINMAX"
    prob = 1.0 - calib.percentile / 100.0
    if not 0.0 < prob < 0.5:
        raise EdgecutError(f"percentile {calib.percentile}: use a value between 50 and 100 (exclusive)")
    side = StatisticsCollectorParameters(StatisticsType.QUANTILE, AggregatorType.MEAN, quantile_outlier_prob=prob)
    return RangeEstimatorParameters(min=side, max=replace(side)), f"MEAN_QUANTILE(outlier_prob={prob:.3g})"


def ignored_scope(model, calib: CalibConfig):
    """``calib.exclude_*`` as an ``nncf.IgnoredScope`` over this IR (None when nothing is excluded) + a report."""
    if not calib.exclude_nodes and not calib.exclude_op_types:
        return None, None
    import nncf

    ops = model.get_ordered_ops()
    names = [op.get_friendly_name() for op in ops]
    picked: list[str] = []
    unknown = []
    for wanted in calib.exclude_nodes:  # an ONNX node becomes ``name`` and / or ``name/WithoutBiases`` ...
        hits = [n for n in names if n == wanted or n.startswith(wanted + "/")]
        picked.extend(hits) if hits else unknown.append(wanted)
    if unknown:
        sample = ", ".join(n for n in names if n.startswith("/"))[:200]
        raise EdgecutError(f"--exclude: no node named {', '.join(map(repr, unknown))} in the graph "
                           f"(names look like {sample}; see them with netron or onnx)")
    present = {op.get_type_name() for op in ops}
    types: list[str] = []
    for wanted in calib.exclude_op_types:
        found = [wanted] if wanted in present else [t for t in ONNX_OP_TYPES.get(wanted, ()) if t in present]
        if not found:
            raise EdgecutError(f"--exclude-op {wanted!r}: no such operation in the OpenVINO graph (its op types: "
                               f"{', '.join(sorted(present - {'Constant', 'Parameter', 'Result'}))})")
        types.extend(found)
    return nncf.IgnoredScope(names=picked, types=types, validate=False), {"names": picked, "types": types}


# --------------------------------------------------------------------------- accuracy control


def validation_items(folder: Path | None, spec: ModelSpec, seed: int,
                     split: str | None = None) -> tuple[str, list[tuple[Any, Any]]]:
    """(source, [(preprocessed batch, truth mask at the spec size as bool), ...]) for accuracy control."""
    import cv2

    import edgecut.exporters.parity as parity

    if folder is None:
        from edgecut.data.synth import MAX_SIZE, MIN_SIZE, render

        side = min(max(max(spec.input_size), MIN_SIZE), MAX_SIZE)
        pairs = [render(i, side, seed=VAL_SYNTHETIC_SEED) for i in range(VAL_SYNTHETIC)]
        source = "synthetic"
    else:
        images = parity.load_images(folder, spec, count=VAL_MAX_IMAGES, seed=seed, split=split)
        missing = [im.name for im in images if im.mask is None]
        if missing:
            raise InputError(folder, f"accuracy control needs ground-truth masks; {missing[0]!r} has none",
                             "give a data set folder with images/ and masks/ (--val-data)")
        pairs = [(im.image, im.mask) for im in images]
        source = parity.describe_source(folder, split)
    h, w = spec.input_size
    items = [(spec.preprocess(image), cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST) > 127)
             for image, mask in pairs]
    return source, items


def iou_validation(spec: ModelSpec):
    """NNCF's ``validation_fn``: (mean mask IoU, per-image IoU) of a compiled model on (batch, truth) items."""
    from edgecut.metrics import iou

    def validate(compiled, items) -> tuple[float, list[float]]:
        scores = [iou(spec.to_probability(compiled(batch)[0])[0], truth, spec.threshold) for batch, truth in items]
        return float(np.mean(scores)), scores

    return validate


def accuracy_report(model, quantized, items, validate, max_drop: float, source: str, log: list[str]) -> dict[str, Any]:
    """IoU of the float and the final INT8 model (measured here, f32 CPU), and what NNCF reverted."""
    import openvino as ov

    core = ov.Core()
    config = compile_config(default_threads())
    fp32, _ = validate(core.compile_model(model, "CPU", config), items)
    int8, _ = validate(core.compile_model(quantized, "CPU", config), items)
    drop = fp32 - int8
    out: dict[str, Any] = {"metric": "mask_iou", "at": "spec input size", "drop_type": "absolute",
                           "max_drop": max_drop, "data": source, "images": len(items), "fp32": fp32, "int8": int8,
                           "drop": drop, "met": drop <= max_drop + 1e-12}
    text = "\n".join(log)
    total = re.search(r"Total number of quantized operations in the model: (\d+)", text)
    reverted = re.search(r"(\d+) out of (\d+) were reverted back to the floating-point precision:\n?(.*)", text,
                         re.DOTALL)
    first = re.search(r"Accuracy drop: (\S+)", text)
    out["quantized_ops"] = int(total.group(1)) if total else None
    out["drop_before_restoring"] = float(first.group(1)) if first else None
    if reverted:
        out["reverted_ops"] = int(reverted.group(1))
        out["reverted"] = [ln.strip() for ln in reverted.group(3).splitlines() if ln.strip()][: int(reverted.group(1))]
    else:  # the fully quantised model already met max_drop: NNCF reverted nothing (and says no count)
        out["reverted_ops"] = 0 if first and float(first.group(1)) <= max_drop else None
        out["reverted"] = []
    return out


class _Collect(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.INFO)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record.getMessage())


@contextlib.contextmanager
def _nncf_quiet():
    """While NNCF runs: its INFO lines and progress bars kept off the terminal, its records collected."""
    from nncf.common.logging import nncf_logger

    records: list[str] = []
    collect = _Collect(records)
    saved = [(h, h.level) for h in nncf_logger.handlers]
    level = nncf_logger.level
    for handler, was in saved:
        handler.setLevel(max(was, logging.WARNING))
    nncf_logger.setLevel(min(level or logging.INFO, logging.INFO))
    nncf_logger.addHandler(collect)
    try:
        with contextlib.redirect_stdout(_io.StringIO()):  # its rich progress bars
            yield records
    finally:
        nncf_logger.removeHandler(collect)
        nncf_logger.setLevel(level)
        for handler, was in saved:
            handler.setLevel(was)
