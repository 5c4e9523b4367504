"""The command that runs a recipe: ``edgecut run RECIPE.yaml``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from edgecut.cli.app import app, console
from edgecut.errors import EdgecutError


def _overrides(items: list[str]) -> dict[str, object]:
    """``["train.epochs=3", ...]`` -> ``{"train.epochs": 3}`` (values read as YAML: numbers, lists, ...)."""
    import yaml

    from edgecut.parsing import yaml_value

    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise EdgecutError(f"--set {item!r}: write STEP.KEY=VALUE, e.g. --set train.epochs=3")
        try:
            out[key.strip()] = yaml_value(value)
        except yaml.YAMLError as e:
            why = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise EdgecutError(f"--set {item!r}: {value!r} is no value ({why}; quote text with spaces)") from None
    return out


@app.command("run")
def run_cmd(
    recipe: Annotated[Path, typer.Argument(help="Recipe file (YAML), e.g. recipes/quickstart.yaml.")],
    out: Annotated[Optional[Path], typer.Option(help="Run folder (default: runs/<recipe name>).")] = None,
    from_step: Annotated[Optional[str], typer.Option("--from", help="Run this step and every step after it "
                                                                    "again (one that was interrupted resumes).")] = None,
    only: Annotated[Optional[str], typer.Option(help="Run only this step, again if it finished, resuming it "
                                                  "if it was interrupted (what it reads must be there).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the recipe and say what would run; write "
                                                            "nothing.")] = False,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Change a setting: STEP.KEY=VALUE (repeatable), "
                                                                    "e.g. train.epochs=3; inputs.NAME=PATH for an "
                                                                    "input.")] = None,
) -> None:
    """Run a recipe: its steps in order, each skipped when its inputs and settings are unchanged."""
    from edgecut.recipe import check_needs, load_recipe, plan, run_recipe

    started = time.perf_counter()
    rec = load_recipe(recipe, _overrides(set_ or []), out)
    check_needs(rec)
    run_dir = out or Path("runs") / rec.name
    console.print(f"[bold]{escape(rec.name)}[/bold]: {len(rec.steps)} steps into {run_dir}"
                  + (f". {escape(rec.description)}" if rec.description else "")
                  + (f" ({escape(rec.estimate)})" if rec.estimate else ""), highlight=False)
    if dry_run:
        table = Table("step", "kind", "would", "output")
        for r in plan(rec, run_dir, from_step=from_step, only=only):
            table.add_row(r.name, r.kind, r.status, str(r.output))
        console.print(table)
        return
    runs = run_recipe(rec, run_dir, from_step=from_step, only=only,
                      say=lambda line: console.rule(escape(line), align="left", style="dim"))
    table = Table("step", "kind", "", "seconds", "what it wrote", title=f"{rec.name} in {run_dir}")
    for r in runs:
        table.add_row(r.name, r.kind, r.status, f"{r.seconds:.0f}" if r.status != "cached" else "-", escape(r.summary))
    console.print(table)
    _print_answer(rec)
    report = run_dir / "report.md"
    console.print(f"done in {time.perf_counter() - started:.0f} s"
                  + (f"; the comparison is in {report} (and report.html)" if report.is_file() else ""))


def _print_answer(rec) -> None:
    """The rows a person wants from the recipe's last comparison: baseline, best student, best INT8."""
    from edgecut.report import build_report, load
    from edgecut.report.answer import answer

    compares = [s for s in rec.steps.values() if s.kind.name == "compare"]
    if not compares:
        return
    spec = compares[-1]
    records = spec.sources["records"]
    if not all(Path(r).is_file() for r in (records if isinstance(records, (list, tuple)) else [records])):
        return  # a partial run (--only, --from): nothing compared yet
    report = build_report(load(spec.sources["records"]), baseline=spec.config.baseline, title=spec.config.title)
    table = Table("", "name", "format", "precision", "size MB", "speed-up", "IoU", "ΔIoU", title="the answer",
                  title_justify="left")
    for role, row in answer(report):
        c = row.cells
        table.add_row(role, escape(c["name"]), c["format"], c["precision"], c["size_mb"], c["speedup"], c["iou"],
                      c.get("delta_iou", ""))
    console.print(table)
