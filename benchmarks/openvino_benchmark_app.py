"""Is edgecut's latency measurement right? Compare it with OpenVINO's own ``benchmark_app``.

One OpenVINO model, the same threads, batch 1, one stream (benchmark_app: ``-hint none``, its rule for
setting ``-nthreads`` and ``-nstreams``; edgecut: the LATENCY hint with the same two), the synchronous
API and f32 inference precision (edgecut's Runner pins f32; benchmark_app would otherwise run
bf16 on a CPU with AVX-512 BF16 or AMX). benchmark_app gets the model as it is (batch dynamic,
as edgecut exports it) with ``-data_shape``, not ``-shape``, which would reshape it to a
static model and compare two different compiled models; for the same reason ``-ip f32``, or
benchmark_app would make a 3-channel input u8 and convert it inside the graph. The two tools alternate for ``--rounds`` rounds, taking turns at
going first, so a drift of the machine hits both; the script prints both medians per round and their ratio and
writes ``benchmarks/results/openvino_benchmark_app/benchmark_app.json``. benchmark_app runs under the guard edgecut's own
runs have (the parallel-speedup canary of ``edgecut.measure.canary``: wait while the host has taken our
cores, measure again a run after which it had), so neither tool is left alone with a busy host. Run
it on an idle machine.

edgecut's number is ``edgecut bench``'s model-only p50 (a fresh worker process, warm-up,
then timed calls through the Runner: numpy in, numpy out); benchmark_app's is its "Median"
latency of ``infer()`` on a request whose input it filled once. The difference between them is
the Runner's Python and copying overhead, plus noise.

    python benchmarks/openvino_benchmark_app.py                      # the student's OpenVINO FP32 export
    python benchmarks/openvino_benchmark_app.py --model runs/export-ecssd/teacher-openvino-fp32
"""

from __future__ import annotations

import re
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from edgecut import io
from edgecut.artifact import load_artifact
from edgecut.measure.canary import Canary
from edgecut.measure.latency import quantile_ci
from edgecut.runtime.timing import LatencyConfig
from edgecut.measure.record import machine_id
from edgecut.measure.bench import bench
from edgecut.measure.config import BenchConfig

from common import EXPORTS, RESULTS, command, environment, parser, rel

MEDIAN = re.compile(r"Median:\s+([0-9.]+)\s*ms")


def benchmark_app(xml: Path, shape: tuple[int, int], threads: int, seconds: float) -> tuple[float, list[str]]:
    exe = Path(sys.executable).with_name("benchmark_app")
    cmd = [str(exe), "-m", str(xml), "-d", "CPU", "-hint", "none", "-api", "sync", "-nstreams", "1",
           "-nthreads", str(threads), "-infer_precision", "f32", "-ip", "f32", "-data_shape", f"[1,3,{shape[0]},{shape[1]}]",
           "-t", str(max(1, round(seconds)))]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"benchmark_app failed: {proc.stderr.strip()[-500:] or proc.stdout.strip()[-500:]}")
    found = MEDIAN.findall(proc.stdout)
    if not found:
        sys.exit("benchmark_app printed no 'Median:' latency:\n" + proc.stdout[-1000:])
    return float(found[0]), cmd


def quiet_benchmark_app(canary: Canary, xml: Path, shape: tuple[int, int], threads: int, seconds: float,
                        max_wait_s: float = 120.0) -> tuple[float, list[str]]:
    """benchmark_app under the guard ``edgecut bench`` puts around its own runs (:meth:`Canary.guarded`):
    wait while the parallel-speedup canary says the host has taken our cores, and measure again a run
    after which it says so."""
    return canary.guarded(threads, lambda: benchmark_app(xml, shape, threads, seconds), max_wait_s, 2)[0]


def main(argv: list[str] | None = None) -> dict:
    ap = parser(__doc__, "threads", results=RESULTS / "openvino_benchmark_app" / "benchmark_app.json")
    ap.add_argument("--model", type=Path, default=EXPORTS / "student-openvino-fp32")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=8, help="an even number gives each tool the first turn equally often")
    args = ap.parse_args(argv)

    art = load_artifact(args.model)
    if art.manifest.format != "openvino":
        sys.exit(f"{args.model} is a {art.manifest.format} artifact; give an OpenVINO one")
    shape = tuple(art.spec.input_size)
    config = BenchConfig(threads=(args.threads,), end_to_end=False,
                         latency=LatencyConfig(warmup_s=2.0, warmup_min=10, min_time_s=args.seconds, min_iters=50))
    canary = Canary(machine=machine_id(environment()))
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.rounds):
            app_first = k % 2 == 1  # ABAB...: neither tool always runs right after the other
            if app_first:
                app_ms, cmd = quiet_benchmark_app(canary, art.model_path, shape, args.threads, args.seconds)
            (rec,) = bench([art], Path(tmp) / f"round{k}.jsonl", config, progress=False).records
            if not app_first:
                app_ms, cmd = quiet_benchmark_app(canary, art.model_path, shape, args.threads, args.seconds)
            row = {"first": "benchmark_app" if app_first else "edgecut",
                   "edgecut_p50_ms": round(rec.latency.p50_ms, 4), "edgecut_cov": round(rec.latency.cov, 4),
                   "edgecut_iterations": rec.latency.iterations, "benchmark_app_median_ms": app_ms,
                   "ratio": round(rec.latency.p50_ms / app_ms, 4)}
            rounds.append(row)
            print(f"round {k + 1} ({row['first']} first): edgecut p50 {row['edgecut_p50_ms']:.3f} ms   "
                  f"benchmark_app median {app_ms:.3f} ms   edgecut / benchmark_app {row['ratio']:.3f}", flush=True)
    ratios = [r["ratio"] for r in rounds]
    median_ratio = round(statistics.median(ratios), 4)
    ci = quantile_ci(ratios, 0.5)  # None under 6 rounds
    record = {
        "command": command(__file__, argv),
        "model": rel(args.model),
        "input": [1, 3, *shape], "threads": args.threads, "seconds_per_measurement": args.seconds,
        "benchmark_app_command": shlex.join(cmd), "rounds": rounds, "median_ratio": median_ratio,
        "median_ratio_ci95": None if ci is None else [round(float(c), 4) for c in ci],
        "within_10_percent": abs(median_ratio - 1) <= 0.10, "machine": environment(),
    }
    io.write_json(args.results, record)
    known = "" if ci is None else f", 95% interval {ci[0]:.3f}-{ci[1]:.3f}"
    print(f"median ratio {median_ratio:.3f}{known} ({'within' if record['within_10_percent'] else 'NOT within'} "
          f"10%); wrote {args.results}")
    return record


if __name__ == "__main__":
    main()
