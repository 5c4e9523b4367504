"""ONNX export: a torch artifact -> ``model.onnx`` in FP32, FP16 or INT8 (static QDQ).

Exported with the TorchScript tracer, ``torch.onnx.export(dynamo=False)``: batch is always dynamic, ``dynamic=True``
frees H and W too, and inputs must be multiples of ``spec.size_divisor`` (the Runner checks). Then onnxslim, the
precision conversion, the ModelSpec in ``metadata_props`` under ``edgecut.spec`` and
``onnx.checker.check_model(full_check=True)``. FP16: onnxruntime's ``convert_float_to_float16(keep_io_types=True)``.
INT8: ``onnxruntime.quantization.quantize_static`` in QDQ format, per-channel symmetric int8 weights in 7 bits and
asymmetric uint8 activations (U8S8; TensorRT's Q/DQ is S8S8 with full-range weights), activation ranges from
calibration images (MinMax, Entropy or Percentile); nodes or op types can stay in float.

Measured reasons: docs/design-decisions.md#onnx-exporter (the tracer, FP16) and docs/design-decisions.md#onnx-int8
"""

from __future__ import annotations

import contextlib
import io as _io
import logging
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecut._optional import available, require
from edgecut.errors import EdgecutError, ModelError
from edgecut.exporters.config import ExportConfig, Exported
from edgecut.exporters.program import sample, torch_module
from edgecut.io import first_line as io_first_line
from edgecut.runtime.onnxruntime_runner import PRECISION_KEY, SPEC_KEY

if TYPE_CHECKING:
    from edgecut.artifact import Artifact, ModelSpec

MODEL_FILE = "model.onnx"
INPUT_NAME = "input"
DEFAULT_OPSET = 18  # Resize-18, reductions with axes as inputs; run by onnxruntime >= 1.14, TensorRT 10, OpenVINO
PROTOBUF_LIMIT = 2**31 - 1  # bytes an ONNX file without external data can hold
MIN_OPSET = 17  # the oldest opset edgecut tests (LayerNormalization-17 and later)
MAX_OPSET = 20  # the TorchScript exporter's ceiling on torch 2.14
# calibration method -> onnxruntime.quantization's CalibrationMethod and its create_calibrator settings
ORT_CALIBRATORS: dict[str, tuple[str, dict[str, Any]]] = {
    "minmax": ("MinMax", {"symmetric": False}),  # the observed min and max of every activation
    # KL divergence over a 512-bin histogram merged into 128 levels; ORT's 128/128 default leaves
    # one candidate threshold (the full range), making entropy identical to minmax; 2048 bins
    # (TensorRT's choice) costs ~1 min per 160 activations in ORT's pure-Python search
    "entropy": ("Entropy", {"symmetric": False, "num_bins": 512, "num_quantized_bins": 128}),
    # 99.999th percentile of |x| over 2048 bins, then clipped to the observed min / max
    "percentile": ("Percentile", {"symmetric": True, "num_bins": 2048}),
}


