"""``qat``: quantization-aware training: a float torch artifact in, an INT8 QDQ ONNX artifact out.

Post-training INT8 fixes every range from calibration images; QAT fine-tunes the weights *and* the ranges with the
rounding in the loop. The fake quantization is NNCF's (``nncf.quantize`` on the torch model). Steps: batch norms
folded into their convolutions; ``nncf.quantize`` with the performance preset, initial ranges from ``calib_count``
training images; :func:`~edgecut.training.loop.fit` in fp32; export of the quantizers as Q/DQ pairs, traced as in
:mod:`edgecut.exporters.onnx`, then :mod:`edgecut.exporters.qdq`; parity against the float parent (the gate) and
against the fake-quantised model (recorded). ``out`` is the run folder and becomes the artifact (``checkpoints/``,
``qat_setup.json``, ``history.json``, ``model.onnx``, ``edgecut.json``); ``resume=True`` resumes.

Why NNCF rather than PT2E, and each step's reasons: docs/design-decisions.md#qat
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgecut import io
from edgecut._optional import require
from edgecut.artifact import Artifact, ModelSpec, Step, load_artifact, write_artifact
from edgecut.data.folder import Sample, load_pair, subset
from edgecut.data.transforms import SegmentationDataset
from edgecut.env import resolve_device
from edgecut.errors import EdgecutError, InputError, ModelError
from edgecut.exporters import manifest_for, parity, qdq
from edgecut.exporters import onnx as onnx_export
from edgecut.exporters.config import Exported, ParityConfig
from edgecut.models.store import load_model
from edgecut.compress.config import QATConfig
from edgecut.training.loop import CHECKPOINT_DIR, LAST, Callback, Task, fit
from edgecut.training.train import TrainingData, keep_in_memory, training_data, validator

SETUP_FILE = "qat_setup.json"
PARITY_COUNT = 32  # images of the training data set the parity check runs on when no folder is given
MODEL_FILE = "model.onnx"
def fold_batchnorm(model: nn.Module) -> int:
    """Fold every ``BatchNorm2d`` that directly follows a ``Conv2d`` in an ``nn.Sequential`` into
    it (eval statistics), leaving an ``nn.Identity``; return how many were folded."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = 0
    for parent in list(model.modules()):
        if not isinstance(parent, nn.Sequential):
            continue
        names = list(parent._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = parent._modules[a], parent._modules[b]
            if type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.track_running_stats:
                parent._modules[a] = fuse_conv_bn_eval(conv.eval(), bn.eval())
                parent._modules[b] = nn.Identity()
                folded += 1
    return folded


def calibration_images(samples: Sequence[Sample], spec: ModelSpec, count: int,
                       seed: int) -> tuple[list[str], list[torch.Tensor]]:
    """``count`` samples drawn reproducibly (sorted by position), each as a 1 x 3 x H x W batch."""
    chosen = subset(samples, count, seed)
    return [s.name for s in chosen], [torch.from_numpy(spec.preprocess(load_pair(s)[0])) for s in chosen]


EXTENSION_TIMEOUT = "NNCF_EXTENSION_LOAD_TIMEOUT"  # NNCF's limit on building its torch extension (default 60 s)
EXTENSION_BUILD_S = 900  # what QAT allows it unless the user set the variable


@contextlib.contextmanager
def extension_build_time(seconds: int = EXTENSION_BUILD_S) -> Iterator[None]:
    """NNCF compiles a torch C++ extension the first time one of its quantizers runs in a Python
    environment (45 s on a 2-core machine under load) and gives up after 60 s by default; inside
    this block it may take ``seconds``, unless ``NNCF_EXTENSION_LOAD_TIMEOUT`` is already set."""
    if EXTENSION_TIMEOUT in os.environ:
        yield
        return
    os.environ[EXTENSION_TIMEOUT] = str(seconds)
    try:
        yield
    finally:
        os.environ.pop(EXTENSION_TIMEOUT, None)


def prepare(model: nn.Module, images: Sequence[torch.Tensor] | None, config: QATConfig,
            setup: Mapping[str, Any] | None = None) -> nn.Module:
    """Fold batch norms, then insert NNCF's quantizers: calibrated on ``images``, or placed as a
    saved ``setup`` (``nncf.torch.get_config``) says, for a resumed run whose checkpoint holds the
    trained values."""
    nncf = require("nncf", "quantization-aware training")
    model = model.float().cpu().eval()
    if config.fold_batchnorm:
        fold_batchnorm(model)
    if setup is not None:
        import nncf.torch

        return nncf.torch.load_from_config(model, dict(setup))
    from nncf.torch.quantization.layers import SymmetricQuantizer

    # overflow fix: weights start on a 7-bit grid, which x86 CPUs without VNNI run without int16
    # saturation (exporters/onnx.py); TensorRT's int8 (--signed-activations) takes the full range
    overflow = nncf.OverflowFix.FIRST_LAYER if config.signed_activations else nncf.OverflowFix.ENABLE
    try:
        model = nncf.quantize(model, nncf.Dataset(list(images or ())), subset_size=len(images or ()),
                              preset=nncf.QuantizationPreset.PERFORMANCE,
                              advanced_parameters=nncf.AdvancedQuantizationParameters(overflow_fix=overflow))
    except Exception as e:  # NNCF's tracer names the op it cannot handle
        hint = ""
        if "extension load function failed" in str(e):
            hint = (f" (NNCF builds its torch extension on first use; allow it longer with {EXTENSION_TIMEOUT}=1800, "
                    "or remove a stale build lock as NNCF's message says)")
        raise ModelError(f"NNCF could not insert quantizers into {type(model).__name__}: "
                         f"{io.first_line(e, 300)}{hint}") from None
    if config.signed_activations:  # same range, 127 levels instead of 255 above zero; NNCF's own
        for m in model.modules():  # signedness_to_force conflicts with its hardware config for activations
            if isinstance(m, SymmetricQuantizer) and not m.signed:
                m.signed = True  # kept in the state dict (signed_tensor), so a resumed run gets it back
    return model


def to_onnx(model: nn.Module, spec: ModelSpec, dest: Path, parent_sha256: str, opset: int = 18,
            simplify: bool = True) -> Exported:
    """Write the fake-quantised ``model`` as an INT8 QDQ ONNX file ``dest``; what the export did."""
    onnx = require("onnx", "ONNX export")
    from nncf.torch.quantization.layers import BaseQuantizer, QuantizerExportMode

    model = model.float().cpu().to(memory_format=torch.contiguous_format).eval()
    for m in model.modules():
        if isinstance(m, BaseQuantizer):
            m.set_export_mode(QuantizerExportMode.ONNX_QUANTIZE_DEQUANTIZE_PAIRS)
    raw = dest.with_suffix(".traced.onnx")
    onnx_export.trace(model, raw, spec, opset, "the QAT model")
    graph = onnx.load(str(raw))
    raw.unlink()
    graph, note = onnx_export.simplify(graph, simplify)
    folded = qdq.fold_weight_quantizers(graph)
    sunk = qdq.sink_concat_dequantize(graph)
    nodes = onnx_export.finish(graph, spec, "int8", parent_sha256, dest, "the QAT ONNX model")
    summary = qdq.summary(graph)
    notes = [n for n in (note, qdq.saturation_note(summary)) if n]
    params = {"opset": opset, "simplified": note is None, "notes": notes,
              "folded_weight_quantizers": folded, "concat_dequantize_sunk": sunk, "qdq": summary,
              "nodes": nodes}
    return Exported(files={MODEL_FILE: dest}, model_file=MODEL_FILE, spec=spec, params=params,
                    tools=("nncf", *(("onnxslim",) if note is None else ())))


@extension_build_time()
@io.writes_out
def qat(source: Artifact | str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike,
        config: QATConfig = QATConfig(), *, resume: bool = False, progress: bool = True,
        callbacks: Sequence[Callback] = ()) -> Artifact:
    """Fine-tune the float torch artifact ``source`` with fake INT8 quantization on the folder data
    set ``data``; write the INT8 QDQ ONNX artifact (format onnx, precision int8, lineage step
    ``qat``) to ``out`` once it passes parity against ``source``.

    The calibration images come from the training split. Without ``config.parity.data`` the
    parity check runs on ``PARITY_COUNT`` images of ``data``'s validation split (its masks give the IoU change).
    A failed check keeps the training: ``resume=True`` with other tolerances exports it again.
    """
    config.validate()
    out, loop = Path(out), config.loop
    if config.threads:
        torch.set_num_threads(config.threads)
    parent = source if isinstance(source, Artifact) else load_artifact(source)
    if parent.manifest.format != "torch":
        raise ModelError(f"{parent.path}: QAT fine-tunes a torch artifact, not {parent.manifest.format} "
                         "(give the model that was exported)")
    if config.dynamic and not parent.spec.dynamic_size:
        raise EdgecutError(f"{parent.path}: its spec fixes the input size (dynamic_size false); drop --dynamic")
    spec = parent.spec.model_copy(update={"dynamic_size": config.dynamic})
    parity.resolve_tolerances("int8", config.parity.tolerances)  # a bad tolerance is refused now, not after training
    if not resume and ((out / "edgecut.json").exists() or (out / CHECKPOINT_DIR / LAST).exists()):
        raise InputError(out, "already holds a QAT run", "pass --resume to continue it, or choose a new --out")

    ds = training_data(data, config.train_split, config.val_split, progress)
    cache = keep_in_memory(config.cache, len(ds.train))
    model, calib_names = _quantized(parent, ds, spec, config, out / SETUP_FILE, resume)
    device = resolve_device(loop.device)
    validate = validator(ds.val, spec, device, loop.batch_size, cache=cache, amp=False) if ds.val else None
    train_set = SegmentationDataset(ds.train, spec, train=True, seed=loop.seed, cache=cache)
    key = {"qat": io.jsonable(config.quant_settings()), "parent": parent.sha256}
    result = fit(model, train_set, loop, out, task=Task(validate=validate, resume_key=key), resume=resume,
                 progress=progress, callbacks=callbacks)
    io.write_json(out / "history.json", result.state.history)
    model = result.model.float().to("cpu", memory_format=torch.contiguous_format).eval()
    step = {"data": str(ds.root), "train_split": ds.train_split, "val_split": ds.val_split,
            "train_images": len(ds.train), **config.quant_settings(), "train": asdict(loop),
            "quantizer": "nncf.quantize (performance preset)", "best_epoch": result.state.best_epoch,
            "precision_used": result.precision,
            "wall_time_s": round(result.wall_time_s, 1)}
    metrics: dict[str, Any] = {"calibration": {"source": f"{ds.root}:{ds.train_split or 'all'}", "names": calib_names}}
    if result.best_metrics:
        metrics.update(val=result.best_metrics, val_data=ds.val_name)
    checked = config.parity if config.parity.data is not None else \
        replace(config.parity, data=ds.root, split=ds.val_split, count=config.parity.count or PARITY_COUNT)
    return _export(parent, model, spec, out, config, step, metrics, checked)


def _quantized(parent: Artifact, ds: TrainingData, spec: ModelSpec, config: QATConfig, setup_path: Path,
               resume: bool) -> tuple[nn.Module, list[str]]:
    """The parent with NNCF's quantizers: calibrated and placed afresh (their placement saved in
    ``setup_path``), or placed as a resumed run's setup says; and the calibration image names."""
    module = load_model(parent.path).module
    if resume:
        if not setup_path.exists():
            raise InputError(setup_path, "nothing to resume", "run without --resume to start QAT")
        setup = io.read_json(setup_path)
        if setup["parent_sha256"] != parent.sha256 or setup["qat"] != io.jsonable(config.quant_settings()):
            raise InputError(setup_path, "this QAT run was made from another model or with other QAT settings",
                             "resume with the same model and options, or choose a new --out")
        return prepare(module, None, config, setup["nncf"]), setup["calibration"]
    names, images = calibration_images(ds.train, spec, config.calib_count, config.loop.seed)
    model = prepare(module, images, config)
    import nncf.torch

    io.write_json(setup_path, {"parent_sha256": parent.sha256, "qat": config.quant_settings(), "calibration": names,
                               "nncf": nncf.torch.get_config(model)})
    return model, names


def _export(parent: Artifact, model: nn.Module, spec: ModelSpec, out: Path, config: QATConfig,
            step_params: dict[str, Any], metrics: dict[str, Any], checked: ParityConfig) -> Artifact:
    """The fine-tuned model as INT8 QDQ ONNX, gated by parity (on ``checked``'s images, within ``config.parity``'s
    INT8 tolerances) against the float parent (and its fidelity to the fake-quantised torch model recorded),
    written into the run folder ``out``."""
    from edgecut.runtime.torch_runner import TorchRunner

    tol = parity.resolve_tolerances("int8", config.parity.tolerances)

    with io.writing(out):
        staging = Path(tempfile.mkdtemp(prefix=".qat-export-", dir=out))
    try:
        exported = to_onnx(model, spec, staging / MODEL_FILE, parent.sha256, config.opset)
        exported.metrics.update(metrics)
        step = Step(step="qat", parent_sha256=parent.sha256, params={**step_params, **exported.params})
        manifest = manifest_for(parent, exported, step, "onnx", "int8")
        check = parity.against_parent(parent, Artifact(staging, manifest), tol, checked, seed=config.loop.seed,
                                      threads=config.threads)
        fake = TorchRunner(model, spec, device="cpu", threads=config.threads)
        fidelity = parity.check(fake, check.runner, check.images, tol, data=check.report["data"])
        fidelity.pop("per_image")
        manifest.metrics.update(parity=check.report, export_fidelity=fidelity)
        try:
            parity.ensure(check.report, what=f"QAT int8 model of {parent.path}")
        except parity.ParityError as e:
            raise parity.ParityError(f"{e}. The fine-tuned weights are kept in {out / CHECKPOINT_DIR}: add --resume "
                                     "(with the new --tolerance) to export them without training again") from None
        return write_artifact(out, manifest, exported.files)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
