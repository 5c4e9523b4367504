"""Whole cut-outs per second: rembg, edgecut's one-image-at-a-time loop, and edgecut's pipeline.

    python benchmarks/cutout.py [--images 200] [--size 320] [--threads 2] [--rounds 3]
                                [--rembg-python /path/to/venv/bin/python] [--png-sweep]

Every pipeline cuts out the same ECSSD val photos into RGBA PNGs, in interleaved rounds, and keeps
its median round. The models carry seeded random weights (a cut-out costs the same whatever the
weights). Without ``--rembg-python`` (a venv with rembg) the rembg row is skipped, and said so;
``--png-sweep`` first times the PNG encoder's settings. Writes benchmarks/results/cutout/cutout.json.
Models, pipelines and measured notes: benchmarks/README.md#cutoutpy-whole-cut-outs-per-second-resultsmd-cut-out-table
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import ECSSD, RESULTS, RUNS, parser

REMBG_SCRIPT = """
import json, sys, time
import onnxruntime as ort
from rembg import new_session, remove
model, threads, out, files = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
so = ort.SessionOptions()
so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
session = new_session("u2net_custom", model_path=model, sess_opts=so, providers=["CPUExecutionProvider"])
remove(open(files[0], "rb").read(), session=session)  # warm-up
t0 = time.perf_counter()
for f in files:
    data = remove(open(f, "rb").read(), session=session)
    open(out + "/" + f.rsplit("/", 1)[-1].rsplit(".", 1)[0] + ".png", "wb").write(data)
