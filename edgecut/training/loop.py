"""The one training loop, used by train, prune's fine-tuning, distill and qat.

Explicit and short: AdamW, linear warm-up then cosine decay (per step), bf16 autocast on
CPU and fp16/bf16 on CUDA, channels_last, gradient clipping, optional EMA, validation each
epoch, ``last`` and ``best`` checkpoints written atomically, and exact resume: the model,
optimizer, scheduler, scaler, EMA, RNG states and the position inside the epoch are saved,
and the data order and augmentation are pure functions of (seed, epoch, index), so a run
killed at any point and resumed ends with the same weights as one that never stopped.

What is trained is given by an *objective*: ``objective(model, batch) -> (loss, logs)``.

Started by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the same loop trains with
DistributedDataParallel: gloo on CPU, nccl on CUDA (one GPU per process, ``LOCAL_RANK``).
Each rank reads its shard of every epoch; ``batch_size`` is per process. Only rank 0 writes
checkpoints and validates (the metrics are broadcast, so every rank keeps the same state);
the others wait. Batch-norm buffers are rank 0's (DDP broadcasts them before each forward).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import math
import os
import random
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from edgecut import io
from edgecut.env import resolve_device
from edgecut.training.config import LoopConfig
from edgecut.data.transforms import EpochBatchSampler
from edgecut.errors import EdgecutError, InputError
from edgecut.training.losses import SegmentationObjective

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


@dataclass
class FitResult:
    model: nn.Module  # the shipped weights (EMA when enabled), loaded with the best epoch's state
    state: TrainState
    best_metrics: dict[str, float]
    wall_time_s: float


class TrainingInterrupted(EdgecutError):
    pass


# ----------------------------------------------------------------------------- distributed


def world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless started by torchrun with WORLD_SIZE > 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join the process group torchrun described in the environment (once); (rank, world size)."""
    rank, size = world()
    if size > 1 and not dist.is_initialized():
        if not dist.is_available():
            raise EdgecutError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(dist.destroy_process_group)
        rank, size = world()
    return rank, size


def barrier() -> None:
    """Wait for every rank (nothing to wait for in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def on_main_process(write: Callable[[], Any], read: Callable[[], Any]) -> Any:
    """Run ``write`` on rank 0 only; the other ranks wait for it, then ``read`` what it wrote."""
    if world()[1] == 1:
        return write()
    result = write() if world()[0] == 0 else None
    barrier()
    return result if world()[0] == 0 else read()


def _any_rank(flag: bool, device: torch.device) -> bool:
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _average_gradients(params: Sequence[torch.Tensor], world_size: int) -> None:
    """All-reduce the gradients of parameters that DDP does not own (the extra modules)."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad.div_(world_size)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or device.type == "cpu":
        return torch.bfloat16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


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


def fit(model: nn.Module, train_set: Dataset, config: LoopConfig, out_dir: str | Path, *,
        validate: Validator | None = None, objective: Callable[..., Any] | None = None,
        resume: bool = False, progress: bool = True, callbacks: Sequence[Callback] = (),
        extra_modules: Sequence[nn.Module] = (), resume_key: dict[str, Any] | None = None) -> FitResult:
    """Train ``model`` on ``train_set`` (items addressed by (epoch, index)) and return the result.

    ``validate(model) -> metrics`` runs after each epoch; ``config.select_metric`` of its
    output picks the best epoch. ``extra_modules`` are trained along (e.g. distillation
    adapters) and checkpointed with the model, but not shipped. ``resume_key`` holds other
    settings (plain values) that must not change on resume, such as distillation's.
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
    run = _Run(model, len(train_set), config, out_dir, objective or SegmentationObjective(), extra_modules,
               resume_key or {})
    if resume:
        run.restore()
    run.start()
    bar = _Progress(progress and run.rank == 0, config.epochs, run.state.steps_per_epoch)
    interrupted = _SignalGuard()
    try:
        with bar, interrupted:
            while run.state.epoch < config.epochs:
                run.train_epoch(train_set, bar, callbacks, interrupted)
                record = run.end_epoch(validate)
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

    def __init__(self, model: nn.Module, images: int, config: LoopConfig, out_dir: Path, objective: Callable[..., Any],
                 extra_modules: Sequence[nn.Module], resume_key: dict[str, Any]) -> None:
        self.config, self.objective, self.extra_modules = config, objective, list(extra_modules)
        self.device = resolve_device(config.device)
        self.rank, self.world_size = init_distributed(self.device)
        self.run_key = {**config.resume_key(), **resume_key,
                        **({"world_size": self.world_size} if self.world_size > 1 else {})}
        seed_everything(config.seed)
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self.model = model
        for m in (model, *self.extra_modules):
            m.to(device=self.device, memory_format=self.memory_format)
        self.params = [p for m in (model, *self.extra_modules) for p in m.parameters() if p.requires_grad]
        self.extra_params = [p for m in self.extra_modules for p in m.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay)
        steps = EpochBatchSampler(images, config.batch_size, 0, rank=self.rank, world_size=self.world_size).num_batches()
        if steps == 0:
            raise InputError(None, f"{images} training images make no full batch of {config.batch_size}"
                             + (f" on each of {self.world_size} processes" if self.world_size > 1 else ""),
                             "lower --batch or add images")
        total, warmup = config.epochs * steps, int(round(config.warmup_epochs * steps))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, total, warmup, config.min_lr_ratio))
        self.amp_dtype = autocast_dtype(config.precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=(self.amp_dtype == torch.float16))
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

    def train_epoch(self, train_set: Dataset, bar: _Progress, callbacks: Sequence[Callback],
                    interrupted: _SignalGuard) -> None:
        """The steps left in the current epoch (all of them, or those after a resumed position)."""
        config, state, device = self.config, self.state, self.device
        sampler = EpochBatchSampler(len(train_set), config.batch_size, state.epoch, config.seed,
                                    start_batch=state.step_in_epoch, rank=self.rank, world_size=self.world_size)
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
            stop = interrupted.hit if self.world_size == 1 else _any_rank(interrupted.hit, device)
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
            _average_gradients(self.extra_params, self.world_size)
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


def _load_checkpoint(path: Path) -> dict[str, Any]:
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        raise InputError(path, f"checkpoint is unreadable ({io.first_line(e)})",
                         "delete it to start over") from None


class _SignalGuard:
    """Turn SIGTERM into a clean stop at the end of the current step (Ctrl-C already is)."""

    def __init__(self) -> None:
        self.hit = False
        self._old: Any = None

    def __enter__(self) -> _SignalGuard:
        with contextlib.suppress(ValueError):  # not the main thread
            self._old = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, *_: Any) -> None:
        self.hit = True

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


class _Progress:
    """A rich progress bar over steps, one line printed per epoch."""

    def __init__(self, enabled: bool, epochs: int, steps: int) -> None:
        self.enabled, self.epochs, self.steps = enabled, epochs, steps
        self.progress = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), TextColumn("{task.fields[logs]}"))
            self.task = None

    def __enter__(self) -> _Progress:
        if self.progress:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress:
            self.progress.__exit__(*exc)

    def start_epoch(self, epoch: int, done: int) -> None:
        if self.progress:
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task(f"epoch {epoch + 1}/{self.epochs}", total=self.steps,
                                               completed=done, logs="")

    def step(self, logs: dict[str, float]) -> None:
        if self.progress:
            text = " ".join(f"{k} {v:.3g}" for k, v in logs.items())
            self.progress.update(self.task, advance=1, logs=text)

    def end_epoch(self, record: dict[str, Any]) -> None:
        if self.progress:
            text = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items())
            self.progress.console.print(text)
