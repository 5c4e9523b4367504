"""The ``edgecut`` command: thin; parses options, calls the front functions, prints."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from edgecut.errors import EdgecutError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Make background-removal networks small and fast, and prove it with numbers.")
data_app = typer.Typer(no_args_is_help=True, help="Make and inspect data sets.")
app.add_typer(data_app, name="data")
console = Console()
err = Console(stderr=True, soft_wrap=True)


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option(help="Folder to write images/, masks/, splits/ into.")],
    count: Annotated[int, typer.Option(help="Number of images.")] = 256,
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = 256,
    seed: Annotated[int, typer.Option(help="Same seed, same bytes.")] = 0,
    val_fraction: Annotated[float, typer.Option(help="Share of images listed in splits/val.txt.")] = 0.2,
) -> None:
    """Generate synthetic studio product photos with exact masks (deterministic by seed)."""
    from edgecut.data.synth import generate

    try:
        generate(out, count, size, seed, val_fraction=val_fraction, progress=True)
    except (ValueError, FileExistsError) as e:
        raise EdgecutError(str(e)) from None
    console.print(f"wrote {count} images and masks to {out}")


@app.command()
def train(
    data: Annotated[Path, typer.Option(help="Data set folder (images/ + masks/, optional splits/).")],
    out: Annotated[Path, typer.Option(help="Run folder; becomes the model artifact.")],
    arch: Annotated[str, typer.Option(help="Registered architecture.")] = "unet",
    width: Annotated[Optional[int], typer.Option(help="Base width (unet: 64 is the full-size teacher).")] = None,
    depth: Annotated[Optional[int], typer.Option(help="Number of down stages (unet: 4).")] = None,
    size: Annotated[int, typer.Option(help="Training input side in pixels.")] = 320,
    epochs: Annotated[int, typer.Option()] = 20,
    batch: Annotated[int, typer.Option()] = 8,
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate.")] = 1e-3,
    ema: Annotated[Optional[float], typer.Option(help="EMA decay, e.g. 0.999.")] = None,
    precision: Annotated[str, typer.Option(help="auto | bf16 | fp16 | fp32 (autocast).")] = "auto",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    threads: Annotated[Optional[int], typer.Option(help="Torch CPU threads.")] = None,
    workers: Annotated[int, typer.Option(help="Data-loader processes.")] = 0,
    train_split: Annotated[Optional[str], typer.Option(help="Split file or name (default: splits/train.txt if present).")] = None,
    val_split: Annotated[Optional[str], typer.Option(help="Split file or name (default: splits/val.txt if present).")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    save_every: Annotated[int, typer.Option(help="Also checkpoint every N steps inside an epoch.")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out exactly where it stopped.")] = False,
) -> None:
    """Train a model (the U-Net teacher by default) with BCE + Dice; the result is an artifact."""
    from edgecut.train.loop import TrainConfig
    from edgecut.train.run import train as train_fn

    kwargs = {k: v for k, v in {"width": width, "depth": depth}.items() if v is not None}
    config = TrainConfig(epochs=epochs, batch_size=batch, lr=lr, ema_decay=ema, precision=precision,  # type: ignore[arg-type]
                         device=device, workers=workers, seed=seed, save_every=save_every)
    art = train_fn(data, out, arch=arch, arch_kwargs=kwargs, size=size, config=config, train_split=train_split,
                   val_split=val_split, resume=resume, threads=threads)
    m = art.manifest
    val = m.metrics.get("val", {})
    summary = ", ".join(f"{k} {val[k]:.4f}" for k in ("iou", "mae", "s_measure") if k in val)
    console.print(f"artifact {art.path}: {m.params:,} params, {m.macs / 1e9:.2f} GMACs at {m.spec.input_size}"
                  + (f"; best val {summary}" if summary else ""))


@app.command()
def distill(
    teacher: Annotated[list[Path], typer.Option(help="Teacher artifact; repeat for several (their probabilities are averaged).")],
    student: Annotated[str, typer.Option(help="Student architecture (see info --list-archs), or a torch artifact to start from.")],
    out: Annotated[Path, typer.Option(help="Run folder; becomes the student artifact.")],
    data: Annotated[Optional[Path], typer.Option(help="Labelled data set folder (images/ + masks/, optional splits/).")] = None,
    unlabeled: Annotated[Optional[Path], typer.Option(help="Folder with images/ only: the teachers label them.")] = None,
    width_mult: Annotated[Optional[float], typer.Option(help="Student width multiplier (MobileNet students).")] = None,
    width: Annotated[Optional[int], typer.Option(help="Student base width (unet).")] = None,
    depth: Annotated[Optional[int], typer.Option(help="Student down stages (unet).")] = None,
    size: Annotated[int, typer.Option(help="Training input side in pixels.")] = 320,
    epochs: Annotated[int, typer.Option()] = 20,
    batch: Annotated[int, typer.Option(help="Batch size (per process under torchrun).")] = 8,
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate.")] = 1e-3,
    temperature: Annotated[Optional[float], typer.Option(help="KD temperature T (default 2).")] = None,
    alpha: Annotated[Optional[float], typer.Option(help="Weight of the KD term; 1 - alpha weighs the labels (default 0.5).")] = None,
    feature_kd: Annotated[bool, typer.Option("--feature-kd", help="Also match features at shared strides.")] = False,
    feature_weight: Annotated[Optional[float], typer.Option(help="Weight of the feature term (default 1; implies --feature-kd).")] = None,
    boundary_weight: Annotated[Optional[float], typer.Option(help="Weight of the edge-band BCE term (default 0: off).")] = None,
    ema: Annotated[Optional[float], typer.Option(help="EMA decay, e.g. 0.999.")] = None,
    precision: Annotated[str, typer.Option(help="auto | bf16 | fp16 | fp32 (autocast).")] = "auto",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    threads: Annotated[Optional[int], typer.Option(help="Torch CPU threads.")] = None,
    workers: Annotated[int, typer.Option(help="Data-loader processes.")] = 0,
    train_split: Annotated[Optional[str], typer.Option(help="Split file or name (default: splits/train.txt if present).")] = None,
    val_split: Annotated[Optional[str], typer.Option(help="Split file or name (default: splits/val.txt if present).")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    save_every: Annotated[int, typer.Option(help="Also checkpoint every N steps inside an epoch.")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out exactly where it stopped.")] = False,
) -> None:
    """Distill one or more teachers into a small student (KD, optional feature and edge terms).

    Runs under torchrun (python -m torch.distributed.run --nproc_per_node N -m edgecut.cli distill ...)."""
    from edgecut.compress.distill import DistillConfig
    from edgecut.compress.distill import distill as distill_fn
    from edgecut.train.loop import TrainConfig, world

    given = {"temperature": temperature, "alpha": alpha, "feature_weight": feature_weight,
             "boundary_weight": boundary_weight}
    dconfig = DistillConfig(feature_kd=feature_kd or feature_weight is not None,
                            **{k: v for k, v in given.items() if v is not None})
    kwargs = {k: v for k, v in {"width_mult": width_mult, "width": width, "depth": depth}.items() if v is not None}
    config = TrainConfig(epochs=epochs, batch_size=batch, lr=lr, ema_decay=ema, precision=precision,  # type: ignore[arg-type]
                         device=device, workers=workers, seed=seed, save_every=save_every)
    art = distill_fn(teacher, student, data, out, config=dconfig, train_config=config, student_kwargs=kwargs,
                     size=size, unlabeled=unlabeled, train_split=train_split, val_split=val_split, resume=resume,
                     threads=threads)
    if world()[0] != 0:  # under torchrun rank 0 speaks
        return
    m = art.manifest
    val = m.metrics.get("val", {})
    summary = ", ".join(f"{k} {val[k]:.4f}" for k in ("iou", "mae", "s_measure") if k in val)
    console.print(f"artifact {art.path}: {m.params:,} params, {m.macs / 1e9:.2f} GMACs at {m.spec.input_size}"
                  + (f"; best val {summary}" if summary else ""))


@app.command()
def prune(
    model: Annotated[Path, typer.Argument(help="Torch artifact to prune (teacher, student, pruned model).")],
    out: Annotated[Path, typer.Option(help="Folder for the pruned artifact (or the sensitivity tables).")],
    ratio: Annotated[Optional[float], typer.Option(help="Share of channels removed (per group, or overall with --scope global).")] = None,
    target_macs: Annotated[Optional[float], typer.Option(help="Instead of --ratio: prune to at most this many GMACs at the model's input size.")] = None,
    plan: Annotated[Optional[Path], typer.Option(help="Per-layer ratios: a plan.json from --sensitivity --max-drop.")] = None,
    importance: Annotated[str, typer.Option(help="l1 | l2 | bn | taylor (taylor needs --data).")] = "l2",
    scope: Annotated[str, typer.Option(help="uniform: the same ratio per group; global: rank all channels together.")] = "uniform",
    steps: Annotated[int, typer.Option(help="Iterative schedule: prune (and fine-tune) this many times.")] = 1,
    round_to: Annotated[int, typer.Option(help="Keep channel counts a multiple of this (1: no rounding).")] = 8,
    ignore: Annotated[Optional[list[str]], typer.Option(help="Layer whose output channels stay whole (repeatable).")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Data set: fine-tuning, validation, sensitivity, taylor.")] = None,
    finetune_epochs: Annotated[int, typer.Option(help="Fine-tuning epochs after each pruning step (needs --data).")] = 0,
    recalibrate_bn: Annotated[int, typer.Option(help="Re-estimate batch-norm statistics on N training batches after each pruning step (needs --data).")] = 0,
    batch: Annotated[int, typer.Option(help="Fine-tuning batch size.")] = 8,
    lr: Annotated[float, typer.Option(help="Fine-tuning peak learning rate.")] = 3e-4,
    ema: Annotated[Optional[float], typer.Option(help="Fine-tuning EMA decay, e.g. 0.998.")] = None,
    train_split: Annotated[Optional[str], typer.Option(help="Split file or name (default: splits/train.txt if present).")] = None,
    val_split: Annotated[Optional[str], typer.Option(help="Split file or name (default: splits/val.txt if present).")] = None,
    sensitivity: Annotated[bool, typer.Option("--sensitivity", help="Measure each group's metric drop instead of pruning.")] = False,
    ratios: Annotated[str, typer.Option(help="Sensitivity: ratios tried per group, comma separated.")] = "0.25,0.5,0.75",
    images: Annotated[int, typer.Option(help="Sensitivity: held-out images scored per trial.")] = 100,
    max_drop: Annotated[Optional[float], typer.Option(help="Sensitivity: write plan.json keeping each group's drop under this.")] = None,
    threads: Annotated[Optional[int], typer.Option(help="Torch CPU threads (training and latency).")] = None,
    no_latency: Annotated[bool, typer.Option("--no-latency", help="Skip the before/after CPU latency.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the pruning run in --out.")] = False,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Structured channel pruning (Torch-Pruning dependency graph), with fine-tuning and sensitivity analysis."""
    from edgecut.compress.prune import PruneConfig, read_plan

    if sensitivity:
        from edgecut.compress.prune_run import sensitivity_artifact

        if data is None:
            raise EdgecutError("--sensitivity needs --data DIR (held-out images to score each trial on)")
        try:
            ratio_list = tuple(float(r) for r in ratios.split(","))
        except ValueError:
            raise EdgecutError(f"--ratios {ratios!r}: expected numbers separated by commas, e.g. 0.25,0.5,0.75") from None
        res = sensitivity_artifact(model, out, data, ratios=ratio_list, importance=importance,
                                   round_to=round_to if round_to > 1 else None, ignore=tuple(ignore or ()),
                                   split=train_split, images=images, max_drop=max_drop, threads=threads)
        worst = sorted(res["rows"], key=lambda r: -r.drop)[:5]
        console.print(f"baseline IoU {res['baseline']:.4f} on {res['images']} images of {res['data']}; most sensitive: "
                      + ", ".join(f"{r.layer}@{r.ratio:g} {r.drop:+.4f}" for r in worst))
        if res["plan"] is not None:
            console.print(f"plan: {len(res['plan'])} groups pruned within a drop of {max_drop}")
        console.print("wrote " + ", ".join(str(f) for f in res["files"]))
        return

    from edgecut.compress.prune_run import FinetuneConfig, prune_artifact
    from edgecut.train.loop import TrainConfig

    layer_ratios = read_plan(plan) if plan else {}
    if ratio is None and target_macs is None and not layer_ratios:
        raise EdgecutError("say how much to prune: --ratio R, --target-macs G or --plan FILE")
    config = PruneConfig(ratio=ratio if ratio is not None else (None if target_macs or layer_ratios else 0.5),
                         target_macs=target_macs, importance=importance, scope=scope, steps=steps,  # type: ignore[arg-type]
                         round_to=round_to if round_to > 1 else None, layer_ratios=layer_ratios,
                         ignore=tuple(ignore or ()))
    finetune = FinetuneConfig(data=str(data) if data else None, epochs=finetune_epochs, train_split=train_split,
                              val_split=val_split, bn_batches=recalibrate_bn)
    train_config = TrainConfig(batch_size=batch, lr=lr, ema_decay=ema, seed=seed, warmup_epochs=0.2)
    art, report = prune_artifact(model, out, config, finetune=finetune, train_config=train_config, resume=resume,
                                 threads=threads, latency=not no_latency)
    table = Table(title=f"pruned {model} -> {art.path}")
    for col in ("", "before", "after", "change"):
        table.add_column(col, justify="right")
    b, a = report["before"], report["after"]
    table.add_row("params", f"{b['params']:,}", f"{a['params']:,}", f"{b['params'] / a['params']:.2f}x fewer")
    table.add_row("GMACs", f"{b['macs'] / 1e9:.3f}", f"{a['macs'] / 1e9:.3f}", f"{b['macs'] / a['macs']:.2f}x fewer")
    if "latency" in a:
        table.add_row("torch CPU p50 ms", f"{b['latency']['p50_ms']:.2f}", f"{a['latency']['p50_ms']:.2f}",
                      f"{report['speedup_p50']:.2f}x" + (" faster" if report["speedup_p50"] >= 1 else " (slower)"))
    for k in ("iou", "mae", "s_measure"):
        if k in b.get("val", {}) and k in a.get("val", {}):
            table.add_row(f"val {k}", f"{b['val'][k]:.4f}", f"{a['val'][k]:.4f}", f"{a['val'][k] - b['val'][k]:+.4f}")
    console.print(table)


