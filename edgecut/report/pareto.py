"""The Pareto plot: p50 latency against IoU, one point per record, the frontier as a step line.

Only points measured on the baseline's machine and scored on the reference images can be on the frontier; the
others are drawn hollow with their footnote mark. Records without accuracy (a latency-only measurement) are ticks
along the bottom; records without latency are named in the caption. Nothing is dropped silently. Labels of points
that sit together (the same model on three backends) are stacked a line apart with a thin leader instead of
printed over each other.

matplotlib is an optional extra (``edgecut[plot]``); :func:`plot_pareto` returns ``None`` without it. The figure
is drawn on a bare :class:`matplotlib.figure.Figure` (no pyplot, no process-wide backend switch) and rendered to
PNG bytes, which the caller writes atomically and embeds in the html page.
"""

from __future__ import annotations

import io as _stdio
import math
from collections.abc import Sequence
from dataclasses import dataclass

from edgecut._optional import available
from edgecut.report.table import OTHER_DATA_MARK, UNSTABLE_MARK, Report, Row

PRECISION_MARKERS = {"fp32": "o", "fp16": "s", "bf16": "P", "int8": "^", "int4": "v"}
LOG_RANGE = 8.0  # a log latency axis when the slowest point is this many times the fastest
LABEL_SIZE = 7.0  # points
LABEL_OFFSET = (5.0, 4.0)  # a label's place from its point (points), unless another label is there


def frontier(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the Pareto-optimal points (lower x, higher y), by increasing x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    best, out = float("-inf"), []
    for i in order:
        if points[i][1] > best:
            out.append(i)
            best = points[i][1]
    return out


def label_offsets(anchors: Sequence[tuple[float, float]], texts: Sequence[str], fontsize: float = 7.0,
                  ) -> list[tuple[float, float]]:
    """Offsets (points) of each label from its point so that no two labels overlap.

    ``anchors`` are the points' positions in points. A label goes to the upper right of its
    point; one that would cover a label already placed moves up a line at a time (then down),
    the lower points being placed first. Text width is estimated from the character count.
    """
    line = fontsize * 1.3
    placed: list[tuple[float, float, float, float]] = []
    out: list[tuple[float, float]] = [LABEL_OFFSET] * len(anchors)
    for i in sorted(range(len(anchors)), key=lambda k: (anchors[k][1], anchors[k][0])):
        (px, py), width = anchors[i], fontsize * 0.6 * len(texts[i])
        dx = LABEL_OFFSET[0]
        candidates = [LABEL_OFFSET[1] + k * line for k in range(12)] + [LABEL_OFFSET[1] - k * line for k in range(1, 8)]
        for dy in candidates:
            box = (px + dx, py + dy, px + dx + width, py + dy + line)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                break
        else:
            dy = LABEL_OFFSET[1]
            box = (px + dx, py + dy, px + dx + width, py + dy + line)
        placed.append(box)
        out[i] = (dx, dy)
    return out


def _minor_tick(v: float, _pos=None) -> str:
    if v <= 0:
        return ""
    lead = round(v / 10 ** math.floor(math.log10(v)), 6)
    return f"{v:g}" if lead in (2, 3, 5) else ""


def _iou(row: Row) -> float | None:
    acc = row.record.accuracy
    return acc.metrics.get("iou") if acc is not None else None


def _unstable(row: Row) -> bool:
    return row.unstable


def _mark(row: Row, report: Report) -> str:
    """The footnote mark a hollow point carries: its machine's dagger, or the other-data mark."""
    if row.machine_mark:
        return row.machine_mark
    return OTHER_DATA_MARK if report.accuracy_ref is not None and not row.same_data else ""


@dataclass(frozen=True)
class _Points:
    """The report's rows, sorted by how the plot shows them."""

    scored: list[Row]  # latency and IoU: a point
    comparable: list[Row]  # scored on the baseline's machine and the reference images: solid, may be on the frontier
    front: list[Row]  # the Pareto frontier among the comparable points, by increasing latency
    rug: list[Row]  # latency without accuracy: a tick along the bottom
    unplaced: list[Row]  # no latency: named in the caption
    baseline: Row | None  # the baseline's row, when it is a point
    colour: dict[str, str]  # backend -> colour, in order of first row

    @property
    def latencies(self) -> list[float]:
        return [r.latency_ms for r in self.scored + self.rug]


@dataclass(frozen=True)
class _Label:
    x: float  # data coordinates of the labelled point
    y: float
    text: str


def plot_pareto(report: Report, dpi: int = 110) -> bytes | None:
    """The plot as PNG bytes, or ``None`` when matplotlib is not installed."""
    if not available("matplotlib"):
        return None
    from matplotlib.figure import Figure

    points = _points(report)
    fig = Figure(figsize=(8.5, 5.8))
    ax = fig.add_subplot()
    _draw_points(ax, points)
    _draw_rug(ax, points)
    _scale_axes(ax, points)
    _name_axes(ax, report)
    _add_legend(ax, points)
    caption = _caption(points)
    if caption:
        fig.text(0.01, 0.01, caption, fontsize=7, color="0.3", ha="left", va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.04 if caption else 0, 1, 1))
    _place_labels(fig, ax, _labels(points, report))  # once the axes are final, so labels can dodge each other
    buf = _stdio.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _points(report: Report) -> _Points:
    rows = report.rows
    scored = [r for r in rows if r.latency_ms is not None and _iou(r) is not None]
    comparable = _comparable(scored, report)
    base = next((r for r in rows if r.is_baseline), None)
    backends = list(dict.fromkeys(r.record.backend for r in rows))
    return _Points(
        scored=scored,
        comparable=comparable,
        front=[comparable[i] for i in frontier([(r.latency_ms, _iou(r)) for r in comparable])],
        rug=[r for r in rows if r.latency_ms is not None and _iou(r) is None],
        unplaced=[r for r in rows if r.latency_ms is None],
        baseline=base if base is not None and base in scored else None,
        colour={b: f"C{i % 10}" for i, b in enumerate(backends)},
    )


