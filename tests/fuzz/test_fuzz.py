"""Fuzz: hostile images, manifests, model files, archives and pickles, generated from fixed seeds.

Every case ends in success or one clean :class:`~edgecut.errors.EdgecutError`: never another exception
type, a hang or a silently wrong number. Readable ids drawn from :data:`SEED`; one re-runs alone::

    pytest tests/fuzz/test_fuzz.py -k "png-rgb-flip3-seed17"

Groups: 1. images (``io.read_image``, ``io.read_mask``, ``cutout.remove_background``); 2. manifests
(``edgecut info``, ``runtime.load`` + one inference, ``evaluate``); 3. bit-flipped or truncated model
files, verified (refused) and unverified; 4. pickles that would run code, zips with hostile names,
ONNX external data outside its folder. Groups 5-9 are in test_fuzz_hostile.py.
"""

from __future__ import annotations

import io as _bio
import json
import math
import os
import pickle
import shutil
import struct
import warnings
import zipfile
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_artifact

from edgecut import io, runtime
from edgecut.errors import EdgecutError, InputError, UnsafeFileError

SEED = 20_251  # every case is drawn from (SEED, group, case number)
TIMEOUT = 60  # seconds per case: a hang is a failure


def _rng(group: int, case: int) -> np.random.Generator:
    return np.random.default_rng([SEED, group, case])


def _clean(call, *args, **kwargs):
    """``call(...)``'s result, or None when it raised an EdgecutError; any other exception fails the case."""
    try:
        return call(*args, **kwargs)
    except EdgecutError as e:
        assert str(e).strip(), f"{type(e).__name__} without a message"
        return None


def _probability_ok(runner, image: np.ndarray) -> np.ndarray | None:
    """One inference through ``runner`` and its spec, checked: finite, in [0, 1], at the spec's size."""
    spec = runner.spec
    x = _clean(spec.preprocess, image)
    if x is None:
        return None
    out = _clean(runner, x)
    if out is None:
        return None
    prob = _clean(spec.to_probability, out)
    if prob is None:
        return None
    assert prob.shape == (1, *spec.input_size), (prob.shape, spec.input_size)
    assert prob.dtype == np.float32 and np.isfinite(prob).all() and prob.min() >= 0.0 and prob.max() <= 1.0
    return prob


def _listing(folder: Path) -> set[str]:
    return set(os.listdir(folder)) if folder.is_dir() else set()


@lru_cache(maxsize=None)
def _synth(index: int) -> tuple[np.ndarray, np.ndarray]:
    from edgecut.data.synth import render

    return render(index, 32, seed=11)


@pytest.fixture(scope="module")
def torch_art(tmp_path_factory):
    """An untrained tiny U-Net artifact (width 4, depth 2, 32 px spec)."""
    return make_tiny_artifact(tmp_path_factory.mktemp("fuzz-torch") / "model")


@pytest.fixture(scope="module")
def onnx_art(torch_art, tmp_path_factory):
    """``torch_art`` exported to ONNX fp32."""
    from edgecut.exporters import ExportConfig, export

    return export(torch_art, tmp_path_factory.mktemp("fuzz-onnx") / "onnx", ExportConfig(threads=1), progress=False)


@pytest.fixture(scope="module")
def runner(torch_art):
    return runtime.load(torch_art, threads=1)


# ================================================================== 1. images

N_IMAGES = 300
BASES = ("png-rgb", "png-rgba", "png-la", "png-p-trns", "png-i16", "png-1bit", "jpeg-rgb", "jpeg-gray", "jpeg-cmyk",
         "jpeg-exif6", "webp", "bmp", "tiff", "tiff-f32", "gif")
LOSSLESS_RGB = ("png-rgb", "webp", "bmp", "tiff")
HEADER_LIES = ("png", "jpeg", "bmp", "gif")  # formats whose width/height fields the fuzzer rewrites
# mutation -> weight; header lies only where the format has them, the rest everywhere
MUTATIONS = {"flip": 38, "trunc": 13, "hdr-huge": 7, "hdr-zero": 5, "hdr-off": 8, "magic-junk": 8, "append": 5,
             "zero": 8, "suffix": 3, "empty": 1, "dir": 1}


