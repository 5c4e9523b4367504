"""The one training loop, used by train, prune's fine-tuning, distill and qat.

Explicit and short: AdamW, linear warm-up then cosine decay (per step), bf16 autocast on CPU and fp16/bf16 on
CUDA, channels_last, gradient clipping, optional EMA, validation each epoch, ``last`` and ``best`` checkpoints
written atomically, and exact resume: a run killed at any point and resumed ends with the same weights as one that
never stopped. What is trained is given by an *objective*: ``objective(model, batch) -> (loss, logs)``.

Started by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the same loop trains with DistributedDataParallel:
gloo on CPU, nccl on CUDA (one GPU per process, ``LOCAL_RANK``); ``batch_size`` is per process.

How resume is exact, and how the ranks share the work: docs/design-decisions.md#training-loop
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from edgecut import io
from edgecut.data.transforms import EpochBatchSampler
from edgecut.env import resolve_device
from edgecut.errors import EdgecutError, InputError
from edgecut.training.config import LoopConfig
from edgecut.training.distributed import any_rank, average_gradients, barrier, init_distributed, world
from edgecut.training.losses import SegmentationObjective
from edgecut.training.progress import EpochBar, SignalGuard

CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"
BEST = "best.safetensors"


@dataclass
class TrainState:
    """Where training stands; passed to callbacks after every step."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    steps_per_epoch: int = 0
    best_metric: float = -math.inf
    best_epoch: int = -1
    history: list[dict[str, Any]] = field(default_factory=list)
    last_logs: dict[str, float] = field(default_factory=dict)
    precision: dict[str, Any] = field(default_factory=dict)  # what precision="auto" chose, and the timings why


@dataclass
class FitResult:
    model: nn.Module  # the shipped weights (EMA when enabled), loaded with the best epoch's state
    state: TrainState
    best_metrics: dict[str, float]
    wall_time_s: float

    @property
    def precision(self) -> dict[str, Any]:
        """The precision the run trained in (``chosen``) and, for ``auto``, the step times it was chosen by."""
        return self.state.precision


class TrainingInterrupted(EdgecutError):
    pass


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of an explicit precision (fp32: none); ``auto`` is measured (:func:`candidates`)."""
    if precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    raise ValueError(f"precision {precision!r}: auto is measured by the run; give fp32, bf16 or fp16")


LOWER_PRECISION_MAX_DROP = 0.005  # of select_metric: what a trained model may lose under autocast and still be tuned so


def candidates(device: torch.device) -> tuple[list[str], str]:
    """The precisions ``auto`` times on ``device``, and why the others are left out. On a CPU
    without native bf16 (AVX2 only) autocast emulates it, 9 to 18 times slower than fp32 in
    training, so it is not even tried."""
    from edgecut.env import native_bf16

    if device.type == "cuda":
        return (["fp32", "bf16", "fp16"] if torch.cuda.is_bf16_supported() else ["fp32", "fp16"]), ""
    if native_bf16():
        return ["fp32", "bf16"], ""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    if cap:
        return ["fp32"], f"oneDNN is kept below bf16 here (ONEDNN_MAX_CPU_ISA={cap}): bf16 autocast would be emulated"
    return ["fp32"], "this CPU has no native bf16 (no AVX-512 BF16 or AMX): bf16 autocast would be emulated"


def step_ms(model: nn.Module, objective: Callable[..., Any], batch: dict[str, torch.Tensor], precision: str,
            device: torch.device, extra_modules: Sequence[nn.Module] = (), steps: int = 3) -> float:
    """Median time in ms of one forward and backward pass of ``objective(model, batch)`` at
    ``precision`` (after one untimed pass): what ``precision="auto"`` compares. The gradients are
    dropped; the weights are not stepped (batch-norm statistics do move: the caller puts them back)."""
    dtype = autocast_dtype(precision, device)
    for m in (model, *extra_modules):
        m.train()
    times = []
    for k in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss, _ = objective(model, batch)
        loss.float().backward()
        for m in (model, *extra_modules):
            m.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if k:
            times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def ema_update(decay: float) -> Callable[..., None]:
    """EMA with the decay warmed up as (1 + n) / (10 + n) (as timm and ultralytics do), so the
    random initial weights do not linger in the average: with a plain 0.998 they still weigh
    30% after 600 steps, and the average of random and trained weights is no model at all."""

    def update(ema_params: list[torch.Tensor], params: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        n = float(n_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        if torch.is_floating_point(ema_params[0]):
            torch._foreach_lerp_(ema_params, params, 1.0 - d)
        else:  # integer buffers (batch-norm counters) are copied
            for e, p in zip(ema_params, params):
                e.copy_(p)

    return update


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]), "python_pos": random.getstate()[2]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(int(x) for x in state["python"]), state["python_pos"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


Callback = Callable[[TrainState], None]
Validator = Callable[[nn.Module], dict[str, float]]


@dataclass(frozen=True)
class Task:
    """What a stage brings to the training loop besides the model, the data and the loop's settings."""

    validate: Validator | None = None  # after each epoch: metrics, whose config.select_metric picks the best epoch
    objective: Callable[..., Any] | None = None  # the loss; None: BCE + Dice on the masks
    extra_modules: Sequence[nn.Module] = ()  # trained along and checkpointed (e.g. distillation adapters), not shipped
    resume_key: Mapping[str, Any] = field(default_factory=dict)  # plain values a resumed run must share
    fine_tune: bool = False  # the model is trained already: precision="auto" checks it validates as well lower


