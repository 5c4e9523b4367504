"""``edgecut bench``: latency (and accuracy) of every model, here or on a target, as records."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from edgecut.cli.app import app, console
from edgecut.cli.options import DEVICE_PYTHON, DataSplit, DevicePython, Identity, ints
from edgecut.measure.config import BenchConfig
from edgecut.measure.record import Hooks

BENCH = BenchConfig()  # the defaults the options below show; None: the config's own (a list or a percent here)


@app.command()
def bench(
    ctx: typer.Context,
    models: Annotated[list[Path], typer.Argument(help="Artifact directories to measure.")],
    out: Annotated[Path, typer.Option(help="Records file (.jsonl); one JSON line per measurement.")],
    data: Annotated[Optional[Path], typer.Option(help="Data set (images/ + masks/) for accuracy; omit for latency "
                                                      "only.")] = BENCH.data,
    split: DataSplit = BENCH.split,
    limit: Annotated[Optional[int], typer.Option(help="Score only the first N images.")] = BENCH.limit,
    backend: Annotated[Optional[str], typer.Option(help="torch | onnxruntime | openvino | tensorrt (default: the "
                                                        "format's own).")] = BENCH.backend,
    device: Annotated[str, typer.Option(help="cpu | cuda")] = BENCH.device,
    threads: Annotated[Optional[str], typer.Option(help="Intra-op threads; a list (1,2,4) sweeps them. Default: all "
                                                        "CPUs.")] = None,
    batch: Annotated[int, typer.Option(help="Batch of the latency measurement.")] = BENCH.batch,
    batches: Annotated[Optional[str], typer.Option(help="Also measure throughput at these batch sizes, e.g. "
                                                        "1,4,8.")] = None,
    size: Annotated[Optional[int], typer.Option(help="Input side in pixels (default: each model's spec).")] = None,
    reference: Annotated[Optional[Path], typer.Option(help="Artifact whose outputs every model is compared "
                                                           "with.")] = BENCH.reference,
    name: Annotated[Optional[list[str]], typer.Option("--name", help="Display name per model, in order.")] = None,
    warmup: Annotated[float, typer.Option(help="Warm-up seconds (at least 5 calls).")] = BENCH.latency.warmup_s,
    min_time: Annotated[float, typer.Option(help="Timed seconds (at least --min-iters calls).")]
    = BENCH.latency.min_time_s,
    min_iters: Annotated[int, typer.Option(help="Timed calls at least.")] = BENCH.latency.min_iters,
    e2e: Annotated[bool, typer.Option("--e2e/--no-e2e", help="Also time the whole cut-out of one image "
                                                             "file.")] = BENCH.end_to_end,
    isolate: Annotated[bool, typer.Option("--isolate/--in-process", help="Time each model in a fresh "
                                                                         "process.")] = BENCH.isolate,
    repeats: Annotated[int, typer.Option(help="Worker runs per model; the run --keep picks is kept, disagreeing runs "
                                              "are flagged.")] = BENCH.repeats,
    keep: Annotated[float, typer.Option(help="Which repeated run is kept: this quantile of their p50s (0.5: the "
                                             "median). Interference only adds time, so the default is "
                                             "low.")] = BENCH.keep,
    precision: Annotated[Optional[float], typer.Option(help="Percent: after --repeats runs, measure again until the "
                                                            "p50's 95% interval is within +- this (e.g. 2).")] = None,
    max_repeats: Annotated[int, typer.Option(help="With --precision: stop after this many runs (flagged "
                                                  "unstable).")] = BENCH.max_repeats,
    max_wait: Annotated[float, typer.Option(help="CPU: seconds per model to wait for a host that is taking our cores "
                                                 "(a parallel-speedup canary says so); 0: never wait, only "
                                                 "flag.")] = BENCH.max_wait_s,
    worst: Annotated[int, typer.Option(help="Worst images kept per record (cut-outs saved for the html "
                                            "report).")] = BENCH.worst,
    resume: Annotated[bool, typer.Option("--resume", help="Add to an existing records file; skip what it "
                                                          "holds.")] = False,
    target: Annotated[str, typer.Option(help="Where the models run: local; arm64-emu (instruction counts, no "
                                             "latency); ssh://user@host[:port] (the device's latency); or a device "
                                             "profile with a reach.")] = BENCH.target,
    identity: Identity = None,
    device_python: DevicePython = DEVICE_PYTHON,
    count_iters: Annotated[int, typer.Option(help="arm64-emu: inferences counted per model.")] = 3,
) -> None:
    """Measure latency (and accuracy on --data) of every model through its Runner; append one record each.
    With --target, each model goes there as a bundle and runs through the device's own runtime."""
    config = bench_config(ctx.params)
    from rich.markup import escape

    if target != "local":
        return _bench_on_target(models, out, config, ctx.params)

    from edgecut.measure.bench import bench as bench_fn

    def show(rec) -> None:
        lat = rec.latency
        line = (f"{rec.name}  {rec.backend} {rec.precision} {rec.input_size[0]}x{rec.input_size[1]} b{rec.batch} "
                f"t{rec.threads}: p50 {lat.p50_ms:.2f} ms  p90 {lat.p90_ms:.2f} ms"
                + ("  (unstable)" if lat.unstable else ""))
        if rec.end_to_end:
            line += f"  cut-out {rec.end_to_end.p50_ms:.1f} ms"
        if rec.accuracy:
            line += f"  IoU {rec.accuracy.metrics['iou']:.4f}"
        console.print(line, highlight=False)

    hooks = Hooks(on_record=show, say=lambda line: console.print(f"[dim]{escape(line)}[/dim]", highlight=False))
    result = bench_fn(models, out, config, resume=resume, names=name, hooks=hooks)
    for s in result.skipped:
        console.print(f"[dim]already in {out}: {s}[/dim]")
    console.print(f"wrote {len(result.records)} record(s) to {out}; compare them with "
                  f"'edgecut compare {out} --out DIR'")


