# over 500 lines: columns, cells, marks and notes are one set of fairness rules; split, each half would need the other's private helpers
"""Building the comparison: one row per bench record, speed-ups and accuracy deltas against a baseline.

Fairness rules (docs/measuring.md): a speed-up is a ratio of p50 latencies measured on one machine, ideally in one
run. So a row measured on another machine gets no speed-up and a dagger naming the machine; a row of the same
machine but another run keeps its ratio with a ``*``; a latency flagged unstable by ``edgecut bench``, or measured
while the host was taking our cores (:func:`busy_records`), is marked ``⚠``. A ΔIoU compares two records scored
on the same images only (same data set name and count).

Everything here is plain data: :func:`build_report` turns records into a :class:`Report` whose rows carry both
display text (``cells``, markers included) and raw numbers (``values``), so that the renderers
(:mod:`edgecut.report.render`, the html page, the terminal) print it without deciding anything again.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edgecut.measure.canary import BUSY_FRACTION, is_busy
from edgecut.measure.latency import REPEAT_SPREAD, half_width
from edgecut.runtime.timing import UNSTABLE_COV
from edgecut.measure.record import BenchRecord, machine_label
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
    Column("instructions", "M instructions"),  # optional: per inference on an emulated CPU (arm64-emu)
    Column("parity", "IoU vs local"),  # optional: a target's masks against this machine's (worst image)
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
    "throughput_images_per_s", "instructions_per_inference", "instructions_cpu", "parity_max_abs_diff",
    "parity_mask_iou_min", "data", "data_count", "iou", "mae", "s_measure", "delta_iou",
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


@dataclass(frozen=True)
class _Machines:
    """The machines of the compared records, the baseline's first."""

    order: list[str]  # the baseline's machine, then the others in order of their first record
    labels: dict[str, str]  # machine -> the label of its first record
    marks: dict[str, str]  # machine -> footnote mark; none for the baseline's machine


@dataclass(frozen=True)
class _Against:
    """What every row is compared with."""

    base: BenchRecord  # speed-ups are against its latency
    ref: BenchRecord | None  # ΔIoU is against its IoU, on its images
    per_image: bool  # speed-ups compare p50 / batch (batches differ)
    machines: _Machines
    busy: set[int]  # busy_records()
    name_counts: Counter[str]  # records per name: a plot label names the backend when a name has several

    @property
    def ref_data(self) -> tuple[str, int] | None:
        return _data_key(self.ref) if self.ref is not None else None

    def latency(self, r: BenchRecord) -> float | None:
        """The p50 that speed-ups compare: per image when batches differ."""
        if r.latency is None:
            return None
        return r.latency.p50_ms / r.batch if self.per_image else r.latency.p50_ms


@dataclass(frozen=True)
class _Measures:
    """One record held against :class:`_Against`: the numbers behind its row, before any text."""

    same_machine: bool
    same_run: bool
    machine_mark: str
    latency_ms: float | None
    speedup: float | None
    iou: float | None
    same_data: bool
    delta_iou: float | None
    unstable: bool


def build_report(records: Sequence[BenchRecord], baseline: str | None = None, title: str | None = None) -> Report:
    """Rows, columns, header lines and footnotes of the comparison of ``records``."""
    records = list(records)
    base = choose_baseline(records, baseline)
    ref = _accuracy_reference(records, base)
    per_image = len({r.batch for r in records}) > 1
    machines = _machines(records, base)
    against = _Against(base, ref, per_image, machines, busy_records(records), Counter(r.name for r in records))
    notes = Footnotes()
    rows = [_row(r, against, notes) for r in records]
    order = {m: i for i, m in enumerate(machines.order)}
    rows.sort(key=lambda row: (not row.is_baseline, order[row.record.machine],
                               row.latency_ms is None, row.latency_ms or 0.0, row.record.name))
    return Report(
        title=title or "edgecut benchmark report", baseline=base, accuracy_ref=ref, rows=rows,
        columns=_visible_columns(records), summary=_summary(records, machines),
        how_to_read=_how_to_read(per_image), notes=_notes(records, base, ref, per_image),
        footnotes=list(notes.items.items()), per_image=per_image, metric_keys=_metric_keys(records))


def busy_records(records: Sequence[BenchRecord]) -> set[int]:
    """``id()`` of the records measured while the host was taking the CPU cores.

    A record's canary is held against the best quiet level of its machine and thread count over
    every compared record (:func:`edgecut.measure.canary.is_busy`), not only against what its own
    run had seen when it was written.
    """
    best: dict[tuple, float] = {}
    for r in records:
        if r.host is not None and r.host.best_speedup is not None:
            key = (r.machine, r.threads)
            best[key] = max(best.get(key, 0.0), r.host.best_speedup)
    return {id(r) for r in records if r.host is not None and (
        r.host.busy or is_busy(r.host.parallel_speedup, best.get((r.machine, r.threads))))}


