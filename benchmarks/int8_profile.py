"""Where the student's inference time goes, per op type, FP32 against INT8, on OpenVINO's CPU plugin.

    python benchmarks/int8_profile.py [--work runs/cutout-bench] [--threads 1] [--iters 30]

Reads the student exports benchmarks/cutout.py made (OpenVINO FP32 and INT8 at 320 px, random
weights), compiles each with ``PERF_COUNT`` on, runs ``--iters`` inferences after a warm-up and
sums OpenVINO's per-node real time by node type and by the kernel it ran (``exec_type``: an
``I8`` / ``u8`` kernel ran in integers, an ``f32`` one in float). Writes
benchmarks/results/int8_profile/int8_profile.json and prints the two tables side by side: the first step of
the cut-out issue's "why the student's INT8 is slow".
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

from common import RESULTS, RUNS, parser


def profile(xml: Path, threads: int, iters: int) -> dict:
    import numpy as np
    import openvino as ov

    from edgecut.runtime.openvino_runner import compile_config

    core = ov.Core()
    compiled = core.compile_model(str(xml), "CPU", {**compile_config(threads), "PERF_COUNT": True})
    request = compiled.create_infer_request()
    shape = list(compiled.input(0).get_partial_shape().get_min_shape())
    shape[0] = 1
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(5):
        request.infer({0: x})
    by_type: dict[str, float] = defaultdict(float)
    by_kernel: dict[str, float] = defaultdict(float)
    total = 0.0
    for _ in range(iters):
        request.infer({0: x})
        for p in request.get_profiling_info():
            us = p.real_time.total_seconds() * 1e6
            by_type[p.node_type] += us
            by_kernel[f"{p.node_type} / {p.exec_type}"] += us
            total += us
    def top(d: dict) -> list[dict]:
        return [{"name": k, "ms": round(v / iters / 1e3, 3), "share": round(v / total, 3)}
                for k, v in sorted(d.items(), key=lambda kv: -kv[1])]
    return {"model": str(xml), "ms_per_inference": round(total / iters / 1e3, 3), "by_type": top(by_type),
            "by_kernel": top(by_kernel)}


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__, threads=1)
    ap.add_argument("--work", type=Path, default=RUNS / "cutout-bench")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--out", type=Path, default=RESULTS / "int8_profile" / "int8_profile.json")
    args = ap.parse_args(argv)

    from edgecut import io
    from edgecut.artifact import load_artifact
    from edgecut.env import fingerprint

    rows = {}
    for name in ("student-openvino", "student-openvino-int8"):
        art = load_artifact(args.work / name)
        rows[name] = profile(art.model_path, args.threads, args.iters)
        print(f"\n{name}: {rows[name]['ms_per_inference']:.2f} ms per inference (sum of node times, "
              f"{args.threads} thread(s))")
        for r in rows[name]["by_kernel"][:12]:
            print(f"  {r['ms']:7.3f} ms  {r['share']:6.1%}  {r['name']}")
    io.write_json(args.out, {"what": "OpenVINO PERF_COUNT per-node real time, summed per op type and kernel",
                             "threads": args.threads, "iters": args.iters, "machine": fingerprint(), **rows})
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
