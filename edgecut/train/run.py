"""``train``: the front function behind ``edgecut train``: a folder of images and masks in,
an artifact out (the run directory itself, with its checkpoints beside the model)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from edgecut import io
from edgecut.artifact import Artifact, ModelSpec, Step, load_artifact
from edgecut.data.folder import Sample, find_samples
from edgecut.data.transforms import SegmentationDataset
from edgecut.models.registry import create_model
from edgecut.models.store import save_model
from edgecut.train.loop import Callback, TrainConfig, fit, on_main_process, resolve_device, seed_everything


CACHE_MAX_IMAGES = 2000  # decoded 400x300 photos: about 0.7 GB


def default_splits(root: Path) -> tuple[str | None, str | None]:
    """Use root/splits/train.txt and val.txt when they exist."""
    def has(name: str) -> bool:  # present and not empty
        p = root / "splits" / f"{name}.txt"
        return p.is_file() and bool(p.read_text(encoding="utf-8").strip())

    return ("train" if has("train") else None), ("val" if has("val") else None)


def validator(samples: Sequence[Sample], spec: ModelSpec, device: torch.device, batch_size: int = 8,
              workers: int = 0, cache: bool = True, amp: bool = True):
    """A function model -> val metrics at the model's input size (IoU, MAE, S-measure, ...);
    on CPU under bf16 autocast unless ``amp`` is False (fake-quantised models are scored in fp32)."""
    from edgecut.metrics import SegMetrics

    ds = SegmentationDataset(samples, spec, train=False, cache=cache)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)

    @torch.no_grad()
    def validate(model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        acc = SegMetrics()
        for batch in loader:
            x = batch["image"].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cpu"):
                logits = model(x)
            prob = spec.to_probability(logits.float().cpu().numpy())
            for p, m in zip(prob, batch["mask"][:, 0].numpy()):
                acc.update(p, m)
        model.train(was_training)
        return {k: float(v) for k, v in acc.results().items() if k != "count"}

    return validate


def train(data: str | os.PathLike, out: str | os.PathLike, *, arch: str = "unet",
          arch_kwargs: dict[str, Any] | None = None, size: int = 320, config: TrainConfig = TrainConfig(),
          train_split: str | None = None, val_split: str | None = None, resume: bool = False,
          progress: bool = True, callbacks: Sequence[Callback] = (), threads: int | None = None,
          cache: bool | None = None) -> Artifact:
    """Train ``arch`` on the folder data set ``data``; write the artifact to ``out``.

    Splits default to ``data/splits/train.txt`` and ``val.txt`` when present; without a val
    split there is no validation and the last weights are shipped. ``cache`` keeps decoded
    images in memory (default: when there are at most CACHE_MAX_IMAGES of them).
    """
    data, out = Path(data), Path(out)
    if threads:
        torch.set_num_threads(threads)
    auto_train, auto_val = default_splits(data)
    train_split, val_split = train_split or auto_train, val_split or auto_val
    train_samples = find_samples(data, train_split)
    if cache is None:
        cache = len(train_samples) <= CACHE_MAX_IMAGES
    arch_d = {"name": arch, "kwargs": dict(arch_kwargs or {})}
    seed_everything(config.seed)  # the initial weights are part of the run
    model = create_model(arch, **arch_d["kwargs"])
    spec = model.default_spec.with_size(size)
    device = resolve_device(config.device)
    validate = None
    if val_split:
        validate = validator(find_samples(data, val_split), spec, device, config.batch_size, cache=cache)
    train_set = SegmentationDataset(train_samples, spec, train=True, seed=config.seed, cache=cache)
    result = fit(model, train_set, config, out, validate=validate, resume=resume, progress=progress,
                 callbacks=callbacks)

    def write() -> Artifact:
        io.write_json(out / "history.json", result.state.history)
        step = Step(step="train", params={
            "data": str(data), "train_split": train_split, "val_split": val_split,
            "train_images": len(train_samples), "size": size, "arch": arch_d, **asdict(config),
            "best_epoch": result.state.best_epoch, "wall_time_s": round(result.wall_time_s, 1),
        })
        metrics = {"val": result.best_metrics, "val_data": f"{data}:{val_split}"} if result.best_metrics else {}
        return save_model(out, result.model.float().to("cpu", memory_format=torch.contiguous_format), arch_d, spec,
                          lineage=[step], metrics=metrics)

    return on_main_process(write, lambda: load_artifact(out))  # under torchrun rank 0 writes
