"""The products of the synthetic data set: their silhouettes, parts and colours.

Each category of :data:`edgecut.data.synth.CATEGORIES` has a builder, ``BUILDERS[category](g,
px, bg)``: from its own random stream ``g`` it draws a :class:`Shape` in object-local units (a
list of filled polygons and stroked polylines, each with its colour, opacity, tint and gloss,
and how the whole is shaded). ``px`` is one output pixel in those units, so thin parts (a
bottle's neck, a mug's handle, laces) stay at least a pixel wide at every size; ``bg`` is the
backdrop's mean colour, which the product's colours stand out from. :func:`area` is the
covered area the layout scales a shape by. How shapes are placed, drawn, shaded and composited
is :mod:`edgecut.data.synth`.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

SHIFT = 4  # cv2 fixed-point bits: sub-pixel vertex positions


# ----------------------------------------------------------------------------- colours


def hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0), 1), min(max(v, 0), 1)), np.float32)


def _colour(g: np.random.Generator, avoid: np.ndarray, kind: str = "any") -> np.ndarray:
    """A product colour that stands out from the backdrop colour ``avoid``."""
    for _ in range(8):
        if kind == "neutral" or (kind == "any" and g.random() < 0.25):
            c = hsv(g.random(), g.uniform(0, 0.12), g.choice([g.uniform(0.08, 0.3), g.uniform(0.75, 0.97)]))
        elif kind == "kraft":
            c = hsv(g.uniform(0.06, 0.1), g.uniform(0.35, 0.55), g.uniform(0.55, 0.8))
        else:
            c = hsv(g.random(), g.uniform(0.35, 0.9), g.uniform(0.35, 0.95))
        if np.abs(c - avoid).sum() > 0.45:
            return c
    return np.clip(1.0 - avoid, 0.05, 0.95).astype(np.float32)


# ----------------------------------------------------------------------------- shapes


@dataclass
class Part:
    """A filled polygon (``width == 0``) or a stroked polyline, in object-local units."""

    pts: np.ndarray
    colour: np.ndarray
    width: float = 0.0
    closed: bool = False
    opacity: float = 1.0  # < 1: see-through, the backdrop shows through tinted by ``tint``
    tint: np.ndarray | None = None
    gloss: float = 1.0


@dataclass
class Shape:
    category: str
    parts: list[Part]
    shading: str = "flat"  # flat | cyl | fabric
    shine: float = 0.4  # strength of the specular highlight
    fold: tuple = field(default_factory=tuple)

    def points(self) -> np.ndarray:
        return np.concatenate([p.pts for p in self.parts])


def _ell(cx: float, cy: float, rx: float, ry: float, t0: float = 0.0, t1: float = 2 * math.pi,
         n: int = 48) -> np.ndarray:
    t = np.linspace(t0, t1, n)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)


def _smooth(pts: np.ndarray, times: int = 2, closed: bool = True) -> np.ndarray:
    """Chaikin corner cutting: rounds a polygon's corners."""
    for _ in range(times):
        nxt = np.roll(pts, -1, 0) if closed else pts[1:]
        cur = pts if closed else pts[:-1]
        q, r = 0.75 * cur + 0.25 * nxt, 0.25 * cur + 0.75 * nxt
        mid = np.stack([q, r], 1).reshape(-1, 2)
        pts = mid if closed else np.concatenate([pts[:1], mid, pts[-1:]])
    return pts


def _densify(pts: np.ndarray, step: float) -> np.ndarray:
    """Split a closed polygon's long edges, so that smoothing rounds corners only a little."""
    out = []
    for a, b in zip(pts, np.roll(pts, -1, 0)):
        k = max(1, int(math.ceil(np.linalg.norm(b - a) / step)))
        out.append(a + (b - a) * (np.arange(k)[:, None] / k))
    return np.concatenate(out)


def _mirror(parts: list[Part]) -> list[Part]:
    for p in parts:
        p.pts = p.pts * np.array([-1.0, 1.0])
    return parts


