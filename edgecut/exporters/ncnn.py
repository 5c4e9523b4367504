"""ncnn export: a torch artifact -> ``model.ncnn.param`` + ``model.ncnn.bin``, FP32 or FP16 (INT8 from FP32).

ncnn is Tencent's inference library for phones (ARM NEON kernels, Vulkan). Route: ``torch.jit.trace`` at the spec's
input size, then the ``pnnx`` converter binary (the ``pnnx`` wheel: a standalone program with its own libtorch),
called by edgecut itself rather than through ``pnnx.export``: a failed conversion is one error with the converter's
last lines. FP32 stores float32 weights (``fp16=0``, not pnnx's default); FP16 stores float16 weights and the
Runner turns on ncnn's fp16 arithmetic; INT8 is the FP32 graph calibrated and rewritten as ncnn's own tools would
(:mod:`edgecut.exporters.ncnn_int8`); ``--exclude`` names ncnn layers, ``--exclude-op`` ncnn layer types. ncnn's
files hold no metadata: the ModelSpec travels in ``edgecut.json``. ``dynamic=True`` traces at a second size too.

Measured reasons (why not pnnx's FP16 default) and details: docs/design-decisions.md#ncnn
"""

from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecut._optional import require
from edgecut.errors import EdgecutError, ModelError
from edgecut.exporters.config import ExportConfig, Exported
from edgecut.exporters.program import sample, torch_module
from edgecut.runtime.ncnn_runner import MAGIC  # the first line of every ncnn .param file

if TYPE_CHECKING:
    from edgecut.artifact import Artifact, ModelSpec

PARAM_FILE = "model.ncnn.param"  # the graph (text); the model file of the artifact
BIN_FILE = "model.ncnn.bin"  # the weights
TIMEOUT_S = 600  # the converter takes seconds for these models; a hang is an error, not a stuck export


def export_ncnn(parent: Artifact, workdir: Path, config: ExportConfig) -> Exported:
    """The ``ncnn`` row of the format table: ``workdir/model.ncnn.param`` + ``model.ncnn.bin``."""
    pnnx = require("pnnx", "ncnn export")
    require("ncnn", "ncnn export")  # the parity check runs the result
    spec = parent.spec.model_copy(update={"dynamic_size": config.dynamic})
    if config.dynamic and not parent.spec.dynamic_size:
        raise ModelError(f"{parent.path}: its spec fixes the input size (dynamic_size false); export without --dynamic")
    stage = workdir / ".pnnx"
    stage.mkdir()
    trace(torch_module(parent), stage / "model.pt", spec, str(parent.path))
    fp16 = config.precision == "fp16"
    shapes = [spec.input_size] + ([second_size(spec)] if config.dynamic else [])
    convert(Path(pnnx.EXEC_PATH), stage / "model.pt", shapes, fp16, str(parent.path))
    params: dict[str, Any] = {"converter": "pnnx", "via": "torch.jit.trace", "weights": config.precision,
                              "dynamic": config.dynamic}
    metrics: dict[str, Any] = {}
    notes: list[str] = []
    if config.precision == "int8":
        done, metrics["calibration"] = to_int8(stage / PARAM_FILE, stage / BIN_FILE, workdir, spec, config)
        params.update(done)
        notes.extend(metrics["calibration"]["warnings"])
    else:
        for name in (PARAM_FILE, BIN_FILE):
            (stage / name).replace(workdir / name)
    shutil.rmtree(stage)
    params["layers"] = count_layers(workdir / PARAM_FILE)
    return Exported(files={PARAM_FILE: workdir / PARAM_FILE, BIN_FILE: workdir / BIN_FILE}, model_file=PARAM_FILE,
                    spec=spec, params=params, metrics=metrics, notes=notes, tools=("pnnx", "ncnn"))