def fit(model: nn.Module, train_set: Dataset, config: LoopConfig, out_dir: str | Path, *, task: Task = Task(),
        resume: bool = False, progress: bool = True, callbacks: Sequence[Callback] = ()) -> FitResult:
    """Train ``model`` on ``train_set`` (items addressed by (epoch, index)) and return the result.

    ``task`` is what the stage adds: its validation after each epoch, its objective, modules trained
    along, and settings (such as distillation's) that must not change on resume. ``callbacks`` see
    the state after every step.
    """
    out_dir = Path(out_dir)
    last_path = out_dir / CHECKPOINT_DIR / LAST
    if last_path.exists() and not resume:
        raise InputError(out_dir, "already holds a training run",
                         "pass --resume to continue it, or choose a new --out")
    if resume and not last_path.exists():
        raise InputError(last_path, "nothing to resume", "run without --resume to start training")
    if world()[0] == 0:  # half-written checkpoints of a run that was killed mid-write: never read, now removed
        for stale in last_path.parent.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
    run = _Run(model, len(train_set), config, out_dir, task)
    if resume:
        run.restore()
    if not run.state.precision:
        run.choose_precision(train_set)
    run.start()
    bar = EpochBar(progress and run.rank == 0, config.epochs, run.state.steps_per_epoch,
                   config.batch_size * run.world_size)
    interrupted = SignalGuard()
    try:
        with bar, interrupted:
            while run.state.epoch < config.epochs:
                run.train_epoch(train_set, bar, callbacks, interrupted)
                record = run.end_epoch(task.validate)
                bar.end_epoch(record)
    except KeyboardInterrupt:
        run.checkpoint()
        barrier()  # the other ranks stop only once rank 0 has saved
        raise TrainingInterrupted(
            f"interrupted at epoch {run.state.epoch + 1}, step {run.state.step_in_epoch}; "
            f"checkpoint saved in {last_path}: add --resume to continue") from None
    barrier()  # rank 0 has written the best weights
    return run.result()