def _bottle(g: np.random.Generator, px: float, bg: np.ndarray) -> Shape:
    rb = g.uniform(0.12, 0.24)
    y_sh = g.uniform(-0.2, 0.1)
    y_neck = y_sh - g.uniform(0.08, 0.22)
    cap_h = g.uniform(0.05, 0.11)
    thin = g.random() < 0.35
    rn = g.uniform(1.0, 2.0) * px if thin else rb * g.uniform(0.25, 0.45)
    rc = max(rn * g.uniform(1.15, 1.5), rn + 1.5 * px) if not thin else rn + g.uniform(1.5, 3) * px
    y_top = -0.5 + cap_h
    c = rb * 0.25
    t = np.linspace(0, 1, 10)
    right = np.concatenate([
        [[rb - c, 0.5], [rb - 0.3 * c, 0.5 - 0.3 * c], [rb, 0.5 - c]],
        np.stack([rn + (rb - rn) * (0.5 + 0.5 * np.cos(math.pi * t)), y_sh + (y_neck - y_sh) * t], 1),
        [[rn, y_top + 0.01]]])
    body = np.concatenate([right, right[::-1] * [-1, 1]])
    glass = g.random() < 0.4
    cap_colour = _colour(g, bg, "any" if g.random() < 0.5 else "neutral")
    cap = Part(_smooth(_rect(-rc, -0.5, rc, y_top + 0.01), 1), cap_colour)
    parts = []
    if glass:
        tints = ((0.6, 0.85, 0.55), (0.9, 0.65, 0.35), (0.93, 0.96, 1.0), (0.93, 0.96, 1.0),
                 (0.55, 0.7, 0.95))  # green, amber, clear (twice as likely), blue
        tint = np.array(tints[int(g.integers(len(tints)))], np.float32)
        parts.append(Part(body, tint * 0.3, opacity=g.uniform(0.05, 0.3), tint=tint, gloss=1.6))
        if g.random() < 0.6:
            level = g.uniform(y_sh + 0.1, 0.4)
            parts.append(Part(_rect(-rb * 0.9, level, rb * 0.9, 0.5 - 0.03), _colour(g, bg),
                              opacity=g.uniform(0.25, 0.6), tint=tint, gloss=1.2))
        parts.append(Part(body, tint * 0.45, width=1.4 * px, closed=True, opacity=0.7, tint=tint))
    else:
        parts.append(Part(body, _colour(g, bg)))
    if y_sh < 0.3 and g.random() < 0.75:
        y0 = g.uniform(max(y_sh, -0.1), 0.3)
        y1 = min(y0 + g.uniform(0.12, 0.3), 0.5 - c)
        label = _colour(g, bg, "any" if g.random() < 0.5 else "neutral")
        parts.append(Part(_rect(-rb, y0, rb, y1), label, gloss=0.5))
        ink = np.clip(1 - label, 0.1, 0.9) * 0.8
        for k in range(int(g.integers(1, 4))):
            yl = y0 + (y1 - y0) * (k + 1) / 4.5
            text = np.array([[-rb * 0.6, yl], [rb * g.uniform(0, 0.6), yl]])
            parts.append(Part(text, ink, width=1.2 * px))
    parts.append(cap)
    return Shape("bottle", parts, "cyl", shine=g.uniform(0.4, 0.9))