def _image_cases() -> list[tuple[str, str, str, int]]:
    cases = [(f"{base}-none-seed{i}", base, "none", i) for i, base in enumerate(BASES)]  # each base unmutated once
    names, weights = list(MUTATIONS), np.array(list(MUTATIONS.values()), float)
    for i in range(len(BASES), N_IMAGES):
        g = _rng(1, i)
        base = BASES[i % len(BASES)]
        while True:
            mut = names[g.choice(len(names), p=weights / weights.sum())]
            if not mut.startswith("hdr") or base.split("-")[0] in HEADER_LIES:
                break
        label = f"flip{int(g.integers(1, 9))}" if mut == "flip" else mut
        cases.append((f"{base}-{label}-seed{i}", base, label, i))
    return cases


def _pixels(base: str, case: int) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image and a 0/255 mask of 16-48 px a side: a synthetic product shot or random noise."""
    from PIL import Image

    g = _rng(10, case)
    h, w = (int(v) for v in g.integers(16, 49, size=2))
    if case % 2 or base.startswith("jpeg"):  # JPEG: smooth pixels, so its loss is small enough to check
        rgb, mask = _synth(case % 7)
        rgb = np.array(Image.fromarray(rgb).resize((w, h), Image.BILINEAR))
        mask = np.array(Image.fromarray(mask).resize((w, h), Image.NEAREST))
    else:
        rgb = g.integers(0, 256, (h, w, 3), dtype=np.uint8)
        mask = np.where(g.random((h, w)) < 0.5, 0, 255).astype(np.uint8)
    mask[0, 0] = 0  # never all opaque: an alpha channel is then the mask
    return rgb, mask


def _encode(base: str, rgb: np.ndarray, mask: np.ndarray) -> tuple[bytes, str]:
    """The base image as file bytes and its suffix."""
    from PIL import Image

    buf = _bio.BytesIO()
    img = Image.fromarray(rgb)
    if base == "png-rgb":
        img.save(buf, "PNG")
    elif base == "png-rgba":
        Image.fromarray(np.dstack([rgb, mask])).save(buf, "PNG")
    elif base == "png-la":
        Image.merge("LA", (img.convert("L"), Image.fromarray(mask))).save(buf, "PNG")
    elif base == "png-p-trns":
        pal = img.quantize(16)
        pal.info["transparency"] = 0
        pal.save(buf, "PNG", transparency=0)
    elif base == "png-i16":
        Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(buf, "PNG")
    elif base == "png-1bit":
        Image.fromarray(mask).convert("1").save(buf, "PNG")
    elif base == "jpeg-rgb":
        img.save(buf, "JPEG", quality=90)
    elif base == "jpeg-gray":
        img.convert("L").save(buf, "JPEG", quality=90)
    elif base == "jpeg-cmyk":
        img.convert("CMYK").save(buf, "JPEG", quality=90)
    elif base == "jpeg-exif6":
        exif = Image.Exif()
        exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
        img.save(buf, "JPEG", quality=90, exif=exif)
    elif base == "webp":
        img.save(buf, "WEBP", lossless=True)
    elif base == "bmp":
        img.save(buf, "BMP")
    elif base == "tiff":
        img.save(buf, "TIFF")
    elif base == "tiff-f32":  # 32-bit float gray in [0, 1]
        Image.fromarray(rgb[..., 0].astype(np.float32) / 255).save(buf, "TIFF")
    elif base == "gif":
        img.convert("P", palette=Image.ADAPTIVE, colors=32).save(buf, "GIF")
    else:
        raise AssertionError(base)
    suffix = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "bmp": ".bmp", "tiff": ".tif", "gif": ".gif"}
    return buf.getvalue(), suffix[base.split("-")[0]]


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _lie_dims(kind: str, w: int, h: int, g: np.random.Generator, top: int) -> tuple[int, int]:
    if kind == "hdr-huge":
        return [(top, top), (top, h), (w, top), (top // 2 + 1, 3)][int(g.integers(4))]
    if kind == "hdr-zero":
        return [(0, h), (w, 0), (0, 0)][int(g.integers(3))]
    return [(w + 1, h), (w, h + 7), (h, w), (max(1, w - 3), h), (w * 2, h * 2), (1, 1)][int(g.integers(6))]


def _header_lie(data: bytes, base: str, kind: str, g: np.random.Generator) -> bytes:
    """``data`` with its width/height fields rewritten (checksums kept valid where the format has them)."""
    fmt = base.split("-")[0]
    b = bytearray(data)
    if fmt == "png":  # IHDR is the first chunk, at offset 8: length, type, 13 bytes, CRC
        w, h = struct.unpack(">II", b[16:24])
        nw, nh = _lie_dims(kind, w, h, g, 2**31 - 1)
        body = struct.pack(">II", nw, nh) + bytes(b[24:29])
        b[8:33] = _chunk(b"IHDR", body)
    elif fmt == "jpeg":  # the first SOFn marker: FFCn, length, precision, height, width
        i = next(k for k in range(2, len(b) - 9) if b[k] == 0xFF and b[k + 1] in (0xC0, 0xC1, 0xC2))
        h, w = struct.unpack(">HH", b[i + 5 : i + 9])
        nw, nh = _lie_dims(kind, w, h, g, 65535)
        b[i + 5 : i + 9] = struct.pack(">HH", nh, nw)
    elif fmt == "bmp":  # BITMAPINFOHEADER: width and height as signed int32 at 18 and 22
        w, h = struct.unpack("<ii", b[18:26])
        nw, nh = _lie_dims(kind, w, h, g, 2**31 - 1)
        if g.integers(4) == 0:
            nh = -nh  # a negative height is a top-down bitmap
        b[18:26] = struct.pack("<ii", nw, nh)
    elif fmt == "gif":  # the logical screen (offset 6) and the first image descriptor
        w, h = struct.unpack("<HH", b[6:10])
        nw, nh = _lie_dims(kind, w, h, g, 65535)
        b[6:10] = struct.pack("<HH", nw, nh)
        i = b.find(b"\x2c", 13 + (3 << ((b[10] & 7) + 1) if b[10] & 0x80 else 0))
        if i > 0 and g.integers(2):
            b[i + 5 : i + 9] = struct.pack("<HH", nw, nh)
    return bytes(b)


def _mutate(data: bytes, base: str, label: str, g: np.random.Generator) -> bytes:
    if label == "none":
        return data
    if label.startswith("flip"):
        b = bytearray(data)
        for _ in range(int(label[4:])):
            k = int(g.integers(len(b)))
            b[k] = b[k] ^ (1 << int(g.integers(8))) if g.integers(2) else int(g.integers(256))
        return bytes(b)
    if label == "trunc":
        return data[: int(g.integers(len(data)))]
    if label.startswith("hdr"):
        return _header_lie(data, base, label, g)
    if label == "magic-junk":
        keep = int(g.integers(2, 17))
        return data[:keep] + g.bytes(int(g.integers(0, 3000)))
    if label == "append":
        return data + g.bytes(int(g.integers(1, 4097)))
    if label == "zero":
        b = bytearray(data)
        start, n = int(g.integers(len(b))), int(g.integers(4, 65))
        b[start : start + n] = bytes(len(b[start : start + n]))
        return bytes(b)
    if label in ("suffix", "empty", "dir"):
        return b"" if label == "empty" else data
    raise AssertionError(label)


def _expected_rgb(base: str, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """What read_image must return for an unmutated lossless base (None: lossy, checked loosely)."""
    if base in LOSSLESS_RGB:
        return rgb
    if base == "png-rgba":
        a = mask[..., None].astype(np.float32) / 255
        return (rgb * a + 255 * (1 - a) + 0.5).astype(np.uint8)
    if base in ("png-i16", "tiff-f32"):
        return np.repeat(rgb[..., :1], 3, axis=2)
    if base == "png-1bit":
        return np.repeat(mask[..., None], 3, axis=2)
    return None


def _expected_mask(base: str, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    if base in ("png-rgba", "png-la", "png-1bit"):
        return mask
    if base in ("png-i16", "tiff-f32"):
        return rgb[..., 0]
    return None


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("base, label, case", [c[1:] for c in _image_cases()], ids=[c[0] for c in _image_cases()])
def test_images(runner, tmp_path, base, label, case):
    from edgecut.cutout import remove_background

    g = _rng(1, case)
    rgb, mask = _pixels(base, case)
    data, suffix = _encode(base, rgb, mask)
    data = _mutate(data, base, label, g)
    if label == "suffix":
        suffix = {".png": ".jpg", ".jpg": ".png", ".webp": ".png", ".bmp": ".tif", ".tif": ".bmp"}.get(suffix, ".png")
    folder = tmp_path / "in"
    folder.mkdir()
    path = folder / f"img{suffix}"
    if label == "dir":
        path.mkdir()
    else:
        path.write_bytes(data)

    image = _clean(io.read_image, path)
    with warnings.catch_warnings():  # a 0/1 mask is read as 0/255 with a DataWarning: not the point here
        warnings.simplefilter("ignore")
        got_mask = _clean(io.read_mask, path)
    if image is not None:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) >= 1
        assert image.shape[0] * image.shape[1] <= io.MAX_PIXELS
    if got_mask is not None:
        assert got_mask.dtype == np.uint8 and got_mask.ndim == 2
    assert (image is None) == (got_mask is None), "one of read_image / read_mask accepted what the other refused"
    if image is not None:
        assert got_mask.shape == image.shape[:2], "a mask read from the image's own file must have its size"
    if label == "none":  # an unmutated image reads back as written
        want_hw = rgb.shape[1::-1] if base == "jpeg-exif6" else rgb.shape[:2]
        assert image.shape[:2] == tuple(want_hw)
        want = _expected_rgb(base, rgb, mask)
        if want is not None:
            assert np.abs(image.astype(int) - want).max() <= 1, base
        elif base in ("jpeg-rgb", "jpeg-cmyk", "jpeg-gray"):
            ref = rgb if base != "jpeg-gray" else np.repeat(
                (rgb @ np.array([0.299, 0.587, 0.114]) + 0.5).astype(np.uint8)[..., None], 3, axis=2)
            assert np.abs(image.astype(int) - ref).mean() < 12, base
        want_mask = _expected_mask(base, rgb, mask)
        if want_mask is not None:
            assert np.array_equal(got_mask, want_mask), base

    out = tmp_path / "out"
    report = remove_background([folder if label == "dir" else path], runner, out, progress=False)
    if label == "dir":  # a folder named like an image holds no images
        assert report.written == [] and report.failed == []
    elif image is None:
        assert len(report.failed) == 1 and report.written == []
        failed, message = report.failed[0]
        assert failed == path and str(path) in message
    else:
        assert report.failed == [] and len(report.written) == 1
        cut = io.read_mask(report.written[0], note=False)  # the rgba cut-out's alpha
        assert cut.shape == image.shape[:2], "the cut-out must have its image's size"
    assert _listing(out) == {p.name for p in report.written}, "something half-written is left in the output folder"
    assert _listing(folder) == {path.name}


# ================================================================== 2. manifests

N_MANIFESTS = 96  # random edits; then 24 cases of FILE_NAMES as model_file and as one more files key
FILE_NAMES = {"dotdot": "../model.safetensors", "abs": "/etc/passwd", "dot": ".", "nul": "model\x00.onnx",
              "long-name": "x" * 300, "symlink-loop": "loop"}
EXTREMES = {  # name in the case id -> the value written into edgecut.json
    "none": None, "empty": "", "x": "x", "neg1": -1, "zero": 0, "1e308": 1e308, "neg1e308": -1e308, "list": [],
    "dict": {}, "true": True, "false": False, "nan-str": "NaN", "nan": math.nan, "inf": math.inf, "half": 0.5,
    "huge-str": "x" * 100_000, "big-int": 2**63, "int31": 2**31, "dotdot": "../outside", "abs": "/etc/passwd",
    "list-ints": [1, 2, 3], "neg-list": [-1, -1], "nul": "a\x00b", "long-name": "y" * 300,
}


def _paths(obj, prefix=()) -> list[tuple]:
    """Every key path in a JSON tree (dict keys and list indices), parents before children."""
    out = []
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        out.append((*prefix, k))
        out.extend(_paths(v, (*prefix, k)))
    return out


@lru_cache(maxsize=None)
def _manifest_template(kind: str) -> dict:
    """The key structure of each artifact kind's manifest (for case ids at collection time)."""
    torch_m = {"schema_version": 1, "format": "torch", "precision": "fp32", "model_file": "model.safetensors",
               "arch": {"name": "unet", "kwargs": {"width": 4, "depth": 2}},
               "spec": {"input_size": [32, 32], "dynamic_size": True, "size_divisor": 4, "channel_order": "RGB",
                        "layout": "NCHW", "scale": 0.0039, "mean": [0.485, 0.456, 0.406],
                        "std": [0.229, 0.224, 0.225], "output": "logits", "threshold": 0.5},
               "params": 1, "macs": 1, "lineage": [], "files": {"model.safetensors": {"sha256": "", "size": 1}},
               "tools": {"python": "3"}, "metrics": {}, "created": ""}
    if kind == "torch":
        return torch_m
    onnx_m = json.loads(json.dumps(torch_m))
    onnx_m["spec"]["dynamic_size"] = False
    onnx_m.update(format="onnx", model_file="model.onnx", files={"model.onnx": {"sha256": "", "size": 1}},
                  lineage=[{"step": "export", "parent_sha256": "", "time": "",
                            "params": {"format": "onnx", "precision": "fp32", "dynamic": False, "opset": 18}}],
                  metrics={"parity": {"passed": True, "max_abs_diff": 0.0, "tolerances": {"max_abs_diff": 0.0},
                                      "sizes": [[32, 32]]}})
    return onnx_m


