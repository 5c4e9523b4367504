# over 500 lines: every metric shares the input checks and the 256-threshold curves; one file keeps their conventions together
"""Mask, matte and composite metrics: numpy arrays in, floats out.

``pred`` is an H x W prediction (float in [0, 1], uint8 0..255 or bool; NaN or a float outside [0, 1] raises
``ValueError``), ``gt`` an H x W ground truth of the same shape. Metrics: IoU, Dice, precision, recall, MAE,
F-measure (Achanta et al., CVPR 2009), S-measure (Fan et al., ICCV 2017), E-measure (Fan et al., IJCAI 2018),
weighted F (Margolin et al., CVPR 2014), boundary F (DAVIS, Perazzi et al., CVPR 2016), and PSNR / SSIM (Wang et
al., IEEE TIP 2004) of the composites. :class:`SegMetrics` aggregates them over a data set. The saliency metrics
follow pysodmetrics; predictions are scored as they are, and ``normalize=True`` reproduces its min-max step.

Every convention, edge case and difference from pysodmetrics: docs/design-decisions.md#metrics
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
from scipy.ndimage import distance_transform_edt

EPS = np.spacing(1)  # MATLAB's eps, used where pysodmetrics uses it
F_BETA2 = 0.3
PSNR_CAP_DB = 100.0
BOUNDARY_TOL = 0.0075
MAX_F_CONVENTION = (
    "max_f: per-image F-measure curves (beta^2=0.3, 256 thresholds) averaged over images, "
    "then the maximum over thresholds (pysodmetrics convention); max_f_dataset: F from the "
    "dataset-mean precision and recall curves, then the maximum (classic SOD toolbox)"
)

# ----------------------------------------------------------------------------- inputs


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"pred has shape {pred.shape} but gt has shape {gt.shape}; they must match")
    if pred.ndim != 2:
        raise ValueError(f"pred and gt must be 2-D (H x W), got shape {pred.shape}")


def _as_alpha(a: Any, what: str = "pred") -> np.ndarray:
    """uint8 -> /255, bool -> 0/1, float checked to lie in [0, 1]; returns float64."""
    a = np.asarray(a)
    if a.dtype == np.uint8:
        return a / 255
    if a.dtype == bool:
        return a.astype(np.float64)
    a = a.astype(np.float64, copy=False)
    lo, hi = (a.min(), a.max()) if a.size else (0.0, 0.0)
    if not (lo >= -1e-6 and hi <= 1 + 1e-6):  # also catches NaN
        raise ValueError(f"{what} values must lie in [0, 1] (or be uint8), got range [{lo}, {hi}]")
    return np.clip(a, 0.0, 1.0)


def _as_mask(gt: Any) -> np.ndarray:
    gt = np.asarray(gt)
    if gt.dtype == bool:
        return gt
    return gt > (127 if gt.dtype == np.uint8 else 0.5)


def _prepare(pred: Any, gt: Any, normalize: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(float64 prediction in [0, 1], bool ground truth), optionally min-max normalised."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    _check_pair(pred, gt)
    p = _as_alpha(pred)
    if normalize:
        lo, hi = p.min(), p.max()
        if hi != lo:
            p = (p - lo) / (hi - lo)
    return p, _as_mask(gt)


# ------------------------------------------------------------------- binary metrics


def _binary_scores(p: np.ndarray, g: np.ndarray, threshold: float) -> dict[str, float]:
    """iou, dice, precision, recall of ``p >= threshold``; an empty/empty pair scores 1."""
    b = p >= threshold
    tp = int(np.count_nonzero(b & g))
    fp, fn = int(np.count_nonzero(b)) - tp, int(np.count_nonzero(g)) - tp
    ratio = lambda num, den: num / den if den else float(fp + fn == 0)  # noqa: E731
    return {"iou": ratio(tp, tp + fp + fn), "dice": ratio(2 * tp, 2 * tp + fp + fn),
            "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn)}


def iou(pred, gt, threshold: float = 0.5, normalize: bool = False) -> float:
    return _binary_scores(*_prepare(pred, gt, normalize), threshold)["iou"]


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks of one image (e.g. two models' thresholded outputs); both empty: 1."""
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 1.0


