"""Train the full-size U-Net teacher on ECSSD train, evaluate it on ECSSD val.

A script, not a test. Records parameters, MACs, input size, epochs, training wall time and
every val metric (at each image's own resolution) in benchmarks/results/teacher/teacher.json.

    python benchmarks/teacher.py                      # the recorded run
    python benchmarks/teacher.py --epochs 2 --size 64 --width 8 --out runs/smoke --results /tmp/t.json

Interrupted runs resume: run the same command again. The checkpoint lives in --out (not in git).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from edgecut import io, runtime
from edgecut.measure.accuracy import evaluate
from edgecut.data.folder import find_samples
from edgecut.models.profile import count_macs
from edgecut.models.store import load_model
from edgecut.training.config import LoopConfig
from edgecut.training.loop import CHECKPOINT_DIR, LAST
from edgecut.training.config import TrainConfig
from edgecut.training.train import train

from common import RESULTS, TEACHER, command, environment, parser


def main(argv: list[str] | None = None) -> dict:
    ap = parser(__doc__, "data", "threads", "no-progress", results=RESULTS / "teacher" / "teacher.json")
    ap.add_argument("--out", type=Path, default=TEACHER)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--ema", type=float, default=0.998)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    loop = LoopConfig(epochs=args.epochs, batch_size=args.batch, lr=args.lr, ema_decay=args.ema, precision="auto",
                      seed=0, save_interval_s=120)
    config = TrainConfig(arch="unet", arch_kwargs={"width": args.width}, size=args.size, train_split="train",
                         val_split="val", loop=loop)
    resume = (args.out / CHECKPOINT_DIR / LAST).exists()
    t0 = time.perf_counter()
    art = train(args.data, args.out, config, resume=resume, progress=not args.no_progress)
    session_s = time.perf_counter() - t0
    history = io.read_json(args.out / "history.json")

    runner = runtime.load(art, device="cpu", threads=args.threads)
    val = find_samples(args.data, "val")
    t1 = time.perf_counter()
    result = evaluate(runner, val, progress=not args.no_progress)
    eval_s = time.perf_counter() - t1
    model = load_model(art.path).module
    record = {
        "command": command(__file__, argv),
        "model": {"arch": "unet", "width": args.width, "params": art.manifest.params,
                  "macs_at_input_size": art.manifest.macs, "macs_at_320": count_macs(model, (320, 320))},
        "input_size": list(art.spec.input_size),
        "train": {"data": "ecssd/splits/train.txt", "images": len(find_samples(args.data, "train")),
                  "epochs": args.epochs, "batch": args.batch, "lr": args.lr, "ema": args.ema,
                  "precision": "bf16 autocast, channels_last", "threads": args.threads,
                  "wall_time_s": round(history[-1]["elapsed_s"], 1), "this_session_s": round(session_s, 1),
                  "best_epoch": art.manifest.lineage[-1].params["best_epoch"] + 1},
        "val": {"data": "ecssd/splits/val.txt", "images": result.count, "resolution": "each image's own",
                "metrics": result.metrics, "eval_wall_time_s": round(eval_s, 1),
                "worst_iou": [{"name": r["name"], "iou": round(r["iou"], 4)} for r in result.worst(5)]},
        "history": history,
        "machine": environment(torch_threads=True),
        "artifact_sha256": art.sha256,
    }
    io.write_json(args.results, record)
    print(json.dumps({k: record[k] for k in ("model", "input_size")}, indent=1))
    print(json.dumps(result.metrics, indent=1))
    return record


if __name__ == "__main__":
    main()