def _manifest_cases() -> list[tuple[str, str, str, int]]:
    cases = []
    for i in range(N_MANIFESTS):
        g = _rng(2, i)
        kind = ("torch", "onnx", "torch", "onnx", "onnx-bare")[i % 5]  # bare: the spec in the .onnx's metadata
        r = g.random()
        if r < 0.12:
            op = ("trunc", "corrupt")[int(g.integers(2))]
            cases.append((f"{kind}-{op}-seed{i}", kind, op, i))
            continue
        template = _manifest_template("onnx")["spec"] if kind == "onnx-bare" else _manifest_template(kind)
        paths = _paths(template)
        where = "/".join(str(p) for p in paths[int(g.integers(len(paths)))])
        if r < 0.4:
            cases.append((f"{kind}-del-{where}-seed{i}", kind, f"del:{where}", i))
        else:
            name = list(EXTREMES)[int(g.integers(len(EXTREMES)))]
            cases.append((f"{kind}-set-{where}-{name}-seed{i}", kind, f"set:{where}:{name}", i))
    for kind in ("torch", "onnx"):
        for field in ("model_file", "files-key"):
            for name in FILE_NAMES:
                i = len(cases)
                cases.append((f"{kind}-name-{field}-{name}-seed{i}", kind, f"name:{field}:{name}", i))
    return cases


