"""``distill``: teach a small student from one or more trained teachers.

Knowledge distillation (Hinton, Vinyals and Dean 2015; FitNets, Romero et al. 2015) for one-channel segmentation:

    loss = (1 - alpha) * gt + alpha * kd + feature_weight * feat + boundary_weight * boundary

``gt``: BCE + Dice against the mask (for ``unlabeled`` images, the teachers' own); ``kd``: pixel-wise KD at
temperature T (:func:`~edgecut.training.losses.kd_loss`) against the teachers' averaged probability; ``feat``:
optional feature matching at ``feature_taps`` through 1x1 adapters; ``boundary``: an optional edge-band BCE.
Teachers of any format; their answers are stored once (:mod:`edgecut.compress.soft_labels`) unless
``teacher_cache=False``. Under ``torchrun``, DistributedDataParallel. Details: docs/design-decisions.md#distill
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgecut import io
from edgecut.artifact import Artifact, ModelSpec, Step, is_artifact, load_artifact
from edgecut.data.folder import Sample, check_pairs, find_samples
from edgecut.data.transforms import SegmentationDataset
from edgecut.env import resolve_device
from edgecut.errors import EdgecutError, InputError, ModelError
from edgecut.models.registry import create_model
from edgecut.models.store import load_model, save_model
from edgecut.compress.config import DistillConfig
from edgecut.training.distributed import on_main_process, world
from edgecut.training.loop import Callback, Task, fit, seed_everything
from edgecut.training.losses import (as_logits, bce_dice_loss, boundary_loss, ensemble_probability, feature_loss,
                                     kd_loss)
from edgecut.training.train import checkpoint_bytes, keep_in_memory, training_data, validator


@dataclass
class Teacher:
    module: nn.Module  # frozen, eval mode
    spec: ModelSpec
    source: str
    sha256: str  # of its model file (the artifact manifest's entry)
    arch: dict[str, Any] | None


class RunnerTeacher(nn.Module):
    """A teacher of any format, through its Runner: forward is its output on the batch (no
    gradients, no features: output distillation only)."""

    def __init__(self, runner: Any, fmt: str) -> None:
        super().__init__()
        self.runner, self.format = runner, fmt

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.runner(x.detach().float().cpu().numpy())
        return torch.from_numpy(np.ascontiguousarray(out)).to(x.device)


def load_teacher(source: Artifact | str | os.PathLike, device: str = "cpu") -> Teacher:
    """A teacher frozen in eval mode: a torch, TorchScript or torch.export artifact (or TorchScript
    file) as its module; an ONNX, OpenVINO or TensorRT artifact through its Runner."""
    where = str(source.path if isinstance(source, Artifact) else source)
    art = source if isinstance(source, Artifact) else load_artifact(source) if is_artifact(source) else None
    if art is not None and art.manifest.format not in ("torch", "torchscript", "pt2"):
        from edgecut import runtime

        runner = runtime.load(art, device=device)
        return Teacher(RunnerTeacher(runner, art.manifest.format), art.spec, where, art.sha256, art.manifest.arch)
    loaded = load_model(source)
    sha = loaded.artifact.sha256 if loaded.artifact is not None else io.sha256_file(where)
    module = loaded.module.eval()
    for p in module.parameters():  # requires_grad_() on the module is refused by TorchScript
        p.requires_grad_(False)
    return Teacher(module, loaded.spec, where, sha, loaded.arch)


# ---------------------------------------------------------------------------- building blocks


def renormalise(x: torch.Tensor, src: ModelSpec, dst: ModelSpec) -> torch.Tensor:
    """A batch normalised as ``src`` says, re-normalised as ``dst`` expects (itself when they agree)."""
    if (src.scale, src.mean, src.std) == (dst.scale, dst.mean, dst.std):
        return x

    def col(v: Sequence[float]) -> torch.Tensor:
        return torch.tensor(v, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)

    pixels = (x.float() * col(src.std) + col(src.mean)) / src.scale  # back to 0..255 units
    return ((pixels * dst.scale - col(dst.mean)) / col(dst.std)).to(x.dtype)


def feature_taps(model: nn.Module, who: str) -> dict[int, str]:
    """The model's stride -> submodule map, or a clear error when it has none."""
    if isinstance(model, RunnerTeacher):
        raise ModelError(f"{who} is a {model.format} model run through its Runner: feature distillation needs its "
                         "layers as a torch module; drop --feature-kd (output distillation works with it)")
    taps = getattr(model, "feature_taps", None)
    if not taps:
        raise ModelError(f"{who} ({type(model).__name__}) declares no feature_taps, so feature distillation "
                         "cannot read its features; drop --feature-kd")
    return dict(taps)


