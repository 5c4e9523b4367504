"""The answer first: the few rows of a comparison a person looks for (the baseline, the best
model of another architecture, the best INT8 model), picked from a built :class:`Report`."""

from __future__ import annotations

from collections.abc import Callable

from edgecut.report.table import Report, Row

CLOSE_IOU = 0.01  # rows within this IoU of their group's best count as equally accurate: the fastest wins


def _iou(row: Row) -> float | None:
    acc = row.record.accuracy
    return acc.metrics.get("iou") if acc is not None else None


def _best(rows: list[Row]) -> Row | None:
    """The fastest of the rows within :data:`CLOSE_IOU` of the most accurate (the fastest when none is scored)."""
    if not rows:
        return None
    scored = [r for r in rows if _iou(r) is not None]
    if scored:
        top = max(_iou(r) for r in scored)  # type: ignore[type-var]
        rows = [r for r in scored if _iou(r) >= top - CLOSE_IOU]  # type: ignore[operator]
    return max(rows, key=lambda r: (r.speedup or 0.0, _iou(r) or 0.0))


def answer(report: Report) -> list[tuple[str, Row]]:
    """(role, row) for the baseline, the best student (another architecture than the baseline's)
    and the best INT8 row, each at most once, in that order."""
    base = next((r for r in report.rows if r.is_baseline), None)
    arch = report.baseline.arch
    picks: list[tuple[str, Callable[[Row], bool]]] = [
        ("student", lambda r: r.record.arch not in (None, arch) and r.record.format != "classical"),
        ("int8", lambda r: r.record.precision == "int8"),
    ]
    chosen: list[tuple[str, Row]] = [("baseline", base)] if base is not None else []
    for role, wanted in picks:
        row = _best([r for r in report.rows if wanted(r)])
        if row is not None:
            chosen.append((role, row))
    return chosen
