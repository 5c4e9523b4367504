"""The pruning workflow behind ``edgecut prune``: an artifact in, a pruned artifact out.

Each of the K steps prunes, then fine-tunes with the one training loop in ``out/steps/k``;
a finished step is itself an artifact, so an interrupted run resumes from the last finished
step (and from the step's own training checkpoint). Params, MACs, torch CPU latency and,
with data, validation metrics are measured before and after: fewer MACs is not the same as
faster, so both are reported.
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgecut import io
from edgecut.artifact import Artifact, ModelSpec, Step, is_artifact, load_artifact
from edgecut.compress.config import PruneConfig, SensitivityConfig
from edgecut.compress.pruning import (PruneStats, plan_from_sensitivity, prunable_groups, prune_model,
                                      recalibrate_batchnorm, sensitivity, write_sensitivity)
from edgecut.data.folder import Sample, find_samples, subset
from edgecut.data.transforms import SegmentationDataset
from edgecut.errors import InputError
from edgecut.models.channels import channel_config
from edgecut.models.profile import count_macs
from edgecut.models.store import LoadedModel, build, load_model, save_model
from edgecut.runtime.timing import LatencyConfig, measure
from edgecut.training.config import LoopConfig
from edgecut.training.loop import Task, fit
from edgecut.training.train import default_splits, keep_in_memory, training_data, validator

STATE_FILE = "prune_state.json"
REPORT_FILE = "prune_report.json"
STEPS_DIR = "steps"
LATENCY = LatencyConfig(warmup_s=0.5, warmup_min=3, min_time_s=2.0, min_iters=10)


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


def _loaded(source: Artifact | str | os.PathLike, config: PruneConfig) -> tuple[LoadedModel, list[Step]]:
    """The torch model to prune, and the lineage steps that made it from ``source`` (an ONNX model's conversion)."""
    art = source if isinstance(source, Artifact) else load_artifact(source) \
        if is_artifact(source) or not Path(source).is_file() else None  # a missing path: load_artifact says so
    if art is not None and art.manifest.format == "classical":
        return load_model(art), []  # its one error: a baseline, not a network
    if art is not None and art.manifest.format == "onnx":  # its layers from a registered architecture, checked
        from edgecut.compress.config import ConvertConfig
        from edgecut.compress.to_torch import convert_step, to_torch

        split = config.val_split or (default_splits(Path(config.data))[1] if config.data else None)
        converted = to_torch(art, ConvertConfig(data=config.data, split=split))
        return LoadedModel(converted.module, converted.spec, converted.arch, art), [convert_step(art, converted)]
    if art is None or art.manifest.format != "torch":
        what = "this file" if art is None else f"this {art.manifest.format} artifact"
        raise InputError(art.path if art is not None else source,
                         f"{what} has no module structure to prune (a graph, not layers edgecut can resize)",
                         "import its state dict with its class (edgecut import model.pth --class file.py:Class) "
                         "and prune that artifact")
    return load_model(art), []


@io.writes_out
def prune(source: Artifact | str | os.PathLike, out: str | os.PathLike, config: PruneConfig = PruneConfig(), *,
          resume: bool = False, progress: bool = True) -> Artifact:
    """Prune the torch artifact ``source`` into ``out`` (K steps of prune, then fine-tune on
    ``config.data``); the report (params, MACs, latency and val metrics before and after) is
    ``out/prune_report.json``. ``resume=True`` continues from the last finished step."""
    config.validate()
    out = Path(out)
    if config.threads:
        torch.set_num_threads(config.threads)
    parent, made = _loaded(source, config)
    spec = parent.spec
    settings = _settings(config, parent.artifact.sha256)
    _claim(out, settings, resume)
    train_set, validate, grad_batches, val_data = _data(config, spec, parent if config.kd else None, progress)
    module = parent.module
    before = _measured(module, spec, config, validate)
    start_step, original = 0, prunable_groups(module, example_input(spec), config.ignore)
    for k in range(config.steps, 0, -1):  # resume from the last finished step
        if (out / STEPS_DIR / str(k) / "edgecut.json").exists():
            module, start_step = load_model(out / STEPS_DIR / str(k)).module, k
            break
    unpruned = {k: v for k, v in parent.arch.items() if k != "channels"}  # registry name or class, output
    reference = build(unpruned)

    def arch_of(model: nn.Module) -> dict[str, Any]:
        return {**unpruned, "channels": channel_config(model, reference)}

    steps_log: dict[int, dict[str, Any]] = {}
    objective = _kd_objective(parent, spec, config) if config.kd and train_set is not None else None
    task = Task(validate, objective, fine_tune=True)  # auto's lower precision only if the pruned model keeps its score
    finetune = _Finetune(config, spec, train_set, task, out, steps_log, arch_of, progress)
    module = prune_model(module, example_input(spec), config, macs_size=spec.input_size, grad_batches=grad_batches,
                         on_step=finetune, start_step=start_step, original=original)
    module.float().to("cpu", memory_format=torch.contiguous_format).eval()
    after = _measured(module, spec, replace(config, latency=False), validate)
    step = Step(step="prune", parent_sha256=parent.artifact.sha256, params={
        **settings["config"], "finetune": settings["finetune"], "train": settings["train"],
        "params_before": before["params"], "macs_before": before["macs"],
        # what fine-tuning trained in (the first step's choice; report.json has every step's)
        "precision_used": next((s["precision_used"] for _, s in sorted(steps_log.items()) if "precision_used" in s),
                               None),
    })
    metrics = {"val": after["val"], "val_data": val_data} if "val" in after else {}
    art = save_model(out, module, arch_of(module), spec, lineage=[*parent.artifact.manifest.lineage, *made, step],
                     metrics=metrics)
    if config.latency:  # measured on the saved model as a fresh load would give it
        after["latency"] = torch_latency(load_model(out).module, spec, config.threads)
    report = {"parent": str(parent.artifact.path), "artifact": str(out), "before": before, "after": after,
              "macs_reduction": before["macs"] / after["macs"], "params_reduction": before["params"] / after["params"],
              "steps": {str(k): v for k, v in sorted(steps_log.items())}}
    if config.latency:
        report["speedup_p50"] = before["latency"]["p50_ms"] / after["latency"]["p50_ms"]
    io.write_json(out / REPORT_FILE, report)
    return art


def _settings(config: PruneConfig, parent_sha256: str) -> dict[str, Any]:
    """What a resumed run must share with the run it continues (``prune_state.json``)."""
    finetune = {"data": config.data, "epochs": config.loop.epochs, "train_split": config.train_split,
                "val_split": config.val_split, "bn_batches": config.bn_batches, "kd": config.kd}
    return {"config": io.jsonable(config.method()), "finetune": finetune, "parent": parent_sha256,
            "train": config.loop.resume_key() if config.loop.epochs else None}


def _claim(out: Path, settings: dict[str, Any], resume: bool) -> None:
    """Make ``out`` this run's folder: a new one, or (resume) one whose state matches ``settings``."""
    state_path = out / STATE_FILE
    if resume:
        if not state_path.exists():
            raise InputError(state_path, "nothing to resume", "run without --resume to start pruning")
        if io.read_json(state_path) != io.jsonable(settings):
            raise InputError(state_path, "the pruning run in this folder used other settings or another model",
                             "resume with the same options, or choose a new --out")
    elif (out / "edgecut.json").exists() or state_path.exists():
        raise InputError(out, "already holds a pruning run", "pass --resume to continue it, or choose a new --out")
    io.make_dirs(out)
    io.write_json(state_path, settings)


def _measured(module: nn.Module, spec: ModelSpec, config: PruneConfig, validate) -> dict[str, Any]:
    """Params and MACs of ``module``, with its torch CPU latency and val metrics when asked for."""
    stats = asdict(PruneStats.of(module, spec.input_size))
    if config.latency:
        stats["latency"] = torch_latency(module, spec, config.threads)
    if validate is not None:
        stats["val"] = validate(module)
    return stats


class _Finetune:
    """What runs after pruning step k: batch-norm recalibration and fine-tuning in ``out/steps/k``,
    which then holds the step's artifact (a resumed run starts from the last one)."""

    def __init__(self, config: PruneConfig, spec: ModelSpec, train_set, task: Task, out: Path,
                 log: dict[int, dict[str, Any]], arch_of, progress: bool) -> None:
        self.config, self.spec, self.train_set, self.task = config, spec, train_set, task
        self.out, self.log, self.arch_of, self.progress = out, log, arch_of, progress

    def __call__(self, k: int, model: nn.Module) -> None:
        config = self.config
        if self.train_set is None:
            return
        step_dir = self.out / STEPS_DIR / str(k)
        log = self.log.setdefault(k, {"macs": count_macs(model, self.spec.input_size)})
        if config.bn_batches:
            log["bn_recalibration_images"] = recalibrate_batchnorm(
                model, augmented_images(self.train_set, config.loop, config.bn_batches, k))
        if self.task.validate is not None:  # what pruning alone costs, before fine-tuning wins it back
            log["val_before_finetune"] = self.task.validate(model)
        if not config.loop.epochs:
            return
        result = fit(model, self.train_set, config.loop, step_dir, task=self.task,
                     progress=self.progress, resume=(step_dir / "checkpoints" / "last.pt").exists())
        model.load_state_dict(result.model.state_dict())  # the shipped (best, EMA when on) weights
        log["val_after_finetune"] = result.best_metrics
        log["precision_used"] = result.precision
        model.float().to("cpu", memory_format=torch.contiguous_format).eval()
        save_model(step_dir, model, self.arch_of(model), self.spec,
                   metrics={"val": result.best_metrics} if result.best_metrics else {})


def sensitivity_artifact(source: str | os.PathLike, out: str | os.PathLike, data: str | os.PathLike,
                         config: SensitivityConfig = SensitivityConfig(), *, progress: bool = True,
                         threads: int | None = None) -> dict[str, Any]:
    """Sensitivity of each prunable group of ``source``, measured on ``config.images`` held-out images of ``data``.

    The images come from the training split by default (ECSSD: tune on train, report on val),
    picked reproducibly. With ``config.max_drop`` a per-layer plan is written as well.
    """
    if threads:
        torch.set_num_threads(threads)
    parent, _ = _loaded(source, PruneConfig(data=str(data), val_split=config.split))
    spec = parent.spec
    data = Path(data)
    split = config.split or default_splits(data)[0]
    samples = subset(find_samples(data, split), config.images)
    evaluate_all = validator(samples, spec, torch.device("cpu"))

    def evaluate(model: nn.Module) -> float:
        return evaluate_all(model)[config.metric]

    grad_batches = _grad_batches(samples, spec) if config.importance == "taylor" else []
    base, rows = sensitivity(parent.module, example_input(spec), evaluate, config, macs_size=spec.input_size,
                             grad_batches=grad_batches, progress=progress)
    max_drop = config.max_drop
    plan = plan_from_sensitivity(rows, max_drop) if max_drop is not None else None
    files = write_sensitivity(out, base, rows, config.metric, plan, max_drop)
    return {"baseline": base, "rows": rows, "plan": plan, "files": files, "images": len(samples),
            "data": f"{data}:{split}"}


def _teacher(parent: LoadedModel):
    """The model before pruning as a distillation teacher: the ONNX file it came from (whose answers the
    store may hold already), else a frozen copy of its module."""
    from edgecut.compress.distill import Teacher, load_teacher

    if parent.artifact.manifest.format != "torch":
        return load_teacher(parent.artifact)
    module = copy.deepcopy(parent.module).float().eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return Teacher(module, parent.spec, str(parent.artifact.path), parent.artifact.sha256, parent.arch)


def _kd_objective(parent: LoadedModel, spec: ModelSpec, config: PruneConfig):
    """Fine-tuning that learns the model's own answers (KD) beside the masks."""
    from edgecut.compress.config import DistillConfig
    from edgecut.compress.distill import DistillObjective

    return DistillObjective([_teacher(parent)], spec, DistillConfig())


def _data(config: PruneConfig, spec: ModelSpec, teacher_of: LoadedModel | None = None, progress: bool = True):
    """(training set, validator, taylor gradient batches, val data name) of ``config.data`` (all None without it);
    with ``teacher_of`` every training image carries that model's stored answers (fine-tuning by KD)."""
    if config.data is None:
        return None, None, [], None
    ds = training_data(config.data, config.train_split, config.val_split)
    cache = keep_in_memory(None, len(ds.train))
    soft = None
    if teacher_of is not None:
        import edgecut.compress.soft_labels as soft_labels

        soft = soft_labels.fill([_teacher(teacher_of)], ds.train, progress=progress)
    train_set = SegmentationDataset(ds.train, spec, train=True, seed=config.loop.seed, cache=cache, soft_labels=soft)
    validate = validator(ds.val, spec, torch.device("cpu"), config.loop.batch_size, cache=cache) if ds.val else None
    grads = _grad_batches(ds.train, spec) if config.importance == "taylor" else []
    return train_set, validate, grads, ds.val_name


def augmented_images(train_set: SegmentationDataset, config: LoopConfig, batches: int, step: int):
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
