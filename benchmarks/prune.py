"""Prune the trained teacher at several ratios, fine-tune each on ECSSD train, measure on ECSSD val.

    python benchmarks/prune.py --no-progress             # the recorded run (needs benchmarks/teacher.py first)
    python benchmarks/prune.py --ratios 0.5 --finetune-epochs 1 --sens-ratios 0.5 --sens-images 16 --round-to 1 \
        --out /tmp/prune-smoke --results /tmp/prune.json  # a quick smoke run

Records params, MACs, torch CPU latency (all measured in this one run, so the ratios compare) and
ECSSD val metrics of the teacher and each pruned model, then runs the per-group sensitivity analysis.
Interrupted runs resume: run the same command again (finished models are kept). Settings and results:
benchmarks/README.md#prunepy-the-teacher-pruned-at-three-ratios-fine-tuned-measured
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from edgecut import io, runtime
from edgecut.measure.accuracy import evaluate
from edgecut.compress.config import PruneConfig, SensitivityConfig
from edgecut.compress.pruning import SensitivityRow, prune_model, recalibrate_batchnorm
from edgecut.compress.prune import STATE_FILE, augmented_images, example_input, sensitivity_artifact, torch_latency
from edgecut.compress.prune import prune as prune_run
from edgecut.data.transforms import SegmentationDataset
from edgecut.data.folder import find_samples
from edgecut.models.profile import count_macs
from edgecut.models.store import load_model
from edgecut.training.config import LoopConfig
from edgecut.training.train import validator

from common import RESULTS, RUNS, command, environment, parser, rel

KEEP = ("iou", "dice", "mae", "max_f", "s_measure", "e_measure", "weighted_f", "boundary_f")


def main(argv: list[str] | None = None) -> dict:
    ap = parser(__doc__, "teacher", "data", "threads", "no-progress", results=RESULTS / "prune" / "prune.json")
    ap.add_argument("--out", type=Path, default=RUNS / "prune-ecssd")
    ap.add_argument("--ratios", default="0.3,0.5,0.7")
    ap.add_argument("--importance", default="l2")
    ap.add_argument("--finetune-epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--sens-ratios", default="0.25,0.5,0.75")
    ap.add_argument("--sens-images", type=int, default=100)
    ap.add_argument("--max-drop", type=float, default=0.01)
    ap.add_argument("--round-to", type=int, default=8)
    args = ap.parse_args(argv)
    progress = not args.no_progress

    torch.set_num_threads(args.threads)
    teacher = load_model(args.teacher)
    spec = teacher.spec
    val = find_samples(args.data, "val")
    previous = {r["name"]: r for r in io.read_json(args.results)["rows"]} if args.results.exists() else {}
    rows = [measure("teacher", args.teacher, val, args.threads, progress)]
    pruned_only = prune_only(args, teacher.spec)
    for ratio in (float(r) for r in args.ratios.split(",")):
        out = args.out / f"ratio-{ratio:g}"
        t0 = time.perf_counter()
        wall = None
        if not (out / "edgecut.json").exists():
            loop = LoopConfig(epochs=args.finetune_epochs, batch_size=args.batch, lr=args.lr, warmup_epochs=0.2,
                              seed=0)
            config = PruneConfig(ratio=ratio, importance=args.importance, round_to=args.round_to,
                                 data=str(args.data), train_split="train", val_split="val", loop=loop,
                                 threads=args.threads, latency=False)
            prune_run(args.teacher, out, config, resume=(out / STATE_FILE).exists(), progress=progress)
            wall = round(time.perf_counter() - t0, 1)
        name = f"pruned {ratio:g}"
        row = measure(name, out, val, args.threads, progress)
        row["ratio"] = ratio
        row["val_iou_at_128_pruned_only"] = pruned_only[ratio]
        row["prune_and_finetune_s"] = wall if wall is not None else previous.get(name, {}).get("prune_and_finetune_s")
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("name", "params", "macs", "latency_p50_ms", "val")}), flush=True)

    t0 = time.perf_counter()
    sens_dir = args.out / "sensitivity"
    reused = (sens_dir / "sensitivity.json").exists()
    if reused:  # finished earlier: re-running only re-measures the models
        saved = io.read_json(sens_dir / "sensitivity.json")
        sens = {"baseline": saved["baseline"], "rows": [SensitivityRow(**r) for r in saved["rows"]],
                "plan": io.read_json(sens_dir / "plan.json")["layer_ratios"], "images": args.sens_images,
                "data": f"{args.data}:train", "files": sorted(sens_dir.iterdir())}
    else:
        config = SensitivityConfig(ratios=tuple(float(r) for r in args.sens_ratios.split(",")),
                                   importance=args.importance, round_to=args.round_to, split="train",
                                   images=args.sens_images, max_drop=args.max_drop)
        sens = sensitivity_artifact(args.teacher, sens_dir, args.data, config, progress=progress,
                                    threads=args.threads)
    sens_s = None if reused else round(time.perf_counter() - t0, 1)  # None: made by an earlier run
    results = args.results.parent
    for f in sens["files"]:
        if f.suffix in (".md", ".png", ".csv") or f.name == "plan.json":
            shutil.copyfile(f, results / f"prune_{f.name}")

    base = rows[0]
    for r in rows:
        r["macs_reduction"] = round(base["macs"] / r["macs"], 3)
        r["speedup_p50"] = round(base["latency_p50_ms"] / r["latency_p50_ms"], 3)
        r["iou_change"] = round(r["val"]["iou"] - base["val"]["iou"], 4)
    record = {
        "command": command(__file__, argv),
        "teacher_sha256": teacher.artifact.sha256,
        "input_size": list(spec.input_size),
        "prune": {"importance": args.importance, "scope": "uniform", "round_to": args.round_to, "steps": 1,
                  "finetune": {"data": "ecssd/splits/train.txt", "epochs": args.finetune_epochs, "lr": args.lr,
                               "batch": args.batch, "precision": "bf16 autocast, channels_last",
                               "selection": "best val IoU epoch (as the teacher)"}},
        "latency": {"backend": "torch eager fp32", "device": "cpu", "threads": args.threads, "batch": 1,
                    "size": list(spec.input_size)},
        "val": {"data": "ecssd/splits/val.txt", "images": len(val), "resolution": "each image's own"},
        "rows": rows,
        "sensitivity": {"data": sens["data"], "images": sens["images"], "metric": "iou (at 128 px)",
                        "baseline": sens["baseline"], "wall_time_s": sens_s,
                        "max_drop": args.max_drop, "plan": sens["plan"],
                        "rows": [r.__dict__ for r in sens["rows"]]},
        "machine": environment(torch_threads=True),
    }
    io.write_json(args.results, record)
    return record


def prune_only(args: argparse.Namespace, spec) -> dict[float, dict[str, float]]:
    """Val IoU (at the input size, as fine-tuning validates) right after pruning: as is, and
    with batch-norm statistics re-estimated on 8 augmented training batches."""
    res = {}
    validate = validator(find_samples(args.data, "val"), spec, torch.device("cpu"))
    train_set = SegmentationDataset(find_samples(args.data, "train"), spec, train=True, seed=0)
    for ratio in (float(r) for r in args.ratios.split(",")):
        module = load_model(args.teacher).module
        prune_model(module, example_input(spec), PruneConfig(ratio=ratio, importance=args.importance,
                                                       round_to=args.round_to))
        as_is = validate(module)["iou"]
        recalibrate_batchnorm(module, augmented_images(train_set, LoopConfig(batch_size=args.batch), 8, 1))
        res[ratio] = {"as_is": round(as_is, 4), "bn_recalibrated": round(validate(module)["iou"], 4)}
        print(json.dumps({"ratio": ratio, "val_iou_at_128_pruned_only": res[ratio]}), flush=True)
    return res


def measure(name: str, path: Path, val: list, threads: int, progress: bool) -> dict:
    loaded = load_model(path)
    runner = runtime.load(path, device="cpu", threads=threads)
    result = evaluate(runner, val, progress=progress)
    lat = torch_latency(loaded.module, loaded.spec, threads)
    return {"name": name, "artifact": rel(path),
            "params": loaded.artifact.manifest.params, "macs": loaded.artifact.manifest.macs,
            "macs_at_320": count_macs(loaded.module, (320, 320)),
            "latency_p50_ms": round(lat["p50_ms"], 3), "latency": lat,
            "val": {k: round(result.metrics[k], 4) for k in KEEP}}


if __name__ == "__main__":
    main()
