"""Rendering a built :class:`~edgecut.report.table.Report` as markdown and csv text.

The report already holds every decision (which rows, which marks, which footnotes); these
functions only lay it out: markdown for people (display text, markers escaped so a cell stays a
cell), csv for programs (raw numbers that read back as the same floats, empty where missing).
"""

from __future__ import annotations

import csv
import io as _stdio
from typing import Any

from edgecut.report.table import CSV_COLUMNS, Report


def to_markdown(report: Report) -> str:
    lines = [f"# {report.title}", ""]
    lines += [f"- **{label}**: {_md(text)}" for label, text in report.summary]
    lines += ["", f"How to read: {report.how_to_read}", ""]
    lines.append("| " + " | ".join(c.header for c in report.columns) + " |")
    lines.append("|" + "|".join("---:" if c.numeric else "---" for c in report.columns) + "|")
    for row in report.rows:
        cells = [_md(row.cells[c.key]) for c in report.columns]
        if row.is_baseline:
            cells[0] = f"**{cells[0]}**"
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- {_md(n)}" for n in report.notes]
    if report.footnotes:
        lines.append("")
        lines += [f"- {_MD_MARK.get(mark, mark)} {_md(text)}" for mark, text in report.footnotes]
    return "\n".join(lines) + "\n"


_MD_MARK = {"*": "\\*"}  # a bare "* " at the start of a list item would open a nested list


def _md(text: str) -> str:
    """Text safe inside a markdown table cell: no pipe ends the cell, no newline ends the row."""
    return text.replace("|", "\\|").replace("\n", " ")


def to_csv(report: Report) -> str:
    """Raw numbers, one header row, empty for missing values; floats as Python writes them (round-trip)."""
    header = list(CSV_COLUMNS) + [k for k in report.metric_keys if k not in CSV_COLUMNS]
    buf = _stdio.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in report.rows:
        writer.writerow([_raw(row.values.get(k)) for k in header])
    return buf.getvalue()


def _raw(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v) if isinstance(v, float) else str(v)
