"""``edgecut compare``: bench records compared against a baseline, as tables and a Pareto plot."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from edgecut.cli.app import app, console
from edgecut.report.config import CompareConfig

COMPARE = CompareConfig()  # the defaults the options below show


@app.command()
def compare(
    records: Annotated[list[Path], typer.Argument(help="Records files (.jsonl) written by 'edgecut bench'.")],
    out: Annotated[Path, typer.Option(help="Folder for report.md, report.csv, report.html and pareto.png.")],
    baseline: Annotated[Optional[str], typer.Option(help="Record name to compare against (default: the fp32 record "
                                                         "with the most MACs, torch first).")] = COMPARE.baseline,
    title: Annotated[Optional[str], typer.Option(help="Report title.")] = COMPARE.title,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace report files in --out that edgecut did "
                                                                "not write.")] = COMPARE.overwrite,
) -> None:
    """Compare bench records: speed-ups and accuracy deltas against a baseline (md, csv, html) and a Pareto plot."""
    from rich.markup import escape

    from edgecut.report import compare as compare_fn

    result = compare_fn(records, out, CompareConfig(baseline=baseline, title=title, overwrite=overwrite))
    columns = list(result.columns)  # the terminal drops the least telling columns that do not fit; report.md has all
    for key in ("mae", "s_measure", "p90", "params", "macs", "format", "size_mb", "data", "target", "input",
                "precision"):
        widths = [max([len(c.header)] + [len(r.cells[c.key]) for r in result.rows]) for c in columns]
        if 1 + sum(3 + w for w in widths) <= console.width:
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
