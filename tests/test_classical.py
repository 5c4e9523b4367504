"""The classical baselines: Otsu's threshold and GrabCut as artifacts that eval, bench and remove run."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgecut import runtime
from edgecut.artifact import load_artifact
from edgecut.classical import BaselineConfig, baseline
from edgecut.errors import EdgecutError, InputError, ModelError
from edgecut.runtime.classical_runner import grabcut, otsu


def square(h: int = 48, w: int = 64, object_rgb=(40, 60, 200), backdrop_rgb=(235, 235, 235)):
    """A flat square object on a flat backdrop, and its mask."""
    img = np.empty((h, w, 3), np.uint8)
    img[:] = backdrop_rgb
    mask = np.zeros((h, w), bool)
    mask[12:36, 20:48] = True
    img[mask] = object_rgb
    return img, mask


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.mark.parametrize("colours", [((40, 60, 200), (235, 235, 235)), ((240, 230, 90), (20, 20, 30))],
                         ids=["dark-on-light", "light-on-dark"])
def test_otsu_finds_the_object_either_way_round(colours):
    img, mask = square(object_rgb=colours[0], backdrop_rgb=colours[1])
    assert iou(otsu(img, blur=1), mask) == 1.0


def test_grabcut_is_the_same_on_every_run():
    rng = np.random.default_rng(0)
    img, mask = square()
    img = np.clip(img.astype(int) + rng.integers(-25, 26, img.shape), 0, 255).astype(np.uint8)  # texture
    first = grabcut(img, iterations=3)
    assert iou(first, mask) > 0.8
    assert all(np.array_equal(first, grabcut(img, iterations=3)) for _ in range(2))


def test_grabcut_on_a_flat_image_is_all_background():
    assert not grabcut(np.full((32, 32, 3), 128, np.uint8)).any()


def test_a_baseline_runs_through_its_runner(tmp_path):
    art = baseline(tmp_path / "otsu", BaselineConfig(method="otsu", size=48))
    assert load_artifact(art.path).manifest.format == "classical"
    img, mask = square()
    runner = runtime.load(art.path, threads=1)
    assert runner.backend == "opencv"
    out = runner(art.spec.with_size((48, 64)).preprocess([img]))
    assert out.shape == (1, 1, 48, 64) and set(np.unique(out)) <= {0.0, 1.0}
    assert iou(out[0, 0] > 0.5, mask) > 0.95


def test_bench_scores_and_times_a_baseline_like_a_model(tmp_path, synth_data):
    from edgecut.measure.bench import bench
    from edgecut.measure.config import BenchConfig
    from edgecut.runtime.timing import LatencyConfig

    arts = [baseline(tmp_path / m, BaselineConfig(method=m, iterations=1)) for m in ("otsu", "grabcut")]
    result = bench(arts, tmp_path / "b.jsonl", BenchConfig(
        data=synth_data, split="val", size=(32, 32), threads=(1,), repeats=1, worst=0,
        latency=LatencyConfig(warmup_s=0.0, warmup_min=1, min_time_s=0.0, min_iters=3)), progress=False)
    records = result.records
    assert [r.backend for r in records] == ["opencv", "opencv"]
    assert all(0.0 <= r.accuracy.metrics["iou"] <= 1.0 and r.latency.p50_ms > 0 for r in records)


def test_stages_that_need_a_network_refuse_a_baseline(tmp_path):
    from edgecut.compress.config import PruneConfig
    from edgecut.compress.prune import prune
    from edgecut.exporters import ExportConfig, export

    art = baseline(tmp_path / "gc", BaselineConfig(method="grabcut"))
    with pytest.raises(EdgecutError, match="cannot be exported"):
        export(art, tmp_path / "x", ExportConfig(format="onnx"), progress=False)
    with pytest.raises(ModelError, match="classical baseline"):
        prune(art, tmp_path / "p", PruneConfig(ratio=0.5, latency=False), progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "p").exists()


@pytest.mark.parametrize("bad", [{"method": "watershed"}, {"iterations": 0}, {"margin": 0.5}, {"blur": 4}])
def test_bad_settings_are_one_error(bad):
    with pytest.raises(EdgecutError):
        BaselineConfig(**bad)


def test_a_corrupt_baseline_file_names_itself(tmp_path):
    art = baseline(tmp_path / "otsu", BaselineConfig())
    art.model_path.write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match="model.json"):
        runtime.load(load_artifact(art.path, verify=False))
    json.dump({"method": "snakes"}, art.model_path.open("w"))
    with pytest.raises(InputError, match="no known method"):
        runtime.load(load_artifact(art.path, verify=False))


def test_cli_writes_a_baseline_and_refuses_an_unknown_one(tmp_path):
    cli = [sys.executable, "-m", "edgecut.cli"]
    ok = subprocess.run([*cli, "baseline", "grabcut", "--out", tmp_path / "gc", "--iterations", "2"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "gc" / "model.json").read_text()) == {"method": "grabcut", "iterations": 2,
                                                                         "margin": 0.05}
    bad = subprocess.run([*cli, "baseline", "snakes", "--out", tmp_path / "s"], capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown baseline 'snakes'" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "s").exists()


def test_a_baseline_is_never_written_over_a_model(tmp_path, tiny_artifact):
    import shutil

    model = shutil.copytree(tiny_artifact.path, tmp_path / "model")
    before = sorted(p.name for p in model.iterdir())
    with pytest.raises(EdgecutError, match="another model"):
        baseline(model, BaselineConfig())
    assert sorted(p.name for p in model.iterdir()) == before and load_artifact(model).manifest.format == "torch"


def test_a_bundle_refuses_a_baseline_with_the_way_to_measure_it(tmp_path):
    from edgecut.targets.bundle import bundle

    art = baseline(tmp_path / "otsu", BaselineConfig())
    with pytest.raises(InputError, match="bench the baseline on this machine"):
        bundle(art.path, tmp_path / "b", "android-arm64")
    assert not (tmp_path / "b").exists()
