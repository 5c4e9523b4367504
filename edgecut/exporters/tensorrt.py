"""TensorRT export: a torch or ONNX artifact -> a serialized engine built on this machine's GPU.

The engine is built from the artifact's ONNX model with the TensorRT 10 Python API (``trt.Builder``, explicit
batch, ``trt.OnnxParser``, a workspace limit, one optimization profile, a timing cache). Precisions: fp32; fp16
(``BuilderFlag.FP16``); int8 by explicit quantization from a QDQ ONNX model with zero points at 0 (the parent, or
edgecut's static PTQ), preferred, or implicitly with an ``IInt8EntropyCalibrator2`` (``int8_source="calibrator"``).
An engine runs only on the GPU model and TensorRT version that built it: beside ``model.engine`` the artifact holds
its ONNX model, ``trtexec.txt`` (the equivalent ``trtexec`` command) and the timing cache, and the lineage records
``built_for``, which the Runner checks. Batch is dynamic (1 to ``max_batch``, optimised for 1); a ``dynamic``
export also lets H and W range from half to twice the spec's size.

Details: docs/design-decisions.md#tensorrt
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from edgecut import io
from edgecut._optional import require
from edgecut.errors import EdgecutError, ModelError
from edgecut.exporters.config import ExportConfig, Exported
from edgecut.runtime.tensorrt_runner import build_target

if TYPE_CHECKING:
    from edgecut.artifact import Artifact, ModelSpec

ENGINE_FILE = "model.engine"
ONNX_FILE = "model.onnx"
TRTEXEC_FILE = "trtexec.txt"
TIMING_CACHE_FILE = "timing.cache"
CALIB_CACHE_FILE = "calib.cache"
Shape = tuple[int, int, int, int]
LAYER_TYPES = {"int8": ("int8",), "fp16": ("fp16", "half"), "fp32": ("fp32", "float"), "int32": ("int32",)}


@dataclass(frozen=True)
class EngineBuild:
    """Everything the build and its equivalent trtexec command depend on."""

    precision: str  # fp32 | fp16 | int8
    min_shape: Shape
    opt_shape: Shape
    max_shape: Shape
    input_name: str = "input"
    workspace_mib: int = 1024
    int8_source: Literal["qdq", "calibrator"] = "qdq"
    onnx_file: str = ONNX_FILE
    engine_file: str = ENGINE_FILE
    timing_cache_file: str = TIMING_CACHE_FILE
    calib_cache_file: str = CALIB_CACHE_FILE


def shapes_for(spec: ModelSpec, max_batch: int = 8) -> tuple[Shape, Shape, Shape]:
    """(min, opt, max) input shapes: batch 1..max_batch; H, W fixed, or from half to twice the
    spec's size (multiples of the size divisor) when the spec lets them vary."""
    if max_batch < 1:
        raise EdgecutError(f"max_batch must be at least 1, got {max_batch}")
    h, w = spec.input_size
    d = spec.size_divisor
    if not spec.dynamic_size:
        return (1, 3, h, w), (1, 3, h, w), (max_batch, 3, h, w)
    low = lambda v: max(d, (v // 2) // d * d)  # noqa: E731
    return (1, 3, low(h), low(w)), (1, 3, h, w), (max_batch, 3, 2 * h, 2 * w)


def _dims(shape: Sequence[int]) -> str:
    return "x".join(str(int(v)) for v in shape)


def trtexec_command(build: EngineBuild) -> str:
    """The ``trtexec`` command that builds the same engine from the same ONNX model (a pure function)."""
    if build.precision not in ("fp32", "fp16", "int8"):
        raise EdgecutError(f"TensorRT precision {build.precision!r}: use fp32, fp16 or int8")
    name = build.input_name
    args = ["trtexec", f"--onnx={build.onnx_file}", f"--saveEngine={build.engine_file}",
            f"--minShapes={name}:{_dims(build.min_shape)}", f"--optShapes={name}:{_dims(build.opt_shape)}",
            f"--maxShapes={name}:{_dims(build.max_shape)}", f"--memPoolSize=workspace:{build.workspace_mib}M",
            f"--timingCacheFile={build.timing_cache_file}"]
    if build.precision == "fp16":
        args.append("--fp16")
    elif build.precision == "int8":
        args.append("--int8")
        if build.int8_source == "calibrator":
            args.append(f"--calib={build.calib_cache_file}")
    args.append("--skipInference")
    return " ".join(shlex.quote(a) for a in args)


def trtexec_text(build: EngineBuild, built_for: Mapping[str, Any] | None = None) -> str:
    """The contents of ``trtexec.txt``: why, what it was built on, and the command."""
    lines = ["# A TensorRT engine runs only on the GPU model and TensorRT version that built it:",
             "# rebuild it on the device that runs it (a Jetson builds its own). In this folder, run:"]
    if built_for:
        lines.insert(1, f"# this one was built with TensorRT {built_for.get('tensorrt')} on {built_for.get('gpu')} "
                        f"(compute capability {built_for.get('compute_capability')}).")
    if build.int8_source == "calibrator" and build.precision == "int8":
        lines.append(f"# ({build.calib_cache_file} holds the INT8 ranges calibrated when it was built)")
    return "\n".join([*lines, trtexec_command(build)]) + "\n"


def machine_cache_path(target: Mapping[str, Any]) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgecut" / "tensorrt"
    return root / f"timing-trt{target['tensorrt']}-sm{str(target['compute_capability']).replace('.', '')}.cache"


# ---------------------------------------------------------------------------- the ONNX model


def onnx_for_engine(parent: Artifact, workdir: Path, config: ExportConfig,
                    int8_source: str = "qdq") -> tuple[Path, ModelSpec, dict[str, Any], dict[str, Any]]:
    """The ONNX model the engine is built from, in ``workdir/model.onnx``: the parent's (an ONNX
    artifact) or an FP32 export of it, made QDQ with symmetric activations for explicit INT8.
    Returns (path, spec, params, metrics); runs without TensorRT."""
    import onnx

    import edgecut.exporters.onnx as onnx_export
    import edgecut.exporters.qdq as qdq

    dest = workdir / ONNX_FILE
    params: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    m = parent.manifest
    if m.format == "onnx" and m.precision == "int8":  # a QDQ model, e.g. from QAT: explicit quantization
        if config.precision != "int8":
            raise EdgecutError(f"{parent.path} is an int8 ONNX model: build it as int8, or export the float model")
        onnx_export.self_contained(parent.model_path, dest)
        why = qdq.tensorrt_compatible(onnx.load(str(dest)))
        if why:
            raise ModelError(f"{parent.path}: TensorRT cannot build its Q/DQ graph: {why}")
        spec = parent.spec
        params["from"] = "onnx int8 (Q/DQ)"
    else:
        sub = workdir / ".onnx"
        sub.mkdir()
        fp32 = onnx_export.export_onnx(parent, sub, dataclasses.replace(config, precision="fp32"))
        os.replace(fp32.files[ONNX_FILE], dest)
        shutil.rmtree(sub)
        spec = fp32.spec
        params.update({f"onnx_{k}": v for k, v in fp32.params.items() if k in ("opset", "simplified", "from")})
        if config.precision == "int8" and int8_source == "qdq":
            model = onnx.load(str(dest))
            q, report = onnx_export.to_int8(dest, workdir / "model.int8.onnx", model, spec, config, tensorrt=True)
            onnx_export.stamp(q, spec, "int8", parent.sha256)
            onnx.save(q, str(dest))
            (workdir / "model.int8.onnx").unlink(missing_ok=True)
            metrics["calibration"] = report
            params["qdq"] = qdq.summary(q)
    params["int8_source"] = int8_source if config.precision == "int8" else None
    return dest, spec, params, metrics


# ---------------------------------------------------------------------------- building


def _calibrator(trt, batches: Sequence[Any], cache: Path):
    """An IInt8EntropyCalibrator2 over 1 x 3 x H x W numpy batches, staged in torch CUDA memory."""
    import torch

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = iter(batches)
            self._current = None  # keeps the device buffer alive while TensorRT reads it

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names):  # noqa: ARG002 - one input
            batch = next(self._batches, None)
            if batch is None:
                return None
            self._current = torch.from_numpy(batch).to("cuda").contiguous()
            return [int(self._current.data_ptr())]

        def read_calibration_cache(self):
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data) -> None:
            io.write_bytes(cache, bytes(data))

    return EntropyCalibrator()


