"""The embedded default data set: synthetic studio product shots with exact masks.

Quickstarts and tests need images and masks without a download. This module draws bottles, boxes, cans, shoes,
mugs and garments on plain, gradient, textured or cluttered backdrops; the mask is 255 on every object and 0
elsewhere. ``render(index, size, seed)`` is a pure function: image ``index`` draws from its own random stream, and
one index gives the same shot at every size. ``generate`` writes the folder layout of :mod:`edgecut.data.folder`
(``images/``, ``masks/``, ``splits/`` and ``synth.json``, whose parameters let a second run resume); every file is
written atomically and is byte-identical from run to run.

What is drawn and how: docs/design-decisions.md#synth
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from dataclasses import dataclass

import cv2
import numpy as np

from edgecut.data.config import MAX_COUNT, MAX_SIZE, MIN_SIZE, SynthConfig
from edgecut.data.config import checked_int as _int
from edgecut.data.products import BUILDERS, SHIFT, Shape, area, hsv
from edgecut.io import encode_image, write_bytes, writes_out
from edgecut.progress import Tracker

CATEGORIES: tuple[str, ...] = ("bottle", "box", "can", "shoe", "mug", "garment")
VERSION = 1
_PNG_COMPRESSION = 6


# ----------------------------------------------------------------------------- public API


def category_of(index: int, seed: int = 0) -> str:
    """The category of the (first) object in image ``index``: every block of six has all six."""
    perm = np.random.default_rng([seed, index // len(CATEGORIES), 7]).permutation(len(CATEGORIES))
    return CATEGORIES[int(perm[index % len(CATEGORIES)])]


def render(index: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Image ``index`` of the set ``seed``: (size x size x 3 uint8 RGB, size x size uint8 mask 0/255)."""
    size, index, seed = _int("size", size, MIN_SIZE, MAX_SIZE), _int("index", index, 0), _int("seed", seed, 0)
    rng = np.random.default_rng([seed, index])
    ss = 4 if size <= 64 else 2 if size <= 512 else 1
    n = size * ss
    pix = np.random.default_rng(int(rng.integers(2**63)))  # the size-dependent draws (noise)
    canvas, bg_mean = _background(rng, pix, n)
    objects = _layout(rng, index, seed, bg_mean)
    fall = rng.uniform(0.3, 0.85) * math.pi * rng.choice([-1.0, 1.0]) + math.pi / 2
    light = (math.cos(fall), math.sin(fall))  # the way shadows fall, in image coordinates

    drawn = [_draw(obj, n, light) for obj in objects]
    cover = np.zeros((n, n), np.float32)  # what the mask is made of
    block = np.zeros((n, n), np.float32)  # what casts a shadow: glass lets most light through
    for (y0, x0), layers in drawn:
        sl = np.s_[y0:y0 + layers["alpha"].shape[0], x0:x0 + layers["alpha"].shape[1]]
        cover[sl] = np.maximum(cover[sl], layers["alpha"])
        opaque = layers["alpha"] if layers["opacity"] is None else layers["alpha"] * layers["opacity"]
        block[sl] = np.maximum(block[sl], opaque)
    _shadow(rng, canvas, block, size, light)
    for (y0, x0), layers in drawn:
        _composite(canvas, y0, x0, layers)

    image = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA) if ss > 1 else canvas
    alpha = cv2.resize(cover, (size, size), interpolation=cv2.INTER_AREA) if ss > 1 else cover
    mask = np.where(alpha >= 0.5, 255, 0).astype(np.uint8)
    if rng.random() < 0.3:
        sigma = rng.uniform(0.35, 0.8) * size / 128
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    if rng.random() < 0.5:
        image = image + pix.normal(0.0, rng.uniform(1.0, 4.0) / 255, image.shape).astype(np.float32)
    image = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
    return image, mask