def export_onnx(parent: Artifact, workdir: Path, config: ExportConfig) -> Exported:
    """The ``onnx`` row of the format table: write ``workdir/model.onnx`` at ``config.precision``."""
    onnx = require("onnx", "ONNX export")
    notes: list[str] = []
    fp32 = workdir / "model.fp32.onnx"
    opset = config.opset or DEFAULT_OPSET
    if parent.manifest.format == "onnx":  # re-precision an FP32 ONNX artifact
        if config.onnx.rembg:
            raise EdgecutError(f"{parent.path}: --rembg exports from the torch model (it appends the sigmoid and "
                               "fixes 320 x 320); give the torch artifact the ONNX came from")
        if parent.manifest.precision != "fp32":
            raise EdgecutError(f"{parent.path}: convert from an fp32 ONNX artifact, not {parent.manifest.precision}")
        if config.dynamic and not parent.spec.dynamic_size:
            raise EdgecutError(f"{parent.path} was exported with fixed H and W; export its torch parent with "
                               "--dynamic instead")
        self_contained(parent.model_path, fp32)
        spec = parent.spec
        params: dict[str, Any] = {"from": "onnx"}
    else:
        if not MIN_OPSET <= opset <= MAX_OPSET:
            raise EdgecutError(f"opset {opset}: edgecut exports opset {MIN_OPSET} to {MAX_OPSET}")
        if config.dynamic and not parent.spec.dynamic_size:
            raise EdgecutError(f"{parent.path}: its spec fixes the input size (dynamic_size false); "
                               "export without --dynamic")
        if config.onnx.rembg:
            spec, module = for_rembg(parent, config)
            trace(module, fp32, spec, opset, str(parent.path))
        else:
            spec = parent.spec.model_copy(update={"dynamic_size": config.dynamic})
            torch_to_onnx(parent, fp32, spec, opset)
        params = {"exporter": "torch.onnx.export(dynamo=False)", "opset": opset, "dynamic": config.dynamic,
                  **({"rembg": True} if config.onnx.rembg else {})}
    model = onnx.load(str(fp32))
    model, slim_note = simplify(model, config.simplify) if parent.manifest.format != "onnx" else (model, None)
    if slim_note:
        notes.append(slim_note)
    params["simplified"] = slim_note is None and parent.manifest.format != "onnx"
    metrics: dict[str, Any] = {}
    if config.precision == "fp16":
        model = to_fp16(model)
    elif config.precision == "int8":
        onnx.save(model, str(fp32))
        model, report = to_int8(fp32, workdir / "model.int8.onnx", model, spec, config)
        metrics["calibration"] = report
        notes.extend(report["warnings"])
    dest = workdir / MODEL_FILE
    params["nodes"] = finish(model, spec, config.precision, parent.sha256, dest, "the exported ONNX model")
    for tmp in workdir.glob("model.*.onnx"):
        tmp.unlink()
    tools = ("onnxslim",) if params["simplified"] else ()
    return Exported(files={MODEL_FILE: dest}, model_file=MODEL_FILE, spec=spec, params=params, metrics=metrics,
                    notes=notes, tools=tools)


def self_contained(src: Path, dest: Path) -> None:
    """``src`` as one self-contained file ``dest``: tensors stored as external data beside it (inside its
    folder; anything outside is refused unread) are read in."""
    from edgecut.runtime.onnxruntime_runner import inspect_model

    onnx = require("onnx", "ONNX export")
    inspect_model(src)  # refuses external data outside the folder, names missing data files
    model = onnx.load(str(src), load_external_data=True)
    if model.ByteSize() >= PROTOBUF_LIMIT:
        raise ModelError(f"{src}: {model.ByteSize() / 2**30:.1f} GB of weights do not fit one ONNX file; re-export it "
                         "from its torch artifact instead")
    onnx.save(model, str(dest))


def finish(model, spec: ModelSpec, precision: str, parent_sha256: str, dest: Path, what: str) -> dict[str, int]:
    """The last steps of every ONNX export: the spec stamped in, ``onnx.checker``, the file written;
    returns the op census (op type -> count) for the lineage. ``what`` names the model in errors."""
    onnx = require("onnx", "ONNX export")
    stamp(model, spec, precision, parent_sha256)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # onnx raises ValidationError or InferenceError
        raise ModelError(f"{what} fails onnx.checker: {str(e).strip()[:400]}") from None
    onnx.save(model, str(dest))
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items()))


REMBG_SIZE = (320, 320)  # what rembg's u2net_custom session feeds: RGB / max, ImageNet mean and std, 320 x 320
REMBG_MEAN, REMBG_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def for_rembg(parent: Artifact, config: ExportConfig):
    """(spec, module) of the file rembg runs as a custom model: its input as rembg makes it, the first output
    the foreground probability (a sigmoid after a logits model). Refused where the parent is fed otherwise."""
    import torch

    spec = parent.spec
    if config.dynamic:
        raise EdgecutError("--rembg exports the fixed 320 x 320 input rembg feeds: drop --dynamic")
    if not all(abs(a - b) < 1e-6 for a, b in zip((*spec.mean, *spec.std), (*REMBG_MEAN, *REMBG_STD))) or \
            abs(spec.scale - 1 / 255) > 1e-9:
        raise EdgecutError(f"{parent.path} is fed mean {spec.mean} / std {spec.std} (scale {spec.scale}); rembg feeds "
                           f"pixels / 255 with ImageNet's mean {REMBG_MEAN} and std {REMBG_STD}: retrain or "
                           "distill a student with that normalisation")
    if tuple(spec.input_size) != REMBG_SIZE and not spec.dynamic_size:
        raise EdgecutError(f"{parent.path} takes {spec.input_size[0]}x{spec.input_size[1]} only; rembg feeds 320x320")
    module = torch_module(parent)
    if spec.output == "logits":
        module = torch.nn.Sequential(module, torch.nn.Sigmoid())
    return spec.model_copy(update={"input_size": REMBG_SIZE, "dynamic_size": False, "output": "probability"}), module


