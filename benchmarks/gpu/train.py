"""The GPU run's training part: the full-size teacher at 320 px on ECSSD train (bf16 on CUDA, EMA, val each
epoch, the settings of benchmarks/teacher.py), as many epochs as fit its budget (a few steps are timed
first, with and without data-loader workers), then scored on ECSSD val at each image's own resolution."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from typing import Any

from .scheduler import Clock, Record, Run, error_row, row, skip_if_short


class _ProbeDone(Exception):
    pass


def train_config(run: Run, epochs: int, workers: int):
    from edgecut.training.config import LoopConfig, TrainConfig

    s = run.sizes
    loop = LoopConfig(epochs=epochs, batch_size=s.train_batch, lr=1e-3, ema_decay=0.998, precision="bf16", seed=0,
                      save_interval_s=120, workers=workers, device=run.device)
    return TrainConfig(arch=s.teacher["name"], arch_kwargs=s.teacher["kwargs"], size=s.size, train_split="train",
                       val_split="val", loop=loop)


def probe_steps(run: Run, workers: int) -> dict[str, Any]:
    """Seconds per training step (median over the steps after the first few) with ``workers`` loader processes."""
    import numpy as np

    from edgecut.training.train import train

    s, stamps = run.sizes, []
    out = run.work / "train" / f"probe-w{workers}"
    shutil.rmtree(out, ignore_errors=True)

    def stop(state) -> None:
        stamps.append(time.perf_counter())
        if len(stamps) >= s.probe_steps:
            raise _ProbeDone

    t0 = time.perf_counter()
    with contextlib.suppress(_ProbeDone):
        train(run.data, out, train_config(run, 1, workers), progress=False, callbacks=[stop])
    shutil.rmtree(out, ignore_errors=True)
    steps = np.diff(stamps[s.probe_skip - 1:]) if len(stamps) > s.probe_skip else np.diff(stamps)
    return {"workers": workers, "step_s": float(np.median(steps)) if len(steps) else math.nan,
            "steps_timed": int(len(steps)), "start_s": round(stamps[0] - t0, 2) if stamps else None}


def probe_val_and_checkpoint(run: Run) -> dict[str, float]:
    """One validation pass of a fresh model (decoding included: later epochs read a cache) and the
    write of a checkpoint-sized file (weights, EMA and both AdamW moments)."""
    import torch

    from edgecut.data.folder import find_samples
    from edgecut.models.store import build
    from edgecut.training.train import validator

    model = build(run.sizes.teacher).to(run.device, memory_format=torch.channels_last)
    spec = model.default_spec.with_size(run.sizes.size)
    validate = validator(find_samples(run.data, "val"), spec, torch.device(run.device), run.sizes.train_batch)
    t0 = time.perf_counter()
    validate(model)
    val_s = time.perf_counter() - t0
    state = model.state_dict()  # four distinct copies: torch.save writes a storage it sees twice only once
    payload = {k: {n: t.detach().clone() for n, t in state.items()} for k in ("model", "ema", "exp_avg", "exp_avg_sq")}
    path = run.work / "train" / "probe-checkpoint.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    torch.save(payload, path)
    ckpt_s = time.perf_counter() - t0
    path.unlink()
    return {"val_s": round(val_s, 2), "checkpoint_s": round(ckpt_s, 2)}


def choose_epochs(left_s: float, steps_per_epoch: int, step_s: float, val_s: float, checkpoint_s: float,
                  start_s: float, max_epochs: int, safety: float = 1.15) -> tuple[int, dict[str, float]]:
    """How many epochs fit ``left_s``: each costs its steps, a validation and a checkpoint (times
    ``safety``); the start (data check, loader) and the final evaluation (about two validations) are
    kept aside. 0 when not even one fits."""
    epoch_s = (steps_per_epoch * step_s + val_s + checkpoint_s) * safety
    reserve = start_s + 2 * val_s + 5.0
    epochs = int(max(0.0, left_s - reserve) // epoch_s) if epoch_s > 0 else 0
    return min(epochs, max_epochs), {"epoch_estimate_s": round(epoch_s, 2), "reserve_s": round(reserve, 2),
                                     "left_s": round(left_s, 1)}


def part_train(run: Run, rec: Record, clock: Clock) -> None:
    import torch

    from edgecut import io, runtime
    from edgecut.data.folder import find_samples
    from edgecut.errors import EdgecutError
    from edgecut.measure.accuracy import evaluate
    from edgecut.training.loop import CHECKPOINT_DIR, LAST
    from edgecut.training.train import train

    if run.data is None:
        rec.add(row("train", "skipped", reason=run.data_note))
        return
    s = run.sizes
    train_images = len(find_samples(run.data, "train"))
    steps_per_epoch = train_images // s.train_batch
    rec.data["settings"] = {
        "data": run.data_note, "train_images": train_images, "val_images": len(find_samples(run.data, "val")),
        "arch": s.teacher, "size": s.size, "batch": s.train_batch, "lr": 1e-3, "ema": 0.998,
        "precision": "bf16 autocast", "channels_last": True, "device": run.device, "steps_per_epoch": steps_per_epoch,
        "as": "benchmarks/teacher.py's settings (AdamW, warm-up then cosine, EMA 0.998, val each epoch)"}
    probes = []
    for workers in sorted({0, min(8, max(1, (os.cpu_count() or 2) // 2))}):
        try:
            probes.append(probe_steps(run, workers))
            rec.add(row(f"probe workers={workers}", "ok", **probes[-1]))
        except Exception as e:
            rec.add(error_row(f"probe workers={workers}", e))
    probes = [p for p in probes if math.isfinite(p["step_s"])]
    if not probes:
        return
    best = min(probes, key=lambda p: p["step_s"])
    cost = probe_val_and_checkpoint(run)
    rec.add(row("probe validation and checkpoint", "ok", **cost))
    epochs, estimate = choose_epochs(clock.left(), steps_per_epoch, best["step_s"], cost["val_s"], cost["checkpoint_s"],
                                     best["start_s"] or 0.0, s.max_epochs)
    rec.data["plan"] = {"workers": best["workers"], "epochs": epochs, **estimate}
    if epochs < 1:
        rec.add(row("train", "skipped", reason=f"not one epoch fits: {estimate}"))
        return
    out = run.work / "train" / "teacher"
    shutil.rmtree(out, ignore_errors=True)

    def deadline(state) -> None:  # the part's budget is a hard stop: fit checkpoints and raises
        if clock.left() < 0:
            raise KeyboardInterrupt

    t0 = time.perf_counter()
    try:
        art = train(run.data, out, train_config(run, epochs, best["workers"]), progress=False, callbacks=[deadline])
    except EdgecutError as e:
        last = out / CHECKPOINT_DIR / LAST
        history = torch.load(last, map_location="cpu", weights_only=True)["state"]["history"] if last.is_file() else []
        rec.add(row("train", "failed", reason=str(e)[:500], epochs_planned=epochs, history=history,
                    wall_s=round(time.perf_counter() - t0, 1)))
        return
    session_s = time.perf_counter() - t0
    history = io.read_json(out / "history.json")
    wall = history[-1]["elapsed_s"]
    rec.add(row("train", "ok", epochs=epochs, workers=best["workers"], wall_time_s=round(wall, 1),
                this_session_s=round(session_s, 1), epochs_per_s=round(epochs / wall, 4),
                steps_per_s=round(epochs * steps_per_epoch / wall, 2),
                train_images_per_s=round(epochs * steps_per_epoch * s.train_batch / wall, 1),
                best_epoch=art.manifest.lineage[-1].params["best_epoch"] + 1, history=history,
                val_at_input_size=art.manifest.metrics.get("val")))
    why = skip_if_short(clock, cost["val_s"] * 2)
    if why:
        rec.add(row("val", "skipped", reason=why))
        return
    val = find_samples(run.data, "val")
    t1 = time.perf_counter()
    result = evaluate(runtime.load(art, device=run.device), val, batch_size=8, progress=False)
    eval_s = time.perf_counter() - t1
    rec.add(row("val", "ok", images=result.count, resolution="each image's own (as --prepare stored it)",
                runner=f"torch fp32 on {run.device}", metrics=result.metrics, eval_wall_time_s=round(eval_s, 1),
                worst_iou=[{"name": r["name"], "iou": round(r["iou"], 4)} for r in result.worst(5)]))