def generate(out: str | os.PathLike, count: int, size: int = 128, seed: int = 0, *,
             val_fraction: float = 0.2, progress: bool = True) -> pathlib.Path:
    """Write ``count`` images, masks, splits and ``synth.json`` under ``out``; return ``out``.

    A folder made earlier with the same parameters is completed, not redone. A folder holding
    anything else is left untouched and is a ``FileExistsError``.
    """
    count, size, seed = _int("count", count, 1, MAX_COUNT), _int("size", size, MIN_SIZE, MAX_SIZE), _int("seed", seed, 0)
    if not (isinstance(val_fraction, (int, float)) and 0.0 <= val_fraction < 1.0):
        raise ValueError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}")
    root = pathlib.Path(out)
    meta = {"generator": "edgecut.data.synth", "version": VERSION, "count": count,
            "size": size, "seed": seed, "categories": list(CATEGORIES)}
    _claim(root, meta)
    names = [f"{i:05d}" for i in range(count)]
    with Tracker(f"synth {size}px", count, enabled=progress and count > 1) as bar:
        for i, name in enumerate(names):
            img_path, mask_path = root / "images" / f"{name}.png", root / "masks" / f"{name}.png"
            if not (img_path.exists() and mask_path.exists()):
                image, mask = render(i, size, seed)
                if not img_path.exists():
                    _write(img_path, encode_image(image, ".png", _PNG_COMPRESSION))
                if not mask_path.exists():
                    _write(mask_path, encode_image(mask, ".png", _PNG_COMPRESSION))
            bar.advance()
    train, val = _split(names, seed, val_fraction)
    for split, members in (("train", train), ("val", val)):
        path, data = root / "splits" / f"{split}.txt", "".join(f"{m}\n" for m in members).encode()
        if not (path.is_file() and path.read_bytes() == data):
            _write(path, data)
    return root


@writes_out
def synth(out: str | os.PathLike, config: SynthConfig = SynthConfig(), *, resume: bool = False,
          progress: bool = True) -> pathlib.Path:
    """The ``synth`` step: :func:`generate` as a step of a recipe (a folder made earlier with the same
    settings is completed, whatever ``resume`` says; one with other settings is an error)."""
    from edgecut.errors import EdgecutError

    del resume  # generate() always completes a folder of its own settings and refuses any other
    config.validate()
    try:
        return generate(out, config.count, config.size, config.seed, val_fraction=config.val_fraction,
                        progress=progress)
    except (ValueError, FileExistsError) as e:
        raise EdgecutError(str(e)) from None


# ----------------------------------------------------------------------------- files


def _write(path: pathlib.Path, data: bytes) -> None:
    write_bytes(path, data, fsync=False)  # regenerated on demand: no need to wait for the disk




def _claim(root: pathlib.Path, meta: dict) -> None:
    """Make ``root`` ours (write synth.json) unless it holds something else."""
    meta_path = root / "synth.json"
    fix = "choose a new --out or delete it"
    if meta_path.is_file():
        from edgecut.errors import InputError
        from edgecut.io import read_json

        try:
            old = read_json(meta_path, max_bytes=1 << 20)
        except InputError:
            old = None
        if old != meta:
            if isinstance(old, dict):
                diff = ", ".join(f"{k} {old.get(k)!r} (asked {v!r})" for k, v in meta.items()
                                 if old.get(k) != v)
            else:
                diff = "unreadable synth.json"
            raise FileExistsError(f"{root} already holds a different synthetic data set "
                                  f"({diff}); {fix}")
        return
    if root.is_dir() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty and holds no synth.json; {fix}")
    _write(meta_path, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())


def _split(names: list[str], seed: int, val_fraction: float) -> tuple[list[str], list[str]]:
    """Deterministic split; a name's key does not depend on the count, so sets grow stably."""
    n_val = round(len(names) * val_fraction)
    if val_fraction > 0 and len(names) > 1:
        n_val = min(max(n_val, 1), len(names) - 1)
    keys = np.random.default_rng([seed, 2**32 - 1]).random(len(names))
    val = set(np.argsort(keys, kind="stable")[:n_val].tolist())
    return ([m for i, m in enumerate(names) if i not in val], [m for i, m in enumerate(names) if i in val])


