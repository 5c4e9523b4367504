"""Does the same measurement give the same number twice? ``edgecut bench`` run twice on an idle machine.

Two separate ``bench`` runs (each the median of three fresh worker processes, the settings of the
headline benchmark)
over one model per backend: the full-size teacher in torch, the student in ONNX Runtime and in
OpenVINO, and the student's ONNX Runtime INT8 export. For each, the two p50s and their
difference in percent; the target is 5%. Records of both runs go to
``benchmarks/results/repeatability.jsonl`` and the summary to ``repeatability.json``.

    python benchmarks/repeatability.py
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

from edgecut import io
from edgecut.bench.latency import LatencyConfig
from edgecut.bench.record import append_records, new_run_id
from edgecut.bench.run import BenchConfig, bench
from edgecut.env import environment

ROOT = Path(__file__).resolve().parents[1]
EXPORTS = ROOT / "runs" / "export-ecssd"
MODELS = {
    "teacher (torch)": ROOT / "runs" / "teacher-ecssd",
    "student (onnxruntime)": EXPORTS / "student-onnx-fp32",
    "student (openvino)": EXPORTS / "student-openvino-fp32",
    "student int8 (onnxruntime)": EXPORTS / "student-onnx-int8",
}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=3, help="worker runs per measurement (as headline.py)")
    ap.add_argument("--records", type=Path, default=ROOT / "benchmarks" / "results" / "repeatability.jsonl")
    args = ap.parse_args(argv)

    config = BenchConfig(threads=(args.threads,), end_to_end=False, repeats=args.repeats,
                         latency=LatencyConfig(warmup_s=2.0, warmup_min=10, min_time_s=args.min_time, min_iters=30))
    if args.records.exists():
        args.records.unlink()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(2):  # two runs: two files (resume would skip the second run's identical measurements)
            res = bench(list(MODELS.values()), Path(tmp) / f"run{k}.jsonl", config, names=list(MODELS),
                        run_id=new_run_id(), progress=False)
            append_records(args.records, res.records)
            runs.append({r.name: r for r in res.records})
    rows = {}
    for name in MODELS:
        a, b = runs[0][name].latency, runs[1][name].latency
        diff = abs(b.p50_ms - a.p50_ms) / a.p50_ms * 100
        rows[name] = {"p50_ms": [round(a.p50_ms, 4), round(b.p50_ms, 4)], "cov": [round(a.cov, 4), round(b.cov, 4)],
                      "unstable": [a.unstable, b.unstable], "diff_percent": round(diff, 2), "within_5": diff <= 5}
        print(f"{name:28s} p50 {a.p50_ms:9.3f} ms then {b.p50_ms:9.3f} ms: {diff:5.2f}% "
              f"{'ok' if diff <= 5 else 'ABOVE 5%'}", flush=True)
    record = {"command": "python benchmarks/repeatability.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
              "threads": args.threads, "min_time_s": args.min_time, "repeats": args.repeats, "rows": rows,
              "all_within_5_percent": all(r["within_5"] for r in rows.values()), "machine": environment()}
    io.write_json(args.records.with_suffix(".json"), record)
    return record


if __name__ == "__main__":
    main()
