"""Does the same measurement give the same number twice? ``edgecut bench`` run again and again.

    python benchmarks/repeatability.py

Four models (the teacher in torch, the student in ONNX Runtime and OpenVINO, its ONNX Runtime INT8),
measured with the headline's settings and ``--precision`` (runs go on until the kept p50's 95%
interval is within +-2.5%, at most ``--max-repeats``), twice over two ways: twins (every model listed
twice in one ``bench`` call) and tries (``--tries`` calls one after another). Prints every p50 and
the differences in percent (the target is 5%). Records go to
``benchmarks/results/repeatability/repeatability.jsonl``, the summary to ``repeatability.json``.
What it measured: benchmarks/README.md#does-it-repeat-repeatabilitypy
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from edgecut import io
from edgecut.runtime.timing import LatencyConfig
from edgecut.measure.record import Hooks, append_records, new_run_id
from edgecut.measure.bench import bench
from edgecut.measure.config import BenchConfig

from common import EXPORTS, RESULTS, TEACHER, command, environment, parser

MODELS = {
    "teacher (torch)": TEACHER,
    "student (onnxruntime)": EXPORTS / "student-onnx-fp32",
    "student (openvino)": EXPORTS / "student-openvino-fp32",
    "student int8 (onnxruntime)": EXPORTS / "student-onnx-int8",
}
AGAIN = " again"
TARGET = 5.0  # percent


def _diff(a: float, b: float) -> float:
    return abs(b - a) / a * 100


def main(argv: list[str] | None = None) -> dict:
    ap = parser(__doc__, "threads")
    ap.add_argument("--min-time", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=5, help="worker runs per measurement at least (as headline.py)")
    ap.add_argument("--precision", type=float, default=2.5, help="percent: measure again until the p50 is known to it")
    ap.add_argument("--max-repeats", type=int, default=20)
    ap.add_argument("--tries", type=int, default=2, help="bench calls; each is compared with the one before")
    ap.add_argument("--records", type=Path, default=RESULTS / "repeatability" / "repeatability.jsonl")
    args = ap.parse_args(argv)

    config = BenchConfig(threads=(args.threads,), end_to_end=False, repeats=args.repeats,
                         precision=args.precision / 100, max_repeats=args.max_repeats,
                         latency=LatencyConfig(warmup_s=2.0, warmup_min=10, min_time_s=args.min_time, min_iters=30))
    if args.records.exists():
        args.records.unlink()
    names = list(MODELS) + [n + AGAIN for n in MODELS]  # twins half a round apart
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.tries):  # one file per try (resume would skip the later tries' identical measurements)
            res = bench([*MODELS.values(), *MODELS.values()], Path(tmp) / f"run{k}.jsonl", config, names=names,
                        run_id=new_run_id(), progress=False, hooks=Hooks(say=lambda m: print("  " + m, flush=True)))
            append_records(args.records, res.records)
            runs.append({r.name: r for r in res.records})
            for name in MODELS:
                a, b = runs[-1][name].latency.p50_ms, runs[-1][name + AGAIN].latency.p50_ms
                print(f"try {k + 1}  {name:28s} twins {a:.3f} / {b:.3f} ms: {_diff(a, b):.2f}%", flush=True)
    rows = {}
    for name in MODELS:
        twins = [(run[name], run[name + AGAIN]) for run in runs]
        p50 = [[x.latency.p50_ms for x in pair] for pair in twins]
        twin_diffs = [_diff(a, b) for a, b in p50]
        try_diffs = [_diff(a[0], b[0]) for a, b in zip(p50, p50[1:])]
        rows[name] = {
            "p50_ms": [[round(v, 4) for v in pair] for pair in p50],
            "twin_diff_percent": [round(d, 2) for d in twin_diffs],
            "try_diff_percent": [round(d, 2) for d in try_diffs],
            "ci_ms": [[x.latency_ci_ms for x in pair] for pair in twins],
            "runs": [[len(x.latency_runs_ms) for x in pair] for pair in twins],
            "runs_ms": [[x.latency_runs_ms for x in pair] for pair in twins],
            "unstable": [[x.latency.unstable for x in pair] for pair in twins],
            "host_speedup": [[x.host.parallel_speedup if x.host else None for x in pair] for pair in twins],
            "waited_s": [[x.host.waited_s if x.host else None for x in pair] for pair in twins],
        }
        print(f"{name:28s} twins " + ", ".join(f"{d:.2f}%" + ("" if d <= TARGET else " ABOVE 5%") for d in twin_diffs)
              + "; tries " + ", ".join(f"{d:.2f}%" + ("" if d <= TARGET else " ABOVE 5%") for d in try_diffs),
              flush=True)
    record = {"command": command(__file__, argv),
              "threads": args.threads, "min_time_s": args.min_time, "repeats": args.repeats,
              "precision_percent": args.precision, "max_repeats": args.max_repeats, "tries": args.tries, "rows": rows,
              "twins_within_5_percent": all(d <= TARGET for r in rows.values() for d in r["twin_diff_percent"]),
              "tries_within_5_percent": all(d <= TARGET for r in rows.values() for d in r["try_diff_percent"]),
              "machine": environment()}
    io.write_json(args.records.with_suffix(".json"), record)
    return record


if __name__ == "__main__":
    main()
