"""The six measurements of the GPU run, in the plan's order; each takes the run, its record and its clock:

- env: the machine, its drivers, torch / CUDA / cuDNN and the backends edgecut finds;
- pytest: ``python3 -m pytest -m "gpu or tensorrt" -q``, its output kept;
- torch: the teacher and the student at 320 px, batch 1, 8 and 32, in each precision and compiled;
- tensorrt: FP32, FP16 and INT8 engines, checked against the torch parent on CUDA, then timed;
- onnxruntime: the CUDA and TensorRT execution providers, where this onnxruntime has them;
- train (train.py): the teacher at 320 px on ECSSD, as many epochs as fit its budget.

What is not installed is recorded as skipped with the reason, never measured some other way.
What each part runs, in full: benchmarks/README.md#gpupy-one-prepared-run-on-a-lent-gpu-machine-no-gpu-result-recorded-yet
"""

from __future__ import annotations

import contextlib
import copy
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from common import ROOT

from .scheduler import Clock, Record, Run, error_row, row, skip_if_short
from .train import part_train

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


PARTS: dict[str, Callable[[Run, Record, Clock], None]] = {
    "env": part_env, "pytest": part_pytest, "torch": part_torch, "tensorrt": part_tensorrt,
    "onnxruntime": part_onnxruntime, "train": part_train}
