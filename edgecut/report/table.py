"""The comparison table: one row per bench record, speed-ups and accuracy deltas against a baseline.

Fairness rules (DESIGN.md, "Measurement rules"): a speed-up is a ratio of p50 latencies measured
on one machine, ideally in one run. So a row measured on another machine gets no speed-up and a
dagger naming the machine; a row of the same machine but another run keeps its ratio with a
``*``; a latency flagged unstable by ``edgecut bench`` is marked ``⚠``. A
ΔIoU compares two records scored on the same images only (same data set name and count).

Everything here is plain data: :func:`build_report` turns records into a :class:`Report` whose
rows carry both display text (``cells``, markers included) and raw numbers (``values``), which
the markdown, csv, html and terminal renderers print without deciding anything again.
"""

from __future__ import annotations

import csv
import io as _stdio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edgecut.bench.canary import BUSY_FRACTION
from edgecut.bench.latency import REPEAT_SPREAD, UNSTABLE_COV, half_width
from edgecut.bench.record import BenchRecord, machine_label
from edgecut.errors import EdgecutError

MISSING = "—"  # a value that was not measured or cannot be compared (md, html, terminal); empty in csv
UNSTABLE_MARK = "⚠"
OTHER_RUN_MARK = "*"
OTHER_DATA_MARK = "§"
MACHINE_MARKS = ("†", "‡", "††", "‡‡", "†††", "‡‡‡")
VERSION_LIBS = ("torch", "onnxruntime", "openvino", "tensorrt")  # runtimes whose versions the header names
MAIN_METRICS = ("iou", "mae", "s_measure")  # shown in the table; the csv has every metric


@dataclass(frozen=True)
class Column:
    key: str  # key into Row.cells
    header: str
    numeric: bool = True  # right-aligned


# every column the table can show; the optional ones appear only when they carry information
COLUMNS = (
    Column("name", "name", numeric=False),
    Column("format", "format", numeric=False),
    Column("precision", "precision", numeric=False),
    Column("backend", "backend", numeric=False),
    Column("device", "device", numeric=False),  # optional: when not all cpu
    Column("target", "target", numeric=False),  # optional: when not all local
    Column("threads", "threads"),  # optional: when they vary
    Column("batch", "batch"),  # optional: when they vary
    Column("input", "input"),  # optional: when they vary
    Column("size_mb", "size MB"),
    Column("params", "params (M)"),
    Column("macs", "MACs (G)"),
    Column("p50", "p50 ms"),
    Column("p90", "p90 ms"),
    Column("speedup", "speed-up"),
    Column("e2e", "cut-out ms"),  # optional: when any record has the end-to-end time
    Column("data", "data", numeric=False),  # optional: when records were scored on different data sets
    Column("iou", "IoU"),
    Column("mae", "MAE"),
    Column("s_measure", "S-measure"),
    Column("delta_iou", "ΔIoU"),
)

CSV_COLUMNS = (
    "name", "baseline", "artifact", "sha256", "arch", "format", "precision", "backend", "device", "target",
    "machine", "machine_label", "run_id", "created", "same_machine", "same_run", "input_h", "input_w", "batch",
    "threads", "size_mb", "params", "macs", "p50_ms", "p50_ci_lo_ms", "p50_ci_hi_ms", "p90_ms", "p99_ms", "mean_ms",
    "cov", "first_ms", "unstable",
    "speedup", "e2e_p50_ms", "e2e_unstable", "peak_rss_mb", "gpu_peak_mb", "host_speedup", "host_busy",
    "throughput_batch",
    "throughput_images_per_s", "data", "data_count", "iou", "mae", "s_measure", "delta_iou",
)


@dataclass(frozen=True)
class Row:
    record: BenchRecord
    is_baseline: bool
    same_machine: bool  # measured on the baseline's machine
    same_run: bool  # ... and in the baseline's run
    machine_mark: str  # the footnote mark of the row's machine ("" for the baseline's machine)
    latency_ms: float | None  # the p50 that speed-ups compare (per image when batches differ)
    speedup: float | None  # baseline latency / this latency; None when not measured or not comparable
    same_data: bool  # scored on the accuracy reference's images (False also when not scored)
    delta_iou: float | None
    label: str  # short name for plots: the name, plus the backend when the name has several records
    cells: dict[str, str]  # display text per column key, markers included
    values: dict[str, Any]  # raw numbers per csv column (None: empty)
    unstable: bool = False  # the latency is flagged: by bench, or busy against the compared records' best canary