def _box(g: np.random.Generator, px: float, bg: np.ndarray) -> Shape:
    w, h = g.uniform(0.5, 1.1), g.uniform(0.45, 1.0)
    dx = g.uniform(0.1, 0.3) * w * g.choice([-1.0, 1.0])
    dy = g.uniform(0.08, 0.22)
    x0, y0, x1, y1 = -w / 2, -h / 2 + dy / 2, w / 2, h / 2 + dy / 2
    base = _colour(g, bg, ["any", "kraft", "neutral"][int(g.integers(3))])
    top = np.clip(base * 1.2 + 0.08, 0, 1)
    side = base * 0.68
    front = _rect(x0, y0, x1, y1)
    lid = np.array([[x0, y0], [x1, y0], [x1 + dx, y0 - dy], [x0 + dx, y0 - dy]])
    xe = x1 if dx > 0 else x0
    side_pts = np.array([[xe, y0], [xe + dx, y0 - dy], [xe + dx, y1 - dy], [xe, y1]])
    parts = [Part(side_pts, side, gloss=0.5), Part(lid, top), Part(front, base)]
    accent = _colour(g, base)
    if g.random() < 0.5:  # a printed band
        b0 = g.uniform(y0, y1 - 0.15 * h)
        parts.append(Part(_rect(x0, b0, x1, b0 + g.uniform(0.08, 0.25) * h), accent))
    if g.random() < 0.6:  # a logo
        r = g.uniform(0.08, 0.18) * min(w, h)
        parts.append(Part(_ell(g.uniform(x0 + 2 * r, x1 - 2 * r), g.uniform(y0 + 2 * r, y1 - 2 * r), r, r),
                          np.clip(1 - accent, 0, 1)))
    if g.random() < 0.5:  # tape across the lid
        parts.append(Part(np.array([[x0 + dx / 2, y0 - dy / 2], [x1 + dx / 2, y0 - dy / 2]]),
                          np.clip(top * 0.85, 0, 1), width=g.uniform(2, 4) * px))
    parts.append(Part(np.array([[x0, y0], [x1, y0]]), np.clip(top * 1.1, 0, 1), width=1.0 * px))
    return Shape("box", parts, "flat", shine=g.uniform(0.05, 0.35))


def _can(g: np.random.Generator, px: float, bg: np.ndarray) -> Shape:
    rx = g.uniform(0.17, 0.32)
    ey = rx * g.uniform(0.15, 0.35)
    yt, yb = -0.5 + ey, 0.5 - ey
    metal = np.array([0.78, 0.79, 0.8], np.float32) * g.uniform(0.8, 1.1)
    right = np.array([[rx * 0.86, yt], [rx, yt + 0.07], [rx, yb - 0.04]])
    bottom = _ell(0, yb, rx * 0.9, ey, 0, math.pi, 24)
    body = np.concatenate([right, bottom, right[::-1] * [-1, 1]])
    colour = _colour(g, bg)
    bare = g.random() < 0.3  # bare metal, printed band only
    parts = [Part(body, metal if bare else colour)]
    if bare or g.random() < 0.5:
        l0 = g.uniform(yt + 0.1, 0.0)
        l1 = min(l0 + g.uniform(0.25, 0.55), yb - 0.06)
        t = np.linspace(0, math.pi, 24)
        band = np.concatenate([np.stack([rx * np.cos(t[::-1]), l0 + ey * np.sin(t[::-1])], 1),
                               np.stack([rx * np.cos(t), l1 + ey * np.sin(t)], 1)])
        parts.append(Part(band, _colour(g, bg) if bare else _colour(g, colour)))
    parts.append(Part(_ell(0, yt, rx * 0.86, ey * 0.86), metal * 1.08, gloss=0.6))
    parts.append(Part(_ell(0, yt, rx * 0.74, ey * 0.72), metal * 0.7, width=1.2 * px, closed=True))
    parts.append(Part(_ell(rx * 0.2, yt, rx * 0.22, ey * 0.3), metal * 0.85))
    return Shape("can", parts, "cyl", shine=g.uniform(0.6, 1.0))


