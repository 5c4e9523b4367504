"""``edgecut optimize`` on record: a tiny synthetic teacher, the recorded ECSSD teacher, and rembg's U^2-Netp.

    python benchmarks/optimize.py synthetic     # 5 minutes, then 8 into the same folder (it continues)
    python benchmarks/optimize.py ecssd         # after benchmarks/teacher.py: x86-avx512, then arm64-emu
    python benchmarks/optimize.py u2netp        # after benchmarks/rembg_u2netp.py: within 3, then 45 IoU points

Writes ``results/optimize/optimize-*.json`` (each search's rows, winner and paragraph) and ``optimize-*.md``
(its table); the search folders stay in ``runs/optimize-*`` (not in git). What each search runs and
what it showed: benchmarks/README.md#optimizepy-edgecut-optimize-on-record-resultsmd-optimize-tables
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from common import ECSSD, RESULTS, RUNS, parser

OUT = RESULTS / "optimize"


def search(model: Path, data: Path, out: Path, lines: list[str], steps: Path | None = None, **settings):
    from edgecut.search import OptimizeConfig
    from edgecut.search.optimize import optimize

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    started = time.monotonic()
    result = optimize(model, data, out, OptimizeConfig(**settings), progress=False, say=say, steps=steps)
    return result, round(time.monotonic() - started, 1)


def summary(result, seconds: float, lines: list[str], floor_drop: float) -> dict:
    from dataclasses import asdict

    rows = [r for r in result.rows if r.label == "candidate"]
    ok = [r for r in rows if r.status == "measured" and r.iou >= result.reference.iou - floor_drop]
    win = result.winner
    return {"seconds": seconds, "winner": win.name if win else None, "paragraph": result.paragraph,
            "winner_meets_budget_on_holdout": bool(win and result.reference.holdout_iou - win.holdout_iou
                                                   <= floor_drop + 1e-12),
            "winner_at_least_as_fast_as_every_measured_within_budget": bool(win and all(
                win.cost <= r.cost for r in ok if r.holdout_iou is None
                or result.reference.holdout_iou - r.holdout_iou <= floor_drop + 1e-12)),
            "measured": sum(r.status == "measured" for r in rows), "reused": sum(r.reused for r in rows),
            "built": sum(1 for ln in lines if ": building (" in ln), "not_tried": sum(r.status == "not tried" for r in rows),
            "rows": [asdict(r) for r in [result.reference, *(r for r in result.rows if r is not result.reference)]]}


def synthetic(args) -> None:
    from edgecut.data.synth import generate
    from edgecut.env import fingerprint
    from edgecut.training.config import LoopConfig, TrainConfig
    from edgecut.training.train import train

    work = RUNS / "optimize-synthetic"
    if args.fresh:
        shutil.rmtree(work, ignore_errors=True)
    data = generate(work / "data", 160, 96, 0, progress=False)
    teacher = work / "teacher"
    if not (teacher / "edgecut.json").is_file():  # the quickstart recipe's teacher
        train(data, teacher, TrainConfig(arch="unet", arch_kwargs={"width": 24}, size=96,
                                         loop=LoopConfig(epochs=4, batch_size=8, lr=0.003)), progress=False)
    runs = {}
    for minutes in (5, 8):
        lines: list[str] = []
        result, seconds = search(teacher, data, work / "search", lines, target="x86-avx512", max_iou_drop=0.02,
                                 budget_minutes=minutes)
        runs[f"{minutes} minutes"] = summary(result, seconds, lines, 0.02)
        (work / f"search-{minutes}min.log").write_text("\n".join(lines) + "\n", encoding="utf-8")
    OUT.mkdir(parents=True, exist_ok=True)
    shutil.copy(work / "search" / "optimize.md", OUT / "optimize-synthetic.md")
    OUT.joinpath("optimize-synthetic.json").write_text(json.dumps(
        {"what": "edgecut optimize on the quickstart's synthetic data and teacher, x86-avx512, max IoU drop 0.02; "
                 "a 5-minute run, then an 8-minute run into the same folder",
         "machine": fingerprint(), "runs": runs}, indent=2) + "\n", encoding="utf-8")


def ecssd(args) -> None:
    from edgecut.env import fingerprint

    teacher = args.teacher
    if not (teacher / "edgecut.json").is_file():
        raise SystemExit(f"missing {teacher}: run benchmarks/teacher.py first")
    steps = RUNS / "optimize-ecssd-steps"
    settings = dict(max_iou_drop=0.02, budget_minutes=args.minutes, prune_ratios=(0.5,),
                    students=("mobilenet_v3_large_unet",), distill_epochs=args.distill_epochs, distill_lr=0.003,
                    sizes=(96,))
    formats = {"x86-avx512": (), "arm64-emu": ("tflite", "onnx")}  # on ARM: the phone table's cheapest two
    for target in args.targets.split(","):
        lines: list[str] = []
        out = RUNS / f"optimize-ecssd-{target}"
        result, seconds = search(teacher, ECSSD, out, lines, steps=steps, target=target,
                                 formats=formats.get(target, ()), **settings)
        (out / "search.log").write_text("\n".join(lines) + "\n", encoding="utf-8")
        OUT.mkdir(parents=True, exist_ok=True)
        shutil.copy(out / "optimize.md", OUT / f"optimize-ecssd-{target}.md")
        OUT.joinpath(f"optimize-ecssd-{target}.json").write_text(json.dumps(
            {"what": f"edgecut optimize of the recorded ECSSD teacher (128 px) for {target}, max IoU drop 0.02",
             "settings": {**settings, "formats": formats.get(target, ())}, "machine": fingerprint(target), **summary(result, seconds, lines, 0.02)},
            indent=2, default=str) + "\n", encoding="utf-8")


def u2netp(args) -> None:
    """rembg's U^2-Netp as imported by recipes/rembg-u2netp.yaml, searched for x86-avx512 within 3 IoU points, then
    within 45 into the same folder (the second reuses every candidate of the first): U^2-Netp's pruned copy and its
    student both inside the second budget, the search picks between them."""
    from edgecut.env import fingerprint

    model = RUNS / "rembg-u2netp" / "u2netp"
    if not (model / "edgecut.json").is_file():
        raise SystemExit(f"missing {model}: run benchmarks/rembg_u2netp.py first (its import step is enough)")
    out = RUNS / "optimize-u2netp"
    settings = dict(target="x86-avx512", budget_minutes=args.minutes, prune_ratios=(0.5,),
                    students=("mobilenet_v3_large_relu_unet",))
    OUT.mkdir(parents=True, exist_ok=True)
    for drop in (0.03, 0.45):
        lines: list[str] = []
        result, seconds = search(model, ECSSD, out, lines, max_iou_drop=drop, **settings)
        name = f"optimize-u2netp-{round(drop * 100)}pts"
        (out / f"{name}.log").write_text("\n".join(lines) + "\n", encoding="utf-8")
        shutil.copy(out / "optimize.md", OUT / f"{name}.md")
        if (out / "pareto.png").is_file():
            shutil.copy(out / "pareto.png", OUT / f"{name}.png")
        OUT.joinpath(f"{name}.json").write_text(json.dumps(
            {"what": f"edgecut optimize of rembg's U^2-Netp (ONNX, 320 px) for x86-avx512, max IoU drop {drop}",
             "settings": {**settings, "max_iou_drop": drop}, "machine": fingerprint("x86-avx512"),
             **summary(result, seconds, lines, drop)}, indent=2, default=str) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__, "teacher")
    ap.add_argument("which", choices=("synthetic", "ecssd", "u2netp"))
    ap.add_argument("--fresh", action="store_true", help="synthetic: start from an empty folder")
    ap.add_argument("--targets", default="x86-avx512,arm64-emu")
    ap.add_argument("--minutes", type=float, default=None, help="each search's budget (ecssd: 20, u2netp: 70)")
    ap.add_argument("--distill-epochs", type=int, default=4, help="ecssd: the student's epochs")
    args = ap.parse_args(argv)
    if args.minutes is None:
        args.minutes = 70.0 if args.which == "u2netp" else 20.0
    {"synthetic": synthetic, "ecssd": ecssd, "u2netp": u2netp}[args.which](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
