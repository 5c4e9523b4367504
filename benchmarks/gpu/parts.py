"""One prepared run on a lent GPU machine: its environment, the gpu/tensorrt tests, torch,
TensorRT and ONNX Runtime throughput of the teacher and the student at 320 px, and a short
full-size teacher training on ECSSD; every result a JSON file under --out.

A script, not a test. Six parts, each with a time budget, in this order (PLAN below):

- env: nvidia-smi, nvcc, torch / CUDA / cuDNN, TensorRT and ONNX Runtime providers, edgecut's
  ``environment(probe_backends=True)``;
- pytest: ``python3 -m pytest -m "gpu or tensorrt" -q``, its output kept;
- torch: the full-size U-Net teacher (``unet``, width 64) and the ``mobilenet_v3_large_unet``
  student, freshly initialised (latency does not depend on the weights), 320 x 320, batch 1, 8
  and 32: eager FP32 (TF32 off), TF32 (torch's default for convolutions), bf16 autocast, FP16
  weights, and torch.compile under bf16 autocast (timed with ``edgecut.runtime.timing.measure``,
  ``sync=torch.cuda.synchronize``);
- tensorrt: FP32, FP16, INT8 from Q/DQ ONNX and INT8 from the calibrator, each built by
  ``edgecut.exporters.export`` and checked against the torch parent on CUDA (FP32 max abs diff
  <= 1e-3, FP16 mask IoU >= 0.999, INT8 mask IoU >= 0.98; a refusal is recorded with its numbers
  and the engine built again with the bar lowered, so its speed is still known), then timed at
  batch 1, 8 and 32 through the TensorRT Runner;
- onnxruntime: the CUDA and TensorRT execution providers, where this onnxruntime has them;
- train: the teacher at 320 px on ECSSD train (bf16 on CUDA, EMA, val each epoch, the settings
  of benchmarks/teacher.py), as many epochs as fit its budget (a few steps are timed first, with
  and without data-loader workers), then scored on ECSSD val at each image's own resolution.

What is not installed is recorded as skipped with the reason, never measured some other way.
Each part's file is written as it goes and finished when the part ends, so a run stopped
early keeps what it did; a part that would not fit the overall deadline is skipped (recorded).
Running it twice is safe: results are replaced atomically, work goes to a fresh folder.

    python benchmarks/gpu.py --prepare             # here: ECSSD at 320 px and the missing wheels into .gpu/
    python benchmarks/gpu.py --dry-run             # here: plan, carried files and size, the device command
    python benchmarks/gpu.py --smoke --out /tmp/gpu-smoke   # here, on the CPU: every part, tiny, seconds
    python3 benchmarks/gpu.py --out $OUT           # on the GPU machine: the command --dry-run prints
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GPU_DIR = ROOT / ".gpu"  # ignored by git; carried to the device with carry [".gpu"]
DATA_DIR = GPU_DIR / "ecssd320"
WHEEL_DIR = GPU_DIR / "wheels"
ECSSD = ROOT.parent / "shared" / "data" / "ecssd"
ECSSD_SPLITS = {"train": 800, "val": 200}  # names per split, as /work/shared/data/README.md lists them
MAX_SIDE = 320  # --prepare resizes every image so its longer side is this (never up)
PREPARED = "PREPARED.json"
# what the device's python (3.12, torch, no pydantic) lacks to import edgecut; versions from constraints.txt
WHEELS = ("pydantic", "pydantic_core", "annotated_types", "typing_inspection", "typing_extensions")
PIP_DOWNLOAD = ["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
                "--implementation", "cp", "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_27_x86_64",
                "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64", "--platform",
                "manylinux1_x86_64"]  # the command of /work/.library/device/README.md
PIP_INSTALL = ("python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade "
               "--target /tmp/site .gpu/wheels/*.whl")
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
# parity bars of the issue (the default FP32 bar, 1e-4, is for CPU runners; CUDA convolutions run in TF32)
TRT_VARIANTS = (  # label, precision, int8 source, tolerances
    ("fp16", "fp16", "qdq", {"mask_iou": 0.999}),
    ("fp32", "fp32", "qdq", {"max_abs_diff": 1e-3}),
    ("int8-qdq", "int8", "qdq", {"mask_iou": 0.98}),
    ("int8-calibrator", "int8", "calibrator", {"mask_iou": 0.98}),
)
LOWERED = {"fp32": {"max_abs_diff": 1.0}, "fp16": {"mask_iou": 0.0}, "int8": {"mask_iou": 0.0}}  # after a refusal
NO_TRT = ("TensorRT is not installed here (pip install 'edgecut[tensorrt]'); its wheels are far over the 64 MiB a "
          "device run can carry and the machine cannot download")
NO_ORT_GPU = ("this onnxruntime ({version}) offers only {providers}: onnxruntime-gpu is not installed, and its wheels "
              "are far over the 64 MiB a device run can carry")


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


# ---------------------------------------------------------------------------- clocks and records


class Clock:
    def __init__(self, seconds: float) -> None:
        self.total = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


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


def row(name: str, status: str, **fields: Any) -> dict[str, Any]:
    """One measurement: ok | skipped | failed (a check said no) | error (it broke), with its numbers."""
    return {"name": name, "status": status, **fields}


def error_row(name: str, e: BaseException, **fields: Any) -> dict[str, Any]:
    tb = traceback.format_exception(type(e), e, e.__traceback__)
    return row(name, "error", reason=f"{type(e).__name__}: {str(e)[:1500]}", traceback="".join(tb)[-3000:], **fields)


class Record:
    """One part's result file, written after every measurement and once more when the part ends."""

    def __init__(self, run: Run, part: Part) -> None:
        self.run, self.part = run, part
        self.path = run.out / f"{part.name}.json"
        self.started = time.monotonic()
        self.data: dict[str, Any] = {
            "part": part.name, "what": part.what, "command": run.command, "run_id": run.run_id, "smoke": run.smoke,
            "budget_s": part.budget_s, "complete": False, "status": "running", "measurements": [],
            "machine": run.machine}

    def add(self, r: dict[str, Any]) -> dict[str, Any]:
        self.data["measurements"].append(r)
        extra = {k: r[k] for k in ("p50_ms", "images_per_s", "reason") if k in r}
        print(f"  {self.part.name}: {r['name']}: {r['status']} {json.dumps(extra)[:200]}", flush=True)
        self.save()
        return r

    def save(self) -> None:
        from edgecut import io

        self.data["wall_s"] = round(time.monotonic() - self.started, 2)
        io.write_json(self.path, self.data)

    def finish(self, status: str | None = None, **fields: Any) -> None:
        rows = self.data["measurements"]
        if status is None:
            kinds = {r["status"] for r in rows}
            status = "ok" if kinds <= {"ok"} else "skipped" if kinds == {"skipped"} else "partial"
        self.data.update(status=status, complete=True, **fields)
        self.save()