@dataclass
class Footnotes:
    """Footnote marks in order of first use; one mark per distinct text."""

    items: dict[str, str] = field(default_factory=dict)  # mark -> text

    def add(self, mark: str, text: str) -> str:
        self.items.setdefault(mark, text)
        return mark


@dataclass
class Report:
    title: str
    baseline: BenchRecord  # the record speed-ups are measured against
    accuracy_ref: BenchRecord | None  # the record ΔIoU is measured against (the baseline if it was scored)
    rows: list[Row]
    columns: list[Column]  # the columns shown (md, html, terminal)
    summary: list[tuple[str, str]]  # header lines: (label, text)
    how_to_read: str
    notes: list[str]  # lines under the table: which record is the baseline, what was left out
    footnotes: list[tuple[str, str]]  # (mark, text)
    per_image: bool  # speed-ups and the plot use p50 / batch (batches differ)
    metric_keys: list[str]  # metric columns of the csv: MAIN_METRICS first, then the rest seen


# --------------------------------------------------------------------------- baseline


def record_names(records: Sequence[BenchRecord]) -> list[str]:
    return list(dict.fromkeys(r.name for r in records))


def choose_baseline(records: Sequence[BenchRecord], name: str | None = None) -> BenchRecord:
    """The record speed-ups are measured against.

    ``name`` picks the records of that name; by default the name is that of the fp32 record with
    the most MACs (ties or no MACs: torch first, then the largest file). Among the records of the
    chosen name the torch one wins (one with latency before one without), else the first.
    """
    if not records:
        raise ValueError("no records")
    if name is None:
        pool = [r for r in records if r.precision == "fp32"] or list(records)
        name = max(pool, key=lambda r: (r.macs if r.macs is not None else -1, r.backend == "torch", r.size_mb)).name
    same = [r for r in records if r.name == name]
    if not same:
        raise EdgecutError(f"baseline {name!r} matches no record name; the records are named "
                           + ", ".join(repr(n) for n in record_names(records)))
    torch = [r for r in same if r.backend == "torch"]
    pool = torch or same
    return next((r for r in pool if r.latency is not None), pool[0])


def _accuracy_reference(records: Sequence[BenchRecord], baseline: BenchRecord) -> BenchRecord | None:
    if _iou(baseline) is not None:
        return baseline
    return next((r for r in records if r.name == baseline.name and _iou(r) is not None), None)


def _iou(r: BenchRecord) -> float | None:
    return r.accuracy.metrics.get("iou") if r.accuracy is not None else None


def _data_key(r: BenchRecord) -> tuple[str, int] | None:
    return (r.accuracy.data, r.accuracy.count) if r.accuracy is not None else None


# --------------------------------------------------------------------------- formatting


