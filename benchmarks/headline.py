"""The headline benchmark: every artifact users choose between, one run, one machine, ECSSD val.

    python benchmarks/headline.py          # after teacher.py, prune.py, distill.py and export.py
    python benchmarks/headline.py --limit 20 --min-time 1 --records /tmp/h.jsonl --report /tmp/h --results-md /tmp/R.md

Every row is measured by ``edgecut bench`` in one run (one ``run_id``, the same threads, batch 1,
128 px, the size the models were trained at; ``--size`` for another, with exports made at that size
or dynamic) and rendered by ``edgecut compare``: records in ``benchmarks/results/headline/headline.jsonl``,
the report beside them, the table in ``benchmarks/RESULTS.md``. An interrupted run resumes (finished
rows are skipped). The rows, why 128 px and what they showed:
benchmarks/README.md#headlinepy-the-table-users-choose-from-resultsmd
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from edgecut import io
from edgecut.artifact import is_artifact
from edgecut.measure.latency import KEEP_QUANTILE
from edgecut.measure.record import Hooks, new_run_id, read_records
from edgecut.measure.bench import bench
from edgecut.measure.config import BenchConfig
from edgecut.errors import EdgecutError
from edgecut.exporters import ExportConfig, ParityConfig, export
from edgecut.report import CompareConfig, compare
from edgecut.runtime.timing import LatencyConfig

from common import ECSSD, EXPORTS, RESULTS, ROOT, RUNS, STUDENT, TEACHER, command, parser

# display name -> artifact folder (trained rows: accuracy is measured)
TRAINED = {
    "teacher": TEACHER,
    "teacher-onnx": EXPORTS / "teacher-onnx-fp32",
    "teacher-openvino": EXPORTS / "teacher-openvino-fp32",
    "teacher-onnx-int8": EXPORTS / "teacher-onnx-int8",
    "teacher-openvino-int8": EXPORTS / "teacher-openvino-int8",
    "pruned-0.5": RUNS / "prune-ecssd" / "ratio-0.5",
    "pruned-0.5-openvino": RUNS / "headline" / "pruned-0.5-openvino-fp32",
    "student": STUDENT,
    "student-onnx": EXPORTS / "student-onnx-fp32",
    "student-openvino": EXPORTS / "student-openvino-fp32",
    "student-onnx-int8": EXPORTS / "student-onnx-int8",
    "student-openvino-int8": EXPORTS / "student-openvino-int8",
    "student-qat-onnx-int8": EXPORTS / "student-qat-onnx-int8",
    "student-qat-openvino-int8": EXPORTS / "student-qat-openvino-int8",
}
REFERENCE = {  # untrained peer architecture: latency only
    "u2netp": RUNS / "headline" / "u2netp",
    "u2netp-onnx": RUNS / "headline" / "u2netp-onnx-fp32",
    "u2netp-openvino": RUNS / "headline" / "u2netp-openvino-fp32",
}


def make_missing(size: int) -> None:
    """The artifacts this script makes itself: U^2-Netp (untrained) and its exports, the pruned teacher in OpenVINO."""
    import torch

    from edgecut.models.registry import create_model
    from edgecut.models.store import save_model

    u2 = REFERENCE["u2netp"]
    if not is_artifact(u2):
        torch.manual_seed(0)
        model = create_model("u2netp").eval()
        save_model(u2, model, {"name": "u2netp", "kwargs": {}}, model.default_spec.with_size(size))
    for name, fmt in (("u2netp-onnx", "onnx"), ("u2netp-openvino", "openvino")):
        if not is_artifact(REFERENCE[name]):
            export(u2, REFERENCE[name], ExportConfig(format=fmt, precision="fp32"))
    if not is_artifact(TRAINED["pruned-0.5-openvino"]):
        export(TRAINED["pruned-0.5"], TRAINED["pruned-0.5-openvino"],
               ExportConfig(format="openvino", parity=ParityConfig(data=ECSSD, count=16)))
    missing = [str(p) for p in TRAINED.values() if not is_artifact(p)]
    if missing:
        raise EdgecutError("missing artifacts (run benchmarks/teacher.py, prune.py, distill.py and export.py "
                           "first): " + ", ".join(missing))


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__, "data", "threads")
    ap.add_argument("--split", default="val")
    ap.add_argument("--limit", type=int, default=None, help="score only the first N val images (smoke runs)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--min-time", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=5, help="worker runs per row, interleaved")
    ap.add_argument("--keep", type=float, default=KEEP_QUANTILE,
                    help="the run kept: this quantile of the runs' p50s (edgecut bench's default, the lower "
                         "quartile; 0.5 for the median run)")
    ap.add_argument("--records", type=Path, default=RESULTS / "headline" / "headline.jsonl")
    ap.add_argument("--report", type=Path, default=RESULTS / "headline")
    ap.add_argument("--results-md", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    ap.add_argument("--fresh", action="store_true", help="start a new run (the old records file is moved aside)")
    args = ap.parse_args(argv)

    make_missing(args.size)
    run_id = None
    if args.records.exists() and not args.fresh:
        ids = {r.run_id for r in read_records(args.records)}
        if len(ids) == 1:
            run_id = ids.pop()  # resume the one run the file holds
        elif ids:
            raise EdgecutError(f"{args.records} holds several runs; pass --fresh to start a new one")
    elif args.records.exists():
        args.records.replace(args.records.with_suffix(".jsonl.old"))
    run_id = run_id or new_run_id()
    latency_only = BenchConfig(threads=(args.threads,), batch=1, batches=(4,), size=(args.size, args.size),
                               latency=LatencyConfig(warmup_s=2.0, warmup_min=10, min_time_s=args.min_time,
                                                     min_iters=30), worst=4, repeats=args.repeats, keep=args.keep)
    scored = dataclasses.replace(latency_only, data=args.data, split=args.split, limit=args.limit,
                                 reference=TRAINED["teacher"])
    resume = args.records.exists()
    bench(list(TRAINED.values()), args.records, scored, names=list(TRAINED), run_id=run_id, resume=resume,
          hooks=Hooks(_show, print))
    bench(list(REFERENCE.values()), args.records, latency_only, names=list(REFERENCE), run_id=run_id, resume=True,
          hooks=Hooks(_show, print))

    result = compare(args.records, args.report, CompareConfig(
        baseline="teacher", title=f"edgecut headline: ECSSD val, {args.size}x{args.size}, {args.threads} threads, batch 1"))
    io.write_text(args.results_md, results_md(args, result, command(__file__, argv)))
    print(f"wrote {args.records}, {args.report}/, {args.results_md}")


def _show(rec) -> None:
    acc = f" IoU {rec.accuracy.metrics['iou']:.4f}" if rec.accuracy else ""
    print(f"{rec.name:28s} {rec.backend:12s} {rec.precision}: p50 {rec.latency.p50_ms:8.2f} ms"
          f"{' (unstable)' if rec.latency.unstable else ''}{acc}", flush=True)


def results_md(args, result, command: str) -> str:
    report = (args.report / "report.md").read_text()
    body = report.split("\n", 1)[1] if report.startswith("# ") else report  # our own title instead
    rel = lambda p: Path(p).resolve().relative_to(args.results_md.parent.resolve()).as_posix()  # noqa: E731
    try:
        plot, records, csv = rel(args.report / "pareto.png"), rel(args.records), rel(args.report / "report.csv")
    except ValueError:  # a smoke run writing elsewhere
        plot, records, csv = str(args.report / "pareto.png"), str(args.records), str(args.report / "report.csv")
    kept = {0.5: "the median run", 0.25: "the lower-quartile run"}.get(args.keep, f"the run at the {args.keep:g} quantile")
    return f"""# edgecut benchmark results

