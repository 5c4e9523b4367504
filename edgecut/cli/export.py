"""``edgecut export``: a model in another format and precision, checked against its parent."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from edgecut.cli.app import app, console, err
from edgecut.cli.options import Dynamic, OverwriteOut, ParityCount, Tolerance
from edgecut.exporters.config import (CalibConfig, ExportConfig, LiteRTOptions, OnnxOptions, OpenVinoOptions,
                                       ParityConfig)

EXPORT = ExportConfig()  # the defaults the options below show


@app.command("export")
def export_cmd(
    ctx: typer.Context,
    model: Annotated[Path, typer.Argument(help="Torch artifact (or an fp32 ONNX artifact, for fp16 / int8).")],
    out: Annotated[Path, typer.Option(help="Folder for the exported artifact.")],
    format: Annotated[Optional[str], typer.Option(
        help="Export format: onnx | ort (ONNX Runtime mobile) | tflite (LiteRT) | executorch | ncnn | coreml (iOS; not "
             "runnable here) | openvino | tensorrt (built on this CUDA GPU; needs --device cuda). "
             f"Default {EXPORT.format}, or the --target profile's first.")] = None,
    precision: Annotated[Optional[str], typer.Option(
        help=f"fp32 | fp16 | int8. Default {EXPORT.precision}, or the --target profile's first.")] = None,
    target: Annotated[Optional[str], typer.Option(
        help="Device profile (export_targets/, or a .yaml path): format and precision default to its first choices, "
             "and others it does not run are refused.")] = None,
    calib: Annotated[Optional[Path], typer.Option(
        help="INT8: calibration images (a folder, or a data set with images/); default: synthetic "
             "photos.")] = EXPORT.calib.data,
    calib_count: Annotated[int, typer.Option(help="INT8: images drawn (seeded) from --calib.")] = EXPORT.calib.count,
    calib_split: Annotated[Optional[str], typer.Option(
        help="INT8: only this split of --calib's data set (e.g. train).")] = EXPORT.calib.split,
    calib_method: Annotated[str, typer.Option(help="INT8: minmax | entropy | percentile")] = EXPORT.calib.method,
    exclude: Annotated[Optional[list[str]], typer.Option(help="INT8: node name kept in float (repeatable).")] = None,
    exclude_op: Annotated[Optional[list[str]], typer.Option(
        help="INT8: op type kept in float, e.g. Resize (repeatable).")] = None,
    dynamic: Dynamic = EXPORT.dynamic,
    opset: Annotated[Optional[int], typer.Option(help="ONNX opset (default 18).")] = EXPORT.opset,
    no_simplify: Annotated[bool, typer.Option("--no-simplify", help="Skip onnxslim.")] = False,
    rembg: Annotated[bool, typer.Option(
        "--rembg", help="ONNX: the file rembg runs as a custom model (rembg i -m u2net_custom -x '{\"model_path\": "
                        "\".../model.onnx\"}'): 320 x 320, the probability out.")] = EXPORT.onnx.rembg,
    parity_data: Annotated[Optional[Path], typer.Option(
        help="Images the export is compared with its parent on (default: synthetic photos).")] = EXPORT.parity.data,
    parity_split: Annotated[Optional[str], typer.Option(
        help="Only this split of --parity-data's data set (e.g. val).")] = EXPORT.parity.split,
    parity_count: ParityCount = EXPORT.parity.count,
    tolerance: Tolerance = None,
    require_faster: Annotated[bool, typer.Option(
        "--require-faster", help="Refuse an export slower than its parent on this machine.")] = EXPORT.require_faster,
    device: Annotated[str, typer.Option(help="cpu | cuda[:N] | tensorrt[:N] (parity and speed checks; a TensorRT "
                                             "engine runs on cuda).")] = EXPORT.device,
    threads: Annotated[Optional[int], typer.Option(help="Threads of both runners during the checks.")] = EXPORT.threads,
    seed: Annotated[int, typer.Option(help="Picks the calibration and parity images.")] = EXPORT.seed,
    overwrite: OverwriteOut = EXPORT.overwrite,
    preset: Annotated[str, typer.Option(help="OpenVINO INT8: mixed | performance.")] = EXPORT.openvino.preset,
    max_drop: Annotated[Optional[float], typer.Option(
        help="OpenVINO INT8 with accuracy control: largest drop of mean mask IoU (absolute, e.g. 0.01); layers fall "
             "back to float until it holds.")] = EXPORT.openvino.max_drop,
    val_data: Annotated[Optional[Path], typer.Option(
        help="OpenVINO --max-drop: images + masks the IoU is measured on (default: --parity-data, else "
             "synthetic).")] = EXPORT.openvino.val_data,
    val_split: Annotated[Optional[str], typer.Option(
        help="Only this split of --val-data's data set.")] = EXPORT.openvino.val_split,
    litert_int8: Annotated[str, typer.Option(
        help="tflite INT8: static (full-integer, calibrated) | dynamic (int8 weights, activations quantised at run "
             "time).")] = EXPORT.litert.int8,
) -> None:
    """Export a model (ONNX, ONNX Runtime mobile, LiteRT, ExecuTorch, ncnn, Core ML, OpenVINO or TensorRT;
    fp32 / fp16 / int8), check parity with its parent, write an artifact."""
    if target is not None:
        from edgecut.targets.profiles import export_choice, load_profile

        profile = load_profile(target)
        format, precision = export_choice(profile, format, precision)
        err.print(f"{profile.name}: {format} {precision}", highlight=False)
    config = export_config({**ctx.params, "format": format or EXPORT.format,
                            "precision": precision or EXPORT.precision})
    from edgecut.exporters import export

    art = export(model, out, config)
    m = art.manifest
    _show(art)
    if target is not None and profile.input_size and tuple(profile.input_size) != tuple(m.spec.input_size):
        err.print(f"[yellow]note[/yellow] {profile.name} expects {profile.input_size[0]}x{profile.input_size[1]} "
                  f"inputs; this export takes {m.spec.input_size[0]}x{m.spec.input_size[1]}", highlight=False)


def export_config(values: Mapping[str, Any]) -> ExportConfig:
    """The ``export`` step's config from the command's option values."""
    from edgecut.exporters.parity import parse_tolerances

    v = values
    calib = CalibConfig(data=v["calib"], count=v["calib_count"], split=v["calib_split"], method=v["calib_method"],
                        exclude_nodes=tuple(v["exclude"] or ()), exclude_op_types=tuple(v["exclude_op"] or ()))
    parity = ParityConfig(data=v["parity_data"], count=v["parity_count"], split=v["parity_split"],
                          tolerances=parse_tolerances(v["tolerance"] or []))
    openvino = OpenVinoOptions(preset=v["preset"], max_drop=v["max_drop"], val_data=v["val_data"],
                               val_split=v["val_split"])
    return ExportConfig(format=v["format"], precision=v["precision"], dynamic=v["dynamic"], opset=v["opset"],
                        simplify=not v["no_simplify"], calib=calib, parity=parity, onnx=OnnxOptions(rembg=v["rembg"]),
                        openvino=openvino, litert=LiteRTOptions(int8=v["litert_int8"]),
                        require_faster=v["require_faster"], device=v["device"], threads=v["threads"], seed=v["seed"],
                        overwrite=v["overwrite"])


def _show(art) -> None:
    """What the export measured: calibration images, notes, parity, accuracy control, speed, the artifact."""
    m = art.manifest
    cal = m.metrics.get("calibration")
    if cal:
        c, e = cal["calibration"], cal.get("eval")
        table = Table(title=f"calibration: {len(cal['names'])} of {cal['available']} images from {cal['source']} "
                            f"({cal['method']})")
        for col in ("", "calibration", "evaluation"):
            table.add_column(col, justify="right")
        fg = lambda d: "-" if not d or not d["foreground_fraction"] else \
            f"{d['foreground_fraction']['mean']:.3f}"  # noqa: E731
        hw = lambda d: "-" if not d else \
            f"{d['size']['height']['median']:.0f}x{d['size']['width']['median']:.0f}"  # noqa: E731
        table.add_row("mean brightness", f"{c['brightness']['mean']:.3f}",
                      f"{e['brightness']['mean']:.3f}" if e else "-")
        table.add_row("mean foreground fraction", fg(c), fg(e))
        table.add_row("median size", hw(c), hw(e))
        console.print(table)
    for note in m.lineage[-1].params.get("notes", []):
        err.print(f"[yellow]note[/yellow] {note}", highlight=False)
    p = m.metrics["parity"]
    if p.get("checked", True):  # False for a format nothing here runs (Core ML): the note above says why
        from edgecut.exporters.parity import summary_line

        console.print(summary_line(p))
    if "accuracy_control" in m.metrics:
        a = m.metrics["accuracy_control"]
        reverted = "?" if a["reverted_ops"] is None else a["reverted_ops"]
        console.print(f"accuracy control on {a['images']} image(s): IoU {a['fp32']:.4f} -> {a['int8']:.4f} "
                      f"(drop {a['drop']:.4f} <= {a['max_drop']:g}), {reverted} operation(s) left in float")
    if "speed_vs_parent" in m.metrics:
        s = m.metrics["speed_vs_parent"]
        console.print(f"p50 {s['parent_p50_ms']:.3f} ms -> {s['p50_ms']:.3f} ms ({s['speedup']:.2f}x) "
                      f"on {s['device']}")
    size = sum(f.size for f in m.files.values())
    console.print(f"artifact {art.path}: {m.format} {m.precision}, {size / 1e6:.2f} MB, input {m.spec.input_size}"
                  + (" (H, W dynamic)" if m.spec.dynamic_size else ""))
