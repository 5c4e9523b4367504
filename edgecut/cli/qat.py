"""``edgecut qat``: quantization-aware training, then an INT8 QDQ ONNX artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

import edgecut.cli.options as options
from edgecut.cli.app import app, console, err
from edgecut.cli.options import (Batch, Epochs, ParityCount, ResumeRun, SaveEvery, Seed, Tolerance, TorchThreads, TrainDevice,
                                 TrainSplit, ValSplit)


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