@app.command()
def qat(
    model: Annotated[Path, typer.Argument(help="Float torch artifact to fine-tune with fake INT8 quantization.")],
    data: Annotated[Path, typer.Option(help="Data set folder (images/ + masks/, optional splits/).")],
    out: Annotated[Path, typer.Option(help="Run folder; becomes the INT8 ONNX artifact.")],
    epochs: Annotated[int, typer.Option()] = 3,
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate (fine-tuning: small).")] = 1e-4,
    calib_count: Annotated[int, typer.Option(help="Training images that set the initial ranges.")] = 64,
    batch: Annotated[int, typer.Option()] = 8,
    signed_activations: Annotated[bool, typer.Option("--signed-activations", help="int8 activations everywhere (TensorRT needs it); default uint8 after ReLU.")] = False,
    dynamic: Annotated[bool, typer.Option("--dynamic", help="Let H and W vary in the ONNX model (batch always does).")] = False,
    parity_data: Annotated[Optional[Path], typer.Option(help="Images the INT8 model is compared with its parent on (default: synthetic photos).")] = None,
    parity_count: Annotated[Optional[int], typer.Option(help="Use this many of --parity-data's images (seeded).")] = None,
    tolerance: Annotated[Optional[list[str]], typer.Option(help="Lower the parity bar: KEY=VALUE with max_abs_diff, mask_iou (mean), mask_iou_min (worst image) or metric_drop (repeatable).")] = None,
    device: Annotated[str, typer.Option(help="Training device: auto | cpu | cuda | cuda:N")] = "auto",
    threads: Annotated[Optional[int], typer.Option(help="Torch CPU threads.")] = None,
    train_split: Annotated[Optional[str], typer.Option(help="Split file or name (default: splits/train.txt if present).")] = None,
    val_split: Annotated[Optional[str], typer.Option(help="Split file or name (default: splits/val.txt if present).")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    save_every: Annotated[int, typer.Option(help="Also checkpoint every N steps inside an epoch.")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out exactly where it stopped.")] = False,
) -> None:
    """Quantization-aware training (NNCF fake quantization): fine-tune, then write an INT8 QDQ ONNX artifact."""
    import dataclasses

    from edgecut.compress.qat import QAT_TRAIN, QATConfig
    from edgecut.compress.qat import qat as qat_fn
    from edgecut.export.parity import parse_tolerances

    config = QATConfig(calib_count=calib_count, signed_activations=signed_activations, dynamic=dynamic)
    train_config = dataclasses.replace(QAT_TRAIN, epochs=epochs, lr=lr, batch_size=batch, device=device, seed=seed,
                                       save_every=save_every)
    art = qat_fn(model, data, out, config=config, train_config=train_config, train_split=train_split,
                 val_split=val_split, parity_data=parity_data, parity_count=parity_count,
                 tolerances=parse_tolerances(tolerance or []), resume=resume, threads=threads)
    m = art.manifest
    p, f = m.metrics["parity"], m.metrics["export_fidelity"]
    val = m.metrics.get("val", {})
    if val:
        console.print("best val (fake-quantised, torch): "
                      + ", ".join(f"{k} {val[k]:.4f}" for k in ("iou", "mae", "s_measure") if k in val))
    line = (f"parity vs the float parent on {p['images']} image(s) ({p['data']}): max abs diff {p['max_abs_diff']:.3g}, "
            f"min mask IoU {p['mask_iou_min']:.4f}")
    if "metric" in p:
        line += f", IoU vs masks {p['metric']['parent']:.4f} -> {p['metric']['export']:.4f} ({-p['metric']['drop']:+.4f})"
    console.print(line)
    console.print(f"ONNX vs the fake-quantised torch model: max abs diff {f['max_abs_diff']:.3g}, "
                  f"min mask IoU {f['mask_iou_min']:.4f}")
    size = sum(e.size for e in m.files.values())
    console.print(f"artifact {art.path}: {m.format} {m.precision} (QDQ), {size / 1e6:.2f} MB, input {m.spec.input_size}")


@app.command("export")
def export_cmd(
    model: Annotated[Path, typer.Argument(help="Torch artifact (or an fp32 ONNX artifact, for fp16 / int8).")],
    out: Annotated[Path, typer.Option(help="Folder for the exported artifact.")],
    format: Annotated[str, typer.Option(help="Export format: onnx | openvino | tensorrt (built on this CUDA GPU; needs --device cuda).")] = "onnx",
    precision: Annotated[str, typer.Option(help="fp32 | fp16 | int8")] = "fp32",
    calib: Annotated[Optional[Path], typer.Option(help="INT8: calibration images (a folder, or a data set with images/); default: synthetic photos.")] = None,
    calib_count: Annotated[int, typer.Option(help="INT8: images drawn (seeded) from --calib.")] = 64,
    calib_method: Annotated[str, typer.Option(help="INT8: minmax | entropy | percentile")] = "minmax",
    exclude: Annotated[Optional[list[str]], typer.Option(help="INT8: node name kept in float (repeatable).")] = None,
    exclude_op: Annotated[Optional[list[str]], typer.Option(help="INT8: op type kept in float, e.g. Resize (repeatable).")] = None,
    dynamic: Annotated[bool, typer.Option("--dynamic", help="Let H and W vary (batch always does).")] = False,
    opset: Annotated[Optional[int], typer.Option(help="ONNX opset (default 18).")] = None,
    no_simplify: Annotated[bool, typer.Option("--no-simplify", help="Skip onnxslim.")] = False,
    parity_data: Annotated[Optional[Path], typer.Option(help="Images the export is compared with its parent on (default: synthetic photos).")] = None,
    parity_count: Annotated[Optional[int], typer.Option(help="Use this many of --parity-data's images (seeded).")] = None,
    tolerance: Annotated[Optional[list[str]], typer.Option(help="Lower the parity bar: KEY=VALUE with max_abs_diff, mask_iou (mean), mask_iou_min (worst image) or metric_drop (repeatable).")] = None,
    require_faster: Annotated[bool, typer.Option("--require-faster", help="Refuse an export slower than its parent on this machine.")] = False,
    device: Annotated[str, typer.Option(help="cpu | cuda[:N] | tensorrt[:N] (parity and speed checks; a TensorRT engine runs on cuda).")] = "cpu",
    threads: Annotated[Optional[int], typer.Option(help="Threads of both runners during the checks.")] = None,
    seed: Annotated[int, typer.Option(help="Picks the calibration and parity images.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --out.")] = False,
    preset: Annotated[Optional[str], typer.Option(help="OpenVINO INT8: mixed | performance (default mixed).")] = None,
    max_drop: Annotated[Optional[float], typer.Option(help="OpenVINO INT8 with accuracy control: largest drop of mean mask IoU (absolute, e.g. 0.01); layers fall back to float until it holds.")] = None,
    val_data: Annotated[Optional[Path], typer.Option(help="OpenVINO --max-drop: images + masks the IoU is measured on (default: --parity-data, else synthetic).")] = None,
) -> None:
    """Export a model (ONNX or OpenVINO; fp32 / fp16 / int8), check parity with its parent, write an artifact."""
    from edgecut.export import export
    from edgecut.export.parity import parse_tolerances

    art = export(model, format, precision, out, calib=calib, calib_count=calib_count, calib_method=calib_method,
                 exclude=tuple(exclude or ()), exclude_op_types=tuple(exclude_op or ()), dynamic=dynamic, opset=opset,
                 simplify=not no_simplify, parity_data=parity_data, parity_count=parity_count,
                 tolerances=parse_tolerances(tolerance or []), require_faster=require_faster, device=device,
                 threads=threads, seed=seed, overwrite=overwrite, preset=preset, max_drop=max_drop, val_data=val_data)
    m = art.manifest
    cal = m.metrics.get("calibration")
    if cal:
        c, e = cal["calibration"], cal.get("eval")
        table = Table(title=f"calibration: {len(cal['names'])} of {cal['available']} images from {cal['source']} ({cal['method']})")
        for col in ("", "calibration", "evaluation"):
            table.add_column(col, justify="right")
        fg = lambda d: "-" if not d or not d["foreground_fraction"] else f"{d['foreground_fraction']['mean']:.3f}"  # noqa: E731
        hw = lambda d: "-" if not d else f"{d['size']['height']['median']:.0f}x{d['size']['width']['median']:.0f}"  # noqa: E731
        table.add_row("mean brightness", f"{c['brightness']['mean']:.3f}", f"{e['brightness']['mean']:.3f}" if e else "-")
        table.add_row("mean foreground fraction", fg(c), fg(e))
        table.add_row("median size", hw(c), hw(e))
        console.print(table)
    for note in m.lineage[-1].params.get("notes", []):
        err.print(f"[yellow]note[/yellow] {note}", highlight=False)
    p = m.metrics["parity"]
    line = (f"parity on {p['images']} image(s) ({p['data']}): max abs diff {p['max_abs_diff']:.3g} "
            f"({p['max_abs_diff_image']}), min mask IoU {p['mask_iou_min']:.4f} ({p['mask_iou_min_image']})")
    if "metric" in p:
        line += f", IoU vs masks {p['metric']['parent']:.4f} -> {p['metric']['export']:.4f} ({-p['metric']['drop']:+.4f})"
    console.print(line)
    if "accuracy_control" in m.metrics:
        a = m.metrics["accuracy_control"]
        reverted = "?" if a["reverted_ops"] is None else a["reverted_ops"]
        console.print(f"accuracy control on {a['images']} image(s): IoU {a['fp32']:.4f} -> {a['int8']:.4f} "
                      f"(drop {a['drop']:.4f} <= {a['max_drop']:g}), {reverted} operation(s) left in float")
    if "speed_vs_parent" in m.metrics:
        s = m.metrics["speed_vs_parent"]
        console.print(f"p50 {s['parent_p50_ms']:.3f} ms -> {s['p50_ms']:.3f} ms ({s['speedup']:.2f}x) on {s['device']}")
    size = sum(f.size for f in m.files.values())
    console.print(f"artifact {art.path}: {m.format} {m.precision}, {size / 1e6:.2f} MB, input {m.spec.input_size}"
                  + (" (H, W dynamic)" if m.spec.dynamic_size else ""))


def _metrics_table(metrics: dict[str, float], title: str) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    return table


@app.command("eval")
def eval_cmd(
    data: Annotated[Path, typer.Option(help="Data set folder (images/ + masks/).")],
    model: Annotated[Optional[Path], typer.Argument(help="Artifact directory.")] = None,
    split: Annotated[Optional[str], typer.Option(help="Split file (or name in data/splits/).")] = None,
    pred: Annotated[Optional[Path], typer.Option(help="Score a folder of saved prediction maps instead of a model.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write metrics and per-image scores here.")] = None,
    threads: Annotated[Optional[int], typer.Option()] = None,
    device: Annotated[str, typer.Option()] = "cpu",
    batch: Annotated[int, typer.Option()] = 1,
    worst: Annotated[int, typer.Option(help="List this many lowest-IoU images.")] = 5,
) -> None:
    """Score a model (or saved prediction maps) on a data set at each image's own resolution."""
    from edgecut import io
    from edgecut.bench.accuracy import evaluate, evaluate_predictions
    from edgecut.data.folder import find_samples

    if (model is None) == (pred is None):
        raise EdgecutError("give either MODEL (an artifact directory) or --pred DIR, not both or neither")
    samples = find_samples(data, split)
    if pred is not None:
        result = evaluate_predictions(pred, samples)
        source = {"pred": str(pred)}
    else:
        from edgecut import runtime

        runner = runtime.load(model, device=device, threads=threads)
        result = evaluate(runner, samples, batch_size=batch)
        source = {"model": str(model), "backend": runner.backend, "device": runner.device}
    console.print(_metrics_table(result.metrics, f"{result.count} images from {data}" + (f" ({split})" if split else "")))
    if worst:
        console.print("lowest IoU: " + ", ".join(f"{r['name']} {r['iou']:.3f}" for r in result.worst(worst)))
    if json_out:
        io.write_json(json_out, result.to_json(data=str(data), split=split, **source))
        console.print(f"wrote {json_out}")


def _ints(text: str | None, what: str) -> tuple[int, ...]:
    """'1,2,4' -> (1, 2, 4)."""
    if not text:
        return ()
    try:
        return tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise EdgecutError(f"{what} {text!r}: give integers separated by commas, e.g. 1,2,4") from None


@app.command()
def bench(
    models: Annotated[list[Path], typer.Argument(help="Artifact directories to measure.")],
    out: Annotated[Path, typer.Option(help="Records file (.jsonl); one JSON line per measurement.")],
    data: Annotated[Optional[Path], typer.Option(help="Data set (images/ + masks/) for accuracy; omit for latency only.")] = None,
    split: Annotated[Optional[str], typer.Option(help="Split file (or name in data/splits/).")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Score only the first N images.")] = None,
    backend: Annotated[Optional[str], typer.Option(help="torch | onnxruntime | openvino | tensorrt (default: the format's own).")] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
    threads: Annotated[Optional[str], typer.Option(help="Intra-op threads; a list (1,2,4) sweeps them. Default: all CPUs.")] = None,
    batch: Annotated[int, typer.Option(help="Batch of the latency measurement.")] = 1,
    batches: Annotated[Optional[str], typer.Option(help="Also measure throughput at these batch sizes, e.g. 1,4,8.")] = None,
    size: Annotated[Optional[int], typer.Option(help="Input side in pixels (default: each model's spec).")] = None,
    reference: Annotated[Optional[Path], typer.Option(help="Artifact whose outputs every model is compared with.")] = None,
    name: Annotated[Optional[list[str]], typer.Option("--name", help="Display name per model, in order.")] = None,
    warmup: Annotated[float, typer.Option(help="Warm-up seconds (at least 5 calls).")] = 1.0,
    min_time: Annotated[float, typer.Option(help="Timed seconds (at least --min-iters calls).")] = 3.0,
    min_iters: Annotated[int, typer.Option()] = 20,
    e2e: Annotated[bool, typer.Option("--e2e/--no-e2e", help="Also time the whole cut-out of one image file.")] = True,
    isolate: Annotated[bool, typer.Option("--isolate/--in-process", help="Time each model in a fresh process.")] = True,
    repeats: Annotated[int, typer.Option(help="Worker runs per model; the median is kept, disagreeing runs are flagged.")] = 1,
    worst: Annotated[int, typer.Option(help="Worst images kept per record (cut-outs saved for the html report).")] = 6,
    resume: Annotated[bool, typer.Option("--resume", help="Add to an existing records file; skip what it holds.")] = False,
) -> None:
    """Measure latency (and accuracy on --data) of every model through its Runner; append one record each."""
    from edgecut.bench.latency import LatencyConfig
    from edgecut.bench.run import BenchConfig
    from edgecut.bench.run import bench as bench_fn

    config = BenchConfig(backend=backend, device=device, threads=_ints(threads, "--threads") or (None,), batch=batch,
                         batches=_ints(batches, "--batches"), size=(size, size) if size else None,
                         latency=LatencyConfig(warmup_s=warmup, min_time_s=min_time, min_iters=min_iters),
                         end_to_end=e2e, worst=worst, isolate=isolate, repeats=repeats)

    def show(rec) -> None:
        lat = rec.latency
        line = (f"{rec.name}  {rec.backend} {rec.precision} {rec.input_size[0]}x{rec.input_size[1]} b{rec.batch} "
                f"t{rec.threads}: p50 {lat.p50_ms:.2f} ms  p90 {lat.p90_ms:.2f} ms" + ("  (unstable)" if lat.unstable else ""))
        if rec.end_to_end:
            line += f"  cut-out {rec.end_to_end.p50_ms:.1f} ms"
        if rec.accuracy:
            line += f"  IoU {rec.accuracy.metrics['iou']:.4f}"
        console.print(line, highlight=False)

    result = bench_fn(models, out, config, data=data, split=split, limit=limit, reference=reference, names=name,
                      resume=resume, on_record=show)
    for s in result.skipped:
        console.print(f"[dim]already in {out}: {s}[/dim]")
    console.print(f"wrote {len(result.records)} record(s) to {out}; compare them with 'edgecut compare {out} --out DIR'")


@app.command()
def info(
    model: Annotated[Optional[Path], typer.Argument(help="Artifact directory.")] = None,
    json_flag: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
    size: Annotated[Optional[int], typer.Option(help="Count MACs at this input side instead of the spec's.")] = None,
    list_archs: Annotated[bool, typer.Option("--list-archs", help="List registered architectures.")] = False,
) -> None:
    """Show an artifact's manifest: format, precision, spec, params, MACs, lineage, files."""
    from edgecut.artifact import load_artifact

    if list_archs:
        from edgecut.models.registry import builder_options, list_models

        for name in list_models():
            console.print(f"{name}  {builder_options(name)}")
        return
    if model is None:
        raise EdgecutError("give MODEL (an artifact directory), or --list-archs")
    art = load_artifact(model)
    m = art.manifest.model_dump(mode="json")
    if size is not None:
        if art.manifest.format != "torch":
            raise EdgecutError(f"--size recounts MACs of torch artifacts only; {model} is {art.manifest.format}")
        from edgecut.models.profile import count_macs
        from edgecut.models.store import load_model

        spec = art.spec.with_size(size)
        m["macs"] = count_macs(load_model(art.path).module, spec.input_size)
        m["macs_input_size"] = list(spec.input_size)
    else:
        m["macs_input_size"] = list(art.spec.input_size)
    if json_flag:
        print(json.dumps(m, indent=2, sort_keys=True))
        return
    table = Table(title=str(model), show_header=False)
    for key in ("format", "precision", "model_file", "params", "macs", "macs_input_size"):
        val = m.get(key)
        if key == "macs" and val is not None:
            val = f"{val / 1e9:.3f} G"
        elif key == "params" and val is not None:
            val = f"{val:,}"
        table.add_row(key, str(val))
    table.add_row("arch", json.dumps(m["arch"]))
    table.add_row("spec", json.dumps(m["spec"]))
    for step in m["lineage"]:
        table.add_row("lineage", f"{step['step']} at {step['time']}")
    for k, v in m.get("metrics", {}).get("val", {}).items():
        table.add_row(f"val {k}", f"{v:.4f}")
    console.print(table)


@app.command()
def remove(
    inputs: Annotated[list[Path], typer.Argument(help="Image files or folders of images.")],
    model: Annotated[Path, typer.Option(help="Artifact directory.")],
    out: Annotated[Path, typer.Option(help="Output folder (one PNG per input).")],
    format: Annotated[str, typer.Option(help="rgba | mask | composite")] = "rgba",
    bg: Annotated[str, typer.Option(help="Background for --format composite: name, #RRGGBB or R,G,B.")] = "white",
    threads: Annotated[Optional[int], typer.Option()] = None,
    device: Annotated[str, typer.Option()] = "cpu",
) -> None:
    """Cut out backgrounds: files or folders in, PNGs at the original size out."""
    from edgecut import runtime
    from edgecut.cutout import parse_color, remove_background

    if format not in ("rgba", "mask", "composite"):
        raise EdgecutError(f"--format {format!r}: use rgba, mask or composite")
    color = parse_color(bg)
    runner = runtime.load(model, device=device, threads=threads)
    report = remove_background(inputs, runner, out, fmt=format, bg=color,  # type: ignore[arg-type]
                               on_error=lambda p, msg: err.print(f"[red]error[/red] {msg}", highlight=False))
    console.print(f"wrote {len(report.written)} cut-out(s) to {out}"
                  + (f"; {len(report.failed)} input(s) failed" if report.failed else ""))
    if report.failed:
        raise typer.Exit(1)


@app.command()
def doctor(json_flag: Annotated[bool, typer.Option("--json")] = False) -> None:
    """What this machine offers: backends, devices, CPU flags, threads."""
    from edgecut.env import environment

    env = environment(probe_backends=True)
    if json_flag:
        print(json.dumps(env, indent=2, sort_keys=True))
        return
    cpu = env["cpu"]
    console.print(f"python {env['python']} on {env['platform']}")
    console.print(f"cpu    {cpu['model']} ({cpu['arch']}, {cpu['cores']} logical cores)")
    console.print(f"flags  {' '.join(cpu['flags']) or '-'}")
    console.print(f"torch  {env['devices']['torch']}")
    table = Table("backend", "version", "devices / providers")
    from edgecut.env import BACKENDS

    for name in BACKENDS:
        ver = env["backends"].get(name)
        dev = env["devices"].get(name, "")
        table.add_row(name, ver or "[dim]not installed[/dim]", str(dev) if ver else "")
    console.print(table)


@app.command()
def quickstart(
    out: Annotated[Path, typer.Option(help="Folder for the data, the model and the cut-outs.")] = Path("runs/quickstart"),
    count: Annotated[int, typer.Option(help="Synthetic images to make.")] = 240,
    size: Annotated[int, typer.Option(help="Image and model input side.")] = 96,
    width: Annotated[int, typer.Option(help="Teacher width (64 is full size; small is quick).")] = 16,
    epochs: Annotated[int, typer.Option()] = 12,
) -> None:
    """The main job end to end on synthetic data: make data, train a small teacher, evaluate, cut out."""
    steps = [
        ["data", "synth", "--out", f"{out}/data", "--count", str(count), "--size", str(size), "--seed", "0"],
        ["train", "--data", f"{out}/data", "--arch", "unet", "--width", str(width), "--size", str(size),
         "--epochs", str(epochs), "--batch", "8", "--out", f"{out}/teacher"]
        + (["--resume"] if (out / "teacher" / "checkpoints" / "last.pt").exists() else []),
        ["eval", f"{out}/teacher", "--data", f"{out}/data", "--split", "val", "--json", f"{out}/teacher-val.json"],
        ["info", f"{out}/teacher"],
        ["remove", f"{out}/data/images/00000.png", f"{out}/data/images/00001.png", f"{out}/data/images/00002.png",
         "--model", f"{out}/teacher", "--out", f"{out}/cutouts"],
    ]
    for args in steps:
        if args[0] == "train" and (out / "teacher" / "edgecut.json").exists():
            console.print(f"[dim]skipping training: {out}/teacher already holds a model[/dim]")
            continue
        console.rule("edgecut " + " ".join(args))
        app(args, standalone_mode=False)
    console.rule("done")
    console.print(f"cut-outs in {out}/cutouts; metrics in {out}/teacher-val.json")


@app.command()
def compare(
    records: Annotated[list[Path], typer.Argument(help="Records files (.jsonl) written by 'edgecut bench'.")],
    out: Annotated[Path, typer.Option(help="Folder for report.md, report.csv, report.html and pareto.png.")],
    baseline: Annotated[Optional[str], typer.Option(help="Record name to compare against (default: the fp32 record with the most MACs, torch first).")] = None,
    title: Annotated[Optional[str], typer.Option(help="Report title.")] = None,
) -> None:
    """Compare bench records: speed-ups and accuracy deltas against a baseline (md, csv, html) and a Pareto plot."""
    from rich.markup import escape

    from edgecut.report import compare as compare_fn

    result = compare_fn(records, out, baseline=baseline, title=title)
    columns = list(result.columns)  # the terminal drops the least telling columns that do not fit; report.md has all
    for key in ("mae", "s_measure", "p90", "params", "macs", "format", "size_mb", "data", "target", "input",
                "precision"):
        if 1 + sum(3 + max([len(c.header)] + [len(r.cells[c.key]) for r in result.rows]) for c in columns) <= console.width:
            break
        columns = [c for c in columns if c.key != key]
    table = Table(title=escape(title or f"against {result.baseline.name} ({result.baseline.backend})"))
    for col in columns:
        table.add_column(escape(col.header), justify="right" if col.numeric else "left", no_wrap=col.key == "name")
    for row in result.rows:
        table.add_row(*(escape(row.cells[col.key]) for col in columns), style="bold" if row.is_baseline else None)
    console.print(table)
    for line in result.notes + [f"{mark} {text}" for mark, text in result.footnotes]:
        console.print(escape(line), highlight=False)
    console.print("wrote " + ", ".join(str(p) for p in result.paths), highlight=False, soft_wrap=True)


def main() -> None:
    try:
        app(standalone_mode=True)
    except EdgecutError as e:
        from rich.markup import escape

        err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)  # "edgecut[onnx]" is no tag
        sys.exit(2)


if __name__ == "__main__":
    main()
