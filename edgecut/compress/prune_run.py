"""The pruning workflow behind ``edgecut prune``: an artifact in, a pruned artifact out.

Each of the K steps prunes, then fine-tunes with the one training loop in ``out/steps/k``;
a finished step is itself an artifact, so an interrupted run resumes from the last finished
step (and from the step's own training checkpoint). Params, MACs, torch CPU latency and,
with data, validation metrics are measured before and after: fewer MACs is not the same as
faster, so both are reported.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgecut import io
from edgecut.artifact import Artifact, ModelSpec, Step
from edgecut.bench.latency import LatencyConfig, measure
from edgecut.compress.prune import (PruneConfig, PruneStats, plan_from_sensitivity, prunable_groups, prune,
                                    recalibrate_batchnorm, sensitivity, write_sensitivity)
from edgecut.data.folder import Sample, find_samples, subset
from edgecut.data.transforms import SegmentationDataset
from edgecut.errors import InputError
from edgecut.models.channels import channel_config
from edgecut.models.profile import count_macs
from edgecut.models.store import LoadedModel, build, load_model, save_model
from edgecut.train.loop import TrainConfig, fit
from edgecut.train.run import CACHE_MAX_IMAGES, default_splits, validator

STATE_FILE = "prune_state.json"
REPORT_FILE = "prune_report.json"
STEPS_DIR = "steps"
LATENCY = LatencyConfig(warmup_s=0.5, warmup_min=3, min_time_s=2.0, min_iters=10)


@dataclass(frozen=True)
class FinetuneConfig:
    data: str | None = None  # folder data set; None: prune without fine-tuning
    epochs: int = 0  # fine-tuning epochs after each pruning step
    train_split: str | None = None  # default: splits/train.txt when present
    val_split: str | None = None  # default: splits/val.txt when present
    bn_batches: int = 0  # after each pruning step, re-estimate batch-norm statistics on this many training batches


def example_input(spec: ModelSpec) -> torch.Tensor:
    """A small input that traces the graph: 64 px or two size-divisor blocks, whichever is larger."""
    side = max(64, 2 * spec.size_divisor)
    side = -(-side // spec.size_divisor) * spec.size_divisor
    return torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0))


def torch_latency(model: nn.Module, spec: ModelSpec, threads: int | None = None) -> dict[str, Any]:
    """Batch-1 fp32 eager torch CPU latency at the spec's input size (a copy in eval mode)."""
    from edgecut.runtime.torch_runner import TorchRunner

    runner = TorchRunner(copy.deepcopy(model).float().to(memory_format=torch.contiguous_format), spec,
                         device="cpu", threads=threads)
    x = np.random.default_rng(0).standard_normal((1, 3, *spec.input_size)).astype(np.float32)
    stats = measure(lambda: runner(x), LATENCY)
    return {**stats.to_json(), "threads": torch.get_num_threads(), "batch": 1, "size": list(spec.input_size)}


def _loaded(source: str | os.PathLike) -> LoadedModel:
    loaded = load_model(source)
    if loaded.arch is None or loaded.artifact is None:
        raise InputError(source, "pruning needs a torch artifact with its architecture (TorchScript and bare "
                         "weights are not enough)", "train or load it with edgecut first, then prune the artifact")
    return loaded


