"""``train``: the front function behind ``edgecut train``: a folder of images and masks in,
an artifact out (the run directory itself, with its checkpoints beside the model)."""

from __future__ import annotations

import os
from contextlib import nullcontext
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from edgecut import io
from edgecut.artifact import Artifact, ModelSpec, Step, load_artifact
from edgecut.data.folder import Sample, check_pairs, find_samples
from edgecut.data.transforms import SegmentationDataset
from edgecut.env import native_bf16, resolve_device
from edgecut.models.registry import create_model
from edgecut.models.store import save_model
from edgecut.training.config import CACHE_MAX_IMAGES, TrainConfig
from edgecut.training.distributed import on_main_process
from edgecut.training.loop import Callback, Task, fit, seed_everything




def default_splits(root: Path) -> tuple[str | None, str | None]:
    """Use root/splits/train.txt and val.txt when they exist."""
    def has(name: str) -> bool:  # present and not empty
        p = root / "splits" / f"{name}.txt"
        return p.is_file() and bool(p.read_text(encoding="utf-8").strip())

    return ("train" if has("train") else None), ("val" if has("val") else None)


def checkpoint_bytes(model: nn.Module) -> int:
    """About what a training run writes for ``model``: the shipped and best weights and a checkpoint
    with AdamW's two moments (six copies of the parameters in float32)."""
    return 6 * 4 * sum(p.numel() for p in model.parameters())


def keep_in_memory(asked: bool | None, images: int) -> bool:
    """Whether to cache decoded images: as ``asked``, else when there are at most CACHE_MAX_IMAGES."""
    return images <= CACHE_MAX_IMAGES if asked is None else asked


@dataclass(frozen=True)
class TrainingData:
    """A folder data set as a training stage uses it: its splits resolved and their samples found."""

    root: Path
    train_split: str | None
    val_split: str | None
    train: list[Sample]
    val: list[Sample] | None  # None: no validation split

    @property
    def val_name(self) -> str | None:
        """How the validation images are named in an artifact's metrics (``root:split``)."""
        return f"{self.root}:{self.val_split}" if self.val_split else None


def training_data(root: str | os.PathLike, train_split: str | None = None, val_split: str | None = None,
                  progress: bool = True) -> TrainingData:
    """``root``'s splits (default: splits/train.txt and val.txt when present) and their samples, every
    pair checked before training starts (:func:`~edgecut.data.folder.check_pairs`)."""
    root = Path(root)
    auto_train, auto_val = default_splits(root)
    train_split, val_split = train_split or auto_train, val_split or auto_val
    ds = TrainingData(root, train_split, val_split, find_samples(root, train_split),
                      find_samples(root, val_split) if val_split else None)
    check_pairs([*ds.train, *(ds.val or [])], progress=progress)
    return ds


def validator(samples: Sequence[Sample], spec: ModelSpec, device: torch.device, batch_size: int = 8,
              workers: int = 0, cache: bool = True, amp: bool = False):
    """A function model -> val metrics at the model's input size (IoU, MAE, S-measure, ...), in fp32, as the
    artifact will run (``amp=True``: under bf16 autocast on a CPU with native bf16). bf16 scores were not the
    model's: U^2-Netp pruned and fine-tuned under bf16 autocast scored IoU 0.40 in bf16 and 0.06 in fp32."""
    from edgecut.metrics import SegMetrics

    use_bf16 = device.type == "cpu" and amp and native_bf16()
    ds = SegmentationDataset(samples, spec, train=False, cache=cache)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)

    @torch.no_grad()
    def validate(model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        acc = SegMetrics()
        for batch in loader:
            x = batch["image"].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext():  # or the caller's
                logits = model(x)
            prob = spec.to_probability(logits.float().cpu().numpy())
            for p, m in zip(prob, batch["mask"][:, 0].numpy()):
                acc.update(p, m)
        model.train(was_training)
        return {k: float(v) for k, v in acc.results().items() if k != "count"}

    return validate


@io.writes_out
def train(data: str | os.PathLike, out: str | os.PathLike, config: TrainConfig = TrainConfig(), *,
          resume: bool = False, progress: bool = True, callbacks: Sequence[Callback] = ()) -> Artifact:
    """Train ``config.arch`` on the folder data set ``data``; write the artifact to ``out``.

    ``out`` is the run folder: its checkpoints stay beside the model, and ``resume=True``
    continues an interrupted run exactly where it stopped.
    """
    config.validate()
    out, loop = Path(out), config.loop
    if config.threads:
        torch.set_num_threads(config.threads)
    ds = training_data(data, config.train_split, config.val_split, progress)
    cache = keep_in_memory(config.cache, len(ds.train))
    arch_d = {"name": config.arch, "kwargs": dict(config.arch_kwargs)}
    seed_everything(loop.seed)  # the initial weights are part of the run
    model = create_model(config.arch, **arch_d["kwargs"])
    spec = model.default_spec.with_size(config.size)
    io.check_output(out, need_bytes=checkpoint_bytes(model))
    device = resolve_device(loop.device)
    validate = validator(ds.val, spec, device, loop.batch_size, cache=cache) if ds.val else None
    train_set = SegmentationDataset(ds.train, spec, train=True, seed=loop.seed, cache=cache)
    result = fit(model, train_set, loop, out, task=Task(validate=validate), resume=resume, progress=progress,
                 callbacks=callbacks)

    def write() -> Artifact:
        io.write_json(out / "history.json", result.state.history)
        step = Step(step="train", params={
            "data": str(ds.root), "train_split": ds.train_split, "val_split": ds.val_split,
            "train_images": len(ds.train), "size": config.size, "arch": arch_d, **asdict(loop),
            "best_epoch": result.state.best_epoch, "wall_time_s": round(result.wall_time_s, 1),
            "precision_used": result.precision,
        })
        metrics = {"val": result.best_metrics, "val_data": ds.val_name} if result.best_metrics else {}
        return save_model(out, result.model.float().to("cpu", memory_format=torch.contiguous_format), arch_d, spec,
                          lineage=[step], metrics=metrics)

    return on_main_process(write, lambda: load_artifact(out))  # under torchrun rank 0 writes
