"""Tests for edgecut.metrics: agreement with pysodmetrics plus hand-checked values."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest

from edgecut import metrics as M
from edgecut.metrics import SegMetrics


def _smooth(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
    x = cv2.GaussianBlur(rng.random((h, w)), (0, 0), sigma)
    return (x - x.min()) / (x.max() - x.min())


def _cases() -> list[tuple[np.ndarray, np.ndarray]]:
    """uint8 predictions spanning 0..255 and 0/255 blob ground truths, incl. empty and full."""
    rng = np.random.default_rng(1234)
    cases = []
    for h, w in [(37, 53), (64, 48), (50, 41), (29, 60), (48, 64)]:
        gt = _smooth(rng, h, w, 4) > 0.55
        soft = cv2.GaussianBlur(gt.astype(np.float64), (0, 0), 2)
        pred = np.clip(0.6 * soft + 0.4 * _smooth(rng, h, w, 2) + 0.1 * rng.standard_normal((h, w)), 0, 1)
        cases.append(((pred * 255).round().astype(np.uint8), gt.astype(np.uint8) * 255))
    cases.append(((_smooth(rng, 40, 30, 3) * 255).astype(np.uint8), np.zeros((40, 30), np.uint8)))
    cases.append(((_smooth(rng, 33, 45, 3) * 255).astype(np.uint8), np.full((33, 45), 255, np.uint8)))
    # a narrow-range prediction: min-max normalisation then matters
    cases.append(((_smooth(rng, 37, 53, 3) * 120 + 60).astype(np.uint8), cases[0][1]))
    return cases


@pytest.fixture(scope="module")
def psm():
    return pytest.importorskip("py_sod_metrics")  # a test-only reference (imports skimage: slow once)


@pytest.mark.parametrize("normalize", [True, False])
def test_agrees_with_pysodmetrics(psm, normalize):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Fmeasure is deprecated in favour of FmeasureV2
        ref = {"mae": psm.MAE(), "fm": psm.Fmeasure(), "sm": psm.Smeasure(),
               "em": psm.Emeasure(), "wfm": psm.WeightedFmeasure()}
    ours = SegMetrics(normalize=normalize)
    for pred, gt in _cases():
        for r in ref.values():
            if normalize:
                r.step(pred, gt)  # pysodmetrics default: min-max normalised
            else:
                r.step(pred / 255, gt > 127, normalize=False)
        ours.update(pred, gt)
    res = {k: r.get_results() for k, r in ref.items()}
    fm, em = res["fm"]["fm"], res["em"]["em"]
    p, r = res["fm"]["pr"]["p"], res["fm"]["pr"]["r"]
    f_dataset = np.where(p + r > 0, 1.3 * p * r / np.maximum(0.3 * p + r, 1e-300), 0)
    expected = {
        "mae": res["mae"]["mae"],
        "max_f": fm["curve"].max(),
        "mean_f": fm["curve"].mean(),
        "adaptive_f": fm["adp"],
        "max_f_dataset": f_dataset.max(),
        "s_measure": res["sm"]["sm"],
        "e_measure": em["curve"].mean(),
        "max_e": em["curve"].max(),
        "adaptive_e": em["adp"],
        "weighted_f": res["wfm"]["wfm"],
    }
    got = ours.results()
    assert got["count"] == len(_cases())
    for key, value in expected.items():
        assert got[key] == pytest.approx(float(value), abs=1e-6), key
    # our curves run over ascending thresholds, pysodmetrics' descending
    np.testing.assert_allclose(ours.curves()["f"][::-1], fm["curve"], atol=1e-9)
    np.testing.assert_allclose(ours.curves()["e"][::-1], em["curve"], atol=1e-9)


def test_per_image_functions_match_accumulator():
    m = SegMetrics()
    for i, (pred, gt) in enumerate(_cases()[:3]):
        row = m.update(pred, gt, name=f"img{i}")
        assert row["name"] == f"img{i}"
        assert row["iou"] == pytest.approx(M.iou(pred, gt))
        assert row["dice"] == pytest.approx(M.dice(pred, gt))
        assert row["precision"] == pytest.approx(M.precision(pred, gt))
        assert row["recall"] == pytest.approx(M.recall(pred, gt))
        assert row["mae"] == pytest.approx(M.mae(pred, gt))
        assert row["max_f"] == pytest.approx(M.max_f(pred, gt))
        assert row["mean_f"] == pytest.approx(M.mean_f(pred, gt))
        assert row["adaptive_f"] == pytest.approx(M.adaptive_f(pred, gt))
        assert row["s_measure"] == pytest.approx(M.s_measure(pred, gt))
        assert row["e_measure"] == pytest.approx(M.e_measure(pred, gt))
        assert row["max_e"] == pytest.approx(M.max_e(pred, gt))
        assert row["adaptive_e"] == pytest.approx(M.adaptive_e(pred, gt))
        assert row["weighted_f"] == pytest.approx(M.weighted_f(pred, gt))
        assert row["boundary_f"] == pytest.approx(M.boundary_f(pred, gt))
    assert [r["name"] for r in m.per_image] == ["img0", "img1", "img2"]
    keys = set(m.results())
    assert keys == {"iou", "dice", "precision", "recall", "mae", "max_f", "mean_f", "adaptive_f",
                    "max_f_dataset", "s_measure", "e_measure", "max_e", "adaptive_e", "weighted_f",
                    "boundary_f", "count"}
    assert isinstance(M.MAX_F_CONVENTION, str) and "max_f" in M.MAX_F_CONVENTION


def _disk_mask(h=60, w=80, cy=30, cx=40, r=15) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_perfect_prediction():
    gt = _disk_mask()
    pred = gt.astype(np.float32)
    image = np.random.default_rng(0).integers(0, 256, gt.shape + (3,), dtype=np.uint8)
    m = SegMetrics()
    m.update(pred, gt.astype(np.uint8) * 255, image=image)
    res = m.results()
    assert res["iou"] == res["dice"] == res["precision"] == res["recall"] == 1.0
    assert res["mae"] == 0.0
    assert res["s_measure"] == pytest.approx(1.0)
    assert res["max_f"] == pytest.approx(1.0)
    assert res["weighted_f"] == pytest.approx(1.0)
    assert res["boundary_f"] == 1.0
    n = gt.size  # E-measure divides by (H*W - 1), as pysodmetrics and the MATLAB code do
    assert res["max_e"] == pytest.approx(n / (n - 1))
    assert res["psnr"] == M.PSNR_CAP_DB
    assert res["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert M.composite_psnr(image, pred, gt) == M.PSNR_CAP_DB


def test_inverted_prediction_and_empty_cases():
    gt = _disk_mask()
    assert M.iou(~gt, gt) == 0.0
    assert M.dice(1.0 - gt.astype(np.float64), gt) == 0.0
    empty = np.zeros_like(gt)
    assert M.iou(empty, empty) == M.dice(empty, empty) == 1.0
    assert M.precision(empty, gt) == 0.0 and M.recall(empty, gt) == 0.0
    assert M.s_measure(empty.astype(np.float64), empty) == 1.0


def test_imperfect_composite_scores():
    gt = _disk_mask()
    image = np.random.default_rng(0).integers(0, 256, gt.shape + (3,), dtype=np.uint8)
    pred = np.roll(gt, 3, axis=1).astype(np.float64)
    psnr = M.composite_psnr(image, pred, gt)
    ssim = M.composite_ssim(image, pred, gt)
    assert 5 < psnr < M.PSNR_CAP_DB and 0 < ssim < 1
    # a background equal to the image makes every composite identical
    flat = np.full(gt.shape + (3,), 90, np.uint8)
    assert M.composite_psnr(flat, pred, gt, bg=(90, 90, 90)) == M.PSNR_CAP_DB


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"\(10, 12\).*\(12, 10\)"):
        M.iou(np.zeros((10, 12)), np.zeros((12, 10)))
    with pytest.raises(ValueError):
        SegMetrics().update(np.zeros((10, 12)), np.zeros((10, 11)))
    with pytest.raises(ValueError):
        M.composite_ssim(np.zeros((10, 12, 3), np.uint8), np.zeros((10, 12)), np.zeros((10, 11)))
    with pytest.raises(ValueError):
        M.mae(np.full((4, 4), 200.0), np.zeros((4, 4)))  # float 0..255 by mistake


def test_max_f_conventions():
    gt = np.zeros((20, 20), np.uint8)
    gt[5:15, 5:15] = 255
    single = SegMetrics()
    # image 1: fully confident and right; image 2: flat 0.4 everywhere
    pred1 = (gt > 0).astype(np.float64)
    pred2 = np.full(gt.shape, 0.4)
    single.update(pred2, gt)
    r1 = single.results()
    assert r1["max_f"] == pytest.approx(r1["max_f_dataset"])
    both = SegMetrics()
    both.update(pred1, gt)
    both.update(pred2, gt)
    r = both.results()
    # per-image curves: image 1 has F=1 for t in 1..255; image 2 has F(t<=102) = 1.3*0.25/(0.075+1)
    f2 = 1.3 * 0.25 / (0.3 * 0.25 + 1)
    assert r["max_f"] == pytest.approx((1 + f2) / 2)
    # mean P/R curves: at t in 1..102, P = (1 + 0.25)/2, R = 1
    p = 0.625
    assert r["max_f_dataset"] == pytest.approx(1.3 * p / (0.3 * p + 1))
    assert r["max_f_dataset"] - r["max_f"] > 0.03  # 0.684 vs 0.651


def test_boundary_f():
    gt = _disk_mask(h=100, w=120, cy=50, cx=60, r=25)
    assert M.boundary_f(gt, gt) == 1.0
    shifted = M.boundary_f(np.roll(gt, 5, axis=1), gt)
    slightly = M.boundary_f(np.roll(gt, 1, axis=1), gt)
    assert 0 < shifted < slightly <= 1.0
    assert shifted < 0.9
    assert M.boundary_f(np.zeros_like(gt), gt) == 0.0
    assert M.boundary_f(np.zeros_like(gt), np.zeros_like(gt)) == 1.0


def test_normalize_option():
    gt = _disk_mask()
    pred = np.where(gt, 0.6, 0.4)  # right ranking, poor calibration
    assert M.mae(pred, gt) == pytest.approx(0.4)
    assert M.mae(pred, gt, normalize=True) == 0.0
    assert M.iou(pred, gt, threshold=0.5) == 1.0


def test_centroid_in_last_row_is_finite():
    # pysodmetrics returns NaN here (an empty quadrant); we give the empty quadrant 0
    gt = np.zeros((10, 10), bool)
    gt[8:, 9] = True
    pred = np.random.default_rng(0).random((10, 10))
    assert 0 <= M.s_measure(pred, gt) <= 1


def test_bad_image_leaves_accumulator_unchanged():
    m = SegMetrics()
    gt = _disk_mask()
    with pytest.raises(ValueError):
        m.update(gt.astype(np.float64), gt, image=np.zeros((5, 5, 3), np.uint8))
    assert len(m) == 0 and not m.curves()["f"].any()
    with pytest.raises(ValueError):
        m.results()
