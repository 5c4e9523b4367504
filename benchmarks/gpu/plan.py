"""The run's plan and the device's limits: six parts in order, each with a time budget and the least
time it needs, the deadline they share, how big the models, batches and timings are (the real run
and the CPU smoke run), and what is wrong with a plan that would not fit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

CARRY_LIMIT = 64 * 2**20  # the working tree that travels, carried folder included
DEVICE_TIMEOUT_S = 600  # one device command at most
EIGHT_MINUTES = 480.0  # the whole run must finish inside this, start-up included
RESULT_FILES = 8  # at most this many files come back from $OUT


@dataclass(frozen=True)
class Part:
    name: str
    budget_s: float  # the most it may take
    min_s: float  # skipped (recorded) when less than this is left before the deadline
    what: str


PLAN = (
    Part("env", 15, 5, "driver, CUDA, torch, TensorRT / onnxruntime providers, edgecut.env"),
    Part("pytest", 35, 15, 'python3 -m pytest -m "gpu or tensorrt" -q'),
    Part("torch", 130, 20, "eager fp32 / tf32 / bf16 autocast / fp16 and torch.compile, batch 1, 8, 32"),
    Part("tensorrt", 30, 10, "engines fp32 / fp16 / int8 (Q/DQ, calibrator): parity and throughput"),
    Part("onnxruntime", 15, 5, "CUDA and TensorRT execution providers, where present"),
    Part("train", 230, 60, "the teacher at 320 px on ECSSD for as many epochs as fit, then val"),
)
DEADLINE_S = 470.0  # from the script's start; leaves the pip install and the summary inside 8 minutes
# the smoke pytest part collects the whole suite to deselect it (about 30 s on a loaded 2-core machine)
SMOKE_PLAN = tuple(replace(p, budget_s=b, min_s=1) for p, b in zip(PLAN, (10, 75, 40, 10, 20, 60)))
SMOKE_DEADLINE_S = 240.0


@dataclass(frozen=True)
class Sizes:
    """How big everything is: the real run, or the CPU smoke run."""

    size: int
    batches: tuple[int, ...]
    teacher: dict[str, Any]
    student: dict[str, Any]
    latency: dict[str, Any]  # LatencyConfig fields
    parity_count: int
    calib_count: int
    train_batch: int
    probe_steps: int  # steps timed before the epoch count is chosen (the first `probe_skip` not counted)
    probe_skip: int
    max_epochs: int
    compile_backend: str  # inductor on CUDA; the smoke run only traces (dynamo, backend eager)


FULL = Sizes(size=320, batches=(1, 8, 32), teacher={"name": "unet", "kwargs": {"width": 64}},
             student={"name": "mobilenet_v3_large_unet", "kwargs": {}},
             latency={"warmup_s": 0.2, "warmup_min": 3, "min_time_s": 0.5, "min_iters": 10},
             parity_count=16, calib_count=32, train_batch=8, probe_steps=25, probe_skip=5, max_epochs=100,
             compile_backend="inductor")
SMOKE = Sizes(size=64, batches=(1, 4), teacher={"name": "unet", "kwargs": {"width": 4, "depth": 2}},
              student={"name": "mobilenet_v3_small_unet", "kwargs": {"width_mult": 0.25,
                                                                     "decoder_channels": [16, 8, 8, 8]}},
              latency={"warmup_s": 0.0, "warmup_min": 1, "min_time_s": 0.05, "min_iters": 3},
              parity_count=2, calib_count=4, train_batch=4, probe_steps=3, probe_skip=1, max_epochs=2,
              compile_backend="eager")


def plan_problems(plan: Sequence[Part], deadline_s: float, limit_s: float = EIGHT_MINUTES) -> list[str]:
    """What is wrong with a plan: budgets over the deadline, a deadline over the limit, a bad part."""
    problems = []
    total = sum(p.budget_s for p in plan)
    if total > deadline_s:
        problems.append(f"the part budgets add up to {total:.0f} s, over the {deadline_s:.0f} s deadline")
    if deadline_s >= limit_s:
        problems.append(f"the deadline {deadline_s:.0f} s is not under {limit_s:.0f} s")
    for p in plan:
        if not 0 < p.min_s <= p.budget_s:
            problems.append(f"part {p.name}: its minimum {p.min_s} s must be in (0, budget {p.budget_s} s]")
    names = [p.name for p in plan]
    if len(set(names)) != len(names):
        problems.append(f"part names repeat: {names}")
    if len(plan) + 2 > RESULT_FILES:  # a JSON per part, summary.json and gpu.log
        problems.append(f"{len(plan)} parts write {len(plan) + 2} files; at most {RESULT_FILES} come back")
    return problems


def chosen_plan(args) -> tuple[tuple[Part, ...], float]:
    """The plan and deadline of a run: the smoke or the real one, with ``--budget PART=SECONDS`` and
    ``--deadline-s`` applied."""
    plan = SMOKE_PLAN if args.smoke else PLAN
    deadline = args.deadline_s or (SMOKE_DEADLINE_S if args.smoke else DEADLINE_S)
    names = [p.name for p in PLAN]
    for item in args.budget:
        name, _, value = item.partition("=")
        if name not in names or not value:
            raise SystemExit(f"--budget {item!r}: use PART=SECONDS with PART one of {', '.join(names)}")
        plan = tuple(replace(p, budget_s=float(value), min_s=min(p.min_s, float(value))) if p.name == name else p
                     for p in plan)
    return plan, deadline