The headline table: every artifact a user chooses between, measured in one run on one machine
by `edgecut bench` and rendered by `edgecut compare` (nothing below is typed by hand).
Reproduce with `{command}` after the scripts that make the models (see
[benchmarks/README.md](README.md)); records: [{records}]({records}), table as csv: [{csv}]({csv}).

![latency against IoU, Pareto frontier marked]({plot})

{body.strip()}

## How to read it

- Latency is model-only, batch 1, after warm-up, {kept} of {args.repeats} fresh worker
  processes per row, interleaved across the rows, each taken while a parallel-speedup canary
  said the host was not taking our CPU cores (see docs/measuring.md); speed-ups are
  ratios of p50 against the baseline on this machine in this run. `report.csv` also has p99, the first (cold) call,
  end-to-end cut-out time (decode, preprocess, infer, resize back, encode an RGBA PNG),
  throughput at batch 4 and peak RSS of a fresh process.
- Accuracy: {args.split} split of ECSSD, each prediction resized back to the image's own size.
  The teacher and student were trained at 128 px on a 2-core CPU; their absolute IoU is that
  of short CPU training runs, and the student scores above the teacher for that reason
  (see benchmarks/README.md). Ratios and deltas between rows are the point.
- U^2-Netp is the architecture rembg ships as `u2netp`, written here from the paper and not
  trained (no weights can be downloaded here): its rows say what it costs to run, not how well.
"""


if __name__ == "__main__":
    try:
        main()
    except EdgecutError as e:
        sys.exit(f"error: {e}")