def to_int8(param: Path, weights: Path, workdir: Path, spec: ModelSpec,
            config: ExportConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """The FP32 graph ``param`` + ``weights`` calibrated and quantised into ``workdir``; (what was done,
    the calibration report)."""
    import edgecut.exporters.calibration as calibration
    import edgecut.exporters.ncnn_int8 as ncnn_int8
    from edgecut.runtime.ncnn_runner import NcnnRunner

    calib = config.calib
    layers, blobs = ncnn_int8.read_param(param)
    ncnn_int8.split_weights(layers, weights.read_bytes(), weights)
    targets = ncnn_int8.quantisable(layers, calib.exclude_nodes, calib.exclude_op_types)
    if not targets:
        raise EdgecutError(f"{param.name}: no convolution or inner product left to quantise (see --exclude, --exclude-op)")
    cset = calibration.load_set(calib.data, spec, calib.count, config.seed, calib.split)
    report = calibration.report(cset, config.parity.data, config.seed, config.parity.split)
    report["method"] = calib.method
    fp32 = lambda: NcnnRunner(param, spec, threads=config.threads, precision="fp32").net  # noqa: E731
    scales = ncnn_int8.input_scales(fp32, [b[0] for b in cset.batches(spec)], targets, calib.method, calib.percentile)
    requantised = ncnn_int8.quantise(layers, targets, scales)
    ncnn_int8.write_param(layers, blobs, workdir / PARAM_FILE)
    ncnn_int8.write_weights(layers, workdir / BIN_FILE)
    kinds = sorted({t.type for t in targets})
    return {"quantiser": "edgecut (ncnn2table + ncnn2int8)", "int8_layers": len(targets), "int8_types": kinds,
            "requantised": requantised}, report


def second_size(spec: ModelSpec) -> tuple[int, int]:
    """The other trace size of a dynamic export: the spec's size plus one size divisor each way."""
    h, w = spec.input_size
    return h + spec.size_divisor, w + spec.size_divisor


def trace(module, path: Path, spec: ModelSpec, who: str) -> None:
    """``torch.jit.trace`` of ``module`` at the spec's size, saved as TorchScript for pnnx."""
    import torch

    x = sample(spec.input_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)  # "torch.jit.trace is deprecated": pnnx reads TorchScript
        try:
            torch.jit.trace(module, (x,), check_trace=False).save(str(path))
        except Exception as e:  # the tracer names the op it cannot follow
            raise ModelError(f"{who}: torch.jit.trace failed, so pnnx cannot convert it: {str(e).strip()[:300]}") \
                from None


def convert(exe: Path, pt: Path, shapes: list[tuple[int, int]], fp16: bool, who: str) -> None:
    """Run the pnnx converter on the TorchScript file ``pt``; ncnn's files land beside it."""
    args = [str(exe), pt.name, f"inputshape=[1,3,{shapes[0][0]},{shapes[0][1]}]f32", "device=cpu",
            f"fp16={int(fp16)}", f"ncnnparam={PARAM_FILE}", f"ncnnbin={BIN_FILE}"]
    if len(shapes) > 1:
        args.append(f"inputshape2=[1,3,{shapes[1][0]},{shapes[1][1]}]f32")
    try:
        done = subprocess.run(args, cwd=pt.parent, capture_output=True, text=True, timeout=TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ModelError(f"{who}: the pnnx converter did not run ({e}); reinstall it: pip install 'edgecut[ncnn]'") \
            from None
    if done.returncode != 0 or not (pt.parent / PARAM_FILE).is_file() or not (pt.parent / BIN_FILE).is_file():
        tail = " | ".join([ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip()][-3:])
        raise ModelError(f"{who}: pnnx could not convert it to ncnn (exit {done.returncode}): {tail[:400]}")


def count_layers(param: Path) -> int:
    """The layer count in an ncnn ``.param`` header (its second line: layers, blobs)."""
    lines = param.read_text().splitlines()
    if not lines or lines[0].strip() != MAGIC or len(lines) < 2:
        raise ModelError(f"{param}: pnnx wrote no valid ncnn graph")
    return int(lines[1].split()[0])