def sig(x: float, digits: int = 3) -> str:
    """``x`` with ``digits`` significant digits and no exponent: 41.2, 0.153, 1235, 0.00412."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:.{decimals}f}"


def _opt(x: float | None, fmt) -> str:
    return MISSING if x is None else fmt(x)


def _size(r: BenchRecord) -> str:
    h, w = r.input_size
    return f"{h}x{w}"


def _threads(t: int | None) -> str:
    return "default" if t is None else str(t)


def _date(created: str) -> str:
    return created[:10]


# --------------------------------------------------------------------------- the report


def build_report(records: Sequence[BenchRecord], baseline: str | None = None, title: str | None = None) -> Report:
    """Rows, columns, header lines and footnotes of the comparison of ``records``."""
    records = list(records)
    base = choose_baseline(records, baseline)
    ref = _accuracy_reference(records, base)
    ref_data = _data_key(ref) if ref is not None else None
    per_image = len({r.batch for r in records}) > 1
    notes = Footnotes()

    machines = list(dict.fromkeys([base.machine] + [r.machine for r in records]))
    labels = {r.machine: machine_label(r.env) for r in reversed(records)}  # first record's label per machine
    machine_mark = {m: (MACHINE_MARKS[i - 1] if i <= len(MACHINE_MARKS) else f"†{i}")
                    for i, m in enumerate(machines) if i > 0}
    name_counts: dict[str, int] = {}
    for r in records:
        name_counts[r.name] = name_counts.get(r.name, 0) + 1

    def compared(r: BenchRecord) -> float | None:
        if r.latency is None:
            return None
        return r.latency.p50_ms / r.batch if per_image else r.latency.p50_ms

    base_lat = compared(base)
    busy = busy_records(records)
    rows = []
    for r in records:
        same_machine = r.machine == base.machine
        same_run = same_machine and r.run_id == base.run_id
        lat = compared(r)
        speedup = base_lat / lat if same_machine and lat and base_lat else None
        iou = _iou(r)
        same_data = ref_data is not None and _data_key(r) == ref_data
        delta = iou - _iou(ref) if same_data and iou is not None and ref is not None else None

        cells = _cells(r)
        mark = machine_mark.get(r.machine, "")
        if mark:
            notes.add(mark, f"measured on {labels[r.machine]}: another machine than the baseline, so no speed-up "
                            "(ratios compare one machine only)")
            cells["name"] += f" {mark}"
        unstable = (r.latency is not None and r.latency.unstable) or id(r) in busy
        if unstable:
            notes.add(UNSTABLE_MARK, f"unstable latency: the middle of its distribution is wide (1.4826 MAD / "
                                     f"median above {UNSTABLE_COV:.0%}), no other repeated run came within "
                                     f"{REPEAT_SPREAD:.0%} of the kept one, or the host was taking our CPU cores "
                                     f"(parallel-speedup canary below {BUSY_FRACTION:.0%} of the machine's best); "
                                     "re-measure on a quiet machine before trusting it")
            cells["p50"] += f" {UNSTABLE_MARK}"
            cells["p90"] += f" {UNSTABLE_MARK}"
        if speedup is None:
            cells["speedup"] = MISSING
        else:
            cells["speedup"] = f"{speedup:.2f}x"
            if not same_run:
                notes.add(OTHER_RUN_MARK, f"measured in another run on the baseline's machine (baseline run "
                                          f"{base.run_id}): the ratio also holds any drift between the runs")
                cells["speedup"] += f" {OTHER_RUN_MARK}"
        if delta is not None:
            cells["delta_iou"] = f"{delta:+.4f}"
        elif iou is not None and ref is not None and not same_data:
            notes.add(OTHER_DATA_MARK, f"scored on other images than the accuracy reference ({ref_data[0]}, "
                                       f"{ref_data[1]} images): no ΔIoU")
            cells["delta_iou"] = f"{MISSING} {OTHER_DATA_MARK}"
        else:
            cells["delta_iou"] = MISSING
        label = r.name if name_counts[r.name] == 1 else f"{r.name} ({r.backend})"
        values = _values(r, base, same_machine, same_run, speedup, delta, labels[r.machine])
        values["host_busy"] = id(r) in busy if r.host is not None else None
        rows.append(Row(r, r is base, same_machine, same_run, mark, lat, speedup, same_data, delta, label, cells, values,
                        unstable))

    order = {m: i for i, m in enumerate(machines)}
    rows.sort(key=lambda row: (not row.is_baseline, order[row.record.machine],
                               row.latency_ms is None, row.latency_ms or 0.0, row.record.name))

    metric_keys = list(MAIN_METRICS) + sorted({metric_column(k) for r in records if r.accuracy
                                               for k in r.accuracy.metrics} - set(MAIN_METRICS))
    return Report(
        title=title or "edgecut benchmark report", baseline=base, accuracy_ref=ref, rows=rows,
        columns=_visible_columns(records), summary=_summary(records, machines, labels, machine_mark),
        how_to_read=_how_to_read(per_image), notes=_notes(records, base, ref, per_image),
        footnotes=list(notes.items.items()), per_image=per_image, metric_keys=metric_keys)


def busy_records(records: Sequence[BenchRecord]) -> set[int]:
    """``id()`` of the records measured while the host was taking the CPU cores.

    A record's canary is compared with the best quiet level of its machine and thread count over
    every compared record, not only with what its own run had seen when it was written.
    """
    best: dict[tuple, float] = {}
    for r in records:
        if r.host is not None and r.host.best_speedup is not None:
            key = (r.machine, r.threads)
            best[key] = max(best.get(key, 0.0), r.host.best_speedup)
    return {id(r) for r in records if r.host is not None and (r.host.busy or (
        r.host.parallel_speedup is not None and (r.machine, r.threads) in best
        and r.host.parallel_speedup < BUSY_FRACTION * best[(r.machine, r.threads)]))}


def _cells(r: BenchRecord) -> dict[str, str]:
    lat, acc = r.latency, r.accuracy
    metrics = acc.metrics if acc else {}
    return {
        "name": r.name, "format": r.format, "precision": r.precision, "backend": r.backend, "device": r.device,
        "target": r.target, "threads": _threads(r.threads), "batch": str(r.batch), "input": _size(r),
        "size_mb": sig(r.size_mb),
        "params": _opt(r.params, lambda p: sig(p / 1e6)),
        "macs": _opt(r.macs, lambda m: sig(m / 1e9)),
        "p50": _opt(lat and lat.p50_ms, sig) + _ci_cell(r), "p90": _opt(lat and lat.p90_ms, sig),
        "e2e": _opt(r.end_to_end and r.end_to_end.p50_ms, sig)
        + (f" {UNSTABLE_MARK}" if r.end_to_end and r.end_to_end.unstable else ""),
        "data": f"{acc.data} ({acc.count})" if acc else MISSING,
        **{k: _opt(metrics.get(k), lambda v: f"{v:.4f}") for k in MAIN_METRICS},
    }


def _ci_cell(r: BenchRecord) -> str:
    """`` ±1.2%``: the wider side of the p50's 95% interval over repeated worker runs (none with too few)."""
    if r.latency is None or r.latency_ci_ms is None:
        return ""
    return f" ±{half_width(r.latency.p50_ms, r.latency_ci_ms):.1%}"