class _Run:
    """One training run's state: the model, optimizer, schedule, scaler, EMA and position, with
    what :func:`fit` does to them (a step, an epoch, a checkpoint, a resume)."""

    def __init__(self, model: nn.Module, images: int, config: LoopConfig, out_dir: Path, task: Task) -> None:
        self.config, self.extra_modules = config, list(task.extra_modules)
        self.check = task.validate if task.fine_tune else None  # precision="auto": the trained model's scores
        self.objective = task.objective or SegmentationObjective()
        self.device = resolve_device(config.device)
        self.rank, self.world_size = init_distributed(self.device)
        self.run_key = {**config.resume_key(), **task.resume_key,
                        **({"world_size": self.world_size} if self.world_size > 1 else {})}
        seed_everything(config.seed)
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self.model = model
        for m in (model, *self.extra_modules):
            m.to(device=self.device, memory_format=self.memory_format)
        self.params = [p for m in (model, *self.extra_modules) for p in m.parameters() if p.requires_grad]
        self.extra_params = [p for m in self.extra_modules for p in m.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay)
        steps = EpochBatchSampler(images, config.batch_size, 0, shard=(self.rank, self.world_size)).num_batches()
        if steps == 0:
            raise InputError(None, f"{images} training images make no full batch of {config.batch_size}"
                             + (f" on each of {self.world_size} processes" if self.world_size > 1 else ""),
                             "lower --batch or add images")
        total, warmup = config.epochs * steps, int(round(config.warmup_epochs * steps))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, total, warmup, config.min_lr_ratio))
        self.amp_dtype: torch.dtype | None = None  # set by choose_precision (fresh runs) or restore
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=False)
        self.ema = None
        if config.ema_decay:
            self.ema = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=ema_update(config.ema_decay),
                                                           use_buffers=True)
        self.shipped = self.ema.module if self.ema is not None else model  # validated, kept as best, returned
        self.state = TrainState(steps_per_epoch=steps)
        self.last_path = out_dir / CHECKPOINT_DIR / LAST
        self.best_path = out_dir / CHECKPOINT_DIR / BEST
        self.train_model: nn.Module = model  # what the objective calls: the model, or its DDP wrapper (start)
        self.started = time.perf_counter()

    def start(self) -> None:
        """Once the weights are final (fresh or restored): wrap the model for DDP, start the clock."""
        if self.world_size > 1:
            self.train_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.started = time.perf_counter()

    def checkpoint(self) -> None:
        """Everything a resumed run needs, written atomically to ``last.pt`` (rank 0 only)."""
        if self.rank != 0:
            return
        payload = {
            "model": self.model.state_dict(), "extra": [m.state_dict() for m in self.extra_modules],
            "ema": self.ema.state_dict() if self.ema else None, "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "rng": _rng_state(),
            "state": dataclasses.asdict(self.state), "config": self.run_key,
        }
        with io.atomic_path(self.last_path) as tmp:
            torch.save(payload, tmp)

    def restore(self) -> None:
        """Continue from ``last.pt``, refusing a checkpoint made with other settings."""
        ck = _load_checkpoint(self.last_path)
        if ck["config"] != self.run_key:
            saved = ck["config"]
            diff = {k: (saved.get(k), self.run_key.get(k)) for k in {**saved, **self.run_key}
                    if saved.get(k) != self.run_key.get(k)}
            raise InputError(self.last_path, f"checkpoint was made with other settings {diff} (saved, given)",
                             "resume with the same options, or start a new --out")
        self.model.load_state_dict(ck["model"])
        for m, sd in zip(self.extra_modules, ck["extra"]):
            m.load_state_dict(sd)
        if self.ema is not None and ck["ema"] is not None:
            self.ema.load_state_dict(ck["ema"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        self.scaler.load_state_dict(ck["scaler"])
        _set_rng_state(ck["rng"])
        self.state = TrainState(**ck["state"])
        if self.state.precision:  # the precision the run started with, not a new measurement
            self._use(self.state.precision["chosen"])

    def _use(self, precision: str) -> None:
        self.amp_dtype = autocast_dtype(precision, self.device)
        enabled = self.amp_dtype == torch.float16
        if enabled != self.scaler.is_enabled():
            self.scaler = torch.amp.GradScaler(self.device.type, enabled=enabled)

    def choose_precision(self, train_set: Dataset) -> None:
        """The run's precision: the one asked for, or for ``auto`` the fastest of :func:`candidates`,
        timed on this model, objective and batch size (forward and backward; the weights, batch-norm
        statistics and random state are put back afterwards). Rank 0 measures; every rank uses its choice."""
        config = self.config
        if config.precision != "auto":
            choice: dict[str, Any] = {"chosen": config.precision, "asked": config.precision}
        elif self.rank == 0:
            choice = self._time_precisions(train_set)
        else:
            choice = {}
        if self.world_size > 1:
            shared = [choice]
            dist.broadcast_object_list(shared, src=0)
            choice = shared[0]
        self.state.precision = choice
        self._use(choice["chosen"])

    def _time_precisions(self, train_set: Dataset) -> dict[str, Any]:
        names, why = candidates(self.device)
        choice: dict[str, Any] = {"asked": "auto", "device": self.device.type, "tried": names}
        if why:
            choice["note"] = why
        if len(names) == 1:
            return {**choice, "chosen": names[0]}
        batch = _collate([train_set[(0, i)] for i in range(min(self.config.batch_size, len(train_set)))])
        batch = {k: (v.to(self.device, memory_format=self.memory_format) if v.ndim == 4 else v.to(self.device))
                 for k, v in batch.items()}
        saved = [copy.deepcopy(m.state_dict()) for m in (self.model, *self.extra_modules)]
        rng = _rng_state()
        times = {name: self._step_ms(batch, name) for name in names}
        for m, sd in zip((self.model, *self.extra_modules), saved):
            m.load_state_dict(sd)
        _set_rng_state(rng)
        self.optimizer.zero_grad(set_to_none=True)
        choice = {**choice, "chosen": min(times, key=times.get), "step_ms": {k: round(v, 1) for k, v in times.items()}}
        return self._check_lower(choice) if choice["chosen"] != "fp32" and self.check is not None else choice

    def _check_lower(self, choice: dict[str, Any]) -> dict[str, Any]:
        """A trained model is fine-tuned at the faster lower precision only if it validates as well under it:
        fine-tuned under bf16 autocast, U^2-Netp's pruned copy learned weights that scored IoU 0.41 under
        bf16 and 0.07 in fp32 (the parent itself: 0.8717 under bf16, 0.8847 in fp32)."""
        metric, low = self.config.select_metric, choice["chosen"]
        scores = {"fp32": float(self.check(self.shipped)[metric])}  # type: ignore[misc]
        with torch.autocast(self.device.type, dtype=autocast_dtype(low, self.device)):
            scores[low] = float(self.check(self.shipped)[metric])  # type: ignore[misc]
        choice["val_" + metric] = {k: round(v, 4) for k, v in scores.items()}
        if scores["fp32"] - scores[low] > LOWER_PRECISION_MAX_DROP:
            choice["chosen"] = "fp32"
            choice["note"] = (f"{low} is faster, but the model validates at {metric} {scores[low]:.4f} under it and "
                              f"{scores['fp32']:.4f} in fp32: fine-tuned in fp32")
        return choice

    def _step_ms(self, batch: dict[str, torch.Tensor], precision: str, steps: int = 3) -> float:
        return step_ms(self.model, self.objective, batch, precision, self.device, self.extra_modules, steps)

    def train_epoch(self, train_set: Dataset, bar: EpochBar, callbacks: Sequence[Callback],
                    interrupted: SignalGuard) -> None:
        """The steps left in the current epoch (all of them, or those after a resumed position)."""
        config, state, device = self.config, self.state, self.device
        sampler = EpochBatchSampler(len(train_set), config.batch_size, state.epoch, config.seed,
                                    start_batch=state.step_in_epoch, shard=(self.rank, self.world_size))
        loader = DataLoader(train_set, batch_sampler=sampler, num_workers=config.workers,
                            persistent_workers=False, pin_memory=device.type == "cuda")
        bar.start_epoch(state.epoch, state.step_in_epoch)
        for m in (self.model, *self.extra_modules):
            m.train()
        last_save = time.monotonic()
        for batch in loader:
            batch = {k: (v.to(device, non_blocking=True, memory_format=self.memory_format) if v.ndim == 4
                         else v.to(device)) for k, v in batch.items() if isinstance(v, torch.Tensor)}
            logs = self.step(batch)
            bar.step(logs)
            if (config.save_every and state.step_in_epoch % config.save_every == 0) or \
                    time.monotonic() - last_save > config.save_interval_s:
                self.checkpoint()
                last_save = time.monotonic()
            for cb in callbacks:
                cb(state)
            stop = interrupted.hit if self.world_size == 1 else any_rank(interrupted.hit, device)
            if stop:  # all ranks stop at the same step
                raise KeyboardInterrupt

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimizer step on ``batch``; the logs it made."""
        state, amp = self.state, self.amp_dtype
        with torch.autocast(self.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss, logs = self.objective(self.train_model, batch)
        if not torch.isfinite(loss):
            raise EdgecutError(f"loss became {float(loss)} at epoch {state.epoch} step "
                               f"{state.step_in_epoch}; lower --lr or use --precision fp32")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.world_size > 1 and self.extra_params:
            average_gradients(self.extra_params, self.world_size)
        if self.config.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        state.step_in_epoch += 1
        state.global_step += 1
        state.last_logs = {**logs, "lr": self.scheduler.get_last_lr()[0]}
        return state.last_logs

    def end_epoch(self, validate: Validator | None) -> dict[str, Any]:
        """Validate (rank 0; the metrics reach every rank), keep the best weights, checkpoint; the epoch's record."""
        state = self.state
        record: dict[str, Any] = {"epoch": state.epoch, **state.last_logs}
        if validate is not None:
            metrics = validate(self.shipped) if self.rank == 0 else {}
            if self.world_size > 1:  # every rank keeps the same history and best epoch
                shared = [metrics]
                dist.broadcast_object_list(shared, src=0)
                metrics = shared[0]
            record.update({f"val_{k}": v for k, v in metrics.items()})
            score = metrics[self.config.select_metric]
            if score > state.best_metric:
                state.best_metric, state.best_epoch = score, state.epoch
                if self.rank == 0:
                    io.save_weights(self.best_path, self.shipped.state_dict())
        record["elapsed_s"] = round(time.perf_counter() - self.started, 2)
        state.history.append(record)
        state.epoch += 1
        state.step_in_epoch = 0
        self.checkpoint()
        return record

    def result(self) -> FitResult:
        """The shipped weights at their best epoch (the last one without validation)."""
        state = self.state
        if self.best_path.exists():
            self.shipped.load_state_dict(io.load_weights(self.best_path))
            best = next(h for h in state.history if h["epoch"] == state.best_epoch)
        else:
            best = state.history[-1] if state.history else {}
        best_metrics = {k[4:]: v for k, v in best.items() if k.startswith("val_")}
        return FitResult(self.shipped.eval(), state, best_metrics, time.perf_counter() - self.started)


def _collate(items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Dataset items -> one batch, as the DataLoader's default collation makes it (tensors stacked)."""
    from torch.utils.data import default_collate

    return {k: v for k, v in default_collate(list(items)).items() if isinstance(v, torch.Tensor)}


def _load_checkpoint(path: Path) -> dict[str, Any]:
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        raise InputError(path, f"checkpoint is unreadable ({io.first_line(e)})",
                         "delete it to start over") from None