def _machines(records: Sequence[BenchRecord], base: BenchRecord) -> _Machines:
    order = list(dict.fromkeys([base.machine] + [r.machine for r in records]))
    labels = {r.machine: machine_label(r.env) for r in reversed(records)}  # first record's label per machine
    marks = {m: (MACHINE_MARKS[i - 1] if i <= len(MACHINE_MARKS) else f"†{i}") for i, m in enumerate(order) if i > 0}
    return _Machines(order, labels, marks)


def _measure(r: BenchRecord, against: _Against) -> _Measures:
    base, ref = against.base, against.ref
    same_machine = r.machine == base.machine
    lat, base_lat = against.latency(r), against.latency(base)
    iou = _iou(r)
    same_data = against.ref_data is not None and _data_key(r) == against.ref_data
    return _Measures(
        same_machine=same_machine,
        same_run=same_machine and r.run_id == base.run_id,
        machine_mark=against.machines.marks.get(r.machine, ""),
        latency_ms=lat,
        speedup=base_lat / lat if same_machine and lat and base_lat else None,
        iou=iou,
        same_data=same_data,
        delta_iou=iou - _iou(ref) if same_data and iou is not None and ref is not None else None,
        unstable=(r.latency is not None and r.latency.unstable) or id(r) in against.busy,
    )


def _row(r: BenchRecord, against: _Against, notes: Footnotes) -> Row:
    m = _measure(r, against)
    cells = _marked_cells(r, m, against, notes)
    label = r.name if against.name_counts[r.name] == 1 else f"{r.name} ({r.backend})"
    values = _values(r, against.base, m, against.machines.labels[r.machine])
    values["host_busy"] = id(r) in against.busy if r.host is not None else None
    return Row(r, r is against.base, m.same_machine, m.same_run, m.machine_mark, m.latency_ms, m.speedup, m.same_data,
               m.delta_iou, label, cells, values, m.unstable)


def _marked_cells(r: BenchRecord, m: _Measures, against: _Against, notes: Footnotes) -> dict[str, str]:
    """The row's display text, each mark explained once in ``notes``."""
    cells = _cells(r)
    if m.machine_mark:
        notes.add(m.machine_mark, f"measured on {against.machines.labels[r.machine]}: another machine than the "
                                  "baseline, so no speed-up (ratios compare one machine only)")
        cells["name"] += f" {m.machine_mark}"
    if m.unstable:
        notes.add(UNSTABLE_MARK, f"unstable latency: the middle of its distribution is wide (1.4826 MAD / "
                                 f"median above {UNSTABLE_COV:.0%}), no other repeated run came within "
                                 f"{REPEAT_SPREAD:.0%} of the kept one, or the host was taking our CPU cores "
                                 f"(parallel-speedup canary below {BUSY_FRACTION:.0%} of the machine's best); "
                                 "re-measure on a quiet machine before trusting it")
        cells["p50"] += f" {UNSTABLE_MARK}"
        cells["p90"] += f" {UNSTABLE_MARK}"
    cells["speedup"] = _speedup_cell(m, against.base, notes)
    cells["delta_iou"] = _delta_cell(m, against.ref, notes)
    return cells


def _speedup_cell(m: _Measures, base: BenchRecord, notes: Footnotes) -> str:
    if m.speedup is None:
        return MISSING
    if m.same_run:
        return f"{m.speedup:.2f}x"
    notes.add(OTHER_RUN_MARK, f"measured in another run on the baseline's machine (baseline run "
                              f"{base.run_id}): the ratio also holds any drift between the runs")
    return f"{m.speedup:.2f}x {OTHER_RUN_MARK}"


def _delta_cell(m: _Measures, ref: BenchRecord | None, notes: Footnotes) -> str:
    if m.delta_iou is not None:
        return f"{m.delta_iou:+.4f}"
    if m.iou is not None and ref is not None and not m.same_data:
        data, count = _data_key(ref)
        notes.add(OTHER_DATA_MARK, f"scored on other images than the accuracy reference ({data}, "
                                   f"{count} images): no ΔIoU")
        return f"{MISSING} {OTHER_DATA_MARK}"
    return MISSING


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
        "instructions": _opt(r.instructions and r.instructions.per_inference, lambda n: sig(n / 1e6)),
        "parity": _opt(r.parity and r.parity.mask_iou_min, lambda v: f"{v:.4f}"),
        "data": f"{acc.data} ({acc.count})" if acc else MISSING,
        **{k: _opt(metrics.get(k), lambda v: f"{v:.4f}") for k in MAIN_METRICS},
    }