def _bench_on_target(models: list[Path], out: Path, config: BenchConfig, values: Mapping[str, Any]) -> None:
    """``--target``: each model there as a bundle, through the device's own runtime."""
    from rich.markup import escape

    from edgecut.measure.target import bench_on_target, resolve

    where = resolve(values["target"], identity=values["identity"], python=values["device_python"])
    where = dataclasses.replace(where, count_iters=values["count_iters"])

    def show(rec) -> None:
        line = f"{rec.name}  {rec.backend} {rec.precision} {rec.input_size[0]}x{rec.input_size[1]} on {rec.target}:"
        if rec.instructions:
            line += (f" {rec.instructions.per_inference / 1e6:,.1f} M instructions/inference "
                     f"(emulated {rec.instructions.cpu})")
        if rec.latency:
            line += f" p50 {rec.latency.p50_ms:.2f} ms"
        if rec.parity:
            line += f"  vs local: max diff {rec.parity.max_abs_diff:.2e}, mask IoU {rec.parity.mask_iou_min:.4f}"
        if rec.accuracy:
            line += f"  IoU {rec.accuracy.metrics['iou']:.4f}"
        console.print(escape(line), highlight=False)

    hooks = Hooks(on_record=show, say=lambda text: console.print(f"[dim]{escape(text)}[/dim]", highlight=False))
    result = bench_on_target(models, out, config, where, resume=values["resume"], names=values["name"] or None,
                             hooks=hooks)
    for s in result.skipped:
        console.print(f"[dim]already in {out}: {s}[/dim]")
    console.print(f"wrote {len(result.records)} record(s) to {out}")


def bench_config(values: Mapping[str, Any]) -> BenchConfig:
    """How ``bench`` measures, from the command's option values."""
    v = values
    latency = dataclasses.replace(BENCH.latency, warmup_s=v["warmup"], min_time_s=v["min_time"],
                                  min_iters=v["min_iters"])
    return dataclasses.replace(
        BENCH, backend=v["backend"], device=v["device"], threads=ints(v["threads"], "--threads") or BENCH.threads,
        batch=v["batch"], batches=ints(v["batches"], "--batches") or BENCH.batches,
        size=(v["size"], v["size"]) if v["size"] else BENCH.size, latency=latency, end_to_end=v["e2e"],
        worst=v["worst"], isolate=v["isolate"], repeats=v["repeats"], keep=v["keep"], max_wait_s=v["max_wait"],
        precision=v["precision"] / 100 if v["precision"] is not None else BENCH.precision,
        max_repeats=v["max_repeats"], data=v["data"], split=v["split"], limit=v["limit"], reference=v["reference"])