# ----------------------------------------------------------------------------- backdrops


def _backdrop_colour(g: np.random.Generator) -> np.ndarray:
    r = g.random()
    if r < 0.55:  # studio white / grey
        return hsv(g.random(), g.uniform(0, 0.06), g.uniform(0.78, 0.98))
    if r < 0.85:  # pastel
        return hsv(g.random(), g.uniform(0.1, 0.35), g.uniform(0.72, 0.95))
    return hsv(g.random(), g.uniform(0, 0.3), g.uniform(0.1, 0.3))  # dark


def _background(rng: np.random.Generator, pix: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """An n x n float32 RGB backdrop: plain, gradient, textured or cluttered; and its mean colour."""
    kind = rng.choice(["plain", "gradient", "textured", "cluttered"], p=[0.3, 0.3, 0.2, 0.2])
    a = _backdrop_colour(rng)
    b = np.clip(a * rng.uniform(0.75, 1.1) + rng.normal(0, 0.04, 3), 0, 1).astype(np.float32)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n - 0.5
    if kind == "gradient" or (kind == "cluttered" and rng.random() < 0.5):
        if rng.random() < 0.5:
            t = rng.uniform(0, 2 * math.pi)
            w = xx * math.cos(t) + yy * math.sin(t) + 0.5
        else:
            cx, cy = rng.uniform(-0.2, 0.2, 2)
            w = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) * 1.4
        img = a + (b - a) * np.clip(w, 0, 1)[..., None]
    else:
        img = np.broadcast_to(a, (n, n, 3)).copy()
    if kind == "textured":
        pattern = rng.choice(["noise", "stripes", "fabric"])
        amp = rng.uniform(0.04, 0.14)
        if pattern == "noise":
            k = int(rng.integers(4, 24))
            t = cv2.resize(rng.random((k, k)).astype(np.float32), (n, n), interpolation=cv2.INTER_CUBIC)
            t += 0.5 * pix.random((n, n)).astype(np.float32) - 0.25
        elif pattern == "stripes":
            th, f = rng.uniform(0, math.pi), rng.uniform(6, 24)
            t = 0.5 + 0.5 * np.sin(2 * math.pi * f * (xx * math.cos(th) + yy * math.sin(th)))
            t = np.clip((t - 0.5) * 3 + 0.5, 0, 1)
        else:
            f = rng.uniform(25, 60)
            t = 0.5 + 0.25 * np.sin(2 * math.pi * f * xx) * np.sign(np.sin(math.pi * f * yy)) \
                + 0.25 * np.sin(2 * math.pi * f * yy) * np.sign(np.sin(math.pi * f * xx))
            t += 0.3 * pix.random((n, n)).astype(np.float32) - 0.15
        img = img + (amp * (t - 0.5))[..., None] * np.where(a.mean() > 0.5, -1.0, 1.0)
    if kind == "cluttered":
        for _ in range(int(rng.integers(3, 7))):
            layer = np.zeros((n, n), np.uint8)
            c = (rng.uniform(0.05, 0.95, 2) * n * 16).astype(np.int32)
            r = (rng.uniform(0.05, 0.22, 2) * n * 16).astype(np.int32)
            if rng.random() < 0.6:
                cv2.ellipse(layer, tuple(c.tolist()), tuple(r.tolist()), rng.uniform(0, 180), 0, 360,
                            255, -1, cv2.LINE_AA, SHIFT)
            else:
                box = cv2.boxPoints(((c[0] / 16, c[1] / 16), (r[0] / 8, r[1] / 8), rng.uniform(0, 90)))
                cv2.fillPoly(layer, [np.round(box * 16).astype(np.int32)], 255, cv2.LINE_AA, SHIFT)
            sigma = rng.uniform(0.01, 0.035) * n
            w = cv2.GaussianBlur(layer.astype(np.float32) / 255, (0, 0), sigma) * rng.uniform(0.35, 0.8)
            col = hsv(rng.random(), rng.uniform(0.1, 0.7), rng.uniform(0.3, 0.95))
            img = img + (col - img) * w[..., None]
    img = np.clip(img, 0, 1).astype(np.float32)
    return img, img.reshape(-1, 3).mean(0)