def prune_artifact(source: str | os.PathLike, out: str | os.PathLike, config: PruneConfig, *,
                   finetune: FinetuneConfig = FinetuneConfig(), train_config: TrainConfig = TrainConfig(),
                   resume: bool = False, progress: bool = True, threads: int | None = None,
                   latency: bool = True) -> tuple[Artifact, dict[str, Any]]:
    """Prune the torch artifact ``source`` into ``out``; returns the artifact and the report."""
    config.validate()
    out = Path(out)
    if threads:
        torch.set_num_threads(threads)
    parent = _loaded(source)
    spec = parent.spec
    settings = {"config": io.jsonable(asdict(config)), "finetune": asdict(finetune), "parent": parent.artifact.sha256,
                "train": train_config.resume_key() if finetune.epochs else None}
    state_path = out / STATE_FILE
    if resume:
        if not state_path.exists():
            raise InputError(state_path, "nothing to resume", "run without --resume to start pruning")
        saved = io.read_json(state_path)
        if saved != io.jsonable(settings):
            raise InputError(state_path, "the pruning run in this folder used other settings or another model",
                             "resume with the same options, or choose a new --out")
    elif (out / "edgecut.json").exists() or state_path.exists():
        raise InputError(out, "already holds a pruning run", "pass --resume to continue it, or choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    io.write_json(state_path, settings)

    train_set, validate, grad_batches, val_data = _data(finetune, spec, train_config, config.importance == "taylor")
    module = parent.module
    before = {**asdict(PruneStats.of(module, spec.input_size))}
    if latency:
        before["latency"] = torch_latency(module, spec, threads)
    if validate is not None:
        before["val"] = validate(module)

    start_step, original = 0, prunable_groups(module, example_input(spec), config.ignore)
    for k in range(config.steps, 0, -1):  # resume from the last finished step
        if (out / STEPS_DIR / str(k) / "edgecut.json").exists():
            module, start_step = load_model(out / STEPS_DIR / str(k)).module, k
            break
    reference = build({"name": parent.arch["name"], "kwargs": parent.arch.get("kwargs", {})})

    def arch_of(model: nn.Module) -> dict[str, Any]:
        return {"name": parent.arch["name"], "kwargs": parent.arch.get("kwargs", {}),
                "channels": channel_config(model, reference)}

    steps_log: dict[int, dict[str, Any]] = {}

    def finetune_step(k: int, model: nn.Module) -> None:
        if train_set is None:
            return
        step_dir = out / STEPS_DIR / str(k)
        log = steps_log.setdefault(k, {"macs": count_macs(model, spec.input_size)})
        if finetune.bn_batches:
            log["bn_recalibration_images"] = recalibrate_batchnorm(
                model, augmented_images(train_set, train_config, finetune.bn_batches, k))
        if validate is not None:  # what pruning alone costs, before fine-tuning wins it back
            log["val_before_finetune"] = validate(model)
        if not finetune.epochs:
            return
        cfg = dataclasses.replace(train_config, epochs=finetune.epochs)
        result = fit(model, train_set, cfg, step_dir, validate=validate, progress=progress,
                     resume=(step_dir / "checkpoints" / "last.pt").exists())
        model.load_state_dict(result.model.state_dict())  # the shipped (best, EMA when on) weights
        log["val_after_finetune"] = result.best_metrics
        model.float().to("cpu", memory_format=torch.contiguous_format).eval()
        save_model(step_dir, model, arch_of(model), spec,
                   metrics={"val": result.best_metrics} if result.best_metrics else {})

    module = prune(module, example_input(spec), config, macs_size=spec.input_size, grad_batches=grad_batches,
                   on_step=finetune_step, start_step=start_step, original=original)
    module.float().to("cpu", memory_format=torch.contiguous_format).eval()

    after = {**asdict(PruneStats.of(module, spec.input_size))}
    if validate is not None:
        after["val"] = validate(module)
    step = Step(step="prune", parent_sha256=parent.artifact.sha256, params={
        **settings["config"], "finetune": asdict(finetune), "train": settings["train"],
        "params_before": before["params"], "macs_before": before["macs"],
    })
    metrics = {"val": after["val"], "val_data": val_data} if "val" in after else {}
    art = save_model(out, module, arch_of(module), spec, lineage=[*parent.artifact.manifest.lineage, step],
                     metrics=metrics)
    if latency:  # measured on the saved model as a fresh load would give it
        after["latency"] = torch_latency(load_model(out).module, spec, threads)
    report = {"parent": str(source), "artifact": str(out), "before": before, "after": after,
              "macs_reduction": before["macs"] / after["macs"], "params_reduction": before["params"] / after["params"],
              "steps": {str(k): v for k, v in sorted(steps_log.items())}}
    if latency:
        report["speedup_p50"] = before["latency"]["p50_ms"] / after["latency"]["p50_ms"]
    io.write_json(out / REPORT_FILE, report)
    return art, report


def sensitivity_artifact(source: str | os.PathLike, out: str | os.PathLike, data: str | os.PathLike, *,
                         ratios: tuple[float, ...] = (0.25, 0.5, 0.75), importance: str = "l2",
                         round_to: int | None = None, ignore: tuple[str, ...] = (), split: str | None = None,
                         images: int = 100, metric: str = "iou", max_drop: float | None = None,
                         progress: bool = True, threads: int | None = None) -> dict[str, Any]:
    """Sensitivity of each prunable group of ``source``, measured on ``images`` held-out images.

    The images come from the training split by default (ECSSD: tune on train, report on val),
    picked reproducibly. With ``max_drop`` a per-layer plan is written as well.
    """
    if threads:
        torch.set_num_threads(threads)
    parent = _loaded(source)
    spec = parent.spec
    data = Path(data)
    split = split or default_splits(data)[0]
    samples = subset(find_samples(data, split), images)
    evaluate_all = validator(samples, spec, torch.device("cpu"))

    def evaluate(model: nn.Module) -> float:
        return evaluate_all(model)[metric]

    grad_batches = _grad_batches(samples, spec) if importance == "taylor" else []
    base, rows = sensitivity(parent.module, example_input(spec), evaluate, ratios=ratios, importance=importance,
                             round_to=round_to, ignore=ignore, macs_size=spec.input_size,
                             grad_batches=grad_batches, progress=progress)
    plan = plan_from_sensitivity(rows, max_drop) if max_drop is not None else None
    files = write_sensitivity(out, base, rows, metric, plan, max_drop)
    return {"baseline": base, "rows": rows, "plan": plan, "files": files, "images": len(samples),
            "data": f"{data}:{split}"}


def _data(finetune: FinetuneConfig, spec: ModelSpec, train_config: TrainConfig, need_grads: bool):
    if finetune.data is None:
        if finetune.epochs or finetune.bn_batches:
            raise InputError(None, "fine-tuning and batch-norm recalibration need data",
                             "pass --data DIR with --finetune-epochs or --recalibrate-bn")
        return None, None, [], None
    root = Path(finetune.data)
    auto_train, auto_val = default_splits(root)
    train_split, val_split = finetune.train_split or auto_train, finetune.val_split or auto_val
    train_samples = find_samples(root, train_split)
    cache = len(train_samples) <= CACHE_MAX_IMAGES
    train_set = SegmentationDataset(train_samples, spec, train=True, seed=train_config.seed, cache=cache)
    validate = None
    if val_split:
        validate = validator(find_samples(root, val_split), spec, torch.device("cpu"), train_config.batch_size,
                             cache=cache)
    grads = _grad_batches(train_samples, spec) if need_grads else []
    return train_set, validate, grads, f"{root}:{val_split}" if val_split else None


def augmented_images(train_set: SegmentationDataset, config: TrainConfig, batches: int, step: int):
    """The first ``batches`` training batches of a reproducible shuffle, as fine-tuning sees them."""
    from edgecut.data.transforms import EpochBatchSampler

    sampler = EpochBatchSampler(len(train_set), config.batch_size, epoch=10_000 + step, seed=config.seed)
    for b, keys in enumerate(sampler):
        if b == batches:
            return
        yield torch.stack([train_set[key]["image"] for key in keys])


def _grad_batches(samples: list[Sample], spec: ModelSpec, count: int = 32, batch: int = 8):
    """A few un-augmented (image, mask) batches for gradient-based importance."""
    ds = SegmentationDataset(subset(samples, count), spec, train=False)
    items = [ds[i] for i in range(len(ds))]
    return [(torch.stack([it["image"] for it in items[i:i + batch]]),
             torch.stack([it["mask"] for it in items[i:i + batch]])) for i in range(0, len(items), batch)]
