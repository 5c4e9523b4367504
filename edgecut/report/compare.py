""":func:`compare`, the report's front function: records in (``.jsonl`` files written by ``edgecut
bench``, or :class:`~edgecut.measure.record.BenchRecord` objects), a folder of files out. Speeds
are compared only as ratios measured on one machine (in one run unless marked), accuracy only on
the same images. The report is built once (:mod:`edgecut.report.table`: the rules and the
marks) and then only laid out: :mod:`~edgecut.report.render` (md, csv), :mod:`~edgecut.report.html`
and :mod:`~edgecut.report.pareto` (the plot).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from edgecut import io
from edgecut.measure.record import BenchRecord, latest, read_records
from edgecut.errors import InputError
from edgecut.report.config import CompareConfig
from edgecut.report.render import to_csv, to_markdown
from edgecut.report.table import CSV_COLUMNS, Column, Report, Row, build_report, choose_baseline

@dataclass(frozen=True)
class CompareResult:
    paths: list[Path]  # the files written, in order: report.md, report.csv, report.html, pareto.png (with matplotlib)
    baseline: BenchRecord  # the record speed-ups are measured against
    rows: list[Row]  # table order; row.cells holds the display text, row.values the raw numbers
    columns: list[Column]  # the columns shown in the md / html table
    footnotes: list[tuple[str, str]]  # (mark, text)
    notes: list[str]  # what the baseline is, what could not be compared


Source = str | os.PathLike | BenchRecord


def load(paths_or_records: Source | Iterable[Source]) -> list[BenchRecord]:
    """Records from files and/or objects, de-duplicated with :func:`~edgecut.measure.record.latest`."""
    items = [paths_or_records] if isinstance(paths_or_records, (str, os.PathLike, BenchRecord)) \
        else list(paths_or_records)
    if not items:
        raise InputError(None, "no records given", "give one or more .jsonl files written by 'edgecut bench'")
    records: list[BenchRecord] = []
    for item in items:
        if isinstance(item, BenchRecord):
            records.append(item)
            continue
        found = read_records(item)
        if not found:
            raise InputError(item, "holds no bench records", "give a .jsonl written by 'edgecut bench'")
        records += found
    return latest(records)


REPORT_FILES = ("report.md", "report.csv", "report.html", "pareto.png")


def _a_report(folder: Path) -> bool:
    """Whether ``folder``'s report files are a report edgecut wrote (its csv starts with edgecut's header)."""
    try:
        with open(folder / "report.csv", encoding="utf-8") as f:
            return f.readline().startswith(",".join(CSV_COLUMNS))
    except (OSError, UnicodeDecodeError):
        return False


@io.writes_out
def compare(paths_or_records: Source | Iterable[Source], out: str | os.PathLike,
            config: CompareConfig = CompareConfig(), *, resume: bool = False, progress: bool = True) -> CompareResult:
    """Write ``report.md``, ``report.csv``, ``report.html`` and ``pareto.png`` into ``out``.

    Every speed-up and ΔIoU is measured against ``config.baseline``. ``pareto.png`` needs
    matplotlib (``edgecut[plot]``); without it the other three files are written and the html
    says so. (A report is made again from its records each time: ``resume`` has nothing to keep.)
    """
    del resume, progress
    from edgecut.report.html import render_html, worst_strips
    from edgecut.report.pareto import plot_pareto

    out = Path(out)
    for name in REPORT_FILES:  # a report of ours is replaced; any other file by these names only when asked
        io.replaceable(out / name, lambda _: _a_report(out), config.overwrite)
    report: Report = build_report(load(paths_or_records), baseline=config.baseline, title=config.title)
    io.make_dirs(out)
    png = plot_pareto(report)
    paths = [io.write_text(out / "report.md", to_markdown(report)),
             io.write_text(out / "report.csv", to_csv(report)),
             io.write_text(out / "report.html", render_html(report, png, worst_strips(report.rows)))]
    if png is not None:
        paths.append(io.write_bytes(out / "pareto.png", png))
    return CompareResult(paths=paths, baseline=report.baseline, rows=report.rows, columns=report.columns,
                         footnotes=report.footnotes, notes=report.notes)