def build_engine(onnx_path: Path, engine_path: Path, build: EngineBuild, *, timing_cache: Path,
                 calibration: Sequence[Any] = (), calib_cache: Path | None = None,
                 reuse_cache: Path | None = None) -> dict[str, Any]:
    """Build ``onnx_path`` into ``engine_path`` as ``build`` says; the timing cache is read from
    ``reuse_cache`` (or ``timing_cache``) when present and written to ``timing_cache``. Returns
    what is known about the engine (layer formats, when it can be inspected)."""
    trt = require("tensorrt", "building TensorRT engines")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"TensorRT cannot parse {onnx_path.name}: {errors[:400]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, build.workspace_mib << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # lets the inspector report layer formats
    if build.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif build.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    profile.set_shape(build.input_name, build.min_shape, build.opt_shape, build.max_shape)
    config.add_optimization_profile(profile)
    if build.precision == "int8" and build.int8_source == "calibrator":
        if not calibration or calib_cache is None:
            raise EdgecutError("calibrator INT8 needs calibration batches and a cache path")
        config.int8_calibrator = _calibrator(trt, calibration, calib_cache)
        config.set_calibration_profile(profile)
    source = reuse_cache if reuse_cache is not None and reuse_cache.is_file() else timing_cache
    cache = config.create_timing_cache(source.read_bytes() if source.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError(f"TensorRT could not build an engine from {onnx_path.name} (its log above says why)")
    io.write_bytes(engine_path, bytes(serialized))
    io.write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    return {"layer_formats": _layer_formats(trt, logger, engine_path)}


def _layer_formats(trt, logger, engine_path: Path) -> dict[str, int] | None:
    """How many layer outputs the engine computes in each data type (best effort: None if the
    inspector's JSON has another shape), so a requested precision is shown, not assumed."""
    import json

    try:
        engine = trt.Runtime(logger).deserialize_cuda_engine(engine_path.read_bytes())
        info = json.loads(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
        counts: Counter = Counter()
        for layer in info.get("Layers", []):
            for out in layer.get("Outputs", []) if isinstance(layer, dict) else []:
                fmt = str(out.get("Format/Datatype", "")).lower()  # e.g. "Row major linear FP32"
                kind = next((k for k, words in LAYER_TYPES.items() if any(w in fmt for w in words)), None)
                if kind:
                    counts[kind] += 1
        return dict(sorted(counts.items())) or None
    except Exception:  # the inspector's format is not a contract; the engine itself is fine
        return None


def export_tensorrt(parent: Artifact, workdir: Path, config: ExportConfig) -> Exported:
    """The ``tensorrt`` row of the format table: ``model.engine`` plus its ONNX model, the
    timing cache and ``trtexec.txt`` in ``workdir``."""
    import torch

    require("tensorrt", "exporting to tensorrt")
    if not torch.cuda.is_available():
        raise EdgecutError("a TensorRT engine is built on the CUDA GPU that will run it, and this machine has "
                           "none: build it on the device (export format onnx, then trtexec there), or run this "
                           "export on a machine with the same GPU")
    settings = config.tensorrt
    device_index = torch.cuda.current_device()
    target = build_target(device_index)
    onnx_path, spec, params, metrics = onnx_for_engine(parent, workdir, config, settings.int8_source)
    lo, opt, hi = shapes_for(spec, settings.max_batch)
    build = EngineBuild(precision=config.precision, min_shape=lo, opt_shape=opt, max_shape=hi,
                        workspace_mib=settings.workspace_mib, int8_source=settings.int8_source)
    calibration, calib_cache = [], None
    if config.precision == "int8" and settings.int8_source == "calibrator":
        import edgecut.exporters.calibration as calib_sets

        cset = calib_sets.load_set(config.calib.data, spec, config.calib.count, config.seed, config.calib.split)
        metrics["calibration"] = {**calib_sets.report(cset, config.parity.data, config.seed, config.parity.split),
                                  "method": "entropy (TensorRT IInt8EntropyCalibrator2)"}
        calibration, calib_cache = list(cset.batches(spec)), workdir / CALIB_CACHE_FILE
    machine = machine_cache_path(target) if settings.machine_cache else None
    with torch.cuda.device(device_index):
        info = build_engine(onnx_path, workdir / ENGINE_FILE, build, timing_cache=workdir / TIMING_CACHE_FILE,
                            calibration=calibration, calib_cache=calib_cache, reuse_cache=machine)
    if machine is not None:
        io.write_bytes(machine, (workdir / TIMING_CACHE_FILE).read_bytes())
    io.write_text(workdir / TRTEXEC_FILE, trtexec_text(build, target))
    files = {ENGINE_FILE: workdir / ENGINE_FILE, ONNX_FILE: onnx_path, TRTEXEC_FILE: workdir / TRTEXEC_FILE,
             TIMING_CACHE_FILE: workdir / TIMING_CACHE_FILE}
    if calib_cache is not None and calib_cache.is_file():
        files[CALIB_CACHE_FILE] = calib_cache
    params.update({"built_for": target, "shapes": {"min": list(lo), "opt": list(opt), "max": list(hi)},
                   "workspace_mib": settings.workspace_mib, "trtexec": trtexec_command(build), **info})
    notes = []
    for precision, kind in (("fp16", "fp16"), ("int8", "int8")):
        if config.precision == precision and info.get("layer_formats") and kind not in info["layer_formats"]:
            notes.append(f"{precision} was enabled but TensorRT computes no layer in {kind} on this GPU "
                         f"(layer outputs: {info['layer_formats']})")
    return Exported(files=files, model_file=ENGINE_FILE, spec=spec, params=params, metrics=metrics, notes=notes,
                    tools=("tensorrt",))