def torch_to_onnx(parent: Artifact, path: Path, spec: ModelSpec, opset: int) -> None:
    """Trace the parent's torch module at ``spec.input_size`` and write FP32 ONNX to ``path``."""
    trace(torch_module(parent), path, spec, opset, str(parent.path))


def trace(module, path: Path, spec: ModelSpec, opset: int, who: str) -> None:
    """Trace ``module`` (eval mode, CPU) at ``spec.input_size`` and write its ONNX graph to ``path``;
    a fake-quantised module set to export Q/DQ pairs writes a QDQ graph. ``who`` names it in errors."""
    import torch

    x = sample(spec.input_size)
    axes = {0: "batch", 2: "height", 3: "width"} if spec.dynamic_size else {0: "batch"}
    with warnings.catch_warnings():  # scoped: the tracer's notes on shape branches and its own deprecation
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*feature will be removed.*")
        warnings.filterwarnings("ignore", message=".*no signature found for.*")  # a ScriptModule has no Python signature
        try:
            torch.onnx.export(module, (x,), str(path), dynamo=False, opset_version=opset, do_constant_folding=True,
                              input_names=[INPUT_NAME], output_names=[spec.output],
                              dynamic_axes={INPUT_NAME: axes, spec.output: axes})
        except Exception as e:  # the tracer's errors name the unsupported op
            raise ModelError(f"{who}: torch.onnx.export failed: {io_first_line(e, 300)}") from None


def simplify(model, enabled: bool = True) -> tuple[Any, str | None]:
    """onnxslim's constant folding and dead-node removal; a note when it did not run."""
    if not enabled:
        return model, "graph not simplified (simplify=False)"
    if not available("onnxslim"):
        return model, "onnxslim is not installed: graph not simplified (pip install 'edgecut[onnx]')"
    import onnxslim

    try:
        with contextlib.redirect_stdout(_io.StringIO()):
            return onnxslim.slim(model), None
    except Exception as e:  # a simplifier bug must not lose the export; the unsimplified graph is valid
        return model, f"onnxslim failed ({str(e).strip()[:200]}); graph not simplified"


def to_fp16(model):
    """Weights and compute in float16; inputs and outputs stay float32."""
    require("onnxruntime", "FP16 conversion")
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with warnings.catch_warnings():  # it warns once per weight it clamps into the fp16 range
        warnings.simplefilter("ignore", UserWarning)
        half = convert_float_to_float16(model, keep_io_types=True)
    _topological_sort(half.graph)  # the converter appends its input casts at the end
    return half


