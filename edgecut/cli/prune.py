"""``edgecut prune``: structured channel pruning, with fine-tuning and sensitivity analysis."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from edgecut import io
from edgecut.cli.app import app, console
from edgecut.cli.options import Autocast, Ema, Lr, ResumeRun, Seed, TorchThreads, TrainSplit, ValSplit, loop_config
from edgecut.compress.config import PruneConfig, SensitivityConfig
from edgecut.errors import EdgecutError

PRUNE = PruneConfig()  # the defaults the options below show (but --ratio's: say how much to prune)
SENSITIVITY = SensitivityConfig()  # --sensitivity's


@app.command()
def prune(
    ctx: typer.Context,
    model: Annotated[Path, typer.Argument(help="Torch artifact to prune (teacher, student, pruned model).")],
    out: Annotated[Path, typer.Option(help="Folder for the pruned artifact (or the sensitivity tables).")],
    ratio: Annotated[Optional[float], typer.Option(help="Share of channels removed (per group, or overall with --scope "
                                                        "global).")] = None,
    target_macs: Annotated[Optional[float], typer.Option(help="Instead of --ratio: prune to at most this many GMACs at "
                                                              "the model's input size.")] = PRUNE.target_macs,
    plan: Annotated[Optional[Path], typer.Option(help="Per-layer ratios: a plan.json from --sensitivity "
                                                      "--max-drop.")] = None,
    importance: Annotated[str, typer.Option(help="l1 | l2 | bn | taylor (taylor needs --data).")] = PRUNE.importance,
    scope: Annotated[str, typer.Option(help="uniform: the same ratio per group; global: rank all channels "
                                            "together.")] = PRUNE.scope,
    steps: Annotated[int, typer.Option(help="Iterative schedule: prune (and fine-tune) this many "
                                            "times.")] = PRUNE.steps,
    round_to: Annotated[int, typer.Option(help="Keep channel counts a multiple of this (1: no "
                                               "rounding).")] = PRUNE.round_to,
    ignore: Annotated[Optional[list[str]], typer.Option(help="Layer whose output channels stay whole "
                                                             "(repeatable).")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Data set: fine-tuning, validation, sensitivity, "
                                                      "taylor.")] = None,
    finetune_epochs: Annotated[int, typer.Option(help="Fine-tuning epochs after each pruning step (needs "
                                                      "--data).")] = PRUNE.loop.epochs,
    recalibrate_bn: Annotated[int, typer.Option(help="Re-estimate batch-norm statistics on N training batches after "
                                                     "each pruning step (needs --data).")] = PRUNE.bn_batches,
    kd: Annotated[bool, typer.Option("--kd", help="Fine-tune by distillation from the model before pruning (its "
                                                  "answers, computed once and stored) beside the masks.")] = PRUNE.kd,
    batch: Annotated[int, typer.Option(help="Fine-tuning batch size.")] = PRUNE.loop.batch_size,
    lr: Lr = PRUNE.loop.lr,
    ema: Ema = PRUNE.loop.ema_decay,
    precision: Autocast = PRUNE.loop.precision,
    train_split: TrainSplit = PRUNE.train_split,
    val_split: ValSplit = PRUNE.val_split,
    sensitivity: Annotated[bool, typer.Option("--sensitivity", help="Measure each group's metric drop instead of "
                                                                    "pruning.")] = False,
    ratios: Annotated[str, typer.Option(help="Sensitivity: ratios tried per group, comma "
                                             "separated.")] = ",".join(f"{r:g}" for r in SENSITIVITY.ratios),
    images: Annotated[int, typer.Option(help="Sensitivity: held-out images scored per "
                                             "trial.")] = SENSITIVITY.images,
    max_drop: Annotated[Optional[float], typer.Option(help="Sensitivity: write plan.json keeping each group's drop "
                                                           "under this.")] = None,
    threads: TorchThreads = PRUNE.threads,
    no_latency: Annotated[bool, typer.Option("--no-latency", help="Skip the before/after CPU latency.")] = False,
    resume: ResumeRun = False,
    seed: Seed = PRUNE.loop.seed,
) -> None:
    """Structured channel pruning (Torch-Pruning dependency graph), with fine-tuning and sensitivity analysis."""
    if sensitivity:
        _sensitivity(model, out, ctx.params)
        return
    config = prune_config(ctx.params)
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


def prune_config(values: Mapping[str, Any]) -> PruneConfig:
    """The ``prune`` step's config from the command's option values."""
    from edgecut.compress.pruning import read_plan

    layer_ratios = read_plan(values["plan"]) if values["plan"] else {}
    if values["ratio"] is None and values["target_macs"] is None and not layer_ratios:
        raise EdgecutError("say how much to prune: --ratio R, --target-macs G or --plan FILE")
    round_to, data = values["round_to"], values["data"]
    return PruneConfig(ratio=values["ratio"], target_macs=values["target_macs"], importance=values["importance"],
                       scope=values["scope"], steps=values["steps"], round_to=round_to if round_to > 1 else None,
                       layer_ratios=layer_ratios, ignore=tuple(values["ignore"] or ()),
                       data=str(data) if data else None,
                       train_split=values["train_split"], val_split=values["val_split"],
                       bn_batches=values["recalibrate_bn"], kd=values["kd"], threads=values["threads"],
                       latency=not values["no_latency"],
                       loop=loop_config(PRUNE.loop, {**values, "epochs": values["finetune_epochs"]}))


def _sensitivity(model: Path, out: Path, values: Mapping[str, Any]) -> None:
    """``--sensitivity``: each group's metric drop at each of ``--ratios``, instead of pruning."""
    from edgecut.compress.prune import sensitivity_artifact

    data, ratios, round_to, max_drop = values["data"], values["ratios"], values["round_to"], values["max_drop"]
    if data is None:
        raise EdgecutError("--sensitivity needs --data DIR (held-out images to score each trial on)")
    try:
        ratio_list = tuple(float(r) for r in ratios.split(","))
    except ValueError:
        raise EdgecutError(f"--ratios {ratios!r}: expected numbers separated by commas, e.g. 0.25,0.5,0.75") from None
    config = SensitivityConfig(ratios=ratio_list, importance=values["importance"],
                               round_to=round_to if round_to > 1 else None, ignore=tuple(values["ignore"] or ()),
                               split=values["train_split"], images=values["images"], max_drop=max_drop)
    res = sensitivity_artifact(model, out, data, config, threads=values["threads"])
    worst = sorted(res["rows"], key=lambda r: -r.drop)[:5]
    console.print(f"baseline IoU {res['baseline']:.4f} on {res['images']} images of {res['data']}; most sensitive: "
                  + ", ".join(f"{r.layer}@{r.ratio:g} {r.drop:+.4f}" for r in worst))
    if res["plan"] is not None:
        console.print(f"plan: {len(res['plan'])} groups pruned within a drop of {max_drop}")
    console.print("wrote " + ", ".join(str(f) for f in res["files"]))
