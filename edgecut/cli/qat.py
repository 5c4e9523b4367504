"""``edgecut qat``: quantization-aware training, then an INT8 QDQ ONNX artifact."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from edgecut.cli.app import app, console, err
from edgecut.cli.options import (Batch, Dynamic, Epochs, Lr, ParityCount, ResumeRun, SaveEvery, Seed, Tolerance,
                                 TorchThreads, TrainData, TrainDevice, TrainSplit, ValSplit, loop_config)
from edgecut.compress.config import QATConfig
from edgecut.exporters.config import ParityConfig

QAT = QATConfig()  # the defaults the options below show


@app.command()
def qat(
    ctx: typer.Context,
    model: Annotated[Path, typer.Argument(help="Float torch artifact to fine-tune with fake INT8 quantization.")],
    data: TrainData,
    out: Annotated[Path, typer.Option(help="Run folder; becomes the INT8 ONNX artifact.")],
    epochs: Epochs = QAT.loop.epochs,
    lr: Lr = QAT.loop.lr,
    calib_count: Annotated[int, typer.Option(help="Training images that set the initial ranges.")] = QAT.calib_count,
    batch: Batch = QAT.loop.batch_size,
    signed_activations: Annotated[bool, typer.Option(
        "--signed-activations", help="int8 activations everywhere (TensorRT needs it); default uint8 after "
                                     "ReLU.")] = QAT.signed_activations,
    dynamic: Dynamic = QAT.dynamic,
    parity_data: Annotated[Optional[Path], typer.Option(help="Images the INT8 model is compared with its parent on "
                                                             "(default: --data's val split).")] = QAT.parity.data,
    parity_count: ParityCount = QAT.parity.count,
    tolerance: Tolerance = None,
    device: TrainDevice = QAT.loop.device,
    threads: TorchThreads = QAT.threads,
    train_split: TrainSplit = QAT.train_split,
    val_split: ValSplit = QAT.val_split,
    seed: Seed = QAT.loop.seed,
    save_every: SaveEvery = QAT.loop.save_every,
    resume: ResumeRun = False,
) -> None:
    """Quantization-aware training (NNCF fake quantization): fine-tune, then write an INT8 QDQ ONNX artifact."""
    config = qat_config(ctx.params)
    from edgecut.compress.qat import qat as qat_fn
    from edgecut.exporters.parity import summary_line

    art = qat_fn(model, data, out, config, resume=resume)
    m = art.manifest
    p, f = m.metrics["parity"], m.metrics["export_fidelity"]
    val = m.metrics.get("val", {})
    if val:
        console.print("best val (fake-quantised, torch): "
                      + ", ".join(f"{k} {val[k]:.4f}" for k in ("iou", "mae", "s_measure") if k in val))
    console.print(summary_line(p, "parity vs the float parent", worst=False))
    console.print(f"ONNX vs the fake-quantised torch model: max abs diff {f['max_abs_diff']:.3g}, "
                  f"min mask IoU {f['mask_iou_min']:.4f}")
    for note in m.lineage[-1].params.get("notes", []):
        err.print(f"[yellow]note[/yellow] {note}", highlight=False)
    size = sum(e.size for e in m.files.values())
    console.print(f"artifact {art.path}: {m.format} {m.precision} (QDQ), {size / 1e6:.2f} MB, "
                  f"input {m.spec.input_size}")


def qat_config(values: Mapping[str, Any]) -> QATConfig:
    """The ``qat`` step's config from the command's option values."""
    from edgecut.exporters.parity import parse_tolerances

    parity = ParityConfig(data=values["parity_data"], count=values["parity_count"],
                          tolerances=parse_tolerances(values["tolerance"] or []))
    return QATConfig(calib_count=values["calib_count"], signed_activations=values["signed_activations"],
                     dynamic=values["dynamic"], train_split=values["train_split"], val_split=values["val_split"],
                     parity=parity, threads=values["threads"], loop=loop_config(QAT.loop, values))