def dice(pred, gt, threshold: float = 0.5, normalize: bool = False) -> float:
    return _binary_scores(*_prepare(pred, gt, normalize), threshold)["dice"]


def precision(pred, gt, threshold: float = 0.5, normalize: bool = False) -> float:
    """Empty prediction: 1 if the ground truth is empty too, else 0."""
    return _binary_scores(*_prepare(pred, gt, normalize), threshold)["precision"]


def recall(pred, gt, threshold: float = 0.5, normalize: bool = False) -> float:
    """Empty ground truth: 1 if the prediction is empty too, else 0."""
    return _binary_scores(*_prepare(pred, gt, normalize), threshold)["recall"]


def mae(pred, gt, normalize: bool = False) -> float:
    p, g = _prepare(pred, gt, normalize)
    return float(np.mean(np.abs(p - g)))


# ------------------------------------------------- threshold curves (F and E measure)


def _cum_counts(p: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per threshold t = 0..255: (#gt-foreground pixels with q >= t, #pixels with q >= t)."""
    q = (p * 255).astype(np.uint8)  # truncation, as pysodmetrics
    hist = np.bincount((q + g.astype(np.intp) * 256).ravel(), minlength=512).reshape(2, 256)
    ge = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1]  # counts of q >= t
    return ge[1], ge[0] + ge[1]


def _f_from_pr(prec, rec, beta2: float):
    num = (1 + beta2) * prec * rec
    return np.divide(num, beta2 * prec + rec, out=np.zeros_like(num, dtype=np.float64), where=num != 0)


def _f_curves(p, g, beta2: float = F_BETA2):
    tp, pp = _cum_counts(p, g)
    prec = tp / np.maximum(pp, 1)
    rec = tp / max(int(np.count_nonzero(g)), 1)
    return prec, rec, _f_from_pr(prec, rec, beta2)


def _adaptive_threshold(p: np.ndarray) -> float:
    return min(2 * float(p.mean()), 1.0)


def _adaptive_f(p, g, beta2: float = F_BETA2) -> float:
    b = p >= _adaptive_threshold(p)
    tp = np.count_nonzero(b & g)
    if tp == 0:
        return 0.0
    return float(_f_from_pr(tp / np.count_nonzero(b), tp / np.count_nonzero(g), beta2))


def _enhanced(a, b):
    return (2 * a * b / (a * a + b * b + EPS) + 1) ** 2 / 4


def _e_from_counts(tp, pp, n_fg: int, n: int):
    """E-measure from the counts of a binarised map (scalars or per-threshold arrays)."""
    tp, pp = np.asarray(tp, np.float64), np.asarray(pp, np.float64)
    if n_fg == 0:
        total = n - pp  # only the predicted background aligns
    elif n_fg == n:
        total = pp
    else:
        mp, mg = pp / n, n_fg / n  # demeaned binary values: pred 1-mp / -mp, gt 1-mg / -mg
        fp, fn = pp - tp, n_fg - tp
        tn = n - pp - fn
        total = (tp * _enhanced(1 - mp, 1 - mg) + fp * _enhanced(1 - mp, -mg)
                 + fn * _enhanced(-mp, 1 - mg) + tn * _enhanced(-mp, -mg))
    return total / (n - 1 + EPS)


def _e_curve(p, g) -> np.ndarray:
    tp, pp = _cum_counts(p, g)
    return _e_from_counts(tp, pp, int(np.count_nonzero(g)), g.size)


def _adaptive_e(p, g) -> float:
    b = p >= _adaptive_threshold(p)
    tp, pp = np.count_nonzero(b & g), np.count_nonzero(b)
    return float(_e_from_counts(tp, pp, int(np.count_nonzero(g)), g.size))


def f_curve(pred, gt, beta2: float = F_BETA2, normalize: bool = False):
    """(precision, recall, F) arrays of length 256; index t keeps ``uint8(pred*255) >= t``."""
    return _f_curves(*_prepare(pred, gt, normalize), beta2)


def max_f(pred, gt, normalize: bool = False) -> float:
    return float(f_curve(pred, gt, normalize=normalize)[2].max())


def mean_f(pred, gt, normalize: bool = False) -> float:
    return float(f_curve(pred, gt, normalize=normalize)[2].mean())


def adaptive_f(pred, gt, normalize: bool = False) -> float:
    return _adaptive_f(*_prepare(pred, gt, normalize))


def e_curve(pred, gt, normalize: bool = False) -> np.ndarray:
    """E-measure at the 256 thresholds of :func:`f_curve`."""
    return _e_curve(*_prepare(pred, gt, normalize))


def e_measure(pred, gt, normalize: bool = False) -> float:
    """Mean E-measure over the 256 thresholds."""
    return float(e_curve(pred, gt, normalize).mean())


def max_e(pred, gt, normalize: bool = False) -> float:
    return float(e_curve(pred, gt, normalize).max())


def adaptive_e(pred, gt, normalize: bool = False) -> float:
    return _adaptive_e(*_prepare(pred, gt, normalize))


# ------------------------------------------------------------------------ S-measure


def _s_object(x: np.ndarray) -> float:
    mu = x.mean()
    std = x.std(ddof=1) if x.size > 1 else 0.0
    return 2 * mu / (mu * mu + 1 + std + EPS)


def _ssim_region(p: np.ndarray, g: np.ndarray) -> float:
    """The single-window SSIM of the S-measure's region term (0 for an empty region)."""
    n = p.size
    if n == 0:
        return 0.0
    g = g.astype(np.float64)
    x, y = p.mean(), g.mean()
    dx, dy = p - x, g - y
    dof = n - 1 + EPS  # sample (co)variances; EPS keeps a 1-pixel region finite
    sx, sy, sxy = (dx * dx).sum() / dof, (dy * dy).sum() / dof, (dx * dy).sum() / dof
    a = 4 * x * y * sxy
    b = (x * x + y * y) * (sx + sy)
    if a != 0:
        return a / (b + EPS)
    return 1.0 if b == 0 else 0.0


def _s_measure(p, g, alpha: float = 0.5) -> float:
    h, w = g.shape
    n_fg = int(np.count_nonzero(g))
    if n_fg == 0:
        return float(1 - p.mean())
    if n_fg == g.size:
        return float(p.mean())
    m = n_fg / g.size
    obj = m * _s_object(p[g]) + (1 - m) * _s_object(1 - p[~g])
    # centroid (integer sums, so identical to argwhere().mean()), rounded half-to-even, +1 (MATLAB)
    cy = int(np.round(g.sum(axis=1) @ np.arange(h) / n_fg)) + 1
    cx = int(np.round(g.sum(axis=0) @ np.arange(w) / n_fg)) + 1
    area = h * w
    weights = (cy * cx / area, cy * (w - cx) / area, (h - cy) * cx / area)
    weights += (1 - sum(weights),)
    quads = ((slice(0, cy), slice(0, cx)), (slice(0, cy), slice(cx, w)),
             (slice(cy, h), slice(0, cx)), (slice(cy, h), slice(cx, w)))
    region = sum(wq * _ssim_region(p[q], g[q]) for wq, q in zip(weights, quads))
    return float(max(0.0, alpha * obj + (1 - alpha) * region))


def s_measure(pred, gt, alpha: float = 0.5, normalize: bool = False) -> float:
    return _s_measure(*_prepare(pred, gt, normalize), alpha)


# ----------------------------------------------------------------- weighted F-measure

_G1D = np.exp(-np.arange(-3, 4) ** 2 / (2 * 5.0**2))
_G1D /= _G1D.sum()  # outer(_G1D, _G1D) == MATLAB fspecial('gaussian', 7, 5)


def _weighted_f(p, g, beta2: float = 1.0) -> float:
    if not g.any():
        return 0.0
    dist, (iy, ix) = distance_transform_edt(~g, return_indices=True)
    err = np.abs(p - g)
    err_t = err.ravel()[iy * g.shape[1] + ix]  # background takes the error of its nearest fg pixel
    err_a = cv2.sepFilter2D(err_t, cv2.CV_64F, _G1D, _G1D, borderType=cv2.BORDER_CONSTANT)
    err_min = np.where(g & (err_a < err), err_a, err)
    ew = err_min * (2 - np.exp(np.log(0.5) / 5 * dist))  # importance: 1 inside, up to 2 far out
    ew_fg = ew[g]
    tpw = g.sum() - ew_fg.sum()
    fpw = ew[~g].sum()
    r = 1 - ew_fg.mean()
    pw = tpw / (tpw + fpw + EPS)
    return float((1 + beta2) * r * pw / (r + beta2 * pw + EPS))


def weighted_f(pred, gt, beta2: float = 1.0, normalize: bool = False) -> float:
    return _weighted_f(*_prepare(pred, gt, normalize), beta2)


# ------------------------------------------------------------------- boundary F-measure

_K3 = np.ones((3, 3), np.uint8)


def _boundary(mask: np.ndarray) -> np.ndarray:
    m = mask.astype(np.uint8)
    return (m - cv2.erode(m, _K3)).astype(bool)  # default border: the frame is not a contour


def _boundary_f(p, g, threshold: float = 0.5, tol: float = BOUNDARY_TOL) -> float:
    bp, bg = _boundary(p >= threshold), _boundary(g)
    n_p, n_g = int(np.count_nonzero(bp)), int(np.count_nonzero(bg))
    if n_p == 0 or n_g == 0:
        return 1.0 if n_p == n_g else 0.0
    r = max(1, math.ceil(tol * math.hypot(*g.shape)))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    prec = np.count_nonzero(bp & cv2.dilate(bg.astype(np.uint8), disk).astype(bool)) / n_p
    rec = np.count_nonzero(bg & cv2.dilate(bp.astype(np.uint8), disk).astype(bool)) / n_g
    return 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)


