"""One prepared run on a lent GPU machine: its environment, the gpu/tensorrt tests, torch,
TensorRT and ONNX Runtime throughput of the teacher and the student at 320 px, and a short
full-size teacher training on ECSSD; every result a JSON file under --out.

    python benchmarks/gpu.py --prepare             # here: ECSSD at 320 px and the missing wheels into .gpu/
    python benchmarks/gpu.py --dry-run             # here: plan, carried files and size, the device command
    python benchmarks/gpu.py --smoke --out /tmp/gpu-smoke   # here, on the CPU: every part, tiny, seconds
    python3 benchmarks/gpu.py --out $OUT           # on the GPU machine: the command --dry-run prints

Six parts (parts.py), each with a time budget (plan.py), run in order under one deadline
(scheduler.py). Notes: benchmarks/README.md#gpupy-one-prepared-run-on-a-lent-gpu-machine-no-gpu-result-recorded-yet
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from common import ECSSD, command, parser

from .parts import PARTS
from .plan import DEADLINE_S, FULL, SMOKE, SMOKE_DEADLINE_S, chosen_plan, plan_problems
from .prepare import DATA_DIR, MAX_SIDE, data_problems, dry_run, prepare
from .scheduler import Clock, Run, run_parts


def smoke_data(args, work: Path) -> tuple[Path, str]:
    """A few images: the prepared ECSSD's first train and val names when there, else synthetic photos."""
    root = work / "smoke-data"
    shutil.rmtree(root, ignore_errors=True)  # a --work used before: made again
    if args.data != "synthetic" and not data_problems(Path(args.data))[0]:
        src = Path(args.data)
        for sub in ("images", "masks", "splits"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        for split, count in (("train", 16), ("val", 8)):
            names = (src / "splits" / f"{split}.txt").read_text().split()[:count]
            (root / "splits" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
            for n in names:
                os.symlink(src / "images" / f"{n}.jpg", root / "images" / f"{n}.jpg")
                os.symlink(src / "masks" / f"{n}.png", root / "masks" / f"{n}.png")
        return root, f"the first 16 train and 8 val images of {src}"
    from edgecut.data.synth import generate

    return generate(root, count=24, size=SMOKE.size, progress=False), "24 synthetic photos at 64 px"


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--prepare", action="store_true", help="here: write .gpu/ecssd320 and .gpu/wheels")
    mode.add_argument("--dry-run", action="store_true", help="here: check the plan and what travels, print the command")
    mode.add_argument("--smoke", action="store_true", help="every part for real on this machine, tiny (CPU: seconds)")
    ap.add_argument("--out", type=Path, default=None, help="results folder (on the device: $OUT)")
    ap.add_argument("--work", type=Path, default=None, help="models, engines, runs (default: a new temporary folder)")
    ap.add_argument("--data", default=str(DATA_DIR), help="prepared data set, or 'synthetic' (smoke only)")
    ap.add_argument("--source", type=Path, default=ECSSD, help="--prepare: the full-size ECSSD folder")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument("--budget", action="append", default=[], metavar="PART=SECONDS", help="change one part's budget")
    ap.add_argument("--deadline-s", type=float, default=None, help=f"overall deadline (default {DEADLINE_S:g}; "
                                                                   f"smoke {SMOKE_DEADLINE_S:g})")
    args = ap.parse_args(argv)
    t_start = time.monotonic()
    if args.prepare:
        return prepare(args)
    if args.dry_run:
        return dry_run(args)
    selected = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in selected if p not in PARTS]
    if unknown:
        ap.error(f"--parts: unknown {unknown}; use {', '.join(PARTS)}")
    if args.out is None:
        ap.error("--out is required (on the device: --out $OUT)")
    plan, deadline_s = chosen_plan(args)
    problems = plan_problems(plan, deadline_s)
    if problems:
        ap.error("; ".join(problems))

    import torch

    from edgecut.env import fingerprint

    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        ap.error("no CUDA GPU here: the full run is for the lent GPU machine (use --smoke or --dry-run here)")
    work = args.work or Path(tempfile.mkdtemp(prefix="edgecut-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "splits", ignore_errors=True)  # links to this run's data only
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        if args.smoke:
            data, note = smoke_data(args, work)
        elif not data_problems(Path(args.data))[0]:
            data, note = Path(args.data), f"ECSSD resized to {MAX_SIDE} px on the longer side ({args.data})"
        else:
            data, note = None, "; ".join(data_problems(Path(args.data))[0]) + " (carry .gpu to the device)"
        run = Run(out=args.out, work=work, smoke=args.smoke, sizes=SMOKE if args.smoke else FULL,
                  device="cuda" if cuda else "cpu",
                  command=command("gpu.py", argv),
                  data=data, data_note=note, deadline=Clock(deadline_s - (time.monotonic() - t_start)))
        run.machine = fingerprint()
        summary = run_parts(run, plan, selected, PARTS)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if all(p["status"] != "error" for p in summary["parts"].values()) else 1
