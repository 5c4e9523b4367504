#!/usr/bin/env python3
"""The device runner a deployment bundle ships with: one file, numpy + Pillow + OpenCV + one runtime (onnxruntime
or OpenVINO), never torch or edgecut. A file changed or added since ``SHA256SUMS`` is refused before anything runs.

    python3 runner.py remove IMAGE_OR_FOLDER... --out DIR [--format rgba|mask|composite]
    python3 runner.py bench [--iters N] [--threads T]
    python3 runner.py count [--iters N]     # under edgecut's instruction-counting qemu plugin
    python3 runner.py outputs IMAGE_OR_FOLDER... --out FILE.npz   # raw outputs, for parity checks
    python3 runner.py verify

It reads ``edgecut.json`` beside it and feeds the model as edgecut does (the ModelSpec's ``preprocess``,
``to_probability``, ``resize_back``; ``edgecut remove``'s decoding and composing): edgecut's tests hold it bit-exact.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUMS = "SHA256SUMS"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I", "F")


class BundleError(Exception):
    """A bundle or an input this runner refuses, with the file and the fix."""


# ---------------------------------------------------------------------------- the bundle


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_sums(folder: Path = HERE) -> dict[str, str]:
    """Every file of ``folder`` against its SHA256SUMS (``sha256  name`` lines); the sums, or BundleError."""
    sums_file = folder / SUMS
    if not sums_file.is_file():
        raise BundleError(f"{sums_file}: missing; this is no complete bundle (write it again with edgecut bundle)")
    sums: dict[str, str] = {}
    for n, line in enumerate(sums_file.read_text(encoding="utf-8").splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name or "/" in name or name.startswith("."):
            raise BundleError(f"{sums_file}:{n}: not a 'sha256  name' line; the bundle is damaged")
        sums[name] = digest
    present = {p.name for p in sorted(folder.iterdir()) if p.is_file() and p.name != SUMS and not p.name.startswith(".")}
    for name in sorted(present - set(sums)):
        raise BundleError(f"{folder / name}: not in {SUMS}; refused (a bundle holds only the files it was written with)")
    for name, digest in sums.items():
        path = folder / name
        if not path.is_file():
            raise BundleError(f"{path}: missing from the bundle ({SUMS} lists it); copy the whole bundle again")
        if sha256_file(path) != digest:
            raise BundleError(f"{path}: changed since the bundle was written (sha256 differs from {SUMS}); "
                              "refused: copy the bundle again")
    return sums


def manifest(folder: Path = HERE) -> dict:
    """The artifact's edgecut.json (format, precision, spec, model file)."""
    return json.loads((folder / "edgecut.json").read_text(encoding="utf-8"))


def bundle_info(folder: Path = HERE) -> dict:
    """bundle.json: the device profile it was made for (providers, threads), the source artifact."""
    path = folder / "bundle.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


# ---------------------------------------------------------------------------- the spec (as edgecut's ModelSpec)


def preprocess(spec: dict, image):
    """HxWx3 uint8 RGB -> float32 1x3xHxW at the spec's input size, normalised (ModelSpec.preprocess)."""
    import cv2
    import numpy as np

    h, w = spec["input_size"]
    std = np.asarray(spec["std"], np.float64)  # pixel * gain + offset per plane, as ModelSpec computes it
    gain = (spec["scale"] / std).astype(np.float32)[:, None, None]
    offset = (-np.asarray(spec["mean"], np.float64) / std).astype(np.float32)[:, None, None]
    interp = cv2.INTER_AREA if image.shape[0] > h or image.shape[1] > w else cv2.INTER_LINEAR
    x = cv2.resize(image, (w, h), interpolation=interp)
    out = np.empty((1, 3, h, w), np.float32)
    np.multiply(x.transpose(2, 0, 1), gain, out=out[0])
    out[0] += offset
    return out


def to_probability(spec: dict, output):
    """Model output (N x 1 x H x W) -> probabilities N x H x W in [0, 1] (ModelSpec.to_probability)."""
    import numpy as np

    out = np.asarray(output, dtype=np.float32)
    if out.ndim == 4:
        out = out[:, 0]
    bad = np.isnan(out) if spec["output"] == "logits" else ~np.isfinite(out)
    if bad.any():
        raise BundleError(f"the model's output holds {int(bad.sum())} NaN or infinite value(s)")
    if spec["output"] == "logits":
        out = 0.5 * (1.0 + np.tanh(0.5 * out))
    return np.clip(out, 0.0, 1.0)