def _values(r: BenchRecord, base: BenchRecord, same_machine: bool, same_run: bool, speedup: float | None,
            delta: float | None, label: str) -> dict[str, Any]:
    lat, e2e, acc = r.latency, r.end_to_end, r.accuracy
    top = max(r.throughput, key=lambda t: t.batch) if r.throughput else None
    values: dict[str, Any] = {
        "name": r.name, "baseline": r is base, "artifact": r.artifact, "sha256": r.sha256, "arch": r.arch,
        "format": r.format, "precision": r.precision, "backend": r.backend, "device": r.device, "target": r.target,
        "machine": r.machine, "machine_label": label, "run_id": r.run_id, "created": r.created,
        "same_machine": same_machine, "same_run": same_run, "input_h": r.input_size[0], "input_w": r.input_size[1],
        "batch": r.batch, "threads": r.threads, "size_mb": r.size_mb, "params": r.params, "macs": r.macs,
        "speedup": speedup, "e2e_p50_ms": e2e.p50_ms if e2e else None, "e2e_unstable": e2e.unstable if e2e else None,
        "peak_rss_mb": r.memory.peak_rss_mb, "gpu_peak_mb": r.memory.gpu_peak_mb,
        "host_speedup": r.host.parallel_speedup if r.host else None,
        "p50_ci_lo_ms": r.latency_ci_ms[0] if r.latency_ci_ms else None,
        "p50_ci_hi_ms": r.latency_ci_ms[1] if r.latency_ci_ms else None,
        "throughput_batch": top.batch if top else None, "throughput_images_per_s": top.images_per_s if top else None,
        "data": acc.data if acc else None, "data_count": acc.count if acc else None, "delta_iou": delta,
    }
    for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "cov", "first_ms", "unstable"):
        values[key] = getattr(lat, key) if lat else None
    for key, v in (acc.metrics if acc else {}).items():
        values[metric_column(key)] = v
    return values


def metric_column(key: str) -> str:
    """The csv column of a metric: its name, unless that is already a column ("precision", "count")."""
    return key if key in MAIN_METRICS or key not in CSV_COLUMNS else f"metric_{key}"


