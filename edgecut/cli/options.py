"""Options several commands share, declared once, and the one place each stage's config is built.

Use a shared option as the parameter's type and give its default as usual:
``train_split: TrainSplit = None``. The builders below turn a command's option values into the
config object its front function takes (the same object the Python API takes).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from edgecut.errors import EdgecutError

if TYPE_CHECKING:  # the builders import them when called: `edgecut --help` must not load torch
    from edgecut.compress.config import DistillConfig
    from edgecut.compress.config import PruneConfig
    from edgecut.compress.config import QATConfig
    from edgecut.exporters.config import ExportConfig
    from edgecut.measure.config import BenchConfig
    from edgecut.training.config import LoopConfig
    from edgecut.training.config import TrainConfig

TrainSplit = Annotated[Optional[str], typer.Option(help="Split file or name (default: splits/train.txt if present).")]
ValSplit = Annotated[Optional[str], typer.Option(help="Split file or name (default: splits/val.txt if present).")]
TrainDevice = Annotated[str, typer.Option(help="Training device: auto | cpu | cuda | cuda:N")]
TorchThreads = Annotated[Optional[int], typer.Option(help="Torch CPU threads.")]
Autocast = Annotated[str, typer.Option(help="auto | bf16 | fp16 | fp32 (autocast; auto: the fastest here, timed on "
                                            "the first batch).")]
Workers = Annotated[int, typer.Option(help="Data-loader processes.")]
Ema = Annotated[Optional[float], typer.Option(help="EMA decay, e.g. 0.999.")]
SaveEvery = Annotated[int, typer.Option(help="Also checkpoint every N steps inside an epoch.")]
Epochs = Annotated[int, typer.Option(help="Training epochs.")]
Batch = Annotated[int, typer.Option(help="Batch size (per process under torchrun).")]
Seed = Annotated[int, typer.Option(help="Seeds the weights, the data order and the augmentation.")]
RunThreads = Annotated[Optional[int], typer.Option(help="CPU threads of the runner (default: all this process may use).")]
RunDevice = Annotated[str, typer.Option(help="cpu | cuda[:N] (onnxruntime also tensorrt[:N]).")]
ResumeRun = Annotated[bool, typer.Option("--resume", help="Continue the run in --out exactly where it stopped.")]
ParityCount = Annotated[Optional[int], typer.Option(help="Use this many of --parity-data's images (seeded).")]
Tolerance = Annotated[Optional[list[str]], typer.Option(
    help="Lower the parity bar: KEY=VALUE with max_abs_diff, mask_iou (mean), mask_iou_min (worst image) or "
         "metric_drop (repeatable).")]


# ------------------------------------------------------------------------------------------------
# Each stage's config is built here, once, from the values of its command's options. A command
# calls its builder with ``**locals()`` as its first statement, so the builder sees every option
# by its command-line name; a builder's parameters have no defaults, so a renamed option fails
# loudly. Options that are not settings (the sources, --out, --resume) land in ``**_``.


def loop_config(base: LoopConfig, *, epochs: int | None = None, batch: int | None = None, lr: float | None = None,
                ema: float | None = None, precision: str | None = None, device: str | None = None,
                workers: int | None = None, seed: int | None = None, save_every: int | None = None) -> LoopConfig:
    """``base`` with the training-loop options a command has (None: the command has no such option)."""
    given = {"epochs": epochs, "batch_size": batch, "lr": lr, "ema_decay": ema, "precision": precision,
             "device": device, "workers": workers, "seed": seed, "save_every": save_every}
    return dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})


def _widths(**kwargs: Any) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if v is not None}


def train_config(*, arch, width, depth, size, threads, train_split, val_split, epochs, batch, lr, ema, precision,
                 device, workers, seed, save_every, **_) -> TrainConfig:
    from edgecut.training.config import LoopConfig
    from edgecut.training.config import TrainConfig

    loop = loop_config(LoopConfig(), epochs=epochs, batch=batch, lr=lr, ema=ema, precision=precision, device=device,
                       workers=workers, seed=seed, save_every=save_every)
    return TrainConfig(arch=arch, arch_kwargs=_widths(width=width, depth=depth), size=size, train_split=train_split,
                       val_split=val_split, threads=threads, loop=loop)


def distill_config(*, student, unlabeled, width_mult, width, depth, size, temperature, alpha, feature_kd,
                   feature_weight, boundary_weight, teacher_cache, threads, train_split, val_split, epochs, batch, lr,
                   ema, precision, device, workers, seed, save_every, **_) -> DistillConfig:
    from edgecut.compress.config import DistillConfig
    from edgecut.training.config import LoopConfig

    loop = loop_config(LoopConfig(), epochs=epochs, batch=batch, lr=lr, ema=ema, precision=precision, device=device,
                       workers=workers, seed=seed, save_every=save_every)
    terms = _widths(temperature=temperature, alpha=alpha, feature_weight=feature_weight,
                    boundary_weight=boundary_weight)  # None: the config's default
    cache = {"auto": None, "on": True, "off": False}.get(teacher_cache)
    if teacher_cache not in ("auto", "on", "off"):
        raise EdgecutError(f"--teacher-cache {teacher_cache!r}: give auto, on or off")
    return DistillConfig(student=student, student_kwargs=_widths(width_mult=width_mult, width=width, depth=depth),
                         size=size, feature_kd=feature_kd or feature_weight is not None, teacher_cache=cache,
                         unlabeled=tuple(str(u) for u in unlabeled) if unlabeled else None, train_split=train_split,
                         val_split=val_split,
                         threads=threads, loop=loop, **terms)


def prune_config(*, ratio, target_macs, plan, importance, scope, steps, round_to, ignore, data, finetune_epochs,
                 recalibrate_bn, batch, lr, ema, precision, train_split, val_split, threads, no_latency, seed, kd=False,
                 **_) -> PruneConfig:
    from edgecut.compress.config import PRUNE_LOOP, PruneConfig
    from edgecut.compress.pruning import read_plan

    layer_ratios = read_plan(plan) if plan else {}
    if ratio is None and target_macs is None and not layer_ratios:
        raise EdgecutError("say how much to prune: --ratio R, --target-macs G or --plan FILE")
    loop = loop_config(PRUNE_LOOP, epochs=finetune_epochs, batch=batch, lr=lr, ema=ema, precision=precision,
                       seed=seed)
    return PruneConfig(ratio=ratio, target_macs=target_macs, importance=importance, scope=scope, steps=steps,
                       round_to=round_to if round_to > 1 else None, layer_ratios=layer_ratios,
                       ignore=tuple(ignore or ()), data=str(data) if data else None, train_split=train_split,
                       val_split=val_split, bn_batches=recalibrate_bn, kd=kd, loop=loop, threads=threads,
                       latency=not no_latency)


def qat_config(*, epochs, lr, calib_count, batch, signed_activations, dynamic, parity_data, parity_count, tolerance,
               device, threads, train_split, val_split, seed, save_every, **_) -> QATConfig:
    from edgecut.compress.config import QAT_LOOP, QATConfig
    from edgecut.exporters.config import ParityConfig
    from edgecut.exporters.parity import parse_tolerances

    loop = loop_config(QAT_LOOP, epochs=epochs, batch=batch, lr=lr, device=device, seed=seed, save_every=save_every)
    parity = ParityConfig(data=parity_data, count=parity_count, tolerances=parse_tolerances(tolerance or []))
    return QATConfig(calib_count=calib_count, signed_activations=signed_activations, dynamic=dynamic,
                     train_split=train_split, val_split=val_split, parity=parity, threads=threads, loop=loop)


def import_config(*, class_, arch, kwargs, output_index, output_key, output_channel, output, size, dynamic, mean,
                  std, scale, size_divisor, threshold, data, count, force, overwrite, **_):
    from edgecut.errors import EdgecutError, InputError
    from edgecut.intake.config import ImportConfig
    from edgecut.parsing import loads_json

    try:
        parsed = loads_json(kwargs, "--kwargs", fix="write e.g. '{\"width\": 32}'") if kwargs else {}
    except InputError as e:
        raise EdgecutError(str(e)) from None
    if not isinstance(parsed, dict):
        raise EdgecutError(f"--kwargs is a JSON object of options, got {kwargs!r}")
    if output not in (None, "logits", "probability"):
        raise EdgecutError(f"--output is logits or probability, not {output!r}")
    return ImportConfig(arch=arch, class_path=class_, kwargs=parsed, output_index=output_index, output_key=output_key,
                        output_channel=output_channel, output=output, size=tuple(size) if size else None,
                        dynamic=dynamic, mean=tuple(mean) if mean else None, std=tuple(std) if std else None,
                        scale=scale, size_divisor=size_divisor, threshold=threshold,
                        data=str(data) if data else None, count=count, force=force, overwrite=overwrite)


def export_config(*, format, precision, calib, calib_count, calib_split, calib_method, exclude, exclude_op, dynamic,
                  opset, no_simplify, parity_data, parity_split, parity_count, tolerance, require_faster, device,
                  threads, seed, overwrite, preset, max_drop, val_data, val_split, litert_int8=None, rembg=False,
                  **_) -> ExportConfig:
    from edgecut.exporters.config import (CalibConfig, ExportConfig, LiteRTOptions, OnnxOptions, OpenVinoOptions,
                                           ParityConfig)
    from edgecut.exporters.parity import parse_tolerances

    openvino = OpenVinoOptions(max_drop=max_drop, val_data=val_data, val_split=val_split,
                               **({"preset": preset} if preset is not None else {}))
    return ExportConfig(
        format=format, precision=precision, dynamic=dynamic, opset=opset, simplify=not no_simplify,
        calib=CalibConfig(data=calib, count=calib_count, split=calib_split, method=calib_method,
                          exclude_nodes=tuple(exclude or ()), exclude_op_types=tuple(exclude_op or ())),
        parity=ParityConfig(data=parity_data, count=parity_count, split=parity_split,
                            tolerances=parse_tolerances(tolerance or [])),
        onnx=OnnxOptions(rembg=rembg), openvino=openvino,
        litert=LiteRTOptions(**({"int8": litert_int8} if litert_int8 else {})),
        require_faster=require_faster, device=device, threads=threads, seed=seed,
        overwrite=overwrite)


def bench_config(*, data, split, limit, backend, device, threads, batch, batches, size, reference, warmup, min_time,
                 min_iters, e2e, isolate, repeats, keep, precision, max_repeats, max_wait, worst, **_) -> BenchConfig:
    from edgecut.measure.config import BenchConfig
    from edgecut.runtime.timing import LatencyConfig

    return BenchConfig(backend=backend, device=device, threads=ints(threads, "--threads") or (None,), batch=batch,
                       batches=ints(batches, "--batches"), size=(size, size) if size else None,
                       latency=LatencyConfig(warmup_s=warmup, min_time_s=min_time, min_iters=min_iters),
                       end_to_end=e2e, worst=worst, isolate=isolate, repeats=repeats, keep=keep, max_wait_s=max_wait,
                       precision=precision / 100 if precision is not None else None, max_repeats=max_repeats,
                       data=data, split=split, limit=limit, reference=reference)


def ints(text: str | None, what: str) -> tuple[int, ...]:
    """'1,2,4' -> (1, 2, 4)."""
    if not text:
        return ()
    try:
        return tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise EdgecutError(f"{what} {text!r}: give integers separated by commas, e.g. 1,2,4") from None
