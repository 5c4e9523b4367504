"""The classical baselines on ECSSD val: Otsu's threshold and GrabCut, scored and timed like the models.

    python benchmarks/baselines.py

``edgecut baseline otsu`` and ``edgecut baseline grabcut`` artifacts, measured by ``edgecut bench``
exactly as ``headline.py`` measures the networks: ECSSD val (200 images, each scored at its own
resolution), 2 threads, batch 1, at 128 px (the headline's input size) and at 320 px (GrabCut's
cost grows with the pixels; does its IoU?). Writes ``results/baselines/baselines.jsonl`` (the records)
and ``results/baselines/baselines.json`` (the table RESULTS.md shows).
"""

from __future__ import annotations

import sys
from pathlib import Path

from common import ECSSD, RESULTS, RUNS, parser

OUT = RESULTS / "baselines"


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__)
    ap.add_argument("--work", type=Path, default=RUNS / "baselines")
    ap.add_argument("--sizes", default="128,320")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    from edgecut import io
    from edgecut.classical import BaselineConfig, baseline
    from edgecut.env import fingerprint
    from edgecut.measure.record import Hooks, new_run_id
    from edgecut.measure.bench import bench
    from edgecut.measure.config import BenchConfig
    from edgecut.runtime.timing import LatencyConfig

    arts = [baseline(args.work / m, BaselineConfig(method=m)) for m in ("otsu", "grabcut")]
    records_path = OUT / "baselines.jsonl"
    records_path.unlink(missing_ok=True)
    rows, run_id = [], new_run_id()
    for size in (int(s) for s in args.sizes.split(",")):
        got = bench(arts, records_path, BenchConfig(
            threads=(2,), size=(size, size), data=ECSSD, split="val", repeats=args.repeats, worst=0,
            latency=LatencyConfig(warmup_s=1.0, warmup_min=5, min_time_s=2.0, min_iters=20)),
            names=[f"{a.path.name}-{size}" for a in arts], run_id=run_id, progress=False, hooks=Hooks(say=print)).records
        for r in got:
            m = r.accuracy.metrics
            rows.append({"name": r.name, "size": size, "p50_ms": r.latency.p50_ms,
                         "cutout_ms": r.end_to_end.p50_ms if r.end_to_end else None,
                         "iou": m["iou"], "mae": m["mae"], "s_measure": m["s_measure"], "max_f": m["max_f"]})
    io.write_json(OUT / "baselines.json", {
        "what": "classical baselines on ECSSD val (200 images, scored at each image's resolution), edgecut bench, "
                "2 threads, batch 1", "run_id": run_id, "machine": fingerprint(), "rows": rows})
    print("\n| baseline | input | p50 ms | cut-out ms | IoU | MAE | S-measure |\n|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['name']} | {r['size']} | {r['p50_ms']:.3g} | {r['cutout_ms']:.3g} | {r['iou']:.4f} | "
              f"{r['mae']:.4f} | {r['s_measure']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