def boundary_f(pred, gt, threshold: float = 0.5, tol: float = BOUNDARY_TOL, normalize: bool = False) -> float:
    """DAVIS boundary F-measure; ``tol`` is the match distance as a fraction of the diagonal."""
    return _boundary_f(*_prepare(pred, gt, normalize), threshold, tol)


# ----------------------------------------------------------------------- composites


def _composites(image, pred, gt, bg) -> tuple[np.ndarray, np.ndarray]:
    """(pred-alpha composite, gt-alpha composite), float32 3 x H x W on the 0..255 scale."""
    image, pred, gt = np.asarray(image), np.asarray(pred), np.asarray(gt)
    _check_pair(pred, gt)
    if image.shape != pred.shape + (3,):
        raise ValueError(f"image has shape {image.shape}, expected {pred.shape + (3,)} (H x W x 3 like pred)")
    back = np.broadcast_to(np.asarray(bg, np.float32).ravel(), (3,))[:, None, None]
    d = np.ascontiguousarray(np.moveaxis(image, -1, 0), dtype=np.float32) - back  # channel-first: fast
    a_p, a_g = _as_alpha(pred).astype(np.float32), _as_alpha(gt, "gt").astype(np.float32)
    return back + a_p * d, back + a_g * d


def _psnr(x: np.ndarray, y: np.ndarray) -> float:
    mse = float(np.mean(np.square(x - y), dtype=np.float64))
    return PSNR_CAP_DB if mse == 0 else min(PSNR_CAP_DB, 10 * math.log10(255.0**2 / mse))


