"""Does the same measurement give the same number twice? ``edgecut bench`` run again and again.

``--tries`` separate ``bench`` runs (three by default; each keeps the median of ``--repeats``
fresh worker processes, interleaved across the models, with the parallel-speedup canary
waiting out a host that takes our cores: the settings of the headline benchmark) over one model
per backend: the full-size teacher in torch, the student in ONNX Runtime and in OpenVINO, and
the student's ONNX Runtime INT8 export. For each model, every try's p50, and the difference of
each try from the one before in percent; the target is 5%. Records of every try go to
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
    ap.add_argument("--repeats", type=int, default=5, help="worker runs per measurement (as headline.py)")
    ap.add_argument("--tries", type=int, default=3, help="bench runs; each is compared with the one before")
    ap.add_argument("--records", type=Path, default=ROOT / "benchmarks" / "results" / "repeatability.jsonl")
    args = ap.parse_args(argv)

    config = BenchConfig(threads=(args.threads,), end_to_end=False, repeats=args.repeats,
                         latency=LatencyConfig(warmup_s=2.0, warmup_min=10, min_time_s=args.min_time, min_iters=30))
    if args.records.exists():
        args.records.unlink()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.tries):  # one file per try (resume would skip the later tries' identical measurements)
            res = bench(list(MODELS.values()), Path(tmp) / f"run{k}.jsonl", config, names=list(MODELS),
                        run_id=new_run_id(), progress=False)
            append_records(args.records, res.records)
            runs.append({r.name: r for r in res.records})
    rows = {}
    for name in MODELS:
        lat = [run[name].latency for run in runs]
        p50 = [x.p50_ms for x in lat]
        diffs = [abs(b - a) / a * 100 for a, b in zip(p50, p50[1:])]
        host = [run[name].host for run in runs]
        rows[name] = {"p50_ms": [round(v, 4) for v in p50], "diff_percent": [round(d, 2) for d in diffs],
                      "within_5": [d <= 5 for d in diffs], "unstable": [x.unstable for x in lat],
                      "runs_ms": [run[name].latency_runs_ms for run in runs],
                      "host_speedup": [h.parallel_speedup if h else None for h in host],
                      "waited_s": [h.waited_s if h else None for h in host],
                      "discarded_runs": [h.discarded_runs if h else None for h in host]}
        print(f"{name:28s} p50 " + " then ".join(f"{v:.3f}" for v in p50) + " ms: "
              + ", ".join(f"{d:.2f}%" + ("" if d <= 5 else " ABOVE 5%") for d in diffs), flush=True)
    record = {"command": "python benchmarks/repeatability.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
              "threads": args.threads, "min_time_s": args.min_time, "repeats": args.repeats, "tries": args.tries,
              "rows": rows, "all_within_5_percent": all(all(r["within_5"]) for r in rows.values()), "machine": environment()}
    io.write_json(args.records.with_suffix(".json"), record)
    return record


if __name__ == "__main__":
    main()