def _visible_columns(records: Sequence[BenchRecord]) -> list[Column]:
    def varies(f) -> bool:
        return len({f(r) for r in records}) > 1

    show = {
        "device": any(r.device != "cpu" for r in records),
        "target": any(r.target != "local" for r in records),
        "threads": varies(lambda r: r.threads),
        "batch": varies(lambda r: r.batch),
        "input": varies(lambda r: tuple(r.input_size)),
        "data": len({_data_key(r) for r in records if r.accuracy}) > 1,
        "e2e": any(r.end_to_end is not None for r in records),
    }
    return [c for c in COLUMNS if show.get(c.key, True)]


def _summary(records: Sequence[BenchRecord], machines: list[str], labels: dict[str, str],
             marks: dict[str, str]) -> list[tuple[str, str]]:
    lines: list[tuple[str, str]] = []
    if len(machines) == 1:
        lines.append(("Machine", labels[machines[0]]))
    else:
        parts = [f"{labels[machines[0]]} (the baseline's)"] + [f"{labels[m]} {marks[m]}" for m in machines[1:]]
        lines.append((f"Records from {len(machines)} machines", "; ".join(parts)))
    dates = sorted(_date(r.created) for r in records)
    runs = len({r.run_id for r in records})
    when = dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
    lines.append(("Measured", f"{when}, {runs} run{'s' if runs > 1 else ''}"))

    settings = []
    for what, f in (("device", lambda r: r.device), ("threads", lambda r: _threads(r.threads)),
                    ("batch", lambda r: str(r.batch)), ("input", _size)):
        seen = {f(r) for r in records}
        if len(seen) == 1:
            settings.append(f"{what} {seen.pop()}")
    if settings:
        lines.append(("Settings", ", ".join(settings)))

    data = list(dict.fromkeys(_data_key(r) for r in records if r.accuracy))
    lines.append(("Data", "; ".join(f"{d}, {n} images" for d, n in data) if data else "none (latency only)"))

    used = {r.backend for r in records}
    libs = [lib for lib in VERSION_LIBS if lib in used] or list(VERSION_LIBS)
    versions = []
    for lib in ["edgecut", *libs]:
        seen = list(dict.fromkeys(str(v) for r in records
                                  if (v := (r.env.get(lib) if lib == "edgecut" else r.env.get("backends", {}).get(lib)))))
        if seen:
            versions.append(f"{lib} {' / '.join(seen)}")
    if versions:
        lines.append(("Versions", ", ".join(versions)))
    return lines


def _how_to_read(per_image: bool) -> str:
    what = "per-image p50 (p50 / batch; batches differ)" if per_image else "p50"
    return (f"speed-up = baseline {what} / row {what}, both measured on the same machine in one run (marks say "
            f"otherwise); p50 / p90 are the model alone (± the wider side of the 95% interval of the kept "
            f"p50 over repeated worker runs, where there were enough), cut-out ms the whole cut-out of one image file "
            f"(decode, preprocess, infer, resize back, encode RGBA PNG); ΔIoU = row IoU - reference IoU on the same images; "
            f"{MISSING} = not measured or not comparable.")


def _describe(r: BenchRecord) -> str:
    return f"{r.name} ({r.format} {r.precision} on {r.backend}/{r.device}, threads {_threads(r.threads)}, " \
           f"batch {r.batch}, input {_size(r)}, run {r.run_id})"


def _notes(records: Sequence[BenchRecord], base: BenchRecord, ref: BenchRecord | None, per_image: bool) -> list[str]:
    notes = [f"Baseline: {_describe(base)}."]
    same_name = [r for r in records if r.name == base.name]
    if len(same_name) > 1:
        which = "its torch record" if base.backend == "torch" else "its first record"
        notes.append(f"{base.name!r} has {len(same_name)} records; speed-ups are against {which}.")
    if base.latency is None:
        notes.append("The baseline has no latency: no speed-ups.")
    elif base.latency.unstable:
        notes.append(f"The baseline's own latency is unstable {UNSTABLE_MARK}: every speed-up inherits its noise.")
    if ref is None:
        notes.append(f"No record named {base.name!r} was scored for accuracy: no ΔIoU.")
    elif ref is not base:
        notes.append(f"ΔIoU is against {_describe(ref)}, the baseline's name with accuracy.")
    return notes


# --------------------------------------------------------------------------- renderers


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