def skip_if_short(clock: Clock, need_s: float) -> str | None:
    """Why a measurement of about ``need_s`` seconds does not fit what is left, or None."""
    if clock.left() < need_s:
        return f"{max(clock.left(), 0):.1f} s left in this part's budget; it needs about {need_s:.1f} s"
    return None


# ---------------------------------------------------------------------------- the run


@dataclass
class Run:
    out: Path
    work: Path
    smoke: bool
    sizes: Sizes
    device: str  # cuda | cpu
    command: str
    data: Path | None  # a data set root (images/, masks/, splits/); None: none found
    data_note: str
    deadline: Clock
    run_id: str = field(default_factory=lambda: time.strftime("%Y%m%dT%H%M%S"))
    machine: dict[str, Any] = field(default_factory=dict)
    _artifacts: dict[str, Any] = field(default_factory=dict)

    def artifact(self, name: str):
        """The freshly initialised teacher or student saved as a torch artifact (for the exporters)."""
        if name not in self._artifacts:
            import torch

            from edgecut.models.store import build, save_model

            torch.manual_seed(0)
            arch = getattr(self.sizes, name)
            model = build(arch).eval()
            dest = self.work / "models" / name
            shutil.rmtree(dest, ignore_errors=True)
            self._artifacts[name] = save_model(dest, model, arch, model.default_spec.with_size(self.sizes.size))
        return self._artifacts[name]

    def split_folder(self, split: str) -> Path | None:
        """A data set folder of links to one split's images and masks (parity, calibration), or None."""
        if self.data is None:
            return None
        from edgecut.data.folder import find_samples

        dest = self.work / "splits" / split
        if not (dest / "images").is_dir():
            for sub in ("images", "masks"):
                (dest / sub).mkdir(parents=True, exist_ok=True)
            for s in find_samples(self.data, split):
                os.symlink(s.image.resolve(), dest / "images" / s.image.name)
                os.symlink(s.mask.resolve(), dest / "masks" / s.mask.name)
        return dest

    def latency(self):
        from edgecut.runtime.timing import LatencyConfig

        return LatencyConfig(**self.sizes.latency)

    def sync(self) -> Callable[[], None] | None:
        import torch

        return torch.cuda.synchronize if self.device == "cuda" else None


def run_parts(run: Run, plan: Sequence[Part], selected: Sequence[str]) -> dict[str, Any]:
    from edgecut import io

    summary: dict[str, Any] = {
        "command": run.command, "run_id": run.run_id, "smoke": run.smoke, "device": run.device,
        "deadline_s": run.deadline.total, "plan": [asdict(p) for p in plan], "parts": {},
        "data": {"path": str(run.data) if run.data else None, "note": run.data_note}, "machine": run.machine,
        "git_commit": git_commit(), "script_sha256": io.sha256_file(__file__), "wall_s": 0.0}
    io.write_json(run.out / "summary.json", summary)  # a run stopped in its first part still says what it was
    started = time.monotonic()
    for part in plan:
        if part.name not in selected:
            continue
        rec = Record(run, part)
        left = run.deadline.left()
        print(f"[{time.monotonic() - started:6.1f} s] {part.name} (budget {part.budget_s:.0f} s, "
              f"{left:.0f} s to the deadline)", flush=True)
        if left < part.min_s:
            rec.finish("skipped", reason=f"{max(left, 0):.1f} s left before the {run.deadline.total:.1f} s deadline; "
                                         f"this part needs at least {part.min_s:.1f} s")
        else:
            clock = Clock(min(part.budget_s, left))
            try:
                PARTS[part.name](run, rec, clock)
                rec.finish()
            except Exception as e:  # one broken part must not cost the others their device time
                rec.finish("error", error=error_row(part.name, e))
        summary["parts"][part.name] = {"status": rec.data["status"], "wall_s": rec.data["wall_s"],
                                       "budget_s": part.budget_s, "file": rec.path.name}
        summary["wall_s"] = round(time.monotonic() - started, 1)
        io.write_json(run.out / "summary.json", summary)
    print(json.dumps(summary["parts"], indent=1), flush=True)
    return summary


