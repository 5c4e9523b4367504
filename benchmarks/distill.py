"""Train a MobileNetV3-Large U-Net student on ECSSD train (a) from the masks alone and (b)
distilled from the trained teacher; same epochs, resolution, optimiser and seed.

A script, not a test. Records params, MACs (at the training size and at 320x320), training
wall time and the ECSSD val metrics at each image's own resolution for the teacher, (a) and
(b) in benchmarks/results/distill/distill.json.

    python benchmarks/distill.py --no-progress           # the recorded run (needs benchmarks/teacher.py first)
    python benchmarks/distill.py --epochs 1 --out /tmp/distill-smoke --results /tmp/distill.json

Interrupted runs resume: run the same command again (finished students are kept).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from edgecut import io, runtime
from edgecut.measure.accuracy import evaluate
from edgecut.compress.config import DistillConfig
from edgecut.compress.distill import distill
from edgecut.data.folder import find_samples
from edgecut.models.profile import count_macs
from edgecut.models.store import load_model
from edgecut.training.config import LoopConfig
from edgecut.training.loop import CHECKPOINT_DIR, LAST
from edgecut.training.config import TrainConfig
from edgecut.training.train import train

from common import RESULTS, RUNS, command, environment, parser, rel

KEEP = ("iou", "dice", "mae", "max_f", "max_f_dataset", "s_measure", "e_measure", "weighted_f", "boundary_f")


def main(argv: list[str] | None = None) -> dict:
    ap = parser(__doc__, "teacher", "data", "threads", "no-progress", results=RESULTS / "distill" / "distill.json")
    ap.add_argument("--out", type=Path, default=RUNS / "distill-ecssd")
    ap.add_argument("--student", default="mobilenet_v3_large_unet")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--ema", type=float, default=0.998)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--no-feature-kd", action="store_true")
    args = ap.parse_args(argv)
    progress = not args.no_progress

    torch.set_num_threads(args.threads)
    loop = LoopConfig(epochs=args.epochs, batch_size=args.batch, lr=args.lr, ema_decay=args.ema, seed=0)
    dconfig = DistillConfig(student=args.student, size=args.size, temperature=args.temperature, alpha=args.alpha,
                            feature_kd=not args.no_feature_kd, train_split="train", val_split="val", loop=loop)
    runs = {"a_masks_only": args.out / "masks-only", "b_distilled": args.out / "distilled"}
    wall = {}
    if not (runs["a_masks_only"] / "edgecut.json").exists():
        t0 = time.perf_counter()
        train(args.data, runs["a_masks_only"], TrainConfig(arch=args.student, size=args.size, train_split="train",
                                                            val_split="val", loop=loop),
              progress=progress, resume=(runs["a_masks_only"] / CHECKPOINT_DIR / LAST).exists())
        wall["a_masks_only"] = round(time.perf_counter() - t0, 1)
    if not (runs["b_distilled"] / "edgecut.json").exists():
        t0 = time.perf_counter()
        distill([args.teacher], args.data, runs["b_distilled"], dconfig, progress=progress,
                resume=(runs["b_distilled"] / CHECKPOINT_DIR / LAST).exists())
        wall["b_distilled"] = round(time.perf_counter() - t0, 1)

    val = find_samples(args.data, "val")
    rows = {}
    for name, path in {"teacher": args.teacher, **runs}.items():
        loaded = load_model(path)
        result = evaluate(runtime.load(path, device="cpu", threads=args.threads), val, progress=progress)
        history = io.read_json(path / "history.json")
        rows[name] = {
            "artifact": rel(path),
            "arch": loaded.arch, "params": loaded.artifact.manifest.params,
            "macs": loaded.artifact.manifest.macs, "macs_at_320": count_macs(loaded.module, (320, 320)),
            "input_size": list(loaded.spec.input_size),
            "train_wall_time_s": round(history[-1]["elapsed_s"], 1), "epochs": len(history),
            "best_epoch": loaded.artifact.manifest.lineage[-1].params.get("best_epoch"),
            "val": {k: round(result.metrics[k], 4) for k in KEEP},
            "val_iou_per_epoch": [round(h["val_iou"], 4) for h in history if "val_iou" in h],
        }
    t = rows["teacher"]
    for r in rows.values():
        r["macs_fraction_of_teacher_at_320"] = round(r["macs_at_320"] / t["macs_at_320"], 5)
    gain = {k: round(rows["b_distilled"]["val"][k] - rows["a_masks_only"]["val"][k], 4) for k in KEEP}
    record = {
        "command": command(__file__, argv),
        "student": args.student, "size": args.size,
        "train": {"data": "ecssd/splits/train.txt", "epochs": args.epochs, "batch": args.batch, "lr": args.lr,
                  "ema": args.ema, "precision": "bf16 autocast, channels_last", "threads": args.threads,
                  "pretrained_backbone": False, "selection": "best val IoU epoch (as the teacher)"},
        "distill": {"temperature": dconfig.temperature, "alpha": dconfig.alpha, "feature_kd": dconfig.feature_kd,
                    "feature_weight": dconfig.feature_weight, "boundary_weight": dconfig.boundary_weight},
        "val": {"data": "ecssd/splits/val.txt", "images": len(val), "resolution": "each image's own"},
        "rows": rows, "distilled_minus_masks_only": gain, "this_session_wall_s": wall,
        "machine": environment(torch_threads=True),
    }
    io.write_json(args.results, record)
    print(json.dumps({k: {"params": r["params"], "macs_at_320": r["macs_at_320"], **r["val"]} for k, r in rows.items()},
                     indent=1))
    return record


if __name__ == "__main__":
    main()
