"""Phone formats beside the desktop ones: size, parity, ECSSD IoU, x86 latency and ARM instructions.

    python benchmarks/phone_formats.py                    # after benchmarks/int8_student.py (its trained students)
    python benchmarks/phone_formats.py --models teacher   # after benchmarks/teacher.py: the full-size teacher

Exports the models at 128 px to ONNX, ONNX Runtime mobile, ncnn, LiteRT and ExecuTorch (FP32, FP16,
INT8) and measures every row with ``edgecut bench`` on this machine (p50, IoU on ECSSD val) and on
``--target arm64-emu`` (instructions per inference, parity against this machine). Writes
``results/phone_formats/phone_formats.json`` (the table), ``phone_formats.jsonl`` and
``phone_formats-arm64.jsonl`` (the records). Rows, options and findings:
benchmarks/README.md#phone_formatspy-phone-formats-beside-onnx-resultsmd-phone-table
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from common import ECSSD, RESULTS, RUNS, TEACHER, parser

STUDENTS = ("student", "relu-student")


def make_rows(work: Path, size: int, models: Sequence[str] = STUDENTS, teacher: Path = TEACHER,
              refused: dict[str, str] | None = None) -> dict[str, Path]:
    """Row name -> artifact: the ONNX exports int8_student.py made (the teacher's are made here), their ORT
    conversions, and the other phone formats' conversions of the torch model. An export edgecut refuses
    (a converter that cannot, parity outside the bar) is no row: its reason goes into ``refused``."""
    from edgecut.artifact import is_artifact
    from edgecut.errors import EdgecutError
    from edgecut.exporters import CalibConfig, ExportConfig, LiteRTOptions, ParityConfig
    from edgecut.exporters import export as edgecut_export

    refused = {} if refused is None else refused
    known = work / "refused.json"  # refusals of earlier runs: not tried again (a --resume run)
    refused.update(json.loads(known.read_text()) if known.is_file() else {})

    def export(parent, dest: Path, config, progress: bool = False) -> None:
        if dest.name in refused:
            return
        try:
            edgecut_export(parent, dest, config, progress=progress)
        except EdgecutError as e:
            refused[dest.name] = str(e)
            print(f"refused: {dest.name}: {e}")
            known.write_text(json.dumps(refused, indent=1) + "\n")

    rows = {}
    loose = ParityConfig(tolerances={"mask_iou": 0.9})
    for name in models:
        base = teacher if name == "teacher" else work / f"{name}-{size}"
        sources = {"onnx fp32": f"{work / name}-{size}-onnx", "onnx int8": f"{work / name}-{size}-onnx-int8"}
        if name == "teacher" and is_artifact(base):  # the teacher's ONNX rows are made here (same settings)
            for key, config in (("onnx fp32", ExportConfig(format="onnx")),
                                ("onnx int8", ExportConfig(format="onnx", precision="int8", parity=loose,
                                                           calib=CalibConfig(data=ECSSD, split="train")))):
                if not is_artifact(sources[key]):
                    export(base, sources[key], config, progress=False)
        missing = [p for p in (base, *sources.values()) if not is_artifact(p)]
        if missing:
            raise EdgecutError(f"missing {', '.join(map(str, missing))}: run benchmarks/int8_student.py (the students) "
                               "or benchmarks/teacher.py (the teacher) first")
        rows |= {f"{name} {k}": Path(v) for k, v in sources.items()}
        for precision, parent in (("fp32", sources["onnx fp32"]), ("fp16", base), ("int8", sources["onnx int8"])):
            dest = work / f"{name}-{size}-ort-{precision}"
            if not is_artifact(dest):
                export(parent, dest, ExportConfig(format="ort", precision=precision), progress=False)
            if is_artifact(dest):
                rows[f"{name} ort {precision}"] = dest
        # ncnn from the torch model (pnnx); INT8 as ncnn2table + ncnn2int8 would make it, calibrated on ECSSD train
        for precision in ("fp32", "fp16", "int8"):
            dest = work / f"{name}-{size}-ncnn-{precision}"
            # below FP32 the bar is lowered and the agreement recorded (the teacher's fp16 weights: 0.992)
            low = {"parity": loose} if precision != "fp32" else {}
            calib = {"calib": CalibConfig(data=ECSSD, split="train")} if precision == "int8" else {}
            if not is_artifact(dest):
                export(base, dest, ExportConfig(format="ncnn", precision=precision, **low, **calib), progress=False)
            if is_artifact(dest):
                rows[f"{name} ncnn {precision}"] = dest
        # LiteRT from the torch model; full-integer INT8 calibrated on ECSSD train, its parity bar lowered
        # explicitly (the students' agreement is 0.955-0.975: recorded, not hidden); dynamic-range INT8 beside it
        for label, config in (("fp32", ExportConfig(format="tflite")),
                              ("fp16", ExportConfig(format="tflite", precision="fp16", parity=loose)),
                              ("int8", ExportConfig(format="tflite", precision="int8", parity=loose,
                                                    calib=CalibConfig(data=ECSSD, split="train"))),
                              ("int8-dynamic", ExportConfig(format="tflite", precision="int8", parity=loose,
                                                            litert=LiteRTOptions("dynamic")))):
            dest = work / f"{name}-{size}-tflite-{label}"
            if not is_artifact(dest):
                export(base, dest, config, progress=False)
            if is_artifact(dest):
                rows[f"{name} tflite {label}"] = dest
        for label, config in (("fp32", ExportConfig(format="executorch")),  # ExecuTorch, XNNPACK-delegated
                              ("int8", ExportConfig(format="executorch", precision="int8", parity=loose,
                                                    calib=CalibConfig(data=ECSSD, split="train")))):
            dest = work / f"{name}-{size}-executorch-{label}"
            if not is_artifact(dest):
                export(base, dest, config, progress=False)
            if is_artifact(dest):
                rows[f"{name} executorch {label}"] = dest
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__, "data", "threads", "teacher")
    ap.add_argument("--work", type=Path, default=RUNS / "int8-student")
    ap.add_argument("--out", type=Path, default=RESULTS / "phone_formats")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--limit", type=int, default=None, help="score only the first N val images on x86")
    ap.add_argument("--arm-images", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", default=",".join(STUDENTS),
                    help="comma-separated: student, relu-student (int8_student.py's), teacher (teacher.py's)")
    ap.add_argument("--rows", default=None, help="only rows whose name contains one of these (comma-separated)")
    ap.add_argument("--only", choices=("x86", "arm"), default=None,
                    help="measure one side only (the ARM counts do not mind a busy host; x86 latency does)")
    ap.add_argument("--resume", action="store_true", help="keep the records already written; measure the rest")
    ap.add_argument("--arm-rows", default=None, help="only these rows (names containing one of these) on arm64-emu")
    args = ap.parse_args(argv)

    from dataclasses import replace

    from edgecut import io
    from edgecut.artifact import is_artifact, load_artifact
    from edgecut.env import fingerprint
    from edgecut.exporters import ExportConfig, export
    from edgecut.measure.record import Hooks, new_run_id, read_records
    from edgecut.measure.bench import bench, model_size_mb
    from edgecut.measure.config import BenchConfig
    from edgecut.measure.target import bench_on_target, resolve
    from edgecut.runtime.timing import LatencyConfig
    from edgecut.targets import arm64
    from edgecut.formats import BUNDLED

    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    refused: dict[str, str] = {}
    rows = make_rows(args.work, args.size, models, args.teacher, refused)
    stem = "phone_formats" if models == STUDENTS else "phone_formats-" + "-".join(models)
    if args.rows:
        wanted = [w.strip() for w in args.rows.split(",") if w.strip()]
        rows = {k: v for k, v in rows.items() if any(w in k for w in wanted)}
        stem += "-rows"
    out = io.make_dirs(args.out)
    x86_path, arm_path = out / f"{stem}.jsonl", out / f"{stem}-arm64.jsonl"
    if not args.resume:
        x86_path.unlink(missing_ok=True)
        arm_path.unlink(missing_ok=True)
    latency = LatencyConfig(warmup_s=1.0, warmup_min=10, min_time_s=2.0, min_iters=30)
    if args.only != "arm":
        bench(list(rows.values()), x86_path, BenchConfig(
            threads=(args.threads,), latency=latency, repeats=args.repeats, end_to_end=False, worst=0,
            size=(args.size, args.size), data=args.data, split="val", limit=args.limit),
            names=list(rows), run_id=new_run_id(), progress=False, hooks=Hooks(say=print), resume=args.resume)
    # arm64-emu runs what the bundle runner runs (not ExecuTorch: its Python runtime needs torch)
    on_arm = {k: v for k, v in rows.items() if load_artifact(v).manifest.format in BUNDLED
              and (not args.arm_rows or any(w.strip() and w.strip() in k for w in args.arm_rows.split(",")))}
    if args.only != "x86":
        arm64.setup(say=print)
        bench_on_target(list(on_arm.values()), arm_path, BenchConfig(data=args.data, split="val", limit=args.arm_images),
                        replace(resolve("arm64-emu"), count_iters=1), names=list(on_arm), progress=False,
                        hooks=Hooks(say=print), resume=args.resume)
    if args.only:
        print(f"measured the {args.only} side only; run again with --resume for the table")
        return 0
    x86 = {r.name: r for r in read_records(x86_path)}
    arm = {r.name: r for r in read_records(arm_path)} if arm_path.is_file() else {}
    table = []
    for name, path in rows.items():
        rx = x86[name]
        art = load_artifact(path)
        parity = art.manifest.metrics.get("parity", {})
        ra = arm.get(name)
        table.append({"row": name, "format": art.manifest.format, "precision": art.manifest.precision,
                      "size_mb": round(model_size_mb(art), 2), "p50_ms_x86": rx.latency.p50_ms,
                      "iou_x86": rx.accuracy.metrics["iou"], "export_parity_mask_iou": parity.get("mask_iou_mean"),
                      "export_parity_max_abs_diff": parity.get("max_abs_diff"),
                      **({"arm_instructions": ra.instructions.per_inference, "arm_exact": ra.instructions.exact,
                          "arm_vs_x86_max_abs_diff": ra.parity.max_abs_diff,
                          "arm_vs_x86_mask_iou": ra.parity.mask_iou_mean,
                          "arm_iou": ra.accuracy.metrics["iou"] if ra.accuracy else None} if ra else {})})
    written = []  # Core ML: converted and recorded here, run only on Apple devices (no latency, no parity)
    for name in models:
        for precision in ("fp16", "int8"):
            dest = args.work / f"{name}-{args.size}-coreml-{precision}"
            if not is_artifact(dest):
                export(args.teacher if name == "teacher" else args.work / f"{name}-{args.size}", dest, ExportConfig(format="coreml", precision=precision),
                       progress=False)
            m = load_artifact(dest).manifest
            written.append({"row": f"{name} coreml {precision}", "format": "coreml", "precision": precision,
                            "size_mb": round(model_size_mb(load_artifact(dest)), 2),
                            "operations": m.metrics["conversion"]["operations"], "run": m.metrics["parity"]["reason"]})
    io.write_json(out / f"{stem}.json", {
        "what": "phone formats beside ONNX: x86 p50 (edgecut bench) and ECSSD val IoU; arm64-emu guest instructions "
                "per inference (one thread, not device time), parity against x86 and IoU on the first val images",
        "size": args.size, "threads_x86": args.threads, "arm_images": args.arm_images, "wheels": arm64.pins(),
        "machine": fingerprint(), "rows": table, "written_not_run": written, "refused": refused})
    print("\n| row | size MB | x86 p50 ms | IoU | ARM M instructions | ARM vs x86 max abs diff |\n|---|---:|---:|---:|---:|---:|")
    for r in table:
        arm_cols = (f"{r['arm_instructions'] / 1e6:.1f} | {r['arm_vs_x86_max_abs_diff']:.2e}"
                    if "arm_instructions" in r else "(not on arm64-emu) |")
        print(f"| {r['row']} | {r['size_mb']:.2f} | {r['p50_ms_x86']:.3f} | {r['iou_x86']:.4f} | {arm_cols} |")
    for r in written:
        print(f"| {r['row']} | {r['size_mb']:.2f} | (Apple devices only) | | | |")
    print(f"\nwrote {out / f'{stem}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
