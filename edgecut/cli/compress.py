"""Commands that compress and convert a model: ``prune``, ``qat``, ``export``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from edgecut import io
import edgecut.cli.options as options
from edgecut.cli.app import app, console, err
from edgecut.cli.options import (Autocast, Batch, Epochs, ParityCount, ResumeRun, SaveEvery, Seed, Tolerance, TorchThreads,
                                 TrainDevice, TrainSplit, ValSplit)
from edgecut.errors import EdgecutError


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
    kd: Annotated[bool, typer.Option("--kd", help="Fine-tune by distillation from the model before pruning (its answers, computed once and stored) beside the masks.")] = False,
    batch: Annotated[int, typer.Option(help="Fine-tuning batch size.")] = 8,
    lr: Annotated[float, typer.Option(help="Fine-tuning peak learning rate.")] = 3e-4,
    ema: Annotated[Optional[float], typer.Option(help="Fine-tuning EMA decay, e.g. 0.998.")] = None,
    precision: Autocast = "auto",
    train_split: TrainSplit = None,
    val_split: ValSplit = None,
    sensitivity: Annotated[bool, typer.Option("--sensitivity", help="Measure each group's metric drop instead of pruning.")] = False,
    ratios: Annotated[str, typer.Option(help="Sensitivity: ratios tried per group, comma separated.")] = "0.25,0.5,0.75",
    images: Annotated[int, typer.Option(help="Sensitivity: held-out images scored per trial.")] = 100,
    max_drop: Annotated[Optional[float], typer.Option(help="Sensitivity: write plan.json keeping each group's drop under this.")] = None,
    threads: Annotated[Optional[int], typer.Option(help="Torch CPU threads (training and latency).")] = None,
    no_latency: Annotated[bool, typer.Option("--no-latency", help="Skip the before/after CPU latency.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the pruning run in --out.")] = False,
    seed: Seed = 0,
) -> None:
    """Structured channel pruning (Torch-Pruning dependency graph), with fine-tuning and sensitivity analysis."""
    if sensitivity:
        _sensitivity(model, out, data, ratios, importance, round_to, ignore, train_split, images, max_drop, threads)
        return
    config = options.prune_config(**locals())
    from edgecut.compress.prune import REPORT_FILE
    from edgecut.compress.prune import prune as prune_fn

    art = prune_fn(model, out, config, resume=resume)
    report = io.read_json(art.path / REPORT_FILE)
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


def _sensitivity(model, out, data, ratios, importance, round_to, ignore, split, images, max_drop, threads) -> None:
    from edgecut.compress.prune import sensitivity_artifact

    if data is None:
        raise EdgecutError("--sensitivity needs --data DIR (held-out images to score each trial on)")
    try:
        ratio_list = tuple(float(r) for r in ratios.split(","))
    except ValueError:
        raise EdgecutError(f"--ratios {ratios!r}: expected numbers separated by commas, e.g. 0.25,0.5,0.75") from None
    res = sensitivity_artifact(model, out, data, ratios=ratio_list, importance=importance,
                               round_to=round_to if round_to > 1 else None, ignore=tuple(ignore or ()),
                               split=split, images=images, max_drop=max_drop, threads=threads)
    worst = sorted(res["rows"], key=lambda r: -r.drop)[:5]
    console.print(f"baseline IoU {res['baseline']:.4f} on {res['images']} images of {res['data']}; most sensitive: "
                  + ", ".join(f"{r.layer}@{r.ratio:g} {r.drop:+.4f}" for r in worst))
    if res["plan"] is not None:
        console.print(f"plan: {len(res['plan'])} groups pruned within a drop of {max_drop}")
    console.print("wrote " + ", ".join(str(f) for f in res["files"]))


@app.command()
def qat(
    model: Annotated[Path, typer.Argument(help="Float torch artifact to fine-tune with fake INT8 quantization.")],
    data: Annotated[Path, typer.Option(help="Data set folder (images/ + masks/, optional splits/).")],
    out: Annotated[Path, typer.Option(help="Run folder; becomes the INT8 ONNX artifact.")],
    epochs: Epochs = 3,
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate (fine-tuning: small).")] = 1e-4,
    calib_count: Annotated[int, typer.Option(help="Training images that set the initial ranges.")] = 64,
    batch: Batch = 8,
    signed_activations: Annotated[bool, typer.Option("--signed-activations", help="int8 activations everywhere (TensorRT needs it); default uint8 after ReLU.")] = False,
    dynamic: Annotated[bool, typer.Option("--dynamic", help="Let H and W vary in the ONNX model (batch always does).")] = False,
    parity_data: Annotated[Optional[Path], typer.Option(help="Images the INT8 model is compared with its parent on (default: synthetic photos).")] = None,
    parity_count: ParityCount = None,
    tolerance: Tolerance = None,
    device: TrainDevice = "auto",
    threads: TorchThreads = None,
    train_split: TrainSplit = None,
    val_split: ValSplit = None,
    seed: Seed = 0,
    save_every: SaveEvery = 0,
    resume: ResumeRun = False,
) -> None:
    """Quantization-aware training (NNCF fake quantization): fine-tune, then write an INT8 QDQ ONNX artifact."""
    config = options.qat_config(**locals())
    from edgecut.compress.qat import qat as qat_fn

    art = qat_fn(model, data, out, config, resume=resume)
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
    for note in m.lineage[-1].params.get("notes", []):
        err.print(f"[yellow]note[/yellow] {note}", highlight=False)
    size = sum(e.size for e in m.files.values())
    console.print(f"artifact {art.path}: {m.format} {m.precision} (QDQ), {size / 1e6:.2f} MB, input {m.spec.input_size}")


@app.command("export")
def export_cmd(
    model: Annotated[Path, typer.Argument(help="Torch artifact (or an fp32 ONNX artifact, for fp16 / int8).")],
    out: Annotated[Path, typer.Option(help="Folder for the exported artifact.")],
    format: Annotated[Optional[str], typer.Option(help="Export format: onnx | ort (ONNX Runtime mobile) | tflite (LiteRT) | executorch | ncnn | coreml (iOS; not runnable here) | openvino | tensorrt (built on this CUDA GPU; needs --device cuda). Default onnx, or the --target profile's first.")] = None,
    precision: Annotated[Optional[str], typer.Option(help="fp32 | fp16 | int8. Default fp32, or the --target profile's first.")] = None,
    target: Annotated[Optional[str], typer.Option(help="Device profile (export_targets/, or a .yaml path): format and precision default to its first choices, and others it does not run are refused.")] = None,
    calib: Annotated[Optional[Path], typer.Option(help="INT8: calibration images (a folder, or a data set with images/); default: synthetic photos.")] = None,
    calib_count: Annotated[int, typer.Option(help="INT8: images drawn (seeded) from --calib.")] = 64,
    calib_split: Annotated[Optional[str], typer.Option(help="INT8: only this split of --calib's data set (e.g. train).")] = None,
    calib_method: Annotated[str, typer.Option(help="INT8: minmax | entropy | percentile")] = "minmax",
    exclude: Annotated[Optional[list[str]], typer.Option(help="INT8: node name kept in float (repeatable).")] = None,
    exclude_op: Annotated[Optional[list[str]], typer.Option(help="INT8: op type kept in float, e.g. Resize (repeatable).")] = None,
    dynamic: Annotated[bool, typer.Option("--dynamic", help="Let H and W vary (batch always does).")] = False,
    opset: Annotated[Optional[int], typer.Option(help="ONNX opset (default 18).")] = None,
    no_simplify: Annotated[bool, typer.Option("--no-simplify", help="Skip onnxslim.")] = False,
    rembg: Annotated[bool, typer.Option("--rembg", help="ONNX: the file rembg runs as a custom model (rembg i -m u2net_custom -x '{\"model_path\": \".../model.onnx\"}'): 320 x 320, the probability out.")] = False,
    parity_data: Annotated[Optional[Path], typer.Option(help="Images the export is compared with its parent on (default: synthetic photos).")] = None,
    parity_split: Annotated[Optional[str], typer.Option(help="Only this split of --parity-data's data set (e.g. val).")] = None,
    parity_count: ParityCount = None,
    tolerance: Tolerance = None,
    require_faster: Annotated[bool, typer.Option("--require-faster", help="Refuse an export slower than its parent on this machine.")] = False,
    device: Annotated[str, typer.Option(help="cpu | cuda[:N] | tensorrt[:N] (parity and speed checks; a TensorRT engine runs on cuda).")] = "cpu",
    threads: Annotated[Optional[int], typer.Option(help="Threads of both runners during the checks.")] = None,
    seed: Annotated[int, typer.Option(help="Picks the calibration and parity images.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --out.")] = False,
    preset: Annotated[Optional[str], typer.Option(help="OpenVINO INT8: mixed | performance (default mixed).")] = None,
    max_drop: Annotated[Optional[float], typer.Option(help="OpenVINO INT8 with accuracy control: largest drop of mean mask IoU (absolute, e.g. 0.01); layers fall back to float until it holds.")] = None,
    val_data: Annotated[Optional[Path], typer.Option(help="OpenVINO --max-drop: images + masks the IoU is measured on (default: --parity-data, else synthetic).")] = None,
    val_split: Annotated[Optional[str], typer.Option(help="Only this split of --val-data's data set.")] = None,
    litert_int8: Annotated[Optional[str], typer.Option(help="tflite INT8: static (full-integer, calibrated; default) | dynamic (int8 weights, activations quantised at run time).")] = None,
) -> None:
    """Export a model (ONNX, ONNX Runtime mobile, LiteRT, ExecuTorch, ncnn, Core ML, OpenVINO or TensorRT; fp32 / fp16 / int8), check parity with its parent, write an artifact."""
    if target is not None:
        from edgecut.targets.profiles import export_choice, load_profile

        profile = load_profile(target)
        format, precision = export_choice(profile, format, precision)
        err.print(f"{profile.name}: {format} {precision}", highlight=False)
    config = options.export_config(**{**locals(), "format": format or "onnx", "precision": precision or "fp32"})
    from edgecut.exporters import export

    art = export(model, out, config)
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
    if p.get("checked", True):  # False for a format nothing here runs (Core ML): the note above says why
        line = (f"parity on {p['images']} image(s) ({p['data']}): max abs diff {p['max_abs_diff']:.3g} "
                f"({p['max_abs_diff_image']}), min mask IoU {p['mask_iou_min']:.4f} ({p['mask_iou_min_image']})")
        if "metric" in p:
            line += (f", IoU vs masks {p['metric']['parent']:.4f} -> {p['metric']['export']:.4f} "
                     f"({-p['metric']['drop']:+.4f})")
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
    if target is not None and profile.input_size and tuple(profile.input_size) != tuple(m.spec.input_size):
        err.print(f"[yellow]note[/yellow] {profile.name} expects {profile.input_size[0]}x{profile.input_size[1]} "
                  f"inputs; this export takes {m.spec.input_size[0]}x{m.spec.input_size[1]}", highlight=False)