def _comparable(scored: list[Row], report: Report) -> list[Row]:
    """The points that may be on the frontier: the baseline's machine, the reference's images."""
    if report.accuracy_ref is not None:
        return [r for r in scored if r.same_machine and r.same_data]
    # no reference: the most common data set stands in for it
    keys = [(r.record.accuracy.data, r.record.accuracy.count) for r in scored]
    common = max(set(keys), key=keys.count) if keys else None
    return [r for r in scored if r.same_machine and (r.record.accuracy.data, r.record.accuracy.count) == common]


def _draw_points(ax, points: _Points) -> None:
    """A marker per scored record (hollow when not comparable), the frontier and the baseline's star."""
    for r in points.scored:
        c = points.colour[r.record.backend]
        ax.scatter([r.latency_ms], [_iou(r)], marker=PRECISION_MARKERS.get(r.record.precision, "D"), s=50,
                   facecolors=c if r in points.comparable else "none", edgecolors=c, linewidths=1.2, zorder=3)
    if points.front:
        xs, ys = [r.latency_ms for r in points.front], [_iou(r) for r in points.front]
        ax.step(xs, ys, where="post", color="0.3", lw=1.0, zorder=2)
        ax.scatter(xs, ys, s=160, facecolors="none", edgecolors="crimson", linewidths=1.4, zorder=2)
    if points.baseline is not None:
        base = points.baseline
        ax.scatter([base.latency_ms], [_iou(base)], marker="*", s=260, facecolors="none", edgecolors="black",
                   linewidths=1.0, zorder=5)


def _draw_rug(ax, points: _Points) -> None:
    """Latency without accuracy: a named tick on the x axis."""
    for r in points.rug:
        ax.plot([r.latency_ms], [0.0], marker="|", markersize=16, mew=2, color=points.colour[r.record.backend],
                transform=ax.get_xaxis_transform(), clip_on=False, zorder=3)
        text = f"{r.label} {UNSTABLE_MARK}" if _unstable(r) else r.label
        ax.annotate(text, (r.latency_ms, 0.03), xycoords=ax.get_xaxis_transform(), rotation=90, fontsize=6,
                    va="bottom", ha="right", color="0.25")


