"""The latency worker: one model, one fresh process (``python -m edgecut.measure.worker``).

Reads one job as JSON on stdin (written by :func:`edgecut.measure.bench.measure_latency`), loads
the model through its Runner, and prints one JSON line: latency of one batch, throughput per
batch size, end-to-end cut-out latency of one image file, peak memory, the threads used.
Only the backend the model needs is imported, so an ONNX Runtime model is measured without
torch in the process (as it would be deployed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edgecut.runtime.timing import LatencyConfig, measure


def _reset_peak_rss() -> bool:
    """Reset this process's peak-RSS mark (Linux ``clear_refs`` 5); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    except (ImportError, OSError):
        return None


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    from edgecut import io, runtime
    from edgecut.artifact import load_artifact
    from edgecut.cutout import compose
    from edgecut.env import default_threads
    from edgecut.runtime.base import AtSize, spec_at

    notes: list[str] = []
    reset = _reset_peak_rss()
    art = load_artifact(job["artifact"])
    spec = spec_at(art, tuple(job["size"]))
    config = LatencyConfig(**job["latency"])
    device = job["device"]
    runner = runtime.load(art, device=device, threads=job["threads"], backend=job["backend"])
    model = AtSize(runner, spec)
    sync = None
    if job["backend"] == "torch" and device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()
        sync = torch.cuda.synchronize
    image = io.read_image(job["e2e_image"]) if job.get("e2e_image") else \
        np.random.default_rng(0).integers(0, 256, (*spec.input_size, 3), dtype=np.uint8)

    def batch_of(n: int) -> np.ndarray:
        return spec.preprocess([image] * n)

    x = batch_of(job["batch"])
    stats = measure(lambda: model(x), config, sync)
    throughput = [{"batch": job["batch"], "p50_ms": stats.p50_ms,
                   "images_per_s": job["batch"] * 1e3 / stats.p50_ms, "unstable": stats.unstable}]
    for b in job.get("batches", []):
        if b == job["batch"]:
            continue
        xb = batch_of(b)
        s = measure(lambda: model(xb), config, sync)
        throughput.append({"batch": b, "p50_ms": s.p50_ms, "images_per_s": b * 1e3 / s.p50_ms,
                           "unstable": s.unstable})
    end_to_end = None
    if job.get("e2e_image"):
        path = Path(job["e2e_image"])

        def cutout() -> bytes:
            img = io.read_image(path)
            prob = spec.to_probability(model(spec.preprocess(img)))[0]
            return io.encode_image(compose(img, spec.resize_back(prob, img.shape[:2]), "rgba"))

        end_to_end = measure(cutout, config, sync).to_json()
    memory: dict[str, Any] = {"peak_rss_mb": _peak_rss_mb()}
    if not reset:
        notes.append("peak RSS could not be reset after start-up: it is the process's peak")
    if sync is not None:
        import torch

        memory["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    threads = getattr(runner, "threads", None) or job["threads"]
    if threads is None and device == "cpu":
        import os

        threads = int(os.environ.get("OMP_NUM_THREADS", 0)) or default_threads()
    return {"latency": stats.to_json(), "throughput": throughput, "end_to_end": end_to_end, "memory": memory,
            "threads": threads, "notes": notes}


def main() -> None:
    job = json.loads(sys.stdin.read())
    try:
        result = run_job(job)
    except Exception as e:  # the parent reports the last stderr line
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