seconds = time.perf_counter() - t0
import rembg, importlib.metadata as md
print(json.dumps({"seconds": seconds, "rembg": md.version("rembg"), "onnxruntime": ort.__version__}))
"""


def loop_cutouts(files, runner, out: Path) -> None:
    """edgecut remove before the pipeline, step for step: one image at a time, fsync per file."""
    from edgecut import io
    from edgecut.cutout import compose

    spec = runner.spec
    for path in files:
        image = io.read_image(path)
        prob = spec.to_probability(runner(spec.preprocess(image)))[0]
        alpha = spec.resize_back(prob, image.shape[:2])
        io.write_bytes(out / f"{path.stem}.png", io.encode_image(compose(image, alpha, "rgba"), ".png", 3))


def png_sweep(files, runner, count: int = 40) -> list[dict]:
    """Encoding time and size of ``count`` RGBA cut-outs at each zlib level and PNG filter."""
    import cv2

    from edgecut import io
    from edgecut.cutout import compose

    spec = runner.spec
    cutouts = []
    for path in files[:count]:
        image = io.read_image(path)
        alpha = spec.resize_back(spec.to_probability(runner(spec.preprocess(image)))[0], image.shape[:2])
        cutouts.append(cv2.cvtColor(compose(image, alpha, "rgba"), cv2.COLOR_RGBA2BGRA))
    filters = {"none": cv2.IMWRITE_PNG_FILTER_NONE, "sub": cv2.IMWRITE_PNG_FILTER_SUB,
               "up": cv2.IMWRITE_PNG_FILTER_UP, "paeth": cv2.IMWRITE_PNG_FILTER_PAETH,
               "fast": cv2.IMWRITE_PNG_FAST_FILTERS, "all": cv2.IMWRITE_PNG_ALL_FILTERS}
    strategies = {"default": cv2.IMWRITE_PNG_STRATEGY_DEFAULT, "rle": cv2.IMWRITE_PNG_STRATEGY_RLE,
                  "huffman": cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY}
    rows = []
    for level, strategy, name in [(lv, st, f) for lv in (1, 2, 3, 6) for st in strategies for f in filters
                                  if st == "default" or lv == 1]:
        params = [cv2.IMWRITE_PNG_COMPRESSION, level, cv2.IMWRITE_PNG_STRATEGY, strategies[strategy],
                  cv2.IMWRITE_PNG_FILTER, filters[name]]
        best, size = float("inf"), 0
        for _ in range(3):
            t0 = time.perf_counter()
            size = sum(len(cv2.imencode(".png", a, params)[1]) for a in cutouts)
            best = min(best, time.perf_counter() - t0)
        rows.append({"level": level, "strategy": strategy, "filter": name, "ms_per_image": 1e3 * best / len(cutouts),
                     "kb_per_image": size / len(cutouts) / 1024})
    t0 = time.perf_counter()
    size = sum(len(cv2.imencode(".png", a, [cv2.IMWRITE_PNG_COMPRESSION, 3])[1]) for a in cutouts)
    rows.append({"level": 3, "strategy": "default", "filter": "opencv default (before)",
                 "ms_per_image": 1e3 * (time.perf_counter() - t0) / len(cutouts), "kb_per_image": size / len(cutouts) / 1024})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__, "threads")
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rembg-python", type=Path, default=None)
    ap.add_argument("--png-sweep", action="store_true")
    ap.add_argument("--work", type=Path, default=RUNS / "cutout-bench")
    ap.add_argument("--out", type=Path, default=RESULTS / "cutout" / "cutout.json")
    args = ap.parse_args(argv)

    import torch

    from edgecut import io, runtime
    from edgecut.cutout import RemoveConfig, load_for_cutouts, remove_background
    from edgecut.env import fingerprint
    from edgecut.exporters import CalibConfig, ExportConfig, ParityConfig, export
    from edgecut.models.store import build, save_model

    names = (ECSSD / "splits" / "val.txt").read_text().split()[: args.images]
    files = [ECSSD / "images" / f"{n}.jpg" for n in names]
    work = io.make_dirs(args.work)
    models = {}
    for name, arch in (("student", {"name": "mobilenet_v3_large_unet", "kwargs": {"weights_backbone": None}}),
                       ("relu-student", {"name": "mobilenet_v3_large_relu_unet", "kwargs": {}}),
                       ("u2netp", {"name": "u2netp", "kwargs": {}})):
        if not (work / name / "edgecut.json").is_file():
            torch.manual_seed(0)
            model = build(arch, pretrained=False).eval()
            save_model(work / name, model, arch, model.default_spec.with_size(args.size))
        models[name] = work / name
    loose = ParityConfig(tolerances={"mask_iou": 0.0, "mask_iou_min": 0.0})  # random weights: cost rows only
    exports = {"student-onnx": ("student", ExportConfig(format="onnx")),
               "student-openvino": ("student", ExportConfig(format="openvino")),
               "student-openvino-int8": ("student", ExportConfig(format="openvino", precision="int8", parity=loose,
                                                                 calib=CalibConfig(data=ECSSD, split="train"))),
               "relu-student-openvino-int8": ("relu-student", ExportConfig(
                   format="openvino", precision="int8", parity=loose, calib=CalibConfig(data=ECSSD, split="train"))),
               "relu-student-onnx-int8": ("relu-student", ExportConfig(
                   format="onnx", precision="int8", parity=loose, calib=CalibConfig(data=ECSSD, split="train"))),
               "u2netp-onnx": ("u2netp", ExportConfig(format="onnx"))}
    for name, (parent, config) in exports.items():
        if not (work / name / "edgecut.json").is_file():
            export(models[parent], work / name, config, progress=False)
    runners = {name: runtime.load(work / name, threads=args.threads) for name in exports}  # the loop's: all threads
    split = {name: load_for_cutouts(work / name, probe=files[0]) for name in exports}  # as edgecut remove loads it

    report = {"what": "whole RGBA PNG cut-outs per second, ECSSD val photos, models with random weights (cost only)",
              "images": len(files), "size": args.size, "threads": args.threads, "rounds": args.rounds,
              "pipeline_threads": {name: {"model": r.threads, "image_work": w} for name, (r, w) in split.items()},
              "machine": fingerprint()}
    if args.png_sweep:
        report["png_sweep"] = png_sweep(files, runners["student-onnx"])
        for row in report["png_sweep"]:
            print(f"png level {row['level']} {row['strategy']} filter {row['filter']}: {row['ms_per_image']:.2f} ms, "
                  f"{row['kb_per_image']:.0f} KB", flush=True)

    cases = {"rembg, u2netp-onnx": ("rembg", "u2netp-onnx"), "loop, u2netp-onnx": ("loop", "u2netp-onnx"),
             "pipeline, u2netp-onnx": ("pipeline", "u2netp-onnx"), "loop, student-onnx": ("loop", "student-onnx"),
             "pipeline, student-onnx": ("pipeline", "student-onnx"),
             "pipeline, student-openvino": ("pipeline", "student-openvino"),
             "loop, student-openvino-int8": ("loop", "student-openvino-int8"),
             "pipeline, student-openvino-int8": ("pipeline", "student-openvino-int8"),
             "pipeline, relu-student-onnx-int8": ("pipeline", "relu-student-onnx-int8"),
             "pipeline, relu-student-openvino-int8": ("pipeline", "relu-student-openvino-int8")}
    rembg = args.rembg_python
    if rembg is None or not rembg.is_file():
        print("rembg: no --rembg-python (a venv with rembg and onnxruntime): its row is skipped", flush=True)
        cases.pop("rembg, u2netp-onnx")
    seconds: dict[str, list[float]] = {k: [] for k in cases}
    versions = {}
    for r in range(args.rounds):
        for label, (how, name) in cases.items():
            dest = work / "out" / label.replace(", ", "-")
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            if how == "rembg":
                p = subprocess.run([str(rembg), "-c", REMBG_SCRIPT, str(work / name / "model.onnx"), str(args.threads),
                                    str(dest), *map(str, files)], capture_output=True, text=True,
                                   env={**os.environ, "OMP_NUM_THREADS": str(args.threads),
                                        "U2NET_HOME": str(work / name)})  # rembg reads custom models from there
                if p.returncode != 0:
                    raise SystemExit(f"rembg failed: {p.stderr[-800:]}")
                got = json.loads(p.stdout.strip().splitlines()[-1])
                versions = {"rembg": got["rembg"], "rembg_onnxruntime": got["onnxruntime"]}
                took = got["seconds"]
            else:
                t0 = time.perf_counter()
                if how == "loop":
                    loop_cutouts(files, runners[name], dest)
                else:
                    runner, image_threads = split[name]
                    done = remove_background(files, runner, dest, RemoveConfig(workers=image_threads), progress=False)
                    assert len(done.written) == len(files), done.failed[:3]
                took = time.perf_counter() - t0
            seconds[label].append(took)
            print(f"round {r + 1} {label}: {len(files) / took:.1f} images/s", flush=True)
    rows = []
    for label, runs in seconds.items():
        med = statistics.median(runs)
        rows.append({"pipeline": label, "images_per_s": len(files) / med, "seconds": runs})
    base = {r["pipeline"]: r["images_per_s"] for r in rows}
    report.update(versions=versions, rows=rows)
    io.write_json(args.out, report)
    print("\n| pipeline | images/s | vs loop, same model | vs rembg |\n|---|---:|---:|---:|")
    for r in rows:
        model = r["pipeline"].split(", ")[1]
        loop = base.get(f"loop, {model}")
        ref = base.get("rembg, u2netp-onnx")
        print(f"| {r['pipeline']} | {r['images_per_s']:.1f} | "
              + (f"{r['images_per_s'] / loop:.2f}x" if loop else "-") + " | "
              + (f"{r['images_per_s'] / ref:.1f}x" if ref else "-") + " |")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