# ----------------------------------------------------------------------------- layout


@dataclass
class _Placed:
    shape: Shape
    scale: float  # frame widths per local unit
    rot: np.ndarray  # 2 x 2
    shift: np.ndarray  # frame-relative position of the local origin


def _layout(rng: np.random.Generator, index: int, seed: int, bg: np.ndarray) -> list[_Placed]:
    """One object over most of the frame, or (sometimes) two objects side by side."""
    cats = [category_of(index, seed)]
    if rng.random() < 0.15:
        cats.append(CATEGORIES[int(rng.integers(len(CATEGORIES)))])
    regions = [(0.0, 1.0)] if len(cats) == 1 else [(0.0, 0.58), (0.42, 1.0)]
    if len(cats) == 2 and rng.random() < 0.5:
        regions = regions[::-1]
    placed = []
    for cat, (r0, r1) in zip(cats, regions):
        geo = int(rng.integers(2**63))
        target = rng.uniform(0.08, 0.7) if len(cats) == 1 else rng.uniform(0.06, 0.3)
        if cat == "garment":
            angle = rng.uniform(-30, 30)
        elif rng.random() < 0.2:
            angle = rng.uniform(-45, 45)
        else:
            angle = rng.normal(0, 5)
        t = math.radians(angle)
        rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
        shape = BUILDERS[cat](np.random.default_rng(geo), 0.01, bg)
        scale = math.sqrt(target / area(shape))
        shape = BUILDERS[cat](np.random.default_rng(geo), 1 / (128 * scale), bg)  # px-exact thin parts
        pts = shape.points() @ rot.T
        lo, hi = pts.min(0), pts.max(0)
        margin = 0.03
        room = np.array([r1 - r0, 1.0]) - 2 * margin
        scale = min(scale, *(room / (hi - lo)))
        shape = BUILDERS[cat](np.random.default_rng(geo), 1 / (128 * scale), bg)
        pts = shape.points() @ rot.T
        lo, hi = pts.min(0) * scale, pts.max(0) * scale
        span_lo = np.array([r0, 0.0]) + margin - lo
        span_hi = np.array([r1, 1.0]) - margin - hi
        shift = span_lo + (span_hi - span_lo) * np.clip(rng.normal(0.5, 0.2, 2), 0, 1)
        placed.append(_Placed(shape, scale, rot, shift))
    return placed


# ----------------------------------------------------------------------------- drawing


