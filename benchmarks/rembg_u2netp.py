"""rembg's U^2-Netp against its student, in one run on one machine: ``recipes/rembg-u2netp.yaml`` run as a
user runs it, then its bench records (ECSSD val, 320 x 320) summarised in results/rembg-u2netp.json
(the records, table and plot in results/rembg-u2netp/): each model's IoU, MAE, S-measure, model-only p50,
one cut-out's p50 (the bench), and whole cut-outs per second as ``edgecut remove`` makes them of the 200 val
photos (decode to RGBA PNG on disk, at 320, the models interleaved round by round); the student's speed-ups and
IoU change against U^2-Netp, the INT8 rows against their FP32, and what the promise asks (20x the cut-outs,
at most 3 IoU points and 0.015 MAE lost, INT8 within 0.5 points).

    python benchmarks/rembg_u2netp.py                      # the recipe (hours the first time), then the record
    python benchmarks/rembg_u2netp.py --from bench         # measure again (nothing else running)
"""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path
from typing import Any

from common import ECSSD, RESULTS, ROOT, RUNS, edgecut, machine, parser, write

RECIPE = ROOT / "recipes" / "rembg-u2netp.yaml"
TEACHER = "u2netp"
SIDE = 320  # every model cuts out at this side (the students were trained at 224 and exported with dynamic sizes)
PROMISE = {"e2e_speedup_min": 20.0, "iou_drop_max": 0.03, "mae_rise_max": 0.015, "int8_iou_drop_max": 0.005}


def row(r) -> dict[str, Any]:
    acc = r.accuracy.metrics if r.accuracy else {}
    e2e = r.end_to_end.p50_ms if r.end_to_end else None
    return {"name": r.name, "format": r.format, "precision": r.precision, "arch": r.arch, "size_mb": round(r.size_mb, 3),
            "params": r.params, "macs": r.macs, "p50_ms": round(r.latency.p50_ms, 3) if r.latency else None,
            "e2e_p50_ms": round(e2e, 3) if e2e else None,
            "iou": round(acc["iou"], 4) if "iou" in acc else None, "mae": round(acc["mae"], 4) if "mae" in acc else None,
            "s_measure": round(acc["s_measure"], 4) if "s_measure" in acc else None,
            "agreement_with_u2netp": round(r.agreement.mask_iou_mean, 4) if r.agreement else None,
            "threads": r.threads, "input_size": list(r.input_size)}


def cutout_rates(run: Path, names: list[str], work: Path, rounds: int) -> dict[str, dict[str, Any]]:
    """Whole cut-outs per second of each model of ``run`` as ``edgecut remove`` makes them of the ECSSD val photos
    (its threads chosen as it chooses them, each model at SIDE), models interleaved round by round, median round."""
    from edgecut.cutout import RemoveConfig, load_for_cutouts, remove_background
    from edgecut.runtime.base import AtSize

    files = [ECSSD / "images" / f"{n}.jpg" for n in (ECSSD / "splits" / "val.txt").read_text().split()]
    loaded = {}
    for name in names:
        runner, workers = load_for_cutouts(run / name, probe=files[0])
        threads = {"model": runner.threads, "image_work": workers}
        if tuple(runner.spec.input_size) != (SIDE, SIDE):
            runner = AtSize(runner, runner.spec.with_size(SIDE))
        loaded[name] = runner, workers, threads
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name, (runner, workers, _) in loaded.items():
            dest = work / name
            shutil.rmtree(dest, ignore_errors=True)
            done = remove_background(files, runner, dest, RemoveConfig(workers=workers), progress=False)
            if done.failed or len(done.written) != len(files):
                raise SystemExit(f"{name}: {len(done.failed)} cut-out(s) failed: {done.failed[:2]}")
            seconds[name].append(done.seconds)
            print(f"round {r + 1}/{rounds} {name}: {len(files) / done.seconds:.1f} cut-outs/s", flush=True)
    return {name: {"images_per_s": round(len(files) / statistics.median(seconds[name]), 2), "images": len(files),
                   "seconds": [round(s, 2) for s in seconds[name]], "threads": loaded[name][2]} for name in names}