def _shoe(g: np.random.Generator, px: float, bg: np.ndarray) -> Shape:
    st = g.uniform(0.05, 0.1)
    h = g.uniform(0.3, 0.45) if g.random() < 0.8 else g.uniform(0.55, 0.75)  # sneaker or boot
    sole_c = [np.array(v, np.float32) for v in ((0.95, 0.94, 0.9), (0.1, 0.1, 0.1),
                                                 (0.72, 0.52, 0.32))][int(g.integers(3))]
    upper_c = _colour(g, bg)
    sole = _smooth(_densify(np.array([[-0.5, -st], [-0.5, 0.0], [0.42, 0.0], [0.5, -0.05],
                                      [0.52, -st - 0.05], [0.44, -st]]), 0.05), 2)
    sandal = g.random() < 0.2
    parts = []
    if sandal:
        sole = _smooth(np.array([[-0.5, 0.0], [0.45, 0.0], [0.5, -st * 1.5], [-0.5, -st * 1.5]]), 2)
        parts.append(Part(sole, sole_c))
        strap = upper_c
        for cx in g.uniform(-0.1, 0.35, int(g.integers(2, 4))):
            rx, ry = g.uniform(0.06, 0.12), g.uniform(0.12, 0.2)
            parts.append(Part(_ell(cx, -st * 1.4, rx, ry, math.pi, 2 * math.pi, 24), strap,
                              width=g.uniform(2, 4) * px))
        parts.append(Part(np.array([[-0.48, -st * 1.4], [-0.44, -h * 0.6], [-0.2, -h * 0.75],
                                     [0.0, -st * 1.4]]), strap, width=g.uniform(2, 4) * px))
        return Shape("shoe", _mirror(parts) if g.random() < 0.5 else parts, "flat", shine=0.2)
    def y(f: float) -> float:  # a height on the upper: 0 at the sole, 1 at the collar
        return -st - f * h

    upper = _smooth(np.array([[-0.47, -st + 0.01], [-0.5, y(0.5)], [-0.48, y(0.9)], [-0.44, y(1.0)],
                              [-0.28, y(0.82)], [-0.12, y(1.08)], [0.05, y(0.75)], [0.25, y(0.45)],
                              [0.42, y(0.3)], [0.5, y(0.1)], [0.47, -st + 0.01]]), 3)
    parts.append(Part(upper, upper_c))
    if g.random() < 0.6:  # a side stripe
        stripe = np.array([[-0.3, y(0.1)], [0.02, y(0.7)], [0.12, y(0.6)], [-0.15, y(0.1)]])
        parts.append(Part(stripe, _colour(g, upper_c)))
    parts.append(Part(_ell(0.36, -st, 0.14, 0.3 * h, math.pi, 2 * math.pi, 16),
                      np.clip(upper_c * 1.15, 0, 1), gloss=1.5))
    parts.append(Part(sole, sole_c, gloss=0.3))
    lace = np.array((0.95, 0.95, 0.93) if upper_c.mean() < 0.6 else (0.12, 0.12, 0.12), np.float32)
    a, b = np.array([-0.1, y(0.98)]), np.array([0.14, y(0.58)])
    lw = g.uniform(1.5, 3) * px
    for k in range(int(g.integers(3, 6))):
        p = a + (b - a) * (k + 0.5) / 5
        parts.append(Part(np.array([p + [-0.05, -0.03], p + [0.05, 0.03]]), lace, width=lw))
    if g.random() < 0.6:  # a bow with loose ends
        knot = a + [0.0, -0.01]
        parts.append(Part(_ell(knot[0] - 0.05, knot[1] - 0.04, 0.05, 0.035), lace, width=lw, closed=True))
        parts.append(Part(_ell(knot[0] + 0.05, knot[1] - 0.04, 0.05, 0.035), lace, width=lw, closed=True))
        parts.append(Part(np.array([knot, knot + [-0.06, 0.1], knot + [-0.04, 0.16]]), lace, width=lw))
    return Shape("shoe", _mirror(parts) if g.random() < 0.5 else parts, "flat", shine=g.uniform(0.2, 0.6))


def _mug(g: np.random.Generator, px: float, bg: np.ndarray) -> Shape:
    bw = g.uniform(0.28, 0.4)
    ey = bw * g.uniform(0.12, 0.3)
    yt, yb = -0.5 + ey, 0.5 - ey * 0.5
    colour = _colour(g, bg)
    rx, ry = g.uniform(0.16, 0.24), (yb - yt) * g.uniform(0.25, 0.34)
    cy = yt + (yb - yt) * g.uniform(0.4, 0.55)
    thick = g.uniform(2.5, 4) * px if g.random() < 0.5 else g.uniform(0.05, 0.08)
    handle = Part(_ell(bw - 0.03, cy, rx, ry), colour, width=thick, closed=True)
    right = np.array([[bw, yt], [bw, yb - 0.04]])
    body = np.concatenate([right, _ell(0, yb - 0.04, bw, ey * 0.5, 0, math.pi, 24), right[::-1] * [-1, 1]])
    parts = [handle, Part(body, colour)]
    if g.random() < 0.5:  # a decal
        dc = _colour(g, colour)
        d0 = g.uniform(yt + 0.15, yb - 0.35)
        parts.append(Part(_rect(-bw, d0, bw, d0 + g.uniform(0.06, 0.25)), dc)
                     if g.random() < 0.5 else Part(_ell(g.uniform(-0.1, 0.1), d0 + 0.1, 0.1, 0.1), dc))
    parts.append(Part(_ell(0, yt, bw, ey), np.clip(colour * 1.15, 0, 1)))
    inside = colour * 0.45 if g.random() < 0.6 else np.array([0.25, 0.13, 0.06], np.float32)
    parts.append(Part(_ell(0, yt + ey * 0.05, bw * 0.9, ey * 0.82), inside, gloss=0.3))
    return Shape("mug", _mirror(parts) if g.random() < 0.5 else parts, "cyl", shine=g.uniform(0.3, 0.8))


