"""Commands that measure: ``eval``, ``bench``, ``compare``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

import edgecut.cli.options as options
from edgecut.cli.options import RunDevice, RunThreads
from edgecut.cli.app import app, console
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
    model: Annotated[Optional[Path], typer.Argument(help="Artifact directory.")] = None,
    split: Annotated[Optional[str], typer.Option(help="Split file (or name in data/splits/).")] = None,
    pred: Annotated[Optional[Path], typer.Option(help="Score a folder of saved prediction maps instead of a model.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write metrics and per-image scores here.")] = None,
    threads: RunThreads = None,
    device: RunDevice = "cpu",
    batch: Annotated[int, typer.Option(help="Images per inference call.")] = 1,
    worst: Annotated[int, typer.Option(help="List this many lowest-IoU images.")] = 5,
    normalize: Annotated[bool, typer.Option("--normalize", help="Min-max normalise each prediction first, as SOD "
                                                                "toolboxes score saliency maps.")] = False,
    target: Annotated[str, typer.Option(help="Where the model runs: local, arm64-emu, ssh://user@host[:port] or a "
                                             "device profile with a reach (scored here from its outputs).")] = "local",
    identity: Annotated[Optional[Path], typer.Option(help="ssh: the private key the device accepts.")] = None,
    device_python: Annotated[str, typer.Option(help="ssh: the device's Python.")] = "python3",
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
    console.print(_metrics_table(result.metrics, f"{result.count} images from {data}" + (f" ({split})" if split else "")))
    if worst:
        console.print("lowest IoU: " + ", ".join(f"{r['name']} {r['iou']:.3f}" for r in result.worst(worst)))
    if json_out:
        io.write_json(json_out, result.to_json(data=str(data), split=split, normalized=normalize, **source))
        console.print(f"wrote {json_out}")


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
    min_iters: Annotated[int, typer.Option(help="Timed calls at least.")] = 20,
    e2e: Annotated[bool, typer.Option("--e2e/--no-e2e", help="Also time the whole cut-out of one image file.")] = True,
    isolate: Annotated[bool, typer.Option("--isolate/--in-process", help="Time each model in a fresh process.")] = True,
    repeats: Annotated[int, typer.Option(help="Worker runs per model; the lower-quartile run is kept (--keep), "
                                              "disagreeing runs are flagged.")] = 1,
    keep: Annotated[float, typer.Option(help="Which repeated run is kept: this quantile of their p50s (0.5: the "
                                             "median). Interference only adds time, so the default is 0.25.")] = 0.25,
    precision: Annotated[Optional[float], typer.Option(help="Percent: after --repeats runs, measure again until the "
                                                            "p50's 95% interval is within +- this (e.g. 2).")] = None,
    max_repeats: Annotated[int, typer.Option(help="With --precision: stop after this many runs (flagged unstable).")] = 20,
    max_wait: Annotated[float, typer.Option(help="CPU: seconds per model to wait for a host that is taking our cores "
                                                 "(a parallel-speedup canary says so); 0: never wait, only flag.")] = 120.0,
    worst: Annotated[int, typer.Option(help="Worst images kept per record (cut-outs saved for the html report).")] = 6,
    resume: Annotated[bool, typer.Option("--resume", help="Add to an existing records file; skip what it holds.")] = False,
    target: Annotated[str, typer.Option(help="Where the models run: local; arm64-emu (instruction counts, no "
                                             "latency); ssh://user@host[:port] (the device's latency); or a device "
                                             "profile with a reach.")] = "local",
    identity: Annotated[Optional[Path], typer.Option(help="ssh: the private key the device accepts.")] = None,
    device_python: Annotated[str, typer.Option(help="ssh: the device's Python, with a bundle's requirements.")] = "python3",
    count_iters: Annotated[int, typer.Option(help="arm64-emu: inferences counted per model.")] = 3,
) -> None:
    """Measure latency (and accuracy on --data) of every model through its Runner; append one record each.
    With --target, each model goes there as a bundle and runs through the device's own runtime."""
    config = options.bench_config(**locals())
    from rich.markup import escape

    if target != "local":
        return _bench_on_target(models, out, config, target, identity, device_python, resume, name, count_iters)

    from edgecut.measure.bench import bench as bench_fn

    def show(rec) -> None:
        lat = rec.latency
        line = (f"{rec.name}  {rec.backend} {rec.precision} {rec.input_size[0]}x{rec.input_size[1]} b{rec.batch} "
                f"t{rec.threads}: p50 {lat.p50_ms:.2f} ms  p90 {lat.p90_ms:.2f} ms" + ("  (unstable)" if lat.unstable else ""))
        if rec.end_to_end:
            line += f"  cut-out {rec.end_to_end.p50_ms:.1f} ms"
        if rec.accuracy:
            line += f"  IoU {rec.accuracy.metrics['iou']:.4f}"
        console.print(line, highlight=False)

    result = bench_fn(models, out, config, resume=resume, names=name, on_record=show,
                      on_wait=lambda line: console.print(f"[dim]{escape(line)}[/dim]", highlight=False))
    for s in result.skipped:
        console.print(f"[dim]already in {out}: {s}[/dim]")
    console.print(f"wrote {len(result.records)} record(s) to {out}; compare them with 'edgecut compare {out} --out DIR'")



def _bench_on_target(models, out, config, target, identity, device_python, resume, names, count_iters) -> None:
    from rich.markup import escape

    from edgecut.measure.target import bench_on_target, resolve

    where = resolve(target, identity=identity, python=device_python)

    def show(rec) -> None:
        line = f"{rec.name}  {rec.backend} {rec.precision} {rec.input_size[0]}x{rec.input_size[1]} on {rec.target}:"
        if rec.instructions:
            line += f" {rec.instructions.per_inference / 1e6:,.1f} M instructions/inference (emulated {rec.instructions.cpu})"
        if rec.latency:
            line += f" p50 {rec.latency.p50_ms:.2f} ms"
        if rec.parity:
            line += f"  vs local: max diff {rec.parity.max_abs_diff:.2e}, mask IoU {rec.parity.mask_iou_min:.4f}"
        if rec.accuracy:
            line += f"  IoU {rec.accuracy.metrics['iou']:.4f}"
        console.print(escape(line), highlight=False)

    result = bench_on_target(models, out, config, where, resume=resume, names=names, count_iters=count_iters,
                             on_record=show, say=lambda text: console.print(f"[dim]{escape(text)}[/dim]", highlight=False))
    for s in result.skipped:
        console.print(f"[dim]already in {out}: {s}[/dim]")
    console.print(f"wrote {len(result.records)} record(s) to {out}")


@app.command()
def compare(
    records: Annotated[list[Path], typer.Argument(help="Records files (.jsonl) written by 'edgecut bench'.")],
    out: Annotated[Path, typer.Option(help="Folder for report.md, report.csv, report.html and pareto.png.")],
    baseline: Annotated[Optional[str], typer.Option(help="Record name to compare against (default: the fp32 record with the most MACs, torch first).")] = None,
    title: Annotated[Optional[str], typer.Option(help="Report title.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace report files in --out that edgecut did "
                                                                "not write.")] = False,
) -> None:
    """Compare bench records: speed-ups and accuracy deltas against a baseline (md, csv, html) and a Pareto plot."""
    from rich.markup import escape

    from edgecut.report import CompareConfig
    from edgecut.report import compare as compare_fn

    result = compare_fn(records, out, CompareConfig(baseline=baseline, title=title, overwrite=overwrite))
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