def git_commit() -> str | None:
    try:
        p = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return p.stdout.strip() or None if p.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def shell(args: Sequence[str], timeout: float = 20) -> dict[str, Any]:
    try:
        p = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return {"status": "skipped", "reason": f"{args[0]} is not on the PATH"}
    except subprocess.TimeoutExpired:
        return {"status": "error", "reason": f"{shlex.join(args)} took over {timeout:.0f} s"}
    return {"status": "ok" if p.returncode == 0 else "error", "rc": p.returncode,
            "output": (p.stdout + p.stderr).strip()[-6000:]}


# ---------------------------------------------------------------------------- part: env


def part_env(run: Run, rec: Record, clock: Clock) -> None:
    import torch

    from edgecut import _optional
    from edgecut.env import environment

    query = "name,driver_version,memory.total,compute_cap,clocks.max.sm,clocks.max.mem,power.limit"
    smi = shell(["nvidia-smi", f"--query-gpu={query}", "--format=csv"])
    rec.add(row("nvidia-smi query", smi.pop("status"), query=query, **smi))
    smi = shell(["nvidia-smi"])
    rec.add(row("nvidia-smi", smi.pop("status"), **smi))
    nvcc = shell(["nvcc", "--version"])
    rec.add(row("nvcc", nvcc.pop("status"), **nvcc))
    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda,
                            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                            "cuda_available": torch.cuda.is_available(),
                            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                            "float32_matmul_precision": torch.get_float32_matmul_precision()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["gpus"] = [{"name": p.name, "compute_capability": f"{p.major}.{p.minor}",
                         "memory_mib": p.total_memory // 2**20, "multiprocessors": p.multi_processor_count}]
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
        rec.add(row("torch cuda", "ok", **info))
    else:
        rec.add(row("torch cuda", "skipped", reason="torch sees no CUDA GPU here", **info))
    if _optional.available("tensorrt"):
        import tensorrt

        rec.add(row("tensorrt", "ok", version=tensorrt.__version__))
    else:
        rec.add(row("tensorrt", "skipped", reason=NO_TRT))
    import onnxruntime as ort

    providers = ort.get_available_providers()
    gpu = [p for p in providers if p != "CPUExecutionProvider"]
    rec.add(row("onnxruntime", "ok" if gpu else "skipped", version=ort.__version__, providers=providers,
                device=ort.get_device(), **({} if gpu else {"reason": NO_ORT_GPU.format(
                    version=ort.__version__, providers=", ".join(providers))})))
    rec.add(row("edgecut environment", "ok", environment=environment(probe_backends=True)))
    import pydantic

    rec.add(row("carried packages", "ok", pydantic=pydantic.VERSION, pydantic_from=str(Path(pydantic.__file__).parent),
                python=sys.version.split()[0], executable=sys.executable))


# ---------------------------------------------------------------------------- part: pytest


def part_pytest(run: Run, rec: Record, clock: Clock) -> None:
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu or tensorrt", "-q"]
    shown = 'python3 -m pytest -m "gpu or tensorrt" -q'
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(clock.left(), 1))
        output, rc = p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        out = [x.decode(errors="replace") if isinstance(x, bytes) else (x or "") for x in (e.stdout, e.stderr)]
        rec.add(row("pytest", "error", command=shown, reason=f"stopped at the part's budget ({clock.total:.0f} s)",
                    output="".join(out)[-20000:], wall_s=round(time.monotonic() - t0, 1)))
        return
    lines = [ln for ln in output.strip().splitlines() if ln.strip()]
    tail = lines[-1] if lines else ""
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed)",
                                              tail)}
    meaning = {0: "the selected tests passed", 1: "some tests failed", 2: "interrupted or a collection error",
               3: "internal error", 4: "usage error", 5: "no tests were selected"}.get(rc, "unknown")
    if rc == 0 and not counts.get("passed") and counts.get("skipped"):
        meaning = "every selected test was skipped (the reasons are in skipped)"
    skips = [ln for ln in lines if ln.startswith("SKIPPED")]
    rec.add(row("pytest", "ok" if rc in (0, 5) else "failed", command=shown, rc=rc, meaning=meaning, summary=tail,
                counts=counts, skipped=skips, output=output[-20000:], wall_s=round(time.monotonic() - t0, 1)))


# ---------------------------------------------------------------------------- part: torch


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    import torch

    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


TORCH_MODES = {  # mode -> what it is; the modes after tf32 run with torch's default TF32 flags
    "fp32": "fp32 weights and inputs, TF32 off (cuDNN and matmul)",
    "tf32": "fp32 weights and inputs, TF32 on for cuDNN convolutions (torch's default) and matmuls (not its default)",
    "bf16-autocast": "fp32 weights, torch.autocast(bfloat16)",
    "fp16": "fp16 weights and inputs (model.half())",
    "compile-bf16": "torch.compile(model, dynamic=False) called under torch.autocast(bfloat16)",
}


def torch_call(model, mode: str, x, device: str, cache: dict[str, Any], key: str, backend: str):
    """A no-argument callable running ``model`` on ``x`` as ``mode`` says (``cache`` keeps fp16 copies)."""
    import torch

    if mode == "fp16":
        if key not in cache:
            cache[key] = copy.deepcopy(model).half()
        half, xh = cache[key], x.half()
        return lambda: half(xh)
    if mode in ("bf16-autocast", "compile-bf16"):
        fn = model
        if mode == "compile-bf16":  # one compiled module per model and batch: dynamic=False builds each shape's kernels
            fn = torch.compile(model, dynamic=False, backend=backend)

        def call():
            with torch.autocast(device, dtype=torch.bfloat16):
                return fn(x)
        return call
    return lambda: model(x)


