"""ARM cost on arm64-emu: guest instructions per inference of the teacher, the pruned teacher and
the MobileNet student, each as ONNX FP32 and INT8, with parity of the aarch64 runtime against x86.

    python benchmarks/arm64.py [--size 128] [--images 8]

The models are the architectures with seeded random weights (cost only: instruction counts and
x86-against-ARM parity do not need trained weights; accuracy is not measured, and the INT8 export's
mask bar against its float parent is lowered because random weights put pixels on the threshold). Each is bundled for
arm64-emu and measured by `edgecut bench --target arm64-emu` (instruction counts and parity against
x86 on the generated images), twice, to show the counts repeat. Counts are exact and repeatable on
one machine; they rank artifacts on aarch64 and are not milliseconds on a device. Writes the records
to benchmarks/results/arm64/arm64.jsonl, the summary to arm64.json beside them, and prints the table.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from common import RESULTS, RUNS, parser, rel

MODELS = {
    "teacher": {"name": "unet", "kwargs": {}},
    "student": {"name": "mobilenet_v3_large_unet", "kwargs": {"weights_backbone": None}},
}


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__)
    ap.add_argument("--size", type=int, default=128)  # the headline table's input size
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--work", type=Path, default=RUNS / "arm64-bench")
    ap.add_argument("--out", type=Path, default=RESULTS / "arm64" / "arm64.json")
    args = ap.parse_args(argv)

    import torch

    from edgecut import io
    from edgecut.compress.config import PruneConfig
    from edgecut.compress.prune import prune
    from edgecut.data.synth import generate
    from edgecut.env import fingerprint
    from edgecut.exporters import ExportConfig, ParityConfig, export
    from edgecut.models.store import build, save_model
    from edgecut.measure.config import BenchConfig
    from edgecut.measure.record import Hooks
    from edgecut.targets import arm64
    from edgecut.measure.target import bench_on_target, resolve

    import shutil

    arm64.setup(say=print)
    shutil.rmtree(args.work, ignore_errors=True)  # scratch: every model is made again from its seed
    work = io.make_dirs(args.work)
    data = generate(work / "images", args.images, args.size, seed=7, progress=False)
    torches = {}
    for name, arch in MODELS.items():
        torch.manual_seed(0)
        model = build(arch, pretrained=False).eval()
        torches[name] = save_model(work / name, model, arch, model.default_spec.with_size(args.size))
    torches["pruned"] = prune(torches["teacher"], work / "pruned", PruneConfig(ratio=0.5, latency=False),
                              progress=False)
    arts, names = [], []
    for name in ("teacher", "pruned", "student"):
        for precision in ("fp32", "int8"):
            # random weights put many pixels near the threshold, where INT8 flips them: cost only, so the
            # INT8 mask bar is lowered here, explicitly (trained models keep edgecut's default bar)
            loose = {"mask_iou": 0.0, "mask_iou_min": 0.0} if precision == "int8" else {}
            arts.append(export(torches[name], work / f"{name}-onnx-{precision}",
                               ExportConfig(format="onnx", precision=precision, parity=ParityConfig(tolerances=loose)),
                               progress=False))
            names.append(f"{name}-{precision}")
    # what a user runs: edgecut bench MODELS --target arm64-emu --data DIR; twice, the second to show the counts repeat
    where = replace(resolve("arm64-emu"), count_iters=1)
    records = args.out.with_suffix(".jsonl")
    records.unlink(missing_ok=True)
    started = time.monotonic()
    first = bench_on_target(arts, records, BenchConfig(data=data), where, names=names, progress=False,
                            hooks=Hooks(say=print)).records
    seconds = time.monotonic() - started
    again = records.with_name(records.stem + "-repeat.jsonl")
    again.unlink(missing_ok=True)
    second = bench_on_target(arts, again, BenchConfig(data=data), where, names=names, progress=False).records
    rows = []
    for rec, other, art in zip(first, second, arts):
        model, precision = rec.name.rsplit("-", 1)
        rows.append({"model": model, "precision": precision, "params": art.manifest.params,
                     "macs": torches[model].manifest.macs, "instructions_per_inference": rec.instructions.per_inference,
                     "instructions_repeat": other.instructions.per_inference,
                     "repeat_identical": rec.instructions.per_inference == other.instructions.per_inference,
                     "max_abs_diff": rec.parity.max_abs_diff, "mask_iou_mean": rec.parity.mask_iou_mean,
                     "mask_iou_min": rec.parity.mask_iou_min})
        print(json.dumps(rows[-1]), flush=True)
    base = next(r["instructions_per_inference"] for r in rows if r["model"] == "teacher" and r["precision"] == "fp32")
    report = {"what": "guest instructions per inference on arm64-emu (qemu-user, aarch64 onnxruntime), one thread; "
                      "random weights (cost only); not device time",
              "size": args.size, "parity_images": args.images, "wheels": arm64.pins(), "machine": fingerprint(),
              "records": rel(records),
              "seconds_one_bench": round(seconds, 1), "rows": rows}
    io.write_json(args.out, report)
    print("\n| model | precision | params | G instructions / inference | teacher fp32 / this | max abs diff vs x86 "
          "| mask IoU vs x86, mean / min |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['precision']} | {r['params'] / 1e6:.2f} M | {r['instructions_per_inference'] / 1e9:.3f} "
              f"| {base / r['instructions_per_inference']:.1f}x | {r['max_abs_diff']:.2e} "
              f"| {r['mask_iou_mean']:.4f} / {r['mask_iou_min']:.4f} |")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