def _garment(g: np.random.Generator, px: float, bg: np.ndarray) -> Shape:
    bw = g.uniform(0.26, 0.36)
    colour = _colour(g, bg)
    flare = g.uniform(0.0, 0.05)
    parts = []
    if g.random() < 0.25:  # a tank top on thin straps
        sx, sw = g.uniform(0.12, 0.2), g.uniform(2, 4) * px
        right = np.array([[sx - 0.02, -0.3], [bw * 0.9, -0.22], [bw, -0.05], [bw + flare, 0.5]])
        neck = _ell(0, -0.3, sx - 0.02, g.uniform(0.05, 0.12), 0, math.pi, 16)[::-1]
        outline = np.concatenate([neck, right, [[-bw - flare, 0.5]], right[::-1][:-1] * [-1, 1]])
        parts.append(Part(_smooth(_densify(outline, 0.06), 2), colour, gloss=0.2))
        for s in (-1, 1):
            parts.append(Part(np.array([[s * sx, -0.28], [s * sx * 1.05, -0.5]]), colour, width=sw))
    else:
        a = math.radians(g.uniform(20, 50))
        sl, sw = g.uniform(0.15, 0.28), g.uniform(0.15, 0.2)
        s = np.array([bw + 0.02, -0.42])
        d, p = np.array([math.cos(a), math.sin(a)]), np.array([-math.sin(a), math.cos(a)])
        nw = g.uniform(0.09, 0.13)
        right = np.array([[nw, -0.46], s, s + sl * d, s + sl * d + sw * p, [bw, -0.42 + sw * 1.15],
                          [bw + flare, 0.5]])
        outline = np.concatenate([right, right[::-1] * [-1, 1]])
        parts.append(Part(_smooth(_densify(outline, 0.06), 2), colour, gloss=0.2))
        nd = g.uniform(0.06, 0.14)
        parts.append(Part(_ell(0, -0.46, nw, nd, 0, math.pi, 16), colour * 0.6))
        parts.append(Part(_ell(0, -0.46, nw, nd, 0, math.pi, 16), np.clip(colour * 1.1, 0, 1),
                          width=g.uniform(2, 3.5) * px))
        if g.random() < 0.4:  # a chest print
            parts.append(Part(_ell(g.uniform(-0.05, 0.05), -0.15, 0.08, 0.06), _colour(g, colour)))
    fold = tuple(g.uniform([2, 0, 0, 0.03], [7, math.pi, 2 * math.pi, 0.08]))
    return Shape("garment", parts, "fabric", shine=0.0, fold=fold)


BUILDERS = {"bottle": _bottle, "box": _box, "can": _can, "shoe": _shoe, "mug": _mug, "garment": _garment}


def area(shape: Shape, res: int = 96) -> float:
    """The area the shape covers, in squared local units (rasterised, coarse)."""
    pts = shape.points()
    lo = pts.min(0)
    cell = (pts.max(0) - lo).max() / (res - 2)
    grid = np.zeros((res, res), np.uint8)
    for p in shape.parts:
        q = [np.round((p.pts - lo) / cell * 16 + 8).astype(np.int32)]
        if p.width == 0:
            cv2.fillPoly(grid, q, 1, cv2.LINE_8, SHIFT)
        else:
            cv2.polylines(grid, q, p.closed, 1, max(1, round(p.width / cell)), cv2.LINE_8, SHIFT)
    return max(float(grid.sum()), 1.0) * cell * cell