def summarise(records_path: Path, rates: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from edgecut.measure.record import latest, read_records

    rows = {r.name: row(r) for r in latest(read_records(records_path))}
    for name, rate in rates.items():
        rows[name].update(e2e_images_per_s=rate["images_per_s"], e2e_threads=rate["threads"])
    base = rows[TEACHER]
    for r in rows.values():
        if base.get("e2e_images_per_s") and r.get("e2e_images_per_s"):
            r["e2e_speedup"] = round(r["e2e_images_per_s"] / base["e2e_images_per_s"], 2)
        if base["e2e_p50_ms"] and r["e2e_p50_ms"]:
            r["e2e_latency_speedup"] = round(base["e2e_p50_ms"] / r["e2e_p50_ms"], 2)
        if base["p50_ms"] and r["p50_ms"]:
            r["model_speedup"] = round(base["p50_ms"] / r["p50_ms"], 2)
        if r["iou"] is not None:
            r["iou_change"] = round(r["iou"] - base["iou"], 4)
            r["mae_change"] = round(r["mae"] - base["mae"], 4)
    for name, r in rows.items():
        fp32 = rows.get(name.replace("-int8", "")) if name.endswith("-int8") else None
        if fp32 and fp32["iou"] is not None:
            r["iou_vs_fp32"] = round(r["iou"] - fp32["iou"], 4)
    students = [r for r in rows.values() if r["name"].startswith("student") and r.get("e2e_speedup")]
    # the student's fastest artifact among those within INT8's allowance of its most accurate one
    top = max((r["iou"] or 0 for r in students), default=0.0)
    best = max((r for r in students if (r["iou"] or 0) >= top - PROMISE["int8_iou_drop_max"]),
               key=lambda r: r["e2e_speedup"], default=None)
    verdict = None
    if best is not None:
        int8 = rows.get(best["name"] + "-int8") if not best["name"].endswith("-int8") else best
        verdict = {"student": best["name"], "e2e_speedup": best["e2e_speedup"],
                   "e2e_latency_speedup": best.get("e2e_latency_speedup"), "iou_change": best["iou_change"],
                   "mae_change": best["mae_change"],
                   "holds": {"e2e_speedup": best["e2e_speedup"] >= PROMISE["e2e_speedup_min"],
                             "iou": -best["iou_change"] <= PROMISE["iou_drop_max"],
                             "mae": best["mae_change"] <= PROMISE["mae_rise_max"],
                             "int8": int8 is not None and int8.get("iou_vs_fp32") is not None
                             and -int8["iou_vs_fp32"] <= PROMISE["int8_iou_drop_max"]}}
    return {"rows": list(rows.values()), "promise": PROMISE, "verdict": verdict, "data": "ECSSD val (200 images)",
            "e2e": f"e2e_images_per_s: whole RGBA PNG cut-outs per second of the 200 val photos by edgecut remove's "
                   f"pipeline at {SIDE} (median round); e2e_p50_ms: one cut-out at a time (the bench)",
            "recipe": str(RECIPE.relative_to(ROOT)), "machine": machine()}


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__)
    ap.add_argument("--out", type=Path, default=RUNS / "rembg-u2netp")
    ap.add_argument("--from", dest="from_step", default=None, help="run this recipe step and every later one again")
    ap.add_argument("--results", type=Path, default=RESULTS / "rembg-u2netp.json")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of cut-outs per model (the median counts)")
    args = ap.parse_args(argv)
    edgecut("run", RECIPE, "--out", args.out, *(["--from", args.from_step] if args.from_step else []))
    from edgecut.recipe.schema import load_recipe

    names = [m.lstrip("@") for m in load_recipe(RECIPE, run_dir=args.out).steps["bench"].raw_sources["models"]]
    rates = cutout_rates(args.out, names, args.out / "cutout-rates", args.rounds)
    write(args.results, summarise(args.out / "bench.jsonl", rates))
    keep(args.out, RESULTS / "rembg-u2netp")


def keep(run: Path, folder: Path) -> None:
    """The run's records, table and plot beside the summary (the models stay in the run folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("bench.jsonl", "report.md", "report.csv", "pareto.png"):
        shutil.copy2(run / name, folder / name)


if __name__ == "__main__":
    main()
