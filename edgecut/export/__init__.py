"""Export: one table of formats, one front function.

:data:`FORMATS` maps a format name to an :class:`ExportFormat`: its file suffix, the
precisions and devices it supports, the extra it needs, and the one plain function that
writes its model file (``fn(parent, workdir, options) -> Exported``; ultralytics'
``export_formats()`` idea, as a dict of small dataclasses). :func:`export` does everything
else the same way for every format:

1. check the backend is installed (a missing one names the pip extra to install);
2. run the format's function in a hidden staging folder beside ``out``;
3. check parity against the parent artifact, image by image, through both Runners
   (:mod:`edgecut.export.parity`); outside tolerance, the staging folder is deleted and a
   :class:`~edgecut.export.parity.ParityError` names the worst image and the number;
4. optionally (``require_faster``) time the new model against its parent on this machine and
   refuse a slower one;
5. write ``edgecut.json`` (format, precision, spec, params/MACs of the parent, lineage with an
   ``export`` step, parity and calibration reports) and move the folder into place.

A folder holding ``edgecut.json`` is therefore always a model that passed its parity check.
Backends are imported inside the format functions (NNCF style), so importing this module
stays light: an OpenVINO or TensorRT entry slots in as one more row and one more function.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgecut import io
from edgecut.artifact import Artifact, Manifest, ModelSpec, Step, load_artifact, tool_versions, write_artifact
from edgecut.errors import EdgecutError, InputError

PRECISIONS = ("fp32", "fp16", "int8")
CALIB_METHODS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class CalibConfig:
    """Where INT8 activation ranges come from."""

    data: Path | None = None  # image folder (or data set root with images/); None: synthetic product photos
    count: int = 64  # images drawn from the folder (seeded; all of them when it holds fewer)
    method: str = "minmax"  # minmax | entropy | percentile
    percentile: float = 99.999  # percentile method: share of |activations| kept inside the range
    seed: int = 0  # picks the images
    exclude_nodes: tuple[str, ...] = ()  # node names left in float
    exclude_op_types: tuple[str, ...] = ()  # op types left in float (e.g. "Resize")


@dataclass(frozen=True)
class OpenVinoOptions:
    """OpenVINO INT8 (NNCF) settings; see :mod:`edgecut.export.openvino`."""

    preset: str = "mixed"  # mixed: symmetric weights, asymmetric activations | performance: symmetric both
    max_drop: float | None = None  # accuracy control: largest absolute drop of mean mask IoU; None: plain PTQ
    val_data: Path | None = None  # images + masks the drop is measured on; None: the parity folder, else synthetic


@dataclass(frozen=True)
class ExportOptions:
    """What every format function is told; format-specific settings live in their own group."""

    precision: str = "fp32"
    dynamic: bool = False  # batch is always dynamic; True also lets H and W vary
    opset: int | None = None  # None: the format's default
    simplify: bool = True  # run the format's graph simplifier when installed (onnxslim for ONNX)
    calib: CalibConfig = field(default_factory=CalibConfig)
    eval_data: Path | None = None  # folder the calibration images are compared with in the report
    openvino: OpenVinoOptions = field(default_factory=OpenVinoOptions)


@dataclass
class Exported:
    """What a format function wrote into the staging folder."""

    files: dict[str, Path]  # name inside the artifact -> finished file in the staging folder
    model_file: str  # which of them is the model
    spec: ModelSpec  # how to feed it (dynamic_size follows the export)
    params: dict[str, Any] = field(default_factory=dict)  # settings recorded in the lineage step
    metrics: dict[str, Any] = field(default_factory=dict)  # e.g. {"calibration": {...}}
    notes: list[str] = field(default_factory=list)  # things the user should read
    tools: tuple[str, ...] = ()  # extra distributions whose versions go into the manifest


@dataclass(frozen=True)
class ExportFormat:
    """One row of the format table."""

    name: str
    suffix: str  # suffix of the model file
    precisions: tuple[str, ...]
    devices: tuple[str, ...]  # where its Runner executes
    extra: str | None  # pip extra of edgecut that installs its backend (None: core only)
    modules: tuple[str, ...]  # import names that must be present to export
    fn: Callable[[Artifact, Path, ExportOptions], Exported]
    parents: tuple[str, ...] = ("torch",)  # formats it converts from
    accepts: tuple[str, ...] = ()  # format-specific export() options it understands (others are refused)


def _onnx(parent: Artifact, workdir: Path, options: ExportOptions) -> Exported:
    from edgecut.export.onnx import export_onnx

    return export_onnx(parent, workdir, options)


def _openvino(parent: Artifact, workdir: Path, options: ExportOptions) -> Exported:
    from edgecut.export.openvino import export_openvino

    return export_openvino(parent, workdir, options)


def _tensorrt(parent: Artifact, workdir: Path, options: ExportOptions) -> Exported:
    from edgecut.export.tensorrt import export_tensorrt

    return export_tensorrt(parent, workdir, options)


FORMATS: dict[str, ExportFormat] = {
    "onnx": ExportFormat("onnx", ".onnx", ("fp32", "fp16", "int8"), ("cpu", "cuda", "tensorrt"), "onnx",
                         ("onnx", "onnxruntime"), _onnx, parents=("torch", "onnx")),
    # via the fp32 ONNX; int8 also needs nncf (checked when quantising: fp32 / fp16 do without it)
    "openvino": ExportFormat("openvino", ".xml", ("fp32", "fp16", "int8"), ("cpu",), "openvino",
                             ("onnx", "openvino"), _openvino, parents=("torch", "onnx"),
                             accepts=("preset", "max_drop", "val_data")),
    # an engine built on this machine's CUDA GPU from the (fp32 or Q/DQ int8) ONNX; parity runs with --device cuda
    "tensorrt": ExportFormat("tensorrt", ".engine", ("fp32", "fp16", "int8"), ("cuda",), "tensorrt",
                             ("tensorrt",), _tensorrt, parents=("torch", "onnx")),
}


def export(artifact: Artifact | str | os.PathLike, format: str = "onnx", precision: str = "fp32",
           out: str | os.PathLike | None = None, *, calib: str | os.PathLike | None = None, calib_count: int = 64,
           calib_method: str = "minmax", exclude: Sequence[str] = (), exclude_op_types: Sequence[str] = (),
           dynamic: bool = False, opset: int | None = None, simplify: bool = True,
           parity_data: str | os.PathLike | None = None, parity_count: int | None = None,
           tolerances: Mapping[str, float] | None = None, require_faster: bool = False, device: str = "cpu",
           threads: int | None = None, seed: int = 0, overwrite: bool = False, preset: str | None = None,
           max_drop: float | None = None, val_data: str | os.PathLike | None = None) -> Artifact:
    """Export ``artifact`` to ``format`` at ``precision``; return the new, parity-checked artifact.

    ``calib*`` and ``exclude*`` drive INT8 calibration; ``parity_data`` is the image folder the
    export is compared with its parent on (default: a few synthetic product photos);
    ``tolerances`` overrides the precision's defaults (see :data:`parity.DEFAULT_TOLERANCES`).
    ``out`` defaults to ``<parent>-<format>-<precision>`` beside the parent. OpenVINO only:
    ``preset`` (mixed | performance) and ``max_drop`` (INT8 with accuracy control: the largest
    drop of mean mask IoU on ``val_data``, absolute).
    """
    from edgecut import _optional
    from edgecut.export import parity

    parent = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
    fmt = FORMATS.get(format)
    if fmt is None:
        raise EdgecutError(f"unknown export format {format!r}; known: {', '.join(FORMATS)}")
    if precision not in fmt.precisions:
        raise EdgecutError(f"format {format} supports precision {', '.join(fmt.precisions)}, not {precision!r}")
    if parent.manifest.format not in fmt.parents:
        raise EdgecutError(f"{parent.path}: a {parent.manifest.format} artifact cannot be exported to {format} "
                           f"(it converts from {', '.join(fmt.parents)} artifacts)")
    if calib_method not in CALIB_METHODS:
        raise EdgecutError(f"calibration method {calib_method!r}: use {', '.join(CALIB_METHODS)}")
    if calib_count < 1:
        raise EdgecutError(f"calib_count must be at least 1, got {calib_count}")
    specific = {"preset": preset, "max_drop": max_drop, "val_data": val_data}
    foreign = [k for k, v in specific.items() if v is not None and k not in fmt.accepts]
    if foreign:
        raise EdgecutError(f"{', '.join(foreign)}: not an option of format {format}")
    tol = parity.resolve_tolerances(precision, tolerances)
    for module in fmt.modules:
        _optional.require(module, f"exporting to {format}")
    if device.partition(":")[0] == "cpu" and "cpu" not in fmt.devices:  # before a long build, not after it
        raise EdgecutError(f"a {format} model runs on {', '.join(fmt.devices)}, not the CPU: its parity check "
                           f"needs --device {fmt.devices[0]}")
    out = Path(out) if out is not None else parent.path.parent / f"{parent.path.name}-{format}-{precision}"
    _check_out(out, parent, overwrite)

    options = ExportOptions(
        precision=precision, dynamic=dynamic, opset=opset, simplify=simplify,
        calib=CalibConfig(data=Path(calib) if calib else None, count=calib_count, method=calib_method, seed=seed,
                          exclude_nodes=tuple(exclude), exclude_op_types=tuple(exclude_op_types)),
        eval_data=Path(parity_data) if parity_data else None,
        openvino=OpenVinoOptions(preset=preset or "mixed", max_drop=max_drop,
                                 val_data=Path(val_data) if val_data else None),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = io.private_dir_made_public(Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent)))
    try:
        result = fmt.fn(parent, staging, options)
        params = {"format": format, "precision": precision, **result.params}
        if options.precision == "int8":
            params["calib"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options.calib).items()}
        if result.notes:
            params["notes"] = result.notes
        manifest = Manifest(
            format=format, precision=precision, model_file=result.model_file, arch=parent.manifest.arch,
            spec=result.spec, params=parent.manifest.params, macs=parent.manifest.macs,
            lineage=[*parent.manifest.lineage, Step(step="export", params=params, parent_sha256=parent.sha256)],
            tools=tool_versions(*result.tools), metrics=dict(result.metrics),
        )
        candidate = Artifact(staging, manifest)  # not written yet: nothing looks valid before parity

        from edgecut import runtime

        parent_device = device.replace("tensorrt", "cuda") if parent.manifest.format == "torch" else device
        parent_runner = runtime.load(parent, device=parent_device, threads=threads)
        runner = runtime.load(candidate, device=device, threads=threads)
        images = parity.load_images(parity_data, result.spec, count=parity_count, seed=seed)
        report = parity.check(parent_runner, runner, images, tol, data=str(parity_data or "synthetic"))
        manifest.metrics["parity"] = report
        parity.ensure(report, what=f"{format} {precision} export of {parent.path}")
        if require_faster:
            manifest.metrics["speed_vs_parent"] = _require_faster(parent_runner, runner, images[0].image)
        write_artifact(staging, manifest, result.files)
        _move_into_place(staging, out, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return load_artifact(out)


def _check_out(out: Path, parent: Artifact, overwrite: bool) -> None:
    if out.resolve() == parent.path.resolve():
        raise EdgecutError(f"--out {out} is the parent artifact itself; choose another folder")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise InputError(out, "already exists and is not empty", "choose a new --out folder or pass --overwrite")


def _move_into_place(staging: Path, out: Path, overwrite: bool) -> None:
    """Replace ``out`` by the finished staging folder (an old ``out`` is moved aside first)."""
    old = None
    if out.exists():
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        elif overwrite:
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


def _require_faster(parent_runner, runner, image) -> dict[str, Any]:
    """p50 latency of both models on this machine (batch 1, the spec's size); refuse a slower one."""
    from edgecut.bench.latency import LatencyConfig, measure

    config = LatencyConfig(warmup_s=0.5, warmup_min=3, min_time_s=1.5, min_iters=10)
    batch = runner.spec.preprocess(image)
    base = measure(lambda: parent_runner(batch), config)
    new = measure(lambda: runner(batch), config)
    speed = {"parent_p50_ms": round(base.p50_ms, 4), "p50_ms": round(new.p50_ms, 4),
             "speedup": round(base.p50_ms / new.p50_ms, 4), "input_size": list(runner.spec.input_size),
             "threads": getattr(runner, "threads", None), "device": runner.device}
    if new.p50_ms > base.p50_ms:
        raise EdgecutError(f"the export is slower than its parent on this machine: p50 {new.p50_ms:.3f} ms vs "
                           f"{base.p50_ms:.3f} ms ({speed['speedup']:.2f}x); nothing was written "
                           "(drop --require-faster to keep it anyway)")
    return speed


__all__ = ["FORMATS", "PRECISIONS", "CALIB_METHODS", "CalibConfig", "OpenVinoOptions", "ExportOptions", "ExportFormat",
           "Exported", "export"]