@contextlib.contextmanager
def capture_features(model: nn.Module, taps: Mapping[int, str]) -> Iterator[dict[int, torch.Tensor]]:
    """Within the block, forward outputs of the tapped submodules land in the yielded dict
    (stride -> tensor); the hooks are removed afterwards."""
    feats: dict[int, torch.Tensor] = {}
    handles = []
    try:
        for stride, name in taps.items():
            try:
                sub = model.get_submodule(name)
            except AttributeError:
                raise ModelError(f"feature tap {name!r} (stride {stride}) is not a submodule of "
                                 f"{type(model).__name__}") from None
            handles.append(sub.register_forward_hook(
                lambda _m, _i, out, stride=stride: feats.__setitem__(stride, out)))
        yield feats
    finally:
        for h in handles:
            h.remove()


def feature_channels(model: nn.Module, taps: Mapping[int, str], input_size: tuple[int, int]) -> dict[int, int]:
    """Channels of each tapped feature, from one forward of a blank image in eval mode."""
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad(), capture_features(model, taps) as feats:
        model(torch.zeros(1, 3, *input_size, device=device))
    model.train(was_training)
    return {s: int(f.shape[1]) for s, f in feats.items()}


def make_adapters(student: nn.Module, teachers: Sequence[Teacher],
                  input_size: tuple[int, int]) -> tuple[nn.ModuleDict, list[list[int]]]:
    """1x1 conv adapters student channels -> teacher channels, one per (teacher, shared stride),
    keyed ``"{teacher}_{stride}"``; and the shared strides of each teacher."""
    s_taps = feature_taps(student, "the student")
    s_ch = feature_channels(student, s_taps, input_size)
    adapters, strides = nn.ModuleDict(), []
    for i, t in enumerate(teachers):
        t_taps = feature_taps(t.module, f"teacher {t.source}")
        shared = sorted(set(s_taps) & set(t_taps))
        if not shared:
            raise ModelError(f"teacher {t.source} taps strides {sorted(t_taps)} and the student {sorted(s_taps)}: "
                             "no stride in common for feature distillation; drop --feature-kd")
        t_ch = feature_channels(t.module, {s: t_taps[s] for s in shared}, _teacher_size(t, input_size))
        for s in shared:
            adapters[f"{i}_{s}"] = nn.Conv2d(s_ch[s], t_ch[s], kernel_size=1)
        strides.append(shared)
    return adapters, strides


def _teacher_size(teacher: Teacher, size: tuple[int, int]) -> tuple[int, int]:
    return size if teacher.spec.dynamic_size else tuple(teacher.spec.input_size)  # type: ignore[return-value]


# ---------------------------------------------------------------------------- the objective