def part_torch(run: Run, rec: Record, clock: Clock) -> None:
    import torch

    from edgecut.models.profile import count_macs, count_params
    from edgecut.models.store import build
    from edgecut.runtime.timing import measure

    s, device, cuda = run.sizes, run.device, run.device == "cuda"
    torch.manual_seed(0)
    models = {name: build(getattr(s, name)).eval() for name in ("teacher", "student")}
    rec.data["models"] = {n: {"arch": getattr(s, n), "params": count_params(m), "macs": count_macs(m, (s.size, s.size))}
                          for n, m in models.items()}
    for m in models.values():
        m.to(device, memory_format=torch.channels_last)
    rec.data["settings"] = {"input": [3, s.size, s.size], "device": device, "channels_last": True,
                            "cudnn_benchmark": cuda, "no_grad": True, "modes": TORCH_MODES, "latency": s.latency,
                            "compile_backend": s.compile_backend, "weights": "freshly initialised (seed 0)",
                            "timing": "edgecut.runtime.timing.measure, inputs and outputs on the device",
                            "default_tf32": {"cudnn": torch.backends.cudnn.allow_tf32,
                                             "matmul": torch.backends.cuda.matmul.allow_tf32}}
    if s.compile_backend != "inductor":
        rec.data["settings"]["compile_note"] = ("smoke run: torch.compile with backend 'eager' traces the model with "
                                                "dynamo and runs it eagerly (inductor's CPU build takes minutes)")
    halves: dict[str, Any] = {}
    compiles: list[float] = []  # seconds each compile took (its first call): the next one is expected to take as long
    old_bench = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = cuda
    lat = run.latency()
    eager_need = lat.warmup_s + lat.min_time_s + 1.5
    order = [(m, mode, b) for mode in TORCH_MODES if mode != "compile-bf16" for m in models for b in s.batches]
    order += [(m, "compile-bf16", b) for b in s.batches for m in models]
    try:
        for name, mode, batch in order:
            label = f"{name} {mode} batch {batch}"
            meta = {"model": name, "mode": mode, "batch": batch}
            if not cuda and mode in ("tf32", "fp16"):
                rec.add(row(label, "skipped", reason=f"{mode} is a CUDA mode; this run has no GPU", **meta))
                continue
            compile_need = max(compiles, default=45.0 if cuda else 10.0) + eager_need  # a guess before the first
            why = skip_if_short(clock, compile_need if mode == "compile-bf16" else eager_need)
            if why:
                rec.add(row(label, "skipped", reason=why, **meta))
                continue
            try:
                x = torch.randn(batch, 3, s.size, s.size, device=device).contiguous(memory_format=torch.channels_last)
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                flags = {"fp32": tf32(False), "tf32": tf32(True)}.get(mode, contextlib.nullcontext())  # else torch's
                with torch.no_grad(), flags:
                    fn = torch_call(models[name], mode, x, device, halves, name, s.compile_backend)
                    stats = measure(fn, lat, sync=run.sync())
                if mode == "compile-bf16":
                    compiles.append(stats.first_ms / 1e3)
                extra = {"peak_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1)} if cuda else {}
                rec.add(row(label, "ok", **meta, p50_ms=round(stats.p50_ms, 4),
                            images_per_s=round(batch / stats.p50_ms * 1e3, 1), latency=stats.to_json(), **extra))
            except Exception as e:  # out of memory, a compile failure: recorded, the next one runs
                rec.add(error_row(label, e, **meta))
            finally:
                if cuda:
                    torch.cuda.empty_cache()
    finally:
        torch.backends.cudnn.benchmark = old_bench


# ---------------------------------------------------------------------------- parts: tensorrt, onnxruntime


def runner_throughput(run: Run, rec: Record, clock: Clock, runner, label: str, meta: dict[str, Any]) -> None:
    """Batch 1, 8, 32 (smoke: 1, 4) through a Runner: numpy in, numpy out, copies included."""
    import numpy as np

    from edgecut.runtime.timing import measure

    lat = run.latency()
    for batch in run.sizes.batches:
        name = f"{label} batch {batch}"
        why = skip_if_short(clock, lat.warmup_s + lat.min_time_s + 2.0)
        if why:
            rec.add(row(name, "skipped", reason=why, batch=batch, **meta))
            continue
        try:
            x = np.random.default_rng(0).standard_normal((batch, 3, run.sizes.size, run.sizes.size)).astype(np.float32)
            stats = measure(lambda: runner(x), lat, sync=run.sync())
            rec.add(row(name, "ok", batch=batch, **meta, p50_ms=round(stats.p50_ms, 4),
                        images_per_s=round(batch / stats.p50_ms * 1e3, 1), latency=stats.to_json()))
        except Exception as e:
            rec.add(error_row(name, e, batch=batch, **meta))


def parity_numbers(report: dict[str, Any]) -> dict[str, Any]:
    keep = ("passed", "tolerances", "images", "checks", "data", "max_abs_diff", "max_abs_diff_image", "mask_iou_mean",
            "mask_iou_min", "mask_iou_min_image", "metric", "failures")
    return {k: report[k] for k in keep if k in report}


def part_tensorrt(run: Run, rec: Record, clock: Clock) -> None:
    import torch

    from edgecut import _optional

    reason = None if _optional.available("tensorrt") else NO_TRT
    if reason is None and not torch.cuda.is_available():
        reason = "TensorRT engines are built and run on a CUDA GPU; torch sees none here"
    rec.data["settings"] = {"variants": [{"label": v[0], "precision": v[1], "int8_source": v[2], "tolerances": v[3]}
                                         for v in TRT_VARIANTS], "max_batch": max(run.sizes.batches),
                            "parity": {"vs": "the torch parent on CUDA", "count": run.sizes.parity_count,
                                       "data": "ECSSD val" if run.data else "synthetic"},
                            "calibration": {"count": run.sizes.calib_count, "data": "ECSSD train" if run.data
                                            else "synthetic"}, "lowered_after_refusal": LOWERED}
    if reason:
        for model in ("student", "teacher"):
            for label, precision, source, tol in TRT_VARIANTS:
                meta = {"model": model, "precision": precision, "int8_source": source if precision == "int8" else None}
                rec.add(row(f"{model} tensorrt {label}", "skipped", reason=reason, **meta,
                            **smoke_refusal(run, model, precision, source, tol)))
        return
    for model in ("student", "teacher"):  # the student's engines build in a fraction of the teacher's time
        for label, precision, source, tol in TRT_VARIANTS:
            trt_variant(run, rec, clock, model, label, precision, source, tol)


def trt_config(run: Run, precision: str, source: str, tol: dict[str, float]):
    from edgecut.exporters import CalibConfig, ExportConfig, ParityConfig, TensorRTOptions

    calib = CalibConfig(data=run.split_folder("train"), count=run.sizes.calib_count) if precision == "int8" \
        else CalibConfig()
    return ExportConfig(format="tensorrt", precision=precision, device="cuda", calib=calib,
                        parity=ParityConfig(data=run.split_folder("val"), count=run.sizes.parity_count, tolerances=tol),
                        tensorrt=TensorRTOptions(max_batch=max(run.sizes.batches), workspace_mib=4096,
                                                 int8_source=source))


def smoke_refusal(run: Run, model: str, precision: str, source: str, tol: dict[str, float]) -> dict[str, Any]:
    """In the smoke run only: the export asked for as on the GPU, to show edgecut's own refusal (the
    options are checked before the missing backend is named)."""
    if not run.smoke:
        return {}
    from edgecut.errors import EdgecutError
    from edgecut.exporters import export

    try:
        export(run.artifact(model), run.work / "tensorrt" / f"{model}-{precision}-{source}",
               trt_config(run, precision, source, tol), progress=False)
    except EdgecutError as e:
        return {"export_refusal": str(e)}
    return {"export_refusal": None}


def trt_variant(run: Run, rec: Record, clock: Clock, model: str, label: str, precision: str, source: str,
                tol: dict[str, float]) -> None:
    from edgecut import runtime
    from edgecut.errors import EdgecutError
    from edgecut.exporters import export
    from edgecut.exporters.parity import ParityError

    name = f"{model} tensorrt {label}"
    meta = {"model": model, "precision": precision, "int8_source": source if precision == "int8" else None}
    built = [v for k, v in rec.data.setdefault("build_s", {}).items() if k.startswith(model)]
    why = skip_if_short(clock, max(built, default=20.0 if model == "student" else 60.0))
    if why:
        rec.add(row(name, "skipped", reason=why, **meta))
        return
    out = run.work / "tensorrt" / f"{model}-{label}"
    shutil.rmtree(out, ignore_errors=True)
    config = trt_config(run, precision, source, tol)
    result: dict[str, Any] = dict(meta)
    t0 = time.monotonic()
    try:
        try:
            art = export(run.artifact(model), out, config, progress=False)
        except ParityError as e:  # recorded with its numbers, then built with the bar lowered so its speed is known
            result["parity"] = {"passed": False, "tolerances": tol, "refusal": str(e)}
            if skip_if_short(clock, time.monotonic() - t0 + 5):
                rec.add(row(name, "failed", **result, reason="refused by the parity check; no time left to rebuild"))
                return
            shutil.rmtree(out, ignore_errors=True)
            lowered = replace(config, parity=replace(config.parity, tolerances=LOWERED[precision]))
            art = export(run.artifact(model), out, lowered, progress=False)
            result["parity"]["rebuilt_with"] = LOWERED[precision]
            result["parity"]["rebuilt_numbers"] = parity_numbers(art.manifest.metrics["parity"])
        else:
            result["parity"] = parity_numbers(art.manifest.metrics["parity"])
    except EdgecutError as e:
        rec.add(row(name, "error", **result, reason=str(e)[:1500], build_s=round(time.monotonic() - t0, 1)))
        return
    except Exception as e:
        rec.add(error_row(name, e, **result))
        return
    rec.data["build_s"][f"{model}-{label}"] = round(time.monotonic() - t0, 1)
    step = art.manifest.lineage[-1].params
    result.update(build_s=rec.data["build_s"][f"{model}-{label}"], built_for=step.get("built_for"),
                  layer_formats=step.get("layer_formats"), notes=step.get("notes"), trtexec=step.get("trtexec"),
                  engine_mib=round(art.manifest.files["model.engine"].size / 2**20, 2))
    passed = result["parity"].get("passed", False)
    rec.add(row(name, "ok" if passed else "failed", **result,
                **({} if passed else {"reason": "refused by the parity check (numbers in parity)"})))
    runner_throughput(run, rec, clock, runtime.load(art, device="cuda"), name, meta)


def part_onnxruntime(run: Run, rec: Record, clock: Clock) -> None:
    import onnxruntime as ort

    from edgecut import runtime
    from edgecut.exporters import ExportConfig, ParityConfig, export
    from edgecut.exporters import parity

    providers = ort.get_available_providers()
    wanted = [("cuda", "CUDAExecutionProvider"), ("tensorrt", "TensorrtExecutionProvider")]
    if run.smoke:  # exercises the code path on the CPU; not part of the GPU run
        wanted.append(("cpu", "CPUExecutionProvider"))
    rec.data["settings"] = {"available_providers": providers, "onnxruntime": ort.__version__,
                            "export": "ONNX fp32 (opset default, parity on the CPU), then one session per provider",
                            "parity_vs_torch": {"device": run.device, "tolerances": {"max_abs_diff": 1e-3}}}
    present = []
    for device, provider in wanted:
        if provider in providers:
            present.append((device, provider))
        else:
            reason = NO_ORT_GPU.format(version=ort.__version__, providers=", ".join(providers))
            rec.add(row(f"onnxruntime {device}", "skipped", provider=provider, reason=reason))
    for model in ("student", "teacher"):
        if not present:
            break
        name = f"{model} onnx fp32 export"
        out = run.work / "onnx" / model
        shutil.rmtree(out, ignore_errors=True)
        try:
            art = export(run.artifact(model), out, ExportConfig(
                format="onnx", precision="fp32", device="cpu", parity=ParityConfig(data=run.split_folder("val"),
                                                                                   count=2)), progress=False)
            rec.add(row(name, "ok", model=model, parity=parity_numbers(art.manifest.metrics["parity"])))
        except Exception as e:
            rec.add(error_row(name, e, model=model))
            continue
        reference = runtime.load(run.artifact(model), device=run.device)
        images = parity.load_images(run.split_folder("val"), art.spec, count=run.sizes.parity_count)
        for device, provider in present:
            label = f"{model} onnxruntime {device}"
            meta = {"model": model, "provider": provider}
            if skip_if_short(clock, 5):
                rec.add(row(label, "skipped", reason=skip_if_short(clock, 5), **meta))
                continue
            try:
                runner = runtime.load(art, device=device)
                report = parity.check(reference, runner, images, {"max_abs_diff": 1e-3}, data=str(run.data))
                rec.add(row(f"{label} parity", "ok" if report["passed"] else "failed", **meta,
                            providers=runner.providers, parity=parity_numbers(report)))
            except Exception as e:
                rec.add(error_row(label, e, **meta))
                continue
            runner_throughput(run, rec, clock, runner, label, meta)


# ---------------------------------------------------------------------------- part: train


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

    from edgecut.training.run import train

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
    from edgecut.training.run import validator

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
    from edgecut.training.run import train

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


PARTS: dict[str, Callable[[Run, Record, Clock], None]] = {
    "env": part_env, "pytest": part_pytest, "torch": part_torch, "tensorrt": part_tensorrt,
    "onnxruntime": part_onnxruntime, "train": part_train}


# ---------------------------------------------------------------------------- --prepare, --dry-run


def pins(constraints: Path = ROOT / "constraints.txt") -> dict[str, str]:
    """Normalised distribution name -> pinned version."""
    out = {}
    for line in constraints.read_text().splitlines():
        name, sep, version = line.strip().partition("==")
        if sep and not name.startswith("#"):
            out[norm(name)] = version.strip()
    return out


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def wheel_problems(folder: Path, versions: dict[str, str]) -> tuple[list[str], list[str]]:
    """(problems, wheel files) of the carried wheels: one per package, at its pinned version, for CPython 3.12."""
    files = sorted(p.name for p in folder.glob("*.whl")) if folder.is_dir() else []
    problems = []
    for pkg in WHEELS:
        mine = [f for f in files if norm(f.split("-")[0]) == pkg]
        want = versions.get(pkg)
        if not mine:
            problems.append(f"no wheel of {pkg}=={want} in {folder}")
        elif len(mine) > 1:
            problems.append(f"{len(mine)} wheels of {pkg} in {folder} (keep one): {mine}")
        elif mine[0].split("-")[1] != want:
            problems.append(f"{mine[0]} is not the pinned {pkg}=={want}")
        elif not ("-py3-none-any" in mine[0] or ("cp312-cp312" in mine[0] and "x86_64" in mine[0])):
            problems.append(f"{mine[0]} is not for CPython 3.12 on x86-64")
    extra = [f for f in files if norm(f.split("-")[0]) not in WHEELS]
    if extra:
        problems.append(f"wheels not in the list, which the install would also put first on the path: {extra}")
    return problems, files


def data_problems(root: Path) -> tuple[list[str], dict[str, int]]:
    """(problems, counts) of the prepared data set: every split name with its image and mask, ECSSD's counts."""
    if not (root / PREPARED).is_file():
        return [f"{root} is not prepared (no {PREPARED}): run python benchmarks/gpu.py --prepare"], {}
    counts = {sub: len(list((root / sub).glob("*"))) for sub in ("images", "masks")}
    problems = []
    for split, want in ECSSD_SPLITS.items():
        f = root / "splits" / f"{split}.txt"
        names = f.read_text().split() if f.is_file() else []
        counts[split] = len(names)
        if len(names) != want:
            problems.append(f"{f}: {len(names)} names, ECSSD's {split} split has {want}")
        missing = [n for n in names if not (root / "images" / f"{n}.jpg").is_file()
                   or not (root / "masks" / f"{n}.png").is_file()]
        if missing:
            problems.append(f"{len(missing)} {split} name(s) without images/NAME.jpg and masks/NAME.png: {missing[:5]}")
    total = sum(ECSSD_SPLITS.values())
    for sub in ("images", "masks"):
        if counts[sub] != total:
            problems.append(f"{root / sub}: {counts[sub]} files, expected {total}")
    return problems, counts


def tree_bytes(folder: Path) -> int:
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() or p.is_symlink()) if folder.exists() else 0


