"""Learning curves of one MobileNetV3 student of rembg's U^2-Netp on 2 CPU cores (224 px, batch 8,
AdamW 3e-3, EMA 0.999): ``masks-ecssd`` on ECSSD train's masks alone (the control), ``distill-ecssd``
distilled from U^2-Netp's stored answers on the same 800 images, ``distill-extras`` the recipe's student
(those plus 1,528 images U^2-Netp labels), scored each epoch on ECSSD val at 224 and at the end at 320;
and an epoch's cost with the stored answers against masks alone (``epoch-time``, on a quiet machine).

    python benchmarks/u2netp_student.py train masks-ecssd distill-ecssd   # resumable; hours on 2 cores
    python benchmarks/u2netp_student.py epoch-time
    python benchmarks/u2netp_student.py collect --recipe-run runs/rembg-u2netp

Record: results/u2netp_student/u2netp_student.json; notes in benchmarks/README.md.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from common import ECSSD, RESULTS, RUNS, U2NETP, edgecut, machine, parser, write

STUDENT = ["--size", "224", "--batch", "8", "--lr", "0.003", "--ema", "0.999"]
EPOCHS = 20
RUN_ARGS = {
    "masks-ecssd": ["train", "--arch", "mobilenet_v3_large_relu_unet", "--data", ECSSD],
    "distill-ecssd": ["distill", "--teacher", RUNS / "u2netp", "--student", "mobilenet_v3_large_relu_unet",
                      "--data", ECSSD],
}
RESULT = RESULTS / "u2netp_student" / "u2netp_student.json"


def teacher() -> Path:
    """U^2-Netp imported as it is (fixed batch 1, 320 x 320), once."""
    out = RUNS / "u2netp"
    if not (out / "edgecut.json").is_file():
        edgecut("import", U2NETP, "--output-key", "1959", "--data", ECSSD, "--out", out)
    return out


def train(names: list[str], folder: Path, threads: int) -> None:
    teacher()
    for name in names:
        out = folder / name
        resume = ["--resume"] if (out / "checkpoints").is_dir() and not (out / "edgecut.json").is_file() else []
        if (out / "edgecut.json").is_file():
            print(f"{name}: done", flush=True)
            continue
        seconds = edgecut(*RUN_ARGS[name], "--out", out, *STUDENT, "--epochs", EPOCHS, "--threads", threads, *resume,
                          log=folder / f"{name}.log", env={"EDGECUT_PROGRESS_SECONDS": "120"})
        print(f"{name}: {seconds:.0f} s", flush=True)


def epoch_time(folder: Path, threads: int) -> dict[str, Any]:
    """One epoch each way, validation included, on the same student, size and batch (the answers stored)."""
    teacher()
    out = {}
    for name in ("masks-ecssd", "distill-ecssd"):
        run = folder / f"epoch-{name}"
        if run.exists():
            import shutil

            shutil.rmtree(run)
        out[name] = round(edgecut(*RUN_ARGS[name], "--out", run, *STUDENT, "--epochs", 1, "--threads", threads,
                                  "--precision", "fp32", log=folder / f"epoch-{name}.log"), 1)
    out["ratio"] = round(out["distill-ecssd"] / out["masks-ecssd"], 3)
    return {"seconds": out, "threads": threads, "precision": "fp32", "note": "one epoch of 800 ECSSD train images "
            "and the 200 val images scored, wall time of the whole command; U^2-Netp's answers already stored"}


def _score_at(art_dir: Path, side: int) -> dict[str, float]:
    from edgecut import runtime
    from edgecut.artifact import load_artifact
    from edgecut.data.folder import find_samples
    from edgecut.measure.accuracy import evaluate
    from edgecut.runtime.base import AtSize, spec_at

    art = load_artifact(art_dir)
    runner = AtSize(runtime.load(art), spec_at(art, (side, side)))
    result = evaluate(runner, find_samples(ECSSD, "val"), progress=False)
    return {k: round(float(result.metrics[k]), 4) for k in ("iou", "mae", "s_measure", "max_f") if k in result.metrics}


def teacher_on_train() -> dict[str, Any]:
    """How far U^2-Netp's stored answers are from ECSSD train's masks (at 320, threshold 0.5): what the KD
    term teaches where a mask says otherwise, and how much of each map is not near 0 or 1."""
    import cv2
    import numpy as np

    from edgecut.compress.distill import load_teacher
    from edgecut.compress.soft_labels import fill
    from edgecut.data.folder import find_samples
    from edgecut.metrics import iou

    samples = find_samples(ECSSD, "train")
    labels = fill([load_teacher(teacher())], samples, progress=False)  # stored already by the runs above
    ious, maes, unsure = [], [], []
    for i, sample in enumerate(samples):
        prob = 1 / (1 + np.exp(-np.asarray(labels(i)[0][0], dtype=np.float32)))
        mask = cv2.resize(cv2.imread(str(sample.mask), cv2.IMREAD_GRAYSCALE), prob.shape[::-1],
                          interpolation=cv2.INTER_AREA) / 255.0
        ious.append(iou(prob, mask))
        maes.append(float(np.abs(prob - mask).mean()))
        unsure.append(float(((prob > 0.1) & (prob < 0.9)).mean()))
    return {"images": len(samples), "iou": round(float(np.mean(ious)), 4), "mae": round(float(np.mean(maes)), 4),
            "pixels_between_0.1_and_0.9": round(float(np.mean(unsure)), 4)}


def curve(run: Path) -> dict[str, Any]:
    from edgecut.artifact import load_artifact

    history = json.loads((run / "history.json").read_text())
    step = load_artifact(run).manifest.lineage[-1].params
    per_epoch = int(step.get("train_images", 0)) + int(step.get("unlabeled_images", 0) or 0)
    return {"images_per_epoch": per_epoch, "best_epoch": step.get("best_epoch"), "wall_time_s": step.get("wall_time_s"),
            "precision": (step.get("precision_used") or {}).get("chosen"),
            "epochs": [{"epoch": h["epoch"] + 1, "images_seen": (h["epoch"] + 1) * per_epoch,
                        "val_iou_224": round(h["val_iou"], 4), "val_mae_224": round(h["val_mae"], 4),
                        "elapsed_s": round(h.get("elapsed_s", 0.0))} for h in history if "val_iou" in h]}


def collect(folder: Path, recipe_run: Path | None, epoch: dict[str, Any] | None) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(RESULT.read_text()) if RESULT.is_file() else {}
    runs = {name: folder / name for name in RUN_ARGS}
    if recipe_run is not None:
        runs["distill-extras"] = recipe_run / "student"
    record.setdefault("runs", {})
    for name, run in runs.items():
        if not (run / "edgecut.json").is_file():
            continue
        record["runs"][name] = {**curve(run), "ecssd_val_320": _score_at(run, 320)}
    side = [record["runs"].get(n) for n in ("masks-ecssd", "distill-ecssd")]
    if all(side):  # trained side by side, one thread each, the same epochs: their cost per epoch compares
        per_epoch = [r["wall_time_s"] / len(r["epochs"]) for r in side]
        record["epoch_cost_side_by_side"] = {"masks-ecssd_s": round(per_epoch[0], 1),
                                             "distill-ecssd_s": round(per_epoch[1], 1),
                                             "ratio": round(per_epoch[1] / per_epoch[0], 3),
                                             "note": "20 epochs each, trained at the same time on one thread "
                                                     "each, validation included; U^2-Netp's answers stored "
                                                     "before (the first pass is not in either)"}
    record["teacher_ecssd_val_320"] = _score_at(teacher(), 320)
    record["teacher_vs_ecssd_train_masks_320"] = teacher_on_train()
    if epoch is not None:
        record["epoch_time"] = epoch
    record["machine"] = machine()
    record["settings"] = {"student": "mobilenet_v3_large_relu_unet", "args": [str(a) for a in STUDENT],
                          "epochs": EPOCHS, "recorded": time.strftime("%Y-%m-%d")}
    return record


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__)
    ap.add_argument("what", choices=("train", "epoch-time", "collect"))
    ap.add_argument("runs", nargs="*", default=list(RUN_ARGS))
    ap.add_argument("--folder", type=Path, default=RUNS / "u2netp-student")
    ap.add_argument("--recipe-run", type=Path, default=None, help="the rembg-u2netp recipe's run folder")
    ap.add_argument("--threads", type=int, default=1, help="each run's torch threads (two runs side by side: 1)")
    ap.add_argument("--results", type=Path, default=RESULT)
    args = ap.parse_args(argv)
    if args.what == "train":
        train(args.runs, args.folder, args.threads)
    elif args.what == "epoch-time":
        record = json.loads(args.results.read_text()) if args.results.is_file() else {}
        record["epoch_time"] = epoch_time(args.folder, 2 if args.threads == 1 else args.threads)
        record["epoch_time"]["machine"] = machine()
        write(args.results, record)
    else:
        write(args.results, collect(args.folder, args.recipe_run, None))


if __name__ == "__main__":
    main()