class DistillObjective:
    """``objective(model, batch) -> (loss, logs)`` for the training loop (see module docstring)."""

    def __init__(self, teachers: Sequence[Teacher], spec: ModelSpec, config: DistillConfig,
                 adapters: nn.ModuleDict | None = None, strides: Sequence[Sequence[int]] = (),
                 student_taps: Mapping[int, str] | None = None) -> None:
        self.teachers, self.spec, self.config = list(teachers), spec, config
        self.adapters, self.strides = adapters, [list(s) for s in strides]
        self.student_taps = dict(student_taps or {})
        if config.feature_kd and (adapters is None or not self.student_taps):
            raise ValueError("feature_kd needs adapters, strides and student_taps (see make_adapters)")

    def teach(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[dict[int, torch.Tensor]]]:
        """Every teacher's logits at x's size and, with feature_kd, its features at the shared strides."""
        logits, feats = [], []
        with torch.no_grad():
            for i, t in enumerate(self.teachers):
                xt = renormalise(x, self.spec, t.spec)
                size = _teacher_size(t, tuple(x.shape[-2:]))  # type: ignore[arg-type]
                if size != tuple(x.shape[-2:]):
                    xt = F.interpolate(xt, size=size, mode="bilinear", align_corners=False)
                taps = {s: t.module.feature_taps[s] for s in self.strides[i]} if self.config.feature_kd else {}
                with capture_features(t.module, taps) as f:
                    out = as_logits(t.module(xt), t.spec)
                if out.shape[-2:] != x.shape[-2:]:
                    out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
                logits.append(out)
                feats.append(dict(f))
        return logits, feats

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        x = batch["image"]
        if "teacher" in batch:  # their stored answers, moved with the crop (soft_labels.py)
            stored = batch["teacher"].float()
            t_logits, t_feats = [stored[:, i:i + 1] for i in range(stored.shape[1])], []
        else:
            t_logits, t_feats = self.teach(x)
        student = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        with capture_features(student, self.student_taps if cfg.feature_kd else {}) as s_feats:
            logits = model(x)

        labeled = batch.get("labeled", torch.ones(x.shape[0], device=x.device)).float()
        teacher_p = ensemble_probability(t_logits)
        pseudo = (teacher_p > self.spec.threshold).float() if cfg.pseudo_label == "hard" else teacher_p
        target = torch.where(labeled.view(-1, 1, 1, 1) > 0, batch["mask"].float(), pseudo)
        weight = labeled + (1 - labeled) * cfg.unlabeled_weight

        gt = bce_dice_loss(logits, target, sample_weight=weight)
        kd = kd_loss(logits, ensemble_probability(t_logits, cfg.temperature), cfg.temperature)
        loss = (1 - cfg.alpha) * gt + cfg.alpha * kd
        logs = {"gt": float(gt.detach()), "kd": float(kd.detach())}
        if cfg.feature_kd:
            terms = [feature_loss(self.adapters[f"{i}_{s}"](s_feats[s]), t_feats[i][s])  # type: ignore[index]
                     for i in range(len(self.teachers)) for s in self.strides[i]]
            feat = torch.stack(terms).mean()
            loss = loss + cfg.feature_weight * feat
            logs["feat"] = float(feat.detach())
        if cfg.boundary_weight:
            edge = boundary_loss(logits, target, cfg.boundary_width, cfg.edge_gain, sample_weight=weight)
            loss = loss + cfg.boundary_weight * edge
            logs["edge"] = float(edge.detach())
        return loss, {"loss": float(loss.detach()), **logs}


# ---------------------------------------------------------------------------- front function


def _stored_answers(teachers: Sequence[Teacher], samples: Sequence[Sample], device: torch.device, progress: bool):
    """The teachers' stored answers for ``samples``, computed where missing (by rank 0 under torchrun)."""
    import edgecut.compress.soft_labels as soft_labels
    from edgecut.training.distributed import barrier

    rank, size = world()
    if size == 1:
        return soft_labels.fill(teachers, samples, device=device, progress=progress)
    if rank == 0:
        soft_labels.fill(teachers, samples, device=device, progress=progress)
    barrier()
    return soft_labels.fill(teachers, samples, device=device, progress=False)  # every map is there now: paths only


def _student(student: str | os.PathLike, kwargs: dict[str, Any] | None):
    """A registered architecture name (fresh weights) or a torch artifact (its weights: e.g. a
    pruned model to recover); (module, arch, spec, artifact or None)."""
    if is_artifact(student):
        if kwargs:
            raise EdgecutError(f"student {student} is an artifact: its options are fixed, drop the width options")
        loaded = load_model(student)
        if loaded.arch is None:
            raise ModelError(f"student {student}: a {loaded.artifact.manifest.format} artifact cannot be trained; "
                             "give a registered architecture or a torch artifact")
        return loaded.module.train(), loaded.arch, loaded.spec, loaded.artifact
    if os.sep in str(student) or Path(student).exists():
        raise InputError(student, "is no artifact directory (no edgecut.json)",
                         "give an artifact or a registered architecture name (edgecut info --list-archs)")
    arch = {"name": str(student), "kwargs": dict(kwargs or {})}
    module = create_model(arch["name"], **arch["kwargs"])
    return module, arch, module.default_spec, None