def _topological_sort(graph) -> None:
    """Reorder ``graph.node`` so every node follows the producers of its inputs (stable)."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered, passes = list(graph.node), [], 0
    while pending:
        passes += 1
        rest = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ModelError(f"ONNX graph has a cycle or a missing input near node {rest[0].name!r}")
        pending = rest
    if passes > 1:  # something had to move
        copies = [type(n)() for n in ordered]
        for copy, node in zip(copies, ordered):
            copy.CopyFrom(node)
        del graph.node[:]
        graph.node.extend(copies)


def to_int8(fp32: Path, dest: Path, model, spec: ModelSpec, config: ExportConfig, tensorrt: bool = False):
    """Static QDQ quantisation of ``fp32`` calibrated as ``config.calib`` says (images picked by ``config.seed``;
    ``config.parity``'s data scored in the report); returns (model, calibration report).
    ``tensorrt``: Q/DQ as TensorRT's explicit quantization takes it (every zero point 0, float biases)."""
    import numpy as np
    import onnx

    q = require("onnxruntime.quantization", "INT8 quantisation")
    import edgecut.exporters.calibration as calibration

    calib = config.calib
    names = {n.name for n in model.graph.node}
    unknown = [n for n in calib.exclude_nodes if n not in names]
    if unknown:
        sample = ", ".join(sorted(names)[:5])
        raise EdgecutError(f"--exclude: no node named {', '.join(map(repr, unknown))} in the graph "
                           f"(names look like {sample}; see them with netron or onnx)")
    ops = None  # None: every op type onnxruntime can quantise
    if calib.exclude_op_types:
        ops = sorted({n.op_type for n in model.graph.node} - set(calib.exclude_op_types))

    cset = calibration.load_set(calib.data, spec, calib.count, config.seed, calib.split)
    report = calibration.report(cset, config.parity.data, config.seed, config.parity.split)

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = cset.batches(spec)

        def get_next(self):
            batch = next(self._batches, None)
            return None if batch is None else {INPUT_NAME: np.ascontiguousarray(batch)}

    name, settings = ORT_CALIBRATORS[calib.method]
    method = getattr(q.CalibrationMethod, name)
    options = {**settings, **({"percentile": calib.percentile} if calib.method == "percentile" else {})}
    hint = _DropLog("pre-process")  # its advice to run quant_pre_process: declined on purpose (see above)
    logging.getLogger().addFilter(hint)
    try:
        with tempfile.TemporaryDirectory(prefix=".calib-", dir=dest.parent) as tmp, \
                contextlib.redirect_stdout(_io.StringIO()):  # the histogram calibrators print progress
            # calibrate here rather than inside quantize_static, which cannot set the histogram size
            calibrator = q.create_calibrator(fp32, ops, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                             calibrate_method=method, providers=["CPUExecutionProvider"],
                                             extra_options=options)
            calibrator.collect_data(Reader())
            ranges = calibrator.compute_data()
            del calibrator
            cache = Path(tmp) / "ranges.json"
            q.save_tensors_data(ranges, cache)
            q.quantize_static(str(fp32), str(dest), None, quant_format=q.QuantFormat.QDQ, per_channel=True,
                              reduce_range=not tensorrt,  # 7-bit weights: see the module docstring
                              activation_type=q.QuantType.QInt8 if tensorrt else q.QuantType.QUInt8,
                              weight_type=q.QuantType.QInt8,  # U8S8 on the CPU: see the module docstring
                              calibrate_method=method, nodes_to_exclude=list(calib.exclude_nodes),
                              op_types_to_quantize=ops, calibration_cache_path=cache,
                              extra_options={"ActivationSymmetric": tensorrt, "WeightSymmetric": True,
                                             "QuantizeBias": not tensorrt})
    except ValueError as e:
        if "bins" in str(e):  # numpy cannot split a near-constant float32 activation into histogram bins
            raise ModelError(f"{calib.method} calibration failed inside onnxruntime's histogram: an activation is "
                             "constant to float32 precision (typical of untrained or heavily pruned models); "
                             "use --calib-method minmax, or --exclude the node") from None
        raise
    finally:
        logging.getLogger().removeFilter(hint)
    quantized = onnx.load(str(dest))
    report["method"] = calib.method
    report["quantized_tensors"] = sum(1 for n in quantized.graph.node if n.op_type == "QuantizeLinear")
    return quantized, report


class _DropLog(logging.Filter):
    """Drops log records containing ``text`` while it is attached."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def stamp(model, spec: ModelSpec, precision: str, parent_sha256: str) -> None:
    """Write the ModelSpec (and precision, parent) into ``metadata_props``."""
    values = {SPEC_KEY: spec.model_dump_json(), PRECISION_KEY: precision, "edgecut.parent_sha256": parent_sha256}
    keep = [(p.key, p.value) for p in model.metadata_props if p.key not in values]
    del model.metadata_props[:]
    for key, value in [*keep, *values.items()]:
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