def _draw(obj: _Placed, n: int, light: tuple[float, float]) -> tuple[tuple[int, int], dict]:
    """Rasterise one object in its bounding box: colour, coverage, opacity, tint and gloss layers."""
    k = obj.scale * n
    tf = [(p.pts @ obj.rot.T) * k + obj.shift * n for p in obj.shape.parts]
    allp = np.concatenate(tf)
    pad = 2 + max(p.width for p in obj.shape.parts) * k
    x0, y0 = np.maximum(np.floor(allp.min(0) - pad).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(allp.max(0) + pad).astype(int), n)
    h, w = y1 - y0, x1 - x0
    colour = np.zeros((h, w, 3), np.float32)
    alpha = np.zeros((h, w), np.float32)
    glass = any(p.opacity < 1 for p in obj.shape.parts)
    opacity = np.ones((h, w), np.float32) if glass else None
    tint = np.ones((h, w, 3), np.float32) if glass else None
    gloss = np.zeros((h, w), np.float32)
    layer = np.zeros((h, w), np.uint8)
    for part, pts in zip(obj.shape.parts, tf):
        layer[:] = 0
        q = [np.round((pts - [x0, y0]) * (1 << SHIFT)).astype(np.int32)]
        if part.width == 0:
            cv2.fillPoly(layer, q, 255, cv2.LINE_AA, SHIFT)
        else:
            cv2.polylines(layer, q, part.closed, 255, max(1, round(part.width * k)), cv2.LINE_AA, SHIFT)
        a = layer.astype(np.float32) / 255
        colour += (part.colour - colour) * a[..., None]
        alpha += (1 - alpha) * a
        gloss += (part.gloss - gloss) * a
        if glass:
            opacity += (part.opacity - opacity) * a
            tint += ((part.tint if part.tint is not None else 1.0) - tint) * a[..., None]
    # local coordinates of every pixel, normalised to the shape's box: shading and highlights
    loc_all = obj.shape.points()
    c, half = (loc_all.max(0) + loc_all.min(0)) / 2, np.maximum((loc_all.max(0) - loc_all.min(0)) / 2, 1e-6)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    gx, gy = (xx - obj.shift[0] * n) / k, (yy - obj.shift[1] * n) / k
    r = obj.rot
    u = ((r[0, 0] * gx + r[1, 0] * gy) - c[0]) / half[0]
    v = ((r[0, 1] * gx + r[1, 1] * gy) - c[1]) / half[1]
    lx, ly = -(r[0, 0] * light[0] + r[1, 0] * light[1]), -(r[0, 1] * light[0] + r[1, 1] * light[1])
    shape = obj.shape
    if glass:  # glass is clearer face-on than at the rims (Fresnel)
        opacity += (1 - opacity) * (opacity < 1) * 0.75 * np.clip(np.abs(u), 0, 1) ** 6
    if shape.shading == "cyl":
        shade = 1.1 - 0.45 * (u - 0.35 * lx) ** 2
        spec = np.exp(-(((u - 0.55 * lx) / 0.13) ** 2)) * np.clip((0.92 - np.abs(v)) * 6, 0, 1)
    elif shape.shading == "fabric":
        f, th, ph, amp = shape.fold
        shade = 1 + 0.1 * (u * lx + v * ly) + amp * np.sin(f * (u * math.cos(th) + v * math.sin(th)) + ph)
        spec = np.zeros_like(u)
    else:
        shade = 1 + 0.12 * (u * lx + v * ly)
        spec = np.exp(-(((u - 0.45 * lx) / 0.35) ** 2 + ((v - 0.45 * ly) / 0.3) ** 2))
    return (int(y0), int(x0)), {"colour": colour * shade[..., None], "spec": shape.shine * gloss * spec,
                                "alpha": alpha, "opacity": opacity, "tint": tint}


def _shadow(rng: np.random.Generator, canvas: np.ndarray, block: np.ndarray, size: int,
            light: tuple[float, float]) -> None:
    """Darken the backdrop with a soft drop shadow and a tight contact shadow (in place)."""
    m = max(32, size // 2)
    small = cv2.resize(block, (m, m), interpolation=cv2.INTER_AREA)
    dist, soft, strength = rng.uniform(0.01, 0.05), rng.uniform(0.012, 0.04), rng.uniform(0.25, 0.55)
    shift = np.float32([[1, 0, light[0] * dist * m], [0, 1, light[1] * dist * m]])
    drop = cv2.GaussianBlur(cv2.warpAffine(small, shift, (m, m)), (0, 0), soft * m) * strength
    contact = cv2.GaussianBlur(small, (0, 0), 0.008 * m + 0.5) * 0.3
    shade = np.clip(drop + contact, 0, 0.8)
    n = canvas.shape[0]
    shade = cv2.resize(shade, (n, n), interpolation=cv2.INTER_LINEAR)
    canvas *= (1 - shade)[..., None]


def _composite(canvas: np.ndarray, y0: int, x0: int, layers: dict) -> None:
    alpha = layers["alpha"]
    h, w = alpha.shape
    under = canvas[y0:y0 + h, x0:x0 + w]
    colour = layers["colour"]
    if layers["opacity"] is not None:  # glass: the backdrop shows through, tinted
        op = layers["opacity"][..., None]
        colour = colour * op + under * layers["tint"] * (1 - op)
    colour = colour + layers["spec"][..., None]
    canvas[y0:y0 + h, x0:x0 + w] = under + (np.clip(colour, 0, 1) - under) * alpha[..., None]
