"""Facts about this machine: CPU model and flags, threads, devices, installed backends.

Used by ``edgecut doctor``, as the environment fingerprint of benchmark records, and by every
layer that needs a device or a thread count (:func:`resolve_device`, :func:`default_threads`).
Nothing here imports a heavy backend unless asked to.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import TYPE_CHECKING, Any

from edgecut._optional import available
from edgecut.errors import EdgecutError

if TYPE_CHECKING:
    import torch

CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
             "amx_tile", "amx_bf16", "amx_int8", "asimd", "asimddp", "sve", "bf16", "i8mm")
PACKAGES = {  # import name -> distribution name of the backends whose versions are reported
    "torch": "torch", "torchvision": "torchvision", "onnx": "onnx", "onnxruntime": "onnxruntime",
    "onnxslim": "onnxslim", "openvino": "openvino", "nncf": "nncf", "tensorrt": "tensorrt",
    "torch_pruning": "torch-pruning", "pnnx": "pnnx", "ncnn": "ncnn", "coremltools": "coremltools",
    "ai_edge_litert": "ai-edge-litert", "executorch": "executorch",
}


def default_threads() -> int:
    """The CPUs this process may use (its affinity mask), the thread count runners use by default."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA when there is a GPU; under torchrun each process takes GPU ``LOCAL_RANK``."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EdgecutError(f"device {device!r} asked for, but no CUDA GPU is available here; use --device cpu")
    if dev.type == "cuda" and dev.index is None and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return dev


# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) under which its kernels still use bf16 instructions
BF16_ISAS = {"AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10_1_512", "AVX512_CORE_AMX", "AVX10_1_512_AMX",
             "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX_FP16", "DEFAULT", "ALL"}


def native_bf16() -> bool:
    """Whether this CPU computes bf16 itself (AVX-512 BF16 or AMX on x86, the BF16 extension on ARM)
    and oneDNN is let use it (``ONEDNN_MAX_CPU_ISA`` not capped below AVX512_CORE_BF16); elsewhere
    torch's bf16 autocast is emulated, many times slower than fp32."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    if cap and cap not in BF16_ISAS:
        return False
    flags = set(cpu_info()["flags"])
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def isa_notes(flags: set[str] | None = None) -> list[str]:
    """What this CPU's instruction set means for edgecut's defaults, one line each."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    flags = set(cpu_info()["flags"]) if flags is None else flags
    notes = []
    if cap and cap not in BF16_ISAS and flags & {"avx512_bf16", "amx_bf16"}:
        notes.append(f"bf16: the CPU has it, but ONEDNN_MAX_CPU_ISA={cap} keeps oneDNN from it (emulated); "
                     "--precision auto trains in fp32")
    elif flags & {"avx512_bf16", "amx_bf16", "bf16"}:
        notes.append("bf16: native; training with --precision auto times bf16 against fp32 and keeps the faster")
    else:
        notes.append("bf16: not native (emulated, many times slower than fp32); --precision auto trains in fp32")
    if flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        notes.append("int8: VNNI dot products; INT8 models run their fast kernels")
    elif "avx2" in flags:
        notes.append("int8: AVX2 without VNNI (pairs of products in int16); edgecut's INT8 ONNX uses 7-bit weights, "
                     "so it computes the same here as on VNNI CPUs, though with less speed-up")
    elif flags & {"asimddp", "i8mm"}:
        notes.append("int8: ARM dot-product instructions; INT8 models run their fast kernels")
    if flags & {"avx512_bf16", "amx_bf16"}:
        notes.append("OpenVINO: its CPU plugin would run FP32 models in bf16 here; edgecut's runner asks for f32")
    return notes


def cpu_info() -> dict[str, Any]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "CPU part") and model in ("", platform.machine()):
                    model = value.strip()
                elif key in ("flags", "Features"):
                    flags.update(value.split())
    except OSError:
        pass
    return {"model": model, "arch": platform.machine(), "cores": os.cpu_count(),
            "flags": [f for f in CPU_FLAGS if f in flags]}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment(probe_backends: bool = False) -> dict[str, Any]:
    """A fingerprint of this machine; ``probe_backends`` also asks each backend for its devices."""
    env: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(), "cpu": cpu_info(),
        "edgecut": _version("edgecut"),
        "backends": {name: _version(dist) for name, dist in PACKAGES.items() if available(name)},
        "threads": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ},
    }
    if probe_backends:
        env["devices"] = _devices()
    return env


def _devices() -> dict[str, Any]:
    out: dict[str, Any] = {}
    import torch

    out["torch"] = {"threads": torch.get_num_threads(), "cuda": [
        torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if available("onnxruntime"):
        import onnxruntime as ort

        out["onnxruntime"] = ort.get_available_providers()
    if available("openvino"):
        try:
            import openvino as ov

            out["openvino"] = ov.Core().available_devices
        except Exception as e:  # a broken install is worth reporting, not crashing on
            out["openvino"] = f"error: {e}"
    if available("tensorrt"):
        out["tensorrt"] = "installed (needs a CUDA GPU)" if not out["torch"]["cuda"] else "installed"
    return out


def fingerprint(target: str = "local") -> dict[str, Any]:
    """The environment fingerprint of a benchmark record: :func:`environment` plus the GPUs and the target."""
    env = environment()
    gpus: list[str] = []
    if available("torch"):
        import torch

        if torch.cuda.is_available():
            gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        env["threads"]["torch"] = torch.get_num_threads()
    env["gpus"] = gpus
    env["target"] = target
    return env
