"""The search command: ``edgecut optimize MODEL --data DIR --target PROFILE --max-iou-drop D --out DIR``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from edgecut.cli.app import app, console
from edgecut.cli.options import ints
from edgecut.errors import EdgecutError
from edgecut.search.config import OptimizeConfig

OPTIMIZE = OptimizeConfig()  # the defaults the options below show (lists as comma-separated text)


def _floats(text: str | None, what: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise EdgecutError(f"--{what} {text!r}: give numbers separated by commas, e.g. 0.3,0.5") from None


@app.command()
def optimize(
    ctx: typer.Context,
    model: Annotated[Path, typer.Argument(help="The torch model artifact (edgecut train, or edgecut import of "
                                               "yours).")],
    data: Annotated[Path, typer.Option(help="Data set folder: images/, masks/, splits/train.txt and val.txt.")],
    out: Annotated[Path, typer.Option(help="Search folder: the chosen model/, recipe.yaml, optimize.md, pareto.png; "
                                           "run again into it to continue.")],
    target: Annotated[str, typer.Option(help="Device profile (export_targets/) or arm64-emu.")] = OPTIMIZE.target,
    max_iou_drop: Annotated[float, typer.Option(help="Largest val IoU drop from the model's own "
                                                     "(absolute).")] = OPTIMIZE.max_iou_drop,
    budget_minutes: Annotated[float, typer.Option(help="No candidate starts after this; run again with more to go "
                                                       "on.")] = OPTIMIZE.budget_minutes,
    prune_ratios: Annotated[Optional[str], typer.Option(help="Pruning ratios tried, comma-separated (none: '').")]
    = ",".join(f"{r:g}" for r in OPTIMIZE.prune_ratios),
    students: Annotated[Optional[str], typer.Option(help="Registered students distilled, comma-separated (none: "
                                                         "'').")] = ",".join(OPTIMIZE.students),
    sizes: Annotated[Optional[str], typer.Option(help="Input sides tried beside the model's (default: 3/4 of "
                                                      "it).")] = None,
    threads: Annotated[Optional[str], typer.Option(help="Thread counts tried (default: the profile's).")] = None,
    formats: Annotated[Optional[str], typer.Option(help="Only these of the profile's formats, "
                                                        "comma-separated.")] = None,
    finetune_epochs: Annotated[int, typer.Option(help="Fine-tuning epochs of each pruned "
                                                      "model.")] = OPTIMIZE.finetune_epochs,
    distill_epochs: Annotated[int, typer.Option(help="Epochs of each distilled student.")] = OPTIMIZE.distill_epochs,
    distill_lr: Annotated[Optional[float], typer.Option(help="Students' peak learning rate (they start from "
                                                             "scratch).")] = OPTIMIZE.distill_lr,
    qat_epochs: Annotated[int, typer.Option(help="QAT epochs of an INT8 candidate outside the "
                                                 "budget.")] = OPTIMIZE.qat_epochs,
    holdout: Annotated[Optional[str], typer.Option(help="Split of held-out images the winner is checked on "
                                                        "(default: every other val image).")] = OPTIMIZE.holdout,
    val_split: Annotated[Optional[str], typer.Option(help="Split scored on (default: "
                                                          "splits/val.txt).")] = OPTIMIZE.val_split,
    min_time: Annotated[float, typer.Option(help="Seconds of each latency measurement.")] = OPTIMIZE.min_time_s,
    steps: Annotated[Optional[Path], typer.Option(help="Folder the models and exports are made and cached in "
                                                       "(default OUT/steps); share it between targets.")] = None,
) -> None:
    """Search for the fastest artifact for a target that keeps val IoU within a budget of the model's."""
    from edgecut.search.optimize import optimize as optimize_fn

    result = optimize_fn(model, data, out, optimize_config(ctx.params), steps=steps,
                         say=lambda line: console.print(escape(line), highlight=False))
    console.print()
    console.print(escape(result.paragraph), highlight=False)
    if result.winner is None:
        raise EdgecutError(f"no candidate met the budget; the table of what was tried is {out / 'optimize.md'}")
    console.print(f"\nchosen: {out / 'model'}; rebuild it with edgecut run {out / 'recipe.yaml'}; "
                  f"table {out / 'optimize.md'}, plot {out / 'pareto.png'}", highlight=False)


def optimize_config(values: Mapping[str, Any]) -> OptimizeConfig:
    """The search's config from the command's option values (lists given as comma-separated text)."""
    v = values
    return OptimizeConfig(
        target=v["target"], max_iou_drop=v["max_iou_drop"], budget_minutes=v["budget_minutes"],
        prune_ratios=_floats(v["prune_ratios"], "prune-ratios") or (),
        students=tuple(s.strip() for s in (v["students"] or "").split(",") if s.strip()),
        sizes=ints(v["sizes"], "sizes") if v["sizes"] is not None else OPTIMIZE.sizes,
        threads=ints(v["threads"], "threads") if v["threads"] else OPTIMIZE.threads,
        formats=tuple(f.strip() for f in (v["formats"] or "").split(",") if f.strip()),
        finetune_epochs=v["finetune_epochs"], distill_epochs=v["distill_epochs"], distill_lr=v["distill_lr"],
        qat_epochs=v["qat_epochs"], holdout=v["holdout"], val_split=v["val_split"], min_time_s=v["min_time"])