def _ci_cell(r: BenchRecord) -> str:
    """`` ±1.2%``: the wider side of the p50's 95% interval over repeated worker runs (none with too few)."""
    if r.latency is None or r.latency_ci_ms is None:
        return ""
    return f" ±{half_width(r.latency.p50_ms, r.latency_ci_ms):.1%}"


def _values(r: BenchRecord, base: BenchRecord, m: _Measures, label: str) -> dict[str, Any]:
    lat, e2e, acc = r.latency, r.end_to_end, r.accuracy
    top = max(r.throughput, key=lambda t: t.batch) if r.throughput else None
    values: dict[str, Any] = {
        "name": r.name, "baseline": r is base, "artifact": r.artifact, "sha256": r.sha256, "arch": r.arch,
        "format": r.format, "precision": r.precision, "backend": r.backend, "device": r.device, "target": r.target,
        "machine": r.machine, "machine_label": label, "run_id": r.run_id, "created": r.created,
        "same_machine": m.same_machine, "same_run": m.same_run, "input_h": r.input_size[0], "input_w": r.input_size[1],
        "batch": r.batch, "threads": r.threads, "size_mb": r.size_mb, "params": r.params, "macs": r.macs,
        "speedup": m.speedup, "e2e_p50_ms": e2e.p50_ms if e2e else None, "e2e_unstable": e2e.unstable if e2e else None,
        "peak_rss_mb": r.memory.peak_rss_mb, "gpu_peak_mb": r.memory.gpu_peak_mb,
        "host_speedup": r.host.parallel_speedup if r.host else None,
        "p50_ci_lo_ms": r.latency_ci_ms[0] if r.latency_ci_ms else None,
        "p50_ci_hi_ms": r.latency_ci_ms[1] if r.latency_ci_ms else None,
        "throughput_batch": top.batch if top else None, "throughput_images_per_s": top.images_per_s if top else None,
        "data": acc.data if acc else None, "data_count": acc.count if acc else None, "delta_iou": m.delta_iou,
        "instructions_per_inference": r.instructions.per_inference if r.instructions else None,
        "instructions_cpu": r.instructions.cpu if r.instructions else None,
        "parity_max_abs_diff": r.parity.max_abs_diff if r.parity else None,
        "parity_mask_iou_min": r.parity.mask_iou_min if r.parity else None,
    }
    for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "cov", "first_ms", "unstable"):
        values[key] = getattr(lat, key) if lat else None
    for key, v in (acc.metrics if acc else {}).items():
        values[metric_column(key)] = v
    return values


def _metric_keys(records: Sequence[BenchRecord]) -> list[str]:
    """The csv's metric columns: MAIN_METRICS first, then every other metric seen, sorted."""
    return list(MAIN_METRICS) + sorted({metric_column(k) for r in records if r.accuracy
                                        for k in r.accuracy.metrics} - set(MAIN_METRICS))


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
        "instructions": any(r.instructions is not None for r in records),
        "parity": any(r.parity is not None for r in records),
    }
    return [c for c in COLUMNS if show.get(c.key, True)]


def _summary(records: Sequence[BenchRecord], machines: _Machines) -> list[tuple[str, str]]:
    labels, marks = machines.labels, machines.marks
    lines: list[tuple[str, str]] = []
    if len(machines.order) == 1:
        lines.append(("Machine", labels[machines.order[0]]))
    else:
        parts = [f"{labels[machines.order[0]]} (the baseline's)"] + [f"{labels[m]} {marks[m]}" for m in machines.order[1:]]
        lines.append((f"Records from {len(machines.order)} machines", "; ".join(parts)))
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
    if any(r.instructions is not None for r in records):
        notes.append("M instructions: per inference on the emulated CPU (arm64-emu, one thread): exact, they rank "
                     "artifacts there; not milliseconds on a device, and emulated records carry no latency.")
    if any(r.parity is not None for r in records):
        notes.append("IoU vs local: the target's masks against this machine's Runner of the artifact (worst image).")
    if base.latency is None:
        notes.append("The baseline has no latency: no speed-ups.")
    elif base.latency.unstable:
        notes.append(f"The baseline's own latency is unstable {UNSTABLE_MARK}: every speed-up inherits its noise.")
    if ref is None:
        notes.append(f"No record named {base.name!r} was scored for accuracy: no ΔIoU.")
    elif ref is not base:
        notes.append(f"ΔIoU is against {_describe(ref)}, the baseline's name with accuracy.")
    return notes