def resize_back(prob, shape):
    import cv2

    if prob.shape == tuple(shape):
        return prob
    return cv2.resize(prob, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


# ---------------------------------------------------------------------------- images (as edgecut remove)


def read_image(path: Path):
    """Any common image -> HxWx3 uint8 RGB: EXIF orientation applied, alpha over white, wide modes to 8 bits."""
    import numpy as np
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise BundleError(f"{path}: not a readable image ({type(e).__name__})") from None
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not make a good image unreadable
        pass
    if img.mode in WIDE_MODES:
        a = np.asarray(img)
        if a.dtype.kind == "f":
            top = 1.0 if float(np.nanmax(a)) <= 1.0 else 255.0
            g = (np.clip(np.nan_to_num(a) / top, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        else:
            a = a.astype(np.int64)
            top = 65535 if img.mode.startswith("I;16") or a.max() > 255 else 255
            g = ((np.clip(a, 0, top) * 255 + top // 2) // top).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.array(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.array(img.convert("RGB"))


def compose(image, alpha, fmt: str, bg=(255, 255, 255)):
    import numpy as np

    a8 = (np.clip(alpha, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if fmt == "mask":
        return a8
    if fmt == "rgba":
        return np.dstack([image, a8])
    a = alpha[..., None].astype(np.float32)
    return (image.astype(np.float32) * a + np.asarray(bg, np.float32) * (1.0 - a) + 0.5).astype(np.uint8)


def write_png(path: Path, array) -> None:
    import cv2

    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGBA2BGRA if array.shape[2] == 4 else cv2.COLOR_RGB2BGR)
    # as edgecut remove writes them (edgecut.cutout.encode_cutout): zlib level 1, Huffman only, the Up filter
    ok, data = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY,
                                            cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY, cv2.IMWRITE_PNG_FILTER,
                                            cv2.IMWRITE_PNG_FILTER_UP])
    if not ok:
        raise BundleError(f"{path}: could not encode the cut-out")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data.tobytes())
    tmp.replace(path)


# ---------------------------------------------------------------------------- the runtime


def load(m: dict, threads: int | None = None):
    """A callable: float32 NCHW batch -> the model's one output, through the bundle's runtime."""
    model = HERE / m["model_file"]
    threads = threads or bundle_info().get("threads")
    if m["format"] in ("onnx", "ort"):  # ort: ONNX Runtime's mobile format, the same InferenceSession
        try:
            import onnxruntime as ort
        except ImportError:
            raise BundleError("onnxruntime is not installed: pip install -r requirements.txt") from None
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        wanted = bundle_info().get("providers") or ["CPUExecutionProvider"]
        providers = [p for p in wanted if p in ort.get_available_providers()] or ["CPUExecutionProvider"]
        session = ort.InferenceSession(str(model), so, providers=providers)
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    if m["format"] == "openvino":
        try:
            import openvino as ov
        except ImportError:
            raise BundleError("openvino is not installed: pip install -r requirements.txt") from None
        # as edgecut's OpenVINO Runner: f32 asked for, else a CPU with AVX-512 BF16 or AMX silently runs bf16
        config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "f32",
                  **({"INFERENCE_NUM_THREADS": int(threads)} if threads else {})}
        compiled = ov.Core().compile_model(str(model), "CPU", config)
        return lambda x: compiled(x)[0]
    if m["format"] == "ncnn":
        return _ncnn(model, m.get("precision", "fp32"), threads)
    if m["format"] == "tflite":
        return _litert(model, threads)
    raise BundleError(f"format {m['format']!r} has no runtime in this runner")


def _litert(model: Path, threads: int | None):
    """A .tflite model through ai-edge-litert's interpreter (XNNPACK), image by image; a full-integer
    model's int8 input and output are quantised and dequantised with their own scales, as edgecut's Runner does."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise BundleError("ai-edge-litert is not installed: pip install -r requirements.txt") from None
    import numpy as np

    interpreter = Interpreter(model_path=str(model), num_threads=threads)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()

    def run(x):
        ys = []
        for i in range(x.shape[0]):
            image = x[i:i + 1]
            if np.issubdtype(inp["dtype"], np.integer):
                scale, zero = inp["quantization"]
                info = np.iinfo(inp["dtype"])
                image = np.clip(np.round(image / scale) + zero, info.min, info.max).astype(inp["dtype"])
            interpreter.set_tensor(inp["index"], image)
            interpreter.invoke()
            y = interpreter.get_tensor(out["index"])
            if np.issubdtype(out["dtype"], np.integer):
                scale, zero = out["quantization"]
                y = (y.astype(np.float32) - zero) * scale
            ys.append(np.array(y, dtype=np.float32))
        return np.concatenate(ys)
    return run


def _ncnn(model: Path, precision: str, threads: int | None):
    """An ncnn graph (model.ncnn.param + .bin), image by image, with the options edgecut's ncnn Runner sets."""
    try:
        import ncnn
    except ImportError:
        raise BundleError("ncnn is not installed: pip install -r requirements.txt") from None
    import numpy as np

    net = ncnn.Net()
    half = precision == "fp16"
    for key, value in {"use_fp16_storage": half, "use_fp16_packed": half, "use_fp16_arithmetic": half,
                       "use_bf16_storage": False, "use_int8_inference": precision == "int8",
                       **({"num_threads": int(threads)} if threads else {})}.items():
        setattr(net.opt, key, value)
    if net.load_param(str(model)) != 0 or net.load_model(str(model.with_suffix(".bin"))) != 0:
        raise BundleError(f"ncnn cannot read {model.name} or its .bin")
    names = net.input_names()[0], net.output_names()[0]

    def run(x):
        out = []
        for image in x:
            chw = np.ascontiguousarray(image)  # ncnn.Mat wraps it without a copy: keep it referenced
            with net.create_extractor() as ex:
                ex.input(names[0], ncnn.Mat(chw))
                out.append(np.array(ex.extract(names[1])[1], dtype=np.float32).reshape(1, *x.shape[2:]))
        return np.stack(out)
    return run


# ---------------------------------------------------------------------------- commands


def remove(inputs: list[str], out: Path, fmt: str, threads: int | None) -> int:
    m = manifest()
    spec, run = m["spec"], load(m, threads)
    files = _files(inputs)
    out.mkdir(parents=True, exist_ok=True)
    failed, used = 0, set()
    for path in files:
        try:
            image = read_image(path)
            alpha = resize_back(to_probability(spec, run(preprocess(spec, image)))[0], image.shape[:2])
            stem, k = path.stem, 2
            while stem in used:
                stem, k = f"{path.stem}-{k}", k + 1
            used.add(stem)
            write_png(out / f"{stem}.png", compose(image, alpha, fmt))
        except (BundleError, OSError) as e:
            failed += 1
            print(f"error: {e}", file=sys.stderr)
    print(f"wrote {len(files) - failed} cut-out(s) to {out}" + (f"; {failed} failed" if failed else ""))
    return 1 if failed else 0


def _files(inputs: list[str]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        files += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES
                        and not f.name.startswith(".")) if p.is_dir() else [p]
    return files


def outputs(inputs: list[str], out: Path, threads: int | None) -> int:
    """The model's raw output for each image (preprocessed as remove does), saved by file name."""
    import numpy as np

    m = manifest()
    spec, run = m["spec"], load(m, threads)
    arrays = {}
    for path in _files(inputs):
        arrays[path.name] = np.asarray(run(preprocess(spec, read_image(path))), np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        np.savez(f, **arrays)
    print(f"wrote {len(arrays)} output(s) to {out}")
    return 0


UNSTABLE_COV = 0.10  # as edgecut's: a robust CoV above this flags the measurement


def bench(iters: int, threads: int | None) -> int:
    """Latency of the model alone on one preprocessed image: edgecut's statistics, one JSON line."""
    import numpy as np

    m = manifest()
    threads = threads or bundle_info().get("threads")
    spec, run = m["spec"], load(m, threads)
    h, w = spec["input_size"]
    x = preprocess(spec, np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8))
    t0 = time.perf_counter()
    run(x)
    first = time.perf_counter() - t0
    warmup = min(5, iters)
    for _ in range(warmup):
        run(x)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        run(x)
        times.append((time.perf_counter() - t0) * 1e3)
    ms = np.asarray(times, np.float64)
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    mean, std = float(ms.mean()), float(ms.std(ddof=1)) if ms.size > 1 else 0.0
    robust = float(1.4826 * np.median(np.abs(ms - p50)) / p50) if p50 > 0 else 0.0
    latency = {"p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "mean_ms": mean, "std_ms": std, "min_ms": float(ms.min()),
               "cov": std / mean if mean > 0 else 0.0, "robust_cov": robust, "first_ms": first * 1e3,
               "warmup": warmup, "iterations": int(ms.size), "unstable": robust > UNSTABLE_COV}
    print(json.dumps({"model": m["model_file"], "format": m["format"], "precision": m["precision"],
                      "input_size": [h, w], "threads": threads, "iterations": iters, "first_ms": round(first * 1e3, 3),
                      "p50_ms": round(p50, 4), "p90_ms": round(p90, 4), "p99_ms": round(p99, 4), "latency": latency,
                      "machine": _machine(m["format"])}))
    return 0


MARK_WHO = 8314887  # getpriority(PRIO_PGRP, this): above any pid_max, so ESRCH; the counting plugin's marker


def _mark() -> None:
    import os

    try:
        os.getpriority(os.PRIO_PGRP, MARK_WHO)
    except OSError:
        pass


def count(iters: int) -> int:
    """Two warm-up inferences, a marker, ``iters`` inferences, a marker: one thread, a fixed seeded
    image. Under the counting plugin the markers' difference is the instructions of ``iters`` inferences."""
    import numpy as np

    m = manifest()
    spec, run = m["spec"], load(m, 1)
    h, w = spec["input_size"]
    x = preprocess(spec, np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8))
    run(x)
    run(x)
    _mark()
    for _ in range(iters):
        run(x)
    _mark()
    print(json.dumps({"model": m["model_file"], "format": m["format"], "precision": m["precision"],
                      "input_size": [h, w], "threads": 1, "iterations": iters}))
    return 0


def _machine(fmt: str | None = None) -> dict:
    """What this device is: architecture, OS, Python, CPU model and cores, the runtime's version."""
    import os
    import platform

    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("model name", "hardware", "model") and value.strip():
                    model = value.strip()
                    break
    except OSError:
        pass
    runtime = {}
    module = {"onnx": "onnxruntime", "ort": "onnxruntime", "openvino": "openvino", "ncnn": "ncnn",
              "tflite": "ai_edge_litert"}.get(fmt or "")
    if module in sys.modules:
        runtime[module] = getattr(sys.modules[module], "__version__", None) or "unknown"
    return {"machine": platform.machine(), "system": platform.system(), "python": platform.python_version(),
            "processor": platform.processor(), "cpu_model": model or platform.processor(), "cores": os.cpu_count(),
            "runtime": runtime}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runner.py", description="Run this bundle's model on this device.")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("remove", help="cut the background out of images: one PNG per input")
    r.add_argument("inputs", nargs="+", help="image files or folders of images")
    r.add_argument("--out", required=True, type=Path, help="output folder")
    r.add_argument("--format", default="rgba", choices=("rgba", "mask", "composite"))
    r.add_argument("--threads", type=int, default=None)
    b = sub.add_parser("bench", help="latency of the model alone on one preprocessed image (JSON line)")
    b.add_argument("--iters", type=int, default=50)
    b.add_argument("--threads", type=int, default=None)
    c = sub.add_parser("count", help="inferences between two markers, for an instruction-counting emulator")
    c.add_argument("--iters", type=int, default=3)
    o = sub.add_parser("outputs", help="the raw model outputs of images, to one .npz (parity checks)")
    o.add_argument("inputs", nargs="+")
    o.add_argument("--out", required=True, type=Path)
    o.add_argument("--threads", type=int, default=None)
    sub.add_parser("verify", help="check every file against SHA256SUMS")
    args = parser.parse_args(argv)
    try:
        check_sums()
        if args.command == "verify":
            print(f"{HERE}: every file matches {SUMS}")
            return 0
        if args.command == "remove":
            return remove(args.inputs, args.out, args.format, args.threads)
        if args.command == "count":
            return count(args.iters)
        if args.command == "outputs":
            return outputs(args.inputs, args.out, args.threads)
        return bench(args.iters, args.threads)
    except BundleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
