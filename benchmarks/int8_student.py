"""Is the student's INT8 worth shipping? INT8 against FP32, ONNX Runtime and OpenVINO, 128 and 320 px.

    python benchmarks/int8_student.py                  # trains the two students first if needed (about 8 min each)
    python benchmarks/int8_student.py --limit 20 --min-time 0.5 --repeats 1 --out /tmp/i8   # a smoke run

Trains the default ``mobilenet_v3_large_unet`` and the INT8-friendly ``mobilenet_v3_large_relu_unet``,
exports each at 128 and 320 px to ONNX and OpenVINO, FP32 and INT8, benches and scores them on ECSSD
val in one run, then times the variant's changes one at a time (``--no-ablation`` skips that) and
profiles each 320 px export per op. Writes ``results/int8_student/int8_student.jsonl`` and ``.json``.
Settings, the one-thread and AVX2-capped runs, and what they showed:
benchmarks/README.md#int8_studentpy-the-students-int8-against-its-fp32-and-the-int8-friendly-student
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from common import RESULTS, RUNS, parser

STUDENTS = {"student": "mobilenet_v3_large_unet", "relu-student": "mobilenet_v3_large_relu_unet"}
EXPORTS = {"onnx": ("onnx", "fp32"), "onnx-int8": ("onnx", "int8"),
           "openvino": ("openvino", "fp32"), "openvino-int8": ("openvino", "int8")}
ABLATION = {  # the variant's changes one at a time (kwargs of mobilenet_v3_large_relu_unet)
    "default student": ("mobilenet_v3_large_unet", {}),
    "ReLU, no SE": ("mobilenet_v3_large_relu_unet", {"upsample": "bilinear", "head": "bilinear"}),
    "+ nearest decoder": ("mobilenet_v3_large_relu_unet", {"head": "bilinear"}),
    "+ shuffle head (relu-student)": ("mobilenet_v3_large_relu_unet", {}),
    "relu-student with SE": ("mobilenet_v3_large_relu_unet", {"se": True}),
}


def train_students(work: Path, data: Path, epochs: int) -> dict[str, Path]:
    from edgecut.artifact import is_artifact
    from edgecut.training.config import LoopConfig, TrainConfig
    from edgecut.training.loop import CHECKPOINT_DIR, LAST
    from edgecut.training.train import train

    out = {}
    for name, arch in STUDENTS.items():
        out[name] = work / name
        if not is_artifact(out[name]):
            loop = LoopConfig(epochs=epochs, batch_size=8, lr=2e-3, ema_decay=0.998, seed=0)
            train(data, out[name], TrainConfig(arch=arch, size=128, train_split="train", val_split="val", loop=loop),
                  resume=(out[name] / CHECKPOINT_DIR / LAST).exists())
    return out


def export_all(parents: dict[str, Path], work: Path, data: Path, sizes: list[int],
               picked: list[str]) -> dict[str, Path]:
    """name -> artifact: each student resized to each size, then every export of EXPORTS."""
    from edgecut.artifact import is_artifact
    from edgecut.exporters import CalibConfig, ExportConfig, ParityConfig, export
    from edgecut.models.store import load_model, save_model

    out = {}
    calib = CalibConfig(data=data, split="train", count=64)
    parity = ParityConfig(data=data, split="val", count=32, tolerances={"mask_iou": 0.9, "mask_iou_min": 0.0})
    for name, parent in parents.items():
        for size in sizes:
            sized = work / f"{name}-{size}"
            if not is_artifact(sized):
                loaded = load_model(parent)
                save_model(sized, loaded.module, loaded.arch, loaded.spec.with_size(size),
                           lineage=loaded.artifact.manifest.lineage)
            for suffix in picked:
                fmt, precision = EXPORTS[suffix]
                dest = work / f"{name}-{size}-{suffix}"
                if not is_artifact(dest):
                    export(sized, dest, ExportConfig(format=fmt, precision=precision, calib=calib, parity=parity),
                           progress=False)
                out[f"{name} {size} {suffix}"] = dest
    return out


def ablation_models(work: Path, size: int) -> dict[str, Path]:
    """Random-weight OpenVINO FP32 and INT8 exports of each ABLATION row (latency only)."""
    import torch

    from edgecut.artifact import is_artifact
    from edgecut.exporters import CalibConfig, ExportConfig, ParityConfig, export
    from edgecut.models.store import build, save_model

    loose = ParityConfig(tolerances={"mask_iou": 0.0, "mask_iou_min": 0.0, "max_abs_diff": 1e9})
    out = {}
    for i, (row, (arch, kwargs)) in enumerate(ABLATION.items()):
        base = work / f"ablation-{i}"
        if not is_artifact(base):
            torch.manual_seed(0)
            spec = {"name": arch, "kwargs": kwargs}
            model = build(spec, pretrained=False).eval()
            save_model(base, model, spec, model.default_spec.with_size(size))
        for suffix, precision in (("openvino", "fp32"), ("openvino-int8", "int8")):
            dest = work / f"ablation-{i}-{suffix}"
            if not is_artifact(dest):
                export(base, dest, ExportConfig(format="openvino", precision=precision, parity=loose,
                                                calib=CalibConfig(count=16)), progress=False)
            out[f"{row} | {suffix}"] = dest
    return out


def ort_profile(path: Path, threads: int, iters: int) -> dict:
    """ONNX Runtime's own profiler: kernel time per op type, and how many nodes of each ran."""
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        so.profile_file_prefix = str(Path(tmp) / "ort")
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        x = np.random.default_rng(0).standard_normal([1, *inp.shape[1:]]).astype(np.float32)
        for _ in range(iters):
            sess.run(None, {inp.name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    us: dict[str, float] = defaultdict(float)
    nodes: dict[str, int] = defaultdict(int)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            us[e["args"]["op_name"]] += e["dur"]
            nodes[e["args"]["op_name"]] += 1
    total = sum(us.values())
    return {"model": str(path), "ms_per_inference": round(total / iters / 1e3, 3),
            "by_type": [{"name": k, "ms": round(v / iters / 1e3, 3), "share": round(v / total, 3),
                         "nodes": nodes[k] // iters} for k, v in sorted(us.items(), key=lambda kv: -kv[1])]}


def summarize(records, models: dict[str, Path]) -> dict:
    """INT8 / FP32 speed-ups and IoU deltas per (student, size, backend)."""
    by_name = {r.name: r for r in records}
    out = {}
    for key in models:
        name, size, suffix = key.split(" ")
        if not suffix.endswith("-int8") or key not in by_name:
            continue
        fp32 = by_name.get(f"{name} {size} {suffix.removesuffix('-int8')}")
        q = by_name[key]
        row = {"fp32_p50_ms": fp32.latency.p50_ms, "int8_p50_ms": q.latency.p50_ms,
               "speedup": round(fp32.latency.p50_ms / q.latency.p50_ms, 3),
               "unstable": bool(fp32.latency.unstable or q.latency.unstable)}
        if q.accuracy and fp32.accuracy:
            row |= {"fp32_iou": fp32.accuracy.metrics["iou"], "int8_iou": q.accuracy.metrics["iou"],
                    "iou_points": round(100 * (q.accuracy.metrics["iou"] - fp32.accuracy.metrics["iou"]), 3)}
        out[key.removesuffix("-int8")] = row
    return out


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__, "data", "threads")
    ap.add_argument("--work", type=Path, default=RUNS / "int8-student")
    ap.add_argument("--out", type=Path, default=RESULTS / "int8_student", help="folder for int8_student.json / .jsonl")
    ap.add_argument("--sizes", default="128,320")
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--limit", type=int, default=None, help="score only the first N val images")
    ap.add_argument("--min-time", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile-iters", type=int, default=30)
    ap.add_argument("--exports", default=",".join(EXPORTS), help="a subset of: " + ", ".join(EXPORTS))
    ap.add_argument("--no-ablation", action="store_true")
    ap.add_argument("--name", default="int8_student", help="stem of the two result files")
    args = ap.parse_args(argv)
    picked_exports = args.exports.split(",")
    if not set(picked_exports) <= set(EXPORTS):
        ap.error(f"--exports: pick from {', '.join(EXPORTS)}")

    from int8_profile import profile as ov_profile

    from edgecut import io
    from edgecut.env import fingerprint
    from edgecut.measure.record import Hooks, new_run_id, read_records
    from edgecut.measure.bench import bench
    from edgecut.measure.config import BenchConfig
    from edgecut.runtime.timing import LatencyConfig

    sizes = [int(s) for s in args.sizes.split(",")]
    work = io.make_dirs(args.work)
    models = export_all(train_students(work, args.data, args.epochs), work, args.data, sizes, picked_exports)
    ablation = {} if args.no_ablation else ablation_models(work, max(sizes))
    records_path = io.make_dirs(args.out) / f"{args.name}.jsonl"
    if records_path.exists():
        records_path.unlink()  # one run per file: the ratios below compare rows of one run
    run_id = new_run_id()
    latency = LatencyConfig(warmup_s=1.0, warmup_min=10, min_time_s=args.min_time, min_iters=30)
    config = BenchConfig(threads=(args.threads,), latency=latency, repeats=args.repeats, end_to_end=False, worst=0)
    show = lambda r: print(f"{r.name:36s} p50 {r.latency.p50_ms:7.3f} ms" + (  # noqa: E731
        f"  IoU {r.accuracy.metrics['iou']:.4f}" if r.accuracy else ""), flush=True)
    for size in sizes:  # one bench per size: the size is a bench setting
        picked = {k: v for k, v in models.items() if f" {size} " in k}
        bench(list(picked.values()), records_path, replace(config, size=(size, size), data=args.data, split="val",
                                                           limit=args.limit),
              names=list(picked), run_id=run_id, resume=True, progress=False, hooks=Hooks(show, print))
    s = max(sizes)
    if ablation:
        bench(list(ablation.values()), records_path, replace(config, size=(s, s)), names=list(ablation),
              run_id=run_id, resume=True, progress=False, hooks=Hooks(show, print))
    records = [r for r in read_records(records_path) if r.run_id == run_id]
    ab = {r.name: r.latency.p50_ms for r in records if r.name in ablation}
    profiles = {}
    for key, path in models.items():
        if f" {s} " in key:
            art_file = path / ("model.xml" if "openvino" in key else "model.onnx")
            profiles[key] = (ov_profile(art_file, 1, args.profile_iters) if "openvino" in key
                             else ort_profile(art_file, 1, args.profile_iters))
            print(f"profile {key}: {profiles[key]['ms_per_inference']:.2f} ms (1 thread, sum of ops)", flush=True)
    summary = summarize(records, models)
    report = {"what": "student INT8 against FP32 (model-only p50, edgecut bench) and ECSSD val IoU; ablation and "
                      "per-op profiles with random weights", "run_id": run_id, "threads": args.threads,
              "sizes": sizes, "trained_at": 128, "students": STUDENTS, "int8_vs_fp32": summary,
              "ablation_openvino_p50_ms": {row: {"fp32": ab.get(f"{row} | openvino"),
                                                 "int8": ab.get(f"{row} | openvino-int8")} for row in ABLATION} if ablation else {},
              "profiles_1_thread": profiles, "machine": fingerprint(),
              "isa_cap": {k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA",) if k in os.environ}}
    io.write_json(args.out / f"{args.name}.json", report)
    print()
    for key, row in summary.items():
        iou = f"  IoU {row['fp32_iou']:.4f} -> {row['int8_iou']:.4f} ({row['iou_points']:+.2f} pt)" if "fp32_iou" in \
            row else ""
        print(f"{key:32s} fp32 {row['fp32_p50_ms']:7.3f} ms  int8 {row['int8_p50_ms']:7.3f} ms  "
              f"{row['speedup']:.2f}x{iou}")
    print(f"\nwrote {records_path} and {args.out / (args.name + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