def _ssim_plane(x: np.ndarray, y: np.ndarray) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    blur = lambda a: cv2.GaussianBlur(a, (11, 11), 1.5)  # noqa: E731
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    ssim_map = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(ssim_map.mean(dtype=np.float64))


def _ssim(x: np.ndarray, y: np.ndarray) -> float:
    return sum(_ssim_plane(xc, yc) for xc, yc in zip(x, y)) / len(x)


def composite_psnr(image, pred, gt, bg=(255, 255, 255)) -> float:
    """PSNR (dB, capped at ``PSNR_CAP_DB``) of the pred-alpha composite vs the gt-alpha one."""
    return _psnr(*_composites(image, pred, gt, bg))


def composite_ssim(image, pred, gt, bg=(255, 255, 255)) -> float:
    """SSIM (Wang et al. 2004, per channel, averaged) of the two composites."""
    return _ssim(*_composites(image, pred, gt, bg))


# ---------------------------------------------------------------------- accumulator


class SegMetrics:
    """Accumulate every metric over a dataset.

    >>> m = SegMetrics()
    >>> for name, prob, mask, rgb in data:      # doctest: +SKIP
    ...     m.update(prob, mask, image=rgb, name=name)
    >>> m.results()["max_f"]                    # doctest: +SKIP
    >>> sorted(m.per_image, key=lambda r: r["iou"])[:10]   # the worst images  # doctest: +SKIP

    ``normalize=True`` reproduces pysodmetrics (min-max normalised predictions).
    """

    def __init__(self, threshold: float = 0.5, normalize: bool = False,
                 boundary_tol: float = BOUNDARY_TOL, bg=(255, 255, 255)) -> None:
        self.threshold, self.normalize, self.boundary_tol, self.bg = threshold, normalize, boundary_tol, bg
        self._rows: list[dict] = []
        self._sum = {k: np.zeros(256) for k in ("p", "r", "f", "e")}  # running sums of the curves

    def __len__(self) -> int:
        return len(self._rows)

    def update(self, pred, gt, image=None, name: str | None = None) -> dict:
        """Score one image; returns (and keeps) its per-image scores."""
        p, g = _prepare(pred, gt, self.normalize)
        comps = None if image is None else _composites(image, pred, gt, self.bg)  # validate first
        prec_c, rec_c, f_c = _f_curves(p, g)
        e_c = _e_curve(p, g)
        row = {
            "name": str(len(self._rows)) if name is None else str(name),
            **_binary_scores(p, g, self.threshold),
            "mae": float(np.mean(np.abs(p - g))),
            "max_f": float(f_c.max()),
            "mean_f": float(f_c.mean()),
            "adaptive_f": _adaptive_f(p, g),
            "s_measure": _s_measure(p, g),
            "e_measure": float(e_c.mean()),
            "max_e": float(e_c.max()),
            "adaptive_e": _adaptive_e(p, g),
            "weighted_f": _weighted_f(p, g),
            "boundary_f": _boundary_f(p, g, self.threshold, self.boundary_tol),
        }
        if comps is not None:
            row["psnr"], row["ssim"] = _psnr(*comps), _ssim(*comps)
        for k, c in zip("prfe", (prec_c, rec_c, f_c, e_c)):
            self._sum[k] += c
        self._rows.append(row)
        return row

    @property
    def per_image(self) -> list[dict]:
        """One dict per image: ``name`` plus every per-image score (see module docstring)."""
        return list(self._rows)

    def curves(self) -> dict[str, np.ndarray]:
        """Dataset-mean precision, recall, F and E curves (index = threshold 0..255)."""
        n = max(len(self._rows), 1)
        return {"precision": self._sum["p"] / n, "recall": self._sum["r"] / n,
                "f": self._sum["f"] / n, "e": self._sum["e"] / n}

    def results(self) -> dict[str, float]:
        if not self._rows:
            raise ValueError("SegMetrics.results(): no image was added with update()")
        mean = lambda k: float(np.mean([r[k] for r in self._rows if k in r]))  # noqa: E731
        c = self.curves()
        out: dict[str, float] = {k: mean(k) for k in ("iou", "dice", "precision", "recall", "mae")}
        out.update(
            max_f=float(c["f"].max()),
            mean_f=float(c["f"].mean()),
            adaptive_f=mean("adaptive_f"),
            max_f_dataset=float(_f_from_pr(c["precision"], c["recall"], F_BETA2).max()),
            s_measure=mean("s_measure"),
            e_measure=float(c["e"].mean()),
            max_e=float(c["e"].max()),
            adaptive_e=mean("adaptive_e"),
            weighted_f=mean("weighted_f"),
            boundary_f=mean("boundary_f"),
        )
        if any("psnr" in r for r in self._rows):  # averaged over the images that had one
            out.update(psnr=mean("psnr"), ssim=mean("ssim"))
        out["count"] = len(self._rows)
        return out


__all__ = [
    "MAX_F_CONVENTION", "PSNR_CAP_DB", "BOUNDARY_TOL", "F_BETA2", "SegMetrics",
    "iou", "dice", "precision", "recall", "mae", "f_curve", "max_f", "mean_f", "adaptive_f",
    "e_curve", "e_measure", "max_e", "adaptive_e", "s_measure", "weighted_f", "boundary_f",
    "composite_psnr", "composite_ssim",
]