def _scale_axes(ax, points: _Points) -> None:
    """A log latency axis over a wide range; limits that leave room for the rug's names."""
    from matplotlib.ticker import FuncFormatter

    xs = points.latencies
    if xs and min(xs) > 0 and max(xs) / min(xs) > LOG_RANGE:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(_minor_tick))  # 2, 3, 5 between the decades: no crowding
        ax.tick_params(axis="x", which="both", labelsize=8)
    if xs and len(set(xs)) == 1:
        ax.set_xlim(xs[0] * 0.8, xs[0] * 1.2)
    ys = [_iou(r) for r in points.scored]
    if ys:
        lo, hi = min(ys), max(ys)
        pad = max(hi - lo, 0.01)
        ax.set_ylim(lo - 0.35 * pad if points.rug else lo - 0.1 * pad, hi + 0.12 * pad)
    elif points.rug:
        ax.set_yticks([])
    if not xs:
        ax.text(0.5, 0.5, "no record has both latency and accuracy", ha="center", va="center",
                transform=ax.transAxes)


def _name_axes(ax, report: Report) -> None:
    b = report.baseline
    per = "per image" if report.per_image else f"batch {b.batch}"
    ax.set_xlabel(f"p50 latency, {per} (ms{', log scale' if ax.get_xscale() == 'log' else ''})")
    ref = report.accuracy_ref.accuracy if report.accuracy_ref is not None else None
    ax.set_ylabel(f"IoU on {ref.data} ({ref.count} images)" if ref else "IoU")
    ax.set_title(report.title, fontsize=11)
    ax.grid(alpha=0.3, which="both")


def _add_legend(ax, points: _Points) -> None:
    """Colour per backend, marker per precision, then the frontier, the baseline and the rug when drawn."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="", marker="o", color=c, label=k) for k, c in points.colour.items()]
    precisions = list(dict.fromkeys(r.record.precision for r in points.scored))
    handles += [Line2D([], [], ls="", marker=PRECISION_MARKERS.get(p, "D"), color="0.4", label=p) for p in precisions]
    if points.front:
        handles.append(Line2D([], [], color="0.3", marker="o", mfc="none", mec="crimson", label="Pareto frontier"))
    if points.baseline is not None:
        handles.append(Line2D([], [], ls="", marker="*", mfc="none", mec="black", markersize=12, label="baseline"))
    if points.rug:
        handles.append(Line2D([], [], ls="", marker="|", color="0.3", markersize=10, mew=2,
                              label="latency only (no accuracy)"))
    ax.legend(handles=handles, fontsize=7, loc="best", framealpha=0.85)


def _caption(points: _Points) -> str:
    """What the points do not say: why some are hollow, which records are not drawn ("" when nothing)."""
    caption = []
    if len(points.comparable) < len(points.scored):
        caption.append("hollow: measured on another machine or scored on other images (never on the frontier)")
    if points.unplaced:
        caption.append("no latency, not drawn: " + ", ".join(r.label for r in points.unplaced))
    return "; ".join(caption)


def _labels(points: _Points, report: Report) -> list[_Label]:
    """A label per scored point: its name, plus the marks of a hollow or unstable point."""
    labels = []
    for r in points.scored:
        hollow = _mark(r, report) if r not in points.comparable else ""
        marks = [m for m in (hollow, UNSTABLE_MARK if _unstable(r) else "") if m]
        labels.append(_Label(r.latency_ms, _iou(r), " ".join([r.label, *marks])))
    return labels


def _place_labels(fig, ax, labels: list[_Label]) -> None:
    """Annotate each point, moving labels that would overlap (:func:`label_offsets`) with a thin leader."""
    to_pt = 72.0 / fig.dpi
    anchors = [tuple(v * to_pt for v in ax.transData.transform((lab.x, lab.y))) for lab in labels]
    for lab, (dx, dy) in zip(labels, label_offsets(anchors, [lab.text for lab in labels], LABEL_SIZE)):
        moved = dy != LABEL_OFFSET[1]
        ax.annotate(lab.text, (lab.x, lab.y), textcoords="offset points", xytext=(dx, dy), fontsize=LABEL_SIZE,
                    zorder=4, arrowprops=dict(arrowstyle="-", lw=0.4, color="0.55", shrinkA=0, shrinkB=3) if moved
                    else None)