def _apply(manifest: dict, op: str) -> dict:
    action, where, *rest = op.split(":")
    if action == "name":
        name = FILE_NAMES[rest[0]]
        if where == "model_file":
            manifest["model_file"] = name
        else:  # one more listed file, next to the model file's own entry
            manifest["files"][name] = next(iter(manifest["files"].values()))
        return manifest
    keys = [int(k) if k.isdigit() else k for k in where.split("/")]
    target = manifest
    for k in keys[:-1]:
        target = target[k]
    if action == "del":
        del target[keys[-1]]
    else:
        target[keys[-1]] = EXTREMES[rest[0]]
    return manifest


@pytest.fixture(scope="module")
def val_samples(synth_data):
    from edgecut.data.folder import find_samples

    return find_samples(synth_data, "val")[:3]


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("kind, op, case", [c[1:] for c in _manifest_cases()], ids=[c[0] for c in _manifest_cases()])
def test_manifests(torch_art, onnx_art, val_samples, tmp_path, capfd, kind, op, case):
    from click.testing import CliRunner
    from conftest import cli_command

    from edgecut.measure.accuracy import evaluate

    g = _rng(2, case)
    src = (torch_art if kind == "torch" else onnx_art).path
    art = tmp_path / "art"
    shutil.copytree(src, art)
    (art / "loop").symlink_to("loop")  # for the symlink-loop name: a link to itself
    text = (art / "edgecut.json").read_text() if kind != "onnx-bare" else onnx_art.spec.model_dump_json()
    if op == "trunc":
        text = text[: int(g.integers(len(text)))]
    elif op == "corrupt":
        chars = list(text)
        for _ in range(int(g.integers(1, 6))):
            chars[int(g.integers(len(chars)))] = chr(int(g.choice([0, 0x7B, 0x7D, 0x22, 0x2C, 0x3A, 0xFFFF, 0x1F600,
                                                                 int(g.integers(32, 127))])))
        text = "".join(chars)
    else:
        manifest = json.loads(text)
        try:
            _apply(manifest, op)
        except (KeyError, IndexError, TypeError):  # _manifest_template has a key the real manifest lacks
            pytest.skip(f"{op}: no such key in the {kind} manifest (update _manifest_template)")
        text = json.dumps(manifest)
    if kind == "onnx-bare":  # the same edits on the spec a bare .onnx carries in its metadata_props
        import onnx

        from edgecut.runtime.onnxruntime_runner import SPEC_KEY

        model = onnx.load(str(art / "model.onnx"))
        next(p for p in model.metadata_props if p.key == SPEC_KEY).value = text.encode("utf-8", "surrogatepass")
        art = art / "model.onnx"
        art.write_bytes(model.SerializeToString())
    else:
        (art / "edgecut.json").write_text(text, encoding="utf-8", errors="surrogatepass")

    for args in (["info", str(art)], ["info", str(art), "--json"]):
        res = CliRunner().invoke(cli_command(), args)
        assert res.exception is None or isinstance(res.exception, (SystemExit, EdgecutError)), \
            f"{args}: {type(res.exception).__name__}: {res.exception}"
        if res.exit_code == 0 and "--json" in args:
            assert isinstance(json.loads(res.stdout), dict), "info --json printed something that is not the manifest"
    printed = capfd.readouterr()  # what libraries wrote past the runner, to the terminal
    assert "Traceback" not in printed.out + printed.err, (printed.out + printed.err)[-2000:]

    before = _listing(tmp_path)
    loaded = _clean(runtime.load, art, threads=1)
    if loaded is not None:
        prob = _probability_ok(loaded, _synth(case % 7)[0])
        if prob is not None and case % 3 == 0:
            result = _clean(evaluate, loaded, val_samples, progress=False)
            if result is not None:
                assert result.count == len(val_samples)
                for name, value in result.metrics.items():
                    assert isinstance(value, (int, float)) and math.isfinite(value), (name, value)
    assert _listing(tmp_path) == before


