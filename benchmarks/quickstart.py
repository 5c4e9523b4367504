"""Time the main job: `edgecut run recipes/quickstart.yaml` in a fresh run folder, then again.

    python benchmarks/quickstart.py                          # this machine as it is
    python benchmarks/quickstart.py --cap-isa avx2           # torch and oneDNN kept to AVX2 kernels

Runs the recipe as a user does (the `edgecut` command, a new process) and records both wall times,
each step's seconds, the precision training chose and why, the student's speed-up over the teacher and
the machine's fingerprint in benchmarks/results/quickstart/quickstart.json. `--cap-isa avx2`
approximates an AVX2-only CPU; it is not one. Measure on a quiet machine. What the cap does and what
it measured: benchmarks/README.md#the-quickstart-recipe-quickstartpy
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, ROOT, environment, parser

RECIPE = ROOT / "recipes" / "quickstart.yaml"
CAPS = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}


def run(out: Path, env: dict[str, str]) -> float:
    cmd = [str(Path(sys.executable).with_name("edgecut")), "run", str(RECIPE), "--out", str(out)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = parser(__doc__)
    ap.add_argument("--cap-isa", choices=sorted(CAPS), default=None)
    ap.add_argument("--out", type=Path, default=None, help="run folder (default: a temporary one, removed after)")
    ap.add_argument("--results", type=Path, default=None,
                    help="default: benchmarks/results/quickstart/quickstart.json (quickstart-avx2cap.json with --cap-isa avx2)")
    args = ap.parse_args(argv)
    results = args.results or RESULTS / "quickstart" / (
        f"quickstart-{args.cap_isa}cap.json" if args.cap_isa else "quickstart.json")

    from edgecut import io
    from edgecut.artifact import load_artifact
    from edgecut.recipe.runner import STATE_DIR

    env = {**os.environ, **CAPS.get(args.cap_isa, {})}
    tmp = None if args.out else Path(tempfile.mkdtemp(prefix="edgecut-quickstart-"))
    out = args.out or tmp / "run"
    if out.exists():
        sys.exit(f"error: {out} exists; the first run must start from nothing (choose another --out)")
    try:
        first = run(out, env)
        again = run(out, env)
        steps = {p.stem: io.read_json(p).get("seconds") for p in sorted((out / STATE_DIR).glob("*.json"))}
        chosen = {name: load_artifact(out / name).manifest.lineage[-1].params.get("precision_used")
                  for name in ("teacher", "pruned", "student")}
        with open(out / "report.csv", newline="") as f:
            rows = {r["name"]: r for r in csv.DictReader(f)}
        p50 = {name: float(r["p50_ms"]) for name, r in rows.items() if r.get("p50_ms")}
        record = {
            "command": "python benchmarks/quickstart.py" + (f" --cap-isa {args.cap_isa}" if args.cap_isa else ""),
            "recipe": str(RECIPE.relative_to(ROOT)), "first_run_s": round(first, 1), "cached_run_s": round(again, 1),
            "step_s": steps, "precision": chosen, "p50_ms": p50,
            "student_onnx_speedup_vs_teacher": round(p50["teacher"] / p50["student-onnx"], 1),
            "isa_cap": CAPS.get(args.cap_isa), "machine": environment(),
            "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    io.write_json(results, record)
    print(json.dumps({k: v for k, v in record.items() if k != "machine"}, indent=1))
    return record


if __name__ == "__main__":
    main()
