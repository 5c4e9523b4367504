"""``edgecut bench``: latency (and accuracy) of every model, here or on a target, as records."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

import edgecut.cli.options as options
from edgecut.cli.app import app, console


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

    from edgecut.measure.run import bench as bench_fn

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