def carried_size(root: Path = ROOT, carry: Sequence[str] = (".gpu",)) -> dict[str, Any]:
    """What a device call sends: tracked and untracked-not-ignored files, plus the carried folders."""
    p = subprocess.run(["git", "-C", str(root), "ls-files", "-co", "--exclude-standard", "-z"], capture_output=True,
                       check=True)
    files = [root / f for f in p.stdout.decode().split("\0") if f]
    tree = sum(f.lstat().st_size for f in files if f.is_file() or f.is_symlink())
    carried = {c: tree_bytes(root / c) for c in carry}
    ignored = {}
    for c in carry:
        # the trailing slash: a folder pattern matches a folder that does not exist yet (a clean clone)
        q = subprocess.run(["git", "-C", str(root), "check-ignore", "-q", c.rstrip("/") + "/"], capture_output=True)
        ignored[c] = q.returncode == 0
    total = tree + sum(carried.values())
    return {"tree_files": len(files), "tree_bytes": tree, "carried_bytes": carried, "total_bytes": total,
            "total_mib": round(total / 2**20, 2), "limit_mib": CARRY_LIMIT // 2**20, "ignored": ignored}


def device_command(deadline_s: float = DEADLINE_S) -> dict[str, Any]:
    """The device tool's run call a later session makes (the pip line is the device README's)."""
    extra = "" if deadline_s == DEADLINE_S else f" --deadline-s {deadline_s:g}"
    command = (f"{PIP_INSTALL} && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 || exit; set -o pipefail; "
               f"python3 benchmarks/gpu.py --out $OUT{extra} 2>&1 | tee $OUT/gpu.log")
    return {"command": command, "carry": [".gpu"], "timeout_s": DEVICE_TIMEOUT_S}


def dry_run(args) -> int:
    from edgecut import io

    plan, deadline = chosen_plan(args)
    report: dict[str, Any] = {"plan": [asdict(p) for p in plan], "deadline_s": deadline,
                              "budget_total_s": sum(p.budget_s for p in plan), "problems": {}}
    report["problems"]["plan"] = plan_problems(plan, deadline)
    report["problems"]["data"], report["data_counts"] = data_problems(DATA_DIR)
    report["problems"]["wheels"], report["wheels"] = wheel_problems(WHEEL_DIR, pins())
    size = carried_size()
    report["carried"] = size
    report["problems"]["carried"] = ([] if size["total_bytes"] <= CARRY_LIMIT else
                                     [f"{size['total_mib']} MiB would travel, over {CARRY_LIMIT // 2**20} MiB"])
    report["problems"]["carried"] += [f"{c} is not ignored by git: it would travel twice, or not as carried"
                                      for c, ok in size["ignored"].items() if not ok]
    report["device_run"] = device_command(deadline)
    report["ready"] = not any(report["problems"].values())
    print("plan (seconds):")
    for p in plan:
        print(f"  {p.name:12s} budget {p.budget_s:5.0f}  at least {p.min_s:4.0f}  {p.what}")
    print(f"  {'total':12s} budget {report['budget_total_s']:5.0f}  deadline {deadline:.0f} s "
          f"(under {EIGHT_MINUTES:.0f} s: {deadline < EIGHT_MINUTES})")
    print(f"data {DATA_DIR.relative_to(ROOT)}: {report['data_counts'] or 'not prepared'}")
    print(f"wheels {WHEEL_DIR.relative_to(ROOT)}: {report['wheels'] or 'none'}")
    print(f"carried: {size['tree_files']} repo files {size['tree_bytes'] / 2**20:.2f} MiB + "
          + ", ".join(f"{c} {b / 2**20:.2f} MiB" for c, b in size["carried_bytes"].items())
          + f" = {size['total_mib']} MiB of {size['limit_mib']} MiB")
    for what, problems in report["problems"].items():
        for problem in problems:
            print(f"NOT READY ({what}): {problem}")
    print("device run (tool `run`):")
    print(json.dumps(report["device_run"], indent=1))
    print("READY" if report["ready"] else "NOT READY: fix the lines above (python benchmarks/gpu.py --prepare)")
    if args.out:
        io.write_json(args.out / "dry_run.json", report)
    return 0 if report["ready"] else 1


def prepare(args) -> int:
    """ECSSD at 320 px on the longer side (JPEG images, PNG masks, the same splits) and the wheels, into .gpu/."""
    from concurrent.futures import ThreadPoolExecutor

    import cv2
    import numpy as np

    from edgecut import io
    from edgecut.data.folder import find_samples

    GPU_DIR.mkdir(exist_ok=True)
    problems, counts = data_problems(DATA_DIR)
    if problems:
        tmp = DATA_DIR.with_name(DATA_DIR.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        for sub in ("images", "masks", "splits"):
            (tmp / sub).mkdir(parents=True)
        samples = [s for split in ECSSD_SPLITS for s in find_samples(args.source, split)]

        def one(sample) -> None:
            image, mask = io.read_image(sample.image), io.read_mask(sample.mask)
            h, w = image.shape[:2]
            scale = min(1.0, MAX_SIDE / max(h, w))
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            if scale < 1.0:
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
                mask = np.where(cv2.resize(mask, size, interpolation=cv2.INTER_AREA) >= 128, 255, 0).astype(np.uint8)
            io.write_bytes(tmp / "images" / f"{sample.name}.jpg", io.encode_image(image, ".jpg"), fsync=False)
            io.write_bytes(tmp / "masks" / f"{sample.name}.png", io.encode_image(mask, ".png"), fsync=False)

        with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
            list(pool.map(one, samples))
        for split in ECSSD_SPLITS:
            shutil.copyfile(args.source / "splits" / f"{split}.txt", tmp / "splits" / f"{split}.txt")
        io.write_json(tmp / PREPARED, {"source": str(args.source), "max_side": MAX_SIDE,
                                       "images": "JPEG (edgecut.io.encode_image)", "masks": "PNG, area-resized, "
                                       "thresholded at 128 to 0 / 255", "splits": ECSSD_SPLITS,
                                       "made_by": "python benchmarks/gpu.py --prepare"})
        shutil.rmtree(DATA_DIR, ignore_errors=True)
        os.replace(tmp, DATA_DIR)
        problems, counts = data_problems(DATA_DIR)
    print(f"{DATA_DIR.relative_to(ROOT)}: {counts}, {tree_bytes(DATA_DIR) / 2**20:.2f} MiB", flush=True)
    versions = pins()
    wproblems, files = wheel_problems(WHEEL_DIR, versions)
    if wproblems:
        shutil.rmtree(WHEEL_DIR, ignore_errors=True)
        WHEEL_DIR.mkdir()
        cmd = [sys.executable, *PIP_DOWNLOAD, "-d", str(WHEEL_DIR), *(f"{w}=={versions[w]}" for w in WHEELS)]
        print(shlex.join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        wproblems, files = wheel_problems(WHEEL_DIR, versions)
    print(f"{WHEEL_DIR.relative_to(ROOT)}: {files}, {tree_bytes(WHEEL_DIR) / 2**20:.2f} MiB", flush=True)
    for p in problems + wproblems:
        print(f"problem: {p}")
    return 1 if problems or wproblems else 0


# ---------------------------------------------------------------------------- main


def chosen_plan(args) -> tuple[tuple[Part, ...], float]:
    plan = SMOKE_PLAN if args.smoke else PLAN
    deadline = args.deadline_s or (SMOKE_DEADLINE_S if args.smoke else DEADLINE_S)
    for item in args.budget:
        name, _, value = item.partition("=")
        if name not in PARTS or not value:
            raise SystemExit(f"--budget {item!r}: use PART=SECONDS with PART one of {', '.join(PARTS)}")
        plan = tuple(replace(p, budget_s=float(value), min_s=min(p.min_s, float(value))) if p.name == name else p
                     for p in plan)
    return plan, deadline


def smoke_data(args, work: Path) -> tuple[Path, str]:
    """A few images: the prepared ECSSD's first train and val names when there, else synthetic photos."""
    root = work / "smoke-data"
    shutil.rmtree(root, ignore_errors=True)  # a --work used before: made again
    if args.data != "synthetic" and not data_problems(Path(args.data))[0]:
        src = Path(args.data)
        for sub in ("images", "masks", "splits"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        for split, count in (("train", 16), ("val", 8)):
            names = (src / "splits" / f"{split}.txt").read_text().split()[:count]
            (root / "splits" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
            for n in names:
                os.symlink(src / "images" / f"{n}.jpg", root / "images" / f"{n}.jpg")
                os.symlink(src / "masks" / f"{n}.png", root / "masks" / f"{n}.png")
        return root, f"the first 16 train and 8 val images of {src}"
    from edgecut.data.synth import generate

    return generate(root, count=24, size=SMOKE.size, progress=False), "24 synthetic photos at 64 px"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--prepare", action="store_true", help="here: write .gpu/ecssd320 and .gpu/wheels")
    mode.add_argument("--dry-run", action="store_true", help="here: check the plan and what travels, print the command")
    mode.add_argument("--smoke", action="store_true", help="every part for real on this machine, tiny (CPU: seconds)")
    ap.add_argument("--out", type=Path, default=None, help="results folder (on the device: $OUT)")
    ap.add_argument("--work", type=Path, default=None, help="models, engines, runs (default: a new temporary folder)")
    ap.add_argument("--data", default=str(DATA_DIR), help="prepared data set, or 'synthetic' (smoke only)")
    ap.add_argument("--source", type=Path, default=ECSSD, help="--prepare: the full-size ECSSD folder")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument("--budget", action="append", default=[], metavar="PART=SECONDS", help="change one part's budget")
    ap.add_argument("--deadline-s", type=float, default=None, help=f"overall deadline (default {DEADLINE_S:g}; "
                                                                   f"smoke {SMOKE_DEADLINE_S:g})")
    args = ap.parse_args(argv)
    t_start = time.monotonic()
    if args.prepare:
        return prepare(args)
    if args.dry_run:
        return dry_run(args)
    selected = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in selected if p not in PARTS]
    if unknown:
        ap.error(f"--parts: unknown {unknown}; use {', '.join(PARTS)}")
    if args.out is None:
        ap.error("--out is required (on the device: --out $OUT)")
    plan, deadline_s = chosen_plan(args)
    problems = plan_problems(plan, deadline_s)
    if problems:
        ap.error("; ".join(problems))

    import torch

    from edgecut.env import fingerprint

    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        ap.error("no CUDA GPU here: the full run is for the lent GPU machine (use --smoke or --dry-run here)")
    work = args.work or Path(tempfile.mkdtemp(prefix="edgecut-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "splits", ignore_errors=True)  # links to this run's data only
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        if args.smoke:
            data, note = smoke_data(args, work)
        elif not data_problems(Path(args.data))[0]:
            data, note = Path(args.data), f"ECSSD resized to {MAX_SIDE} px on the longer side ({args.data})"
        else:
            data, note = None, "; ".join(data_problems(Path(args.data))[0]) + " (carry .gpu to the device)"
        run = Run(out=args.out, work=work, smoke=args.smoke, sizes=SMOKE if args.smoke else FULL,
                  device="cuda" if cuda else "cpu",
                  command="python benchmarks/gpu.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
                  data=data, data_note=note, deadline=Clock(deadline_s - (time.monotonic() - t_start)))
        run.machine = fingerprint()
        summary = run_parts(run, plan, selected)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if all(p["status"] != "error" for p in summary["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