# ================================================================== 3. model files

N_MODEL_FILES = 80


def _model_file_cases() -> list[tuple[str, str, str, int]]:
    cases = []
    for i in range(N_MODEL_FILES):
        g = _rng(3, i)
        kind = ("torch", "onnx")[i % 2]
        label = "trunc" if g.random() < 0.25 else f"flip{int(g.integers(1, 9))}"
        cases.append((f"{kind}-{label}-seed{i}", kind, label, i))
    return cases


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("kind, label, case", [c[1:] for c in _model_file_cases()],
                         ids=[c[0] for c in _model_file_cases()])
def test_model_files(torch_art, onnx_art, tmp_path, monkeypatch, kind, label, case):
    from edgecut.artifact import load_artifact

    g = _rng(3, case)
    src = torch_art if kind == "torch" else onnx_art
    art = tmp_path / "art"
    shutil.copytree(src.path, art)
    model = art / src.manifest.model_file
    data = model.read_bytes()
    if label == "trunc":
        broken = data[: int(g.integers(len(data)))]
    else:
        b = bytearray(data)
        while bytes(b) == data:  # a flip that changes nothing is no case
            for _ in range(int(label[4:])):
                k = int(g.integers(len(b)))
                b[k] ^= 1 << int(g.integers(8))
        broken = bytes(b)
    model.write_bytes(broken)

    monkeypatch.delenv("EDGECUT_NO_VERIFY", raising=False)
    with pytest.raises(InputError, match="sha256|bytes but edgecut.json says"):
        runtime.load(art, threads=1)  # a success would be a silently wrong number
    with pytest.raises(InputError, match="sha256|bytes but edgecut.json says"):
        load_artifact(art)

    monkeypatch.setenv("EDGECUT_NO_VERIFY", "1")
    loaded = _clean(runtime.load, art, threads=1)
    if loaded is not None:
        _probability_ok(loaded, _synth(case % 7)[0])
    if kind == "onnx":  # the bare file: no manifest, so nothing checks its hash; it must fail clean or run
        loaded = _clean(runtime.load, model, threads=1)
        if loaded is not None:
            _probability_ok(loaded, _synth(case % 7)[0])


