"""``edgecut eval``: a model (or saved prediction maps) scored on a data set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from edgecut.cli.app import app, console
from edgecut.cli.options import (DEVICE_PYTHON, RUN_DEVICE, ArtifactArg, DataSplit, DevicePython, Identity, RunDevice,
                                 RunThreads)
from edgecut.errors import EdgecutError


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
    model: ArtifactArg = None,
    split: DataSplit = None,
    pred: Annotated[Optional[Path], typer.Option(help="Score a folder of saved prediction maps instead of a "
                                                      "model.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write metrics and per-image scores here.")] = None,
    threads: RunThreads = None,
    device: RunDevice = RUN_DEVICE,
    batch: Annotated[int, typer.Option(help="Images per inference call.")] = 1,
    worst: Annotated[int, typer.Option(help="List this many lowest-IoU images.")] = 5,
    normalize: Annotated[bool, typer.Option("--normalize", help="Min-max normalise each prediction first, as SOD "
                                                                "toolboxes score saliency maps.")] = False,
    target: Annotated[str, typer.Option(help="Where the model runs: local, arm64-emu, ssh://user@host[:port] or a "
                                             "device profile with a reach (scored here from its outputs).")] = "local",
    identity: Identity = None,
    device_python: DevicePython = DEVICE_PYTHON,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a --json file that edgecut did not "
                                                                "write.")] = False,
) -> None:
    """Score a model (or saved prediction maps) on a data set at each image's own resolution."""
    from edgecut import io
    from edgecut.measure.accuracy import evaluate, evaluate_predictions, is_eval_json
    from edgecut.data.folder import find_samples

    if (model is None) == (pred is None):
        raise EdgecutError("give either MODEL (an artifact directory) or --pred DIR, not both or neither")
    if json_out:  # before any work: a place it cannot write, or a file of someone else's
        io.check_output(json_out, folder=False)
        io.replaceable(json_out, is_eval_json, overwrite)
    samples = find_samples(data, split)
    if target != "local":
        if pred is not None or normalize or batch != 1:
            raise EdgecutError(f"--target {target} scores a model's outputs there: --pred, --normalize and --batch "
                               "are for local runs")
        from edgecut.measure.target import evaluate_on_target, resolve

        where = resolve(target, threads=threads, identity=identity, python=device_python)
        result, agree = evaluate_on_target(model, samples, where)
        source = {"model": str(model), "target": target, "parity": agree.model_dump(mode="json")}
        console.print(f"on {target} against this machine's {agree.backend}: max abs diff {agree.max_abs_diff:.2e}, "
                      f"mask IoU mean {agree.mask_iou_mean:.4f}, worst {agree.mask_iou_min:.4f}", highlight=False)
    elif pred is not None:
        result = evaluate_predictions(pred, samples, normalize=normalize)
        source = {"pred": str(pred)}
    else:
        from edgecut import runtime

        runner = runtime.load(model, device=device, threads=threads)
        result = evaluate(runner, samples, batch_size=batch, normalize=normalize)
        source = {"model": str(model), "backend": runner.backend, "device": runner.device}
    title = f"{result.count} images from {data}" + (f" ({split})" if split else "")
    console.print(_metrics_table(result.metrics, title))
    if worst:
        console.print("lowest IoU: " + ", ".join(f"{r['name']} {r['iou']:.3f}" for r in result.worst(worst)))
    if json_out:
        io.write_json(json_out, result.to_json(data=str(data), split=split, normalized=normalize, **source))
        console.print(f"wrote {json_out}")