@io.writes_out
def distill(teachers: Sequence[Artifact | str | os.PathLike], data: str | os.PathLike | None, out: str | os.PathLike,
            config: DistillConfig = DistillConfig(), *, resume: bool = False, progress: bool = True,
            callbacks: Sequence[Callback] = ()) -> Artifact:
    """Distill ``teachers`` (artifact directories or TorchScript files) into ``config.student`` on
    the folder data set ``data`` and/or the images of ``config.unlabeled``; write the student
    artifact to ``out``.

    The val split of ``data`` picks the best epoch and gives the artifact its metrics. Every
    image of ``unlabeled`` (its masks, if any, are ignored) is labelled by the teachers.
    """
    config.validate()
    out, loop = Path(out), config.loop
    if config.threads:
        torch.set_num_threads(config.threads)
    if not teachers:
        raise EdgecutError("give at least one teacher (--teacher MODEL)")
    if data is None and not config.unlabeled_folders:
        raise EdgecutError("give --data (images and masks), --unlabeled (images only), or both")
    loaded = [load_teacher(t) for t in teachers]
    ds = training_data(data, config.train_split, config.val_split, progress) if data is not None else None
    train_samples = ds.train if ds else []
    extra = [Sample(s.name, s.image, None) for folder in config.unlabeled_folders
             for s in find_samples(folder, masks=False)]
    check_pairs(extra, progress=progress)
    cache = keep_in_memory(config.cache, len(train_samples) + len(extra))

    seed_everything(loop.seed)  # the initial weights and adapters are part of the run
    student, arch, base_spec, init = _student(config.student, config.student_kwargs)
    divisor = math.lcm(base_spec.size_divisor, *(t.spec.size_divisor for t in loaded if t.spec.dynamic_size))
    spec = base_spec.with_size(-(-config.size // divisor) * divisor)  # every model gets a size it accepts
    io.check_output(out, need_bytes=checkpoint_bytes(student))  # not after an epoch
    adapters, strides, s_taps = None, [], None
    if config.feature_kd:
        adapters, strides = make_adapters(student, loaded, spec.input_size)
        s_taps = feature_taps(student, "the student")
    device = resolve_device(loop.device)
    memory_format = torch.channels_last if loop.channels_last else torch.contiguous_format
    for t in loaded:
        t.module.to(device=device, memory_format=memory_format)
    objective = DistillObjective(loaded, spec, config, adapters, strides, s_taps)
    validate = validator(ds.val, spec, device, loop.batch_size, cache=cache) if ds and ds.val else None
    soft = _stored_answers(loaded, train_samples + extra, device, progress) if config.stored_teachers else None
    train_set = SegmentationDataset(train_samples + extra, spec, train=True, seed=loop.seed, cache=cache,
                                    unlabeled=True, soft_labels=soft)
    key = {"distill": config.kd_settings(), "teachers": [t.sha256 for t in loaded], "student": arch,
           "student_init": init.sha256 if init else None, "size": list(spec.input_size)}
    task = Task(validate=validate, objective=objective, extra_modules=[adapters] if adapters is not None else [],
                resume_key=key)
    result = fit(student, train_set, loop, out, task=task, resume=resume, progress=progress, callbacks=callbacks)

    def write() -> Artifact:
        io.write_json(out / "history.json", result.state.history)
        step = Step(step="distill", parent_sha256=init.sha256 if init else loaded[0].sha256, params={
            "teachers": [{"source": t.source, "sha256": t.sha256, "arch": t.arch} for t in loaded],
            "student": arch, "student_init": str(config.student) if init else None,
            "data": str(ds.root) if ds else None, "train_split": ds.train_split if ds else None,
            "val_split": ds.val_split if ds else None, "train_images": len(train_samples),
            "unlabeled": list(config.unlabeled_folders) or None, "unlabeled_images": len(extra),
            "size": list(spec.input_size), **config.kd_settings(), **asdict(loop), "world_size": world()[1],
            "best_epoch": result.state.best_epoch, "wall_time_s": round(result.wall_time_s, 1),
            "precision_used": result.precision,
        })
        metrics = {"val": result.best_metrics, "val_data": ds.val_name} if result.best_metrics else {}
        lineage = [*(init.manifest.lineage if init else []), step]
        return save_model(out, result.model.float().to("cpu", memory_format=torch.contiguous_format), arch, spec,
                          lineage=lineage, metrics=metrics)

    return on_main_process(write, lambda: load_artifact(out))  # under torchrun rank 0 writes