# ================================================================== 4. hostile archives and pickles


class _Payload:
    """Unpickled, it would call ``fn(*args)``: the kind of file a weights loader must never run."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _payloads(marker: Path) -> dict[str, object]:
    import builtins
    import subprocess

    code = f"open({str(marker)!r}, 'w').write('ran')"
    return {
        "os-system": _Payload(os.system, f"touch {marker}"),
        "exec": _Payload(builtins.exec, code),
        "eval": _Payload(builtins.eval, code),
        "open": _Payload(builtins.open, str(marker), "w"),
        "subprocess": _Payload(subprocess.call, ["touch", str(marker)]),
    }


def _archive_cases() -> list[tuple[str, str]]:
    cases = []
    for payload in ("os-system", "exec", "eval", "open", "subprocess"):
        for wrap in ("raw-p2", "raw-p5", "in-state-dict", "torch-save"):
            cases.append((f"pickle-{payload}-{wrap}", f"pickle:{payload}:{wrap}"))
    cases += [(f"pickle-os-system-{s}", f"pickle:os-system:raw-p4:{s}") for s in ("safetensors", "bin", "artifact")]
    for name in ("dotdot", "abs", "code-dotdot", "code-evil-pkl", "code-junk", "bad-central-dir", "archive-dotdot",
                 "empty-zip"):
        cases.append((f"zip-{name}", f"zip:{name}"))
    for loc in ("dotdot", "dotdot-deep", "abs-etc", "abs-inside", "sub-dotdot", "empty", "symlink-out", "missing"):
        for how in ("bare", "artifact"):
            cases.append((f"onnx-ext-{loc}-{how}", f"onnx:{loc}:{how}"))
    return cases


def _pickle_bytes(obj, wrap: str) -> bytes:
    import torch

    if wrap == "raw-p2":
        return pickle.dumps(obj, protocol=2)
    if wrap in ("raw-p5", "raw-p4"):
        return pickle.dumps(obj, protocol=int(wrap[-1]))
    if wrap == "in-state-dict":
        return pickle.dumps({"state_dict": {"head.weight": obj}}, protocol=4)
    buf = _bio.BytesIO()
    torch.save({"state_dict": {"w": torch.zeros(2), "evil": obj}}, buf)  # a zip with data.pkl, as torch writes
    return buf.getvalue()


def _zip_bytes(name: str, marker: Path, outside: Path) -> bytes:
    buf = _bio.BytesIO()
    evil = pickle.dumps(_Payload(os.system, f"touch {marker}"), protocol=2)
    with zipfile.ZipFile(buf, "w") as z:
        if name == "dotdot":
            z.writestr(f"../../{outside.name}", b"escaped")
            z.writestr("archive/data.pkl", evil)
        elif name == "abs":
            z.writestr(str(outside), b"escaped")
            z.writestr("archive/version", b"3\n")
        elif name == "code-dotdot":  # pretends to be TorchScript and tries to escape
            z.writestr("model/code/__torch__.py", b"import os\nos.system('touch x')\n")
            z.writestr(f"model/code/../../../{outside.name}", b"escaped")
            z.writestr("model/data.pkl", evil)
        elif name == "code-evil-pkl":
            z.writestr("model/code/__torch__/m.py", b"class M(Module):\n  pass\n")
            z.writestr("model/data.pkl", evil)
            z.writestr("model/constants.pkl", evil)
            z.writestr("model/version", b"3\n")
        elif name == "code-junk":
            z.writestr("model/code/x", os.urandom(64))
        elif name == "archive-dotdot":
            z.writestr("archive/../data.pkl", evil)
            z.writestr("archive/version", b"3\n")
        elif name == "bad-central-dir":
            z.writestr("model/code/__torch__.py", b"x")
            z.writestr("model/data.pkl", evil)
    data = buf.getvalue()
    if name == "bad-central-dir":  # the end record still says "zip", the directory it points to is junk
        cd = data.rfind(b"PK\x01\x02")
        data = data[:cd] + b"\xff" * 46 + data[cd + 46 :]
    if name == "empty-zip":
        data = b"PK\x05\x06" + bytes(18)
    return data


def _onnx_with_external(src: Path, folder: Path, loc: str, outside: Path) -> Path:
    """``src`` saved into ``folder`` with its tensors as external data, every location set from ``loc``."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    model = onnx.load(str(src))
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(folder / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=0)
    outside.write_bytes((folder / "model.onnx.data").read_bytes())  # a real data file, but outside
    location = {"dotdot": f"../{outside.name}", "dotdot-deep": f"../../../../../../{outside.parent.name}/{outside.name}",
                "abs-etc": "/etc/passwd", "abs-inside": str((folder / "model.onnx.data").resolve()),
                "sub-dotdot": f"sub/../../{outside.name}", "empty": "", "symlink-out": "linked.data",
                "missing": "absent.data"}[loc]
    if loc == "symlink-out":
        (folder / "linked.data").symlink_to(outside)
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    for t in model.graph.initializer:
        if uses_external_data(t):
            for entry in t.external_data:
                if entry.key == "location":
                    entry.value = location
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    return folder / "model.onnx"


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("op", [c[1] for c in _archive_cases()], ids=[c[0] for c in _archive_cases()])
def test_hostile_files(torch_art, onnx_art, tmp_path, op):
    from edgecut.artifact import write_artifact
    from edgecut.models.store import load_model

    kind, name, *rest = op.split(":")
    marker = tmp_path / "PAYLOAD-RAN"
    outside = tmp_path.parent / f"escaped-{tmp_path.name}"
    work = tmp_path / "work"
    work.mkdir()
    before = _listing(tmp_path.parent)

    if kind == "pickle":
        wrap = rest[0]
        suffix = {"safetensors": ".safetensors", "bin": ".bin"}.get(rest[1] if len(rest) > 1 else "", ".pt")
        path = work / f"weights{suffix}"
        path.write_bytes(_pickle_bytes(_payloads(marker)[name], wrap))
        if rest[1:] == ["artifact"]:  # a torch artifact whose model file is the pickle, hashes and all
            art = write_artifact(work / "art", torch_art.manifest.model_copy(update={"model_file": "model.pt",
                                                                                    "files": {}}),
                                 {"model.pt": path.read_bytes()})
            with pytest.raises(InputError):
                runtime.load(art.path, threads=1)
            with pytest.raises(InputError):
                load_model(art.path)
        else:
            err = UnsafeFileError if suffix == ".pt" and wrap != "torch-save" else InputError
            with pytest.raises(err):
                io.load_weights(path)
            with pytest.raises(InputError):
                load_model(path, arch="unet", arch_kwargs={"width": 4, "depth": 2})
    elif kind == "zip":
        path = work / "model.pt"
        path.write_bytes(_zip_bytes(name, marker, outside))
        with pytest.raises(InputError):
            load_model(path, arch="unet", arch_kwargs={"width": 4, "depth": 2})
        with pytest.raises(InputError):
            io.load_weights(path)
    else:
        how = rest[0]
        outside.unlink(missing_ok=True)
        onnx_path = _onnx_with_external(onnx_art.model_path, work / "m", name, outside)
        before = _listing(tmp_path.parent)  # the outside data file is the test's own
        target: Path = onnx_path
        if how == "artifact":
            files = {"model.onnx": onnx_path.read_bytes()}
            target = write_artifact(work / "art", onnx_art.manifest.model_copy(update={"files": {}}), files).path
            for extra in ("linked.data", "model.onnx.data"):
                if (onnx_path.parent / extra).exists() or (onnx_path.parent / extra).is_symlink():
                    os.rename(onnx_path.parent / extra, target / extra)
        err = InputError if name == "missing" else UnsafeFileError
        with pytest.raises(err):
            runtime.load(target, threads=1)
        outside.unlink(missing_ok=True)
        before.discard(outside.name)

    assert not marker.exists(), "the payload ran"
    assert _listing(tmp_path.parent) == before, "something was written outside tmp_path"
    assert not outside.exists()
