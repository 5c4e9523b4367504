"""edgecut optimize: the search, its gates, its reuse of earlier candidates, and its refusals."""

from __future__ import annotations

import json
import math

import pytest

from edgecut.errors import EdgecutError
from edgecut.search import OptimizeConfig
from edgecut.search.candidates import Builder
from edgecut.search.optimize import Search, optimize
from edgecut.search.state import Row

PROFILE = """name: tiny-x86
arch: x86_64
formats: [onnx]
precisions: [int8, fp32]
reach: local
"""


@pytest.fixture
def profile(tmp_path):
    path = tmp_path / "tiny-x86.yaml"
    path.write_text(PROFILE, encoding="utf-8")
    return path


def quick(profile, **kw) -> OptimizeConfig:
    base = dict(target=str(profile), max_iou_drop=0.5, budget_minutes=5, prune_ratios=(), students=(), sizes=(),
                min_time_s=0.05, calib_count=4, parity_count=2)
    return OptimizeConfig(**{**base, **kw})


def test_a_search_picks_the_fastest_within_budget_and_a_second_run_reuses_everything(tmp_path, trained, synth_data,
                                                                                    profile, monkeypatch):
    import os

    from edgecut.artifact import load_artifact
    from edgecut.recipe.schema import load_recipe

    lines: list[str] = []
    result = optimize(trained.path, synth_data, tmp_path / "o", quick(profile), progress=False, say=lines.append)
    measured = [r for r in result.rows if r.label == "candidate" and r.status == "measured"]
    assert {r.name for r in measured} >= {"model.onnx.fp32"}
    assert {r.name for r in result.rows if r.label == "baseline"} == {"otsu", "grabcut"}
    win = result.winner
    assert win is not None and win.iou >= result.reference.iou - 0.5
    assert result.reference.holdout_iou - win.holdout_iou <= 0.5
    assert all(win.cost <= r.cost for r in measured if r.iou >= result.reference.iou - 0.5
               and (r.holdout_iou is None or result.reference.holdout_iou - r.holdout_iou <= 0.5))
    out = tmp_path / "o"
    assert load_artifact(out / "model").sha256 == load_artifact(win.artifact).sha256
    assert list(load_recipe(out / "recipe.yaml").steps)[-1] == win.name
    text = (out / "optimize.md").read_text(encoding="utf-8")
    assert f"**{win.name}** won" in text and "| otsu | baseline |" in text

    again: list[str] = []  # the same files by relative paths from another folder: the same candidates
    monkeypatch.chdir(synth_data.parent)
    second = optimize(os.path.relpath(trained.path), os.path.relpath(synth_data), os.path.relpath(out),
                      quick(profile, budget_minutes=8), progress=False, say=again.append)
    assert not any("building" in line for line in again), again
    for row in result.rows:
        if row.status in ("measured", "failed"):
            assert any(line.startswith(f"{row.name}: reused") for line in again), row.name
    assert second.winner.name == win.name


def test_nothing_new_starts_once_the_budget_is_spent(tmp_path, trained, synth_data, profile):
    lines: list[str] = []
    result = optimize(trained.path, synth_data, tmp_path / "o", quick(profile, budget_minutes=1e-6), progress=False,
                      say=lines.append)
    assert result.reference.status == "measured"  # the reference and the baselines always run
    candidates = [r for r in result.rows if r.label == "candidate"]
    assert candidates and all(r.status == "not tried" for r in candidates)
    assert result.winner is None and "No candidate" in result.paragraph
    assert not (tmp_path / "o" / "model").exists() and (tmp_path / "o" / "optimize.md").is_file()

    again: list[str] = []  # a larger budget goes on: what was measured is reused, the rest is built now
    more = optimize(trained.path, synth_data, tmp_path / "o", quick(profile), progress=False, say=again.append)
    assert {ln.split(":")[0] for ln in again if ": reused" in ln} == {"model", "otsu", "grabcut"}
    assert any(ln.startswith("model.onnx.fp32: building") for ln in again) and more.winner is not None


def _search_with(rows: list[Row], floor: float) -> tuple[Search, list[str]]:
    search = Search.__new__(Search)
    search.rows = {r.name: r for r in rows}
    search.floor = floor
    asked: list[str] = []
    search.say = lambda line: None
    search.consider = lambda cand, **kw: asked.append(cand.name) or Row(name=cand.name, status="failed")

    class _Builder:
        def export(self, base, fmt, method, **kw):
            from edgecut.search.candidates import Candidate

            return Candidate(f"{base}.{fmt}.{method}", base, fmt, "int8", method)

        def qat(self, base, fmt):
            from edgecut.search.candidates import Candidate

            return Candidate(f"{base}.{fmt}.qat", base, fmt, "int8", "qat")

    search.builder = _Builder()
    return search, asked


def row(name, precision, cost, iou, base="model", fmt="openvino"):
    return Row(name=name, base=base, format=fmt, precision=precision, method="ptq" if precision == "int8" else precision,
               cost=cost, iou=iou, unit="ms")


def test_int8_not_faster_than_float_is_dropped():
    fp32, int8 = row("m.fp32", "fp32", 1.0, 0.9), row("m.int8", "int8", 1.2, 0.9)
    search, asked = _search_with([fp32, int8], floor=0.85)
    search._gate_and_refine("model", "openvino", [fp32, int8])
    assert int8.status == "dropped" and "not faster than FP32" in int8.reason and not asked


def test_int8_outside_the_budget_is_refined_only_when_it_pays_and_its_float_is_inside():
    fp32, int8 = row("m.fp32", "fp32", 1.0, 0.9), row("m.int8", "int8", 0.5, 0.8)
    search, asked = _search_with([fp32, int8], floor=0.85)
    search._gate_and_refine("model", "openvino", [fp32, int8])
    assert asked == ["model.openvino.ac", "model.openvino.qat"]
    low_fp32, int8 = row("m.fp32", "fp32", 1.0, 0.8), row("m.int8", "int8", 0.5, 0.7)
    search, asked = _search_with([low_fp32, int8], floor=0.85)
    search._gate_and_refine("model", "openvino", [low_fp32, int8])
    assert asked == [] and int8.status == "measured"


def test_a_candidate_as_slow_and_no_more_accurate_than_another_base_is_dominated():
    a = row("pruned.fp32", "fp32", 1.0, 0.9, base="pruned")
    b = row("student.fp32", "fp32", 1.5, 0.85, base="student")
    c = row("other.fp32", "fp32", 2.0, 0.95, base="other")
    search, _ = _search_with([a, b, c], floor=0.5)
    assert search._dominated(b) is a and search._dominated(a) is None and search._dominated(c) is None


@pytest.mark.parametrize("bad", [{"max_iou_drop": 1.5}, {"budget_minutes": 0}, {"prune_ratios": (1.0,)},
                                 {"budget_minutes": math.inf}, {"distill_epochs": 0}])
def test_bad_settings_are_one_error(bad):
    with pytest.raises(EdgecutError):
        OptimizeConfig(**bad)


def test_refusals_before_any_work(tmp_path, synth_data, trained, profile):
    from edgecut.classical import BaselineConfig, baseline

    otsu = baseline(tmp_path / "otsu", BaselineConfig())
    with pytest.raises(EdgecutError, match="starts from a torch or ONNX model"):
        optimize(otsu.path, synth_data, tmp_path / "a", quick(profile), progress=False, say=lambda s: None)
    with pytest.raises(EdgecutError, match="arm64-emu"):
        optimize(trained.path, synth_data, tmp_path / "b", quick(profile, target="android-arm64"), progress=False,
                 say=lambda s: None)
    with pytest.raises(EdgecutError, match="images/"):
        optimize(trained.path, tmp_path, tmp_path / "c", quick(profile), progress=False, say=lambda s: None)
    for d in ("a", "b", "c"):
        assert not (tmp_path / d / "search.json").exists()


def test_searches_sharing_a_steps_folder_make_each_model_once(tmp_path, trained, synth_data, profile):
    first: list[str] = []
    optimize(trained.path, synth_data, tmp_path / "a", quick(profile), progress=False, say=first.append,
             steps=tmp_path / "steps")
    assert any("running export" in ln for ln in first)
    second: list[str] = []  # another search folder (another target, say): every export is a cache hit
    optimize(trained.path, synth_data, tmp_path / "b", quick(profile), progress=False, say=second.append,
             steps=tmp_path / "steps")
    assert not any("running" in ln for ln in second) and any(": cached (export" in ln for ln in second), second


def test_an_onnx_model_is_exported_from_its_checked_layers_and_taught_and_pruned_from_its_file(tmp_path, trained,
                                                                                               synth_data, profile):
    from edgecut.artifact import load_artifact
    from edgecut.compress.distill import load_teacher
    from edgecut.compress.soft_labels import store_dir
    from edgecut.exporters import ExportConfig, export
    from edgecut.parsing import yaml_value

    onnx_art = export(trained, tmp_path / "onnx", ExportConfig(format="onnx"), progress=False)
    lines: list[str] = []
    result = optimize(onnx_art.path, synth_data, tmp_path / "o", quick(profile, students=("unet",), distill_epochs=1),
                      progress=False, say=lines.append)
    assert any("is ONNX" in line for line in lines) and result.reference.status == "measured"
    torch_model = load_artifact(tmp_path / "o" / "steps" / "model-torch")  # its exports start from checked layers
    assert torch_model.manifest.lineage[-1].step == "convert" and torch_model.manifest.lineage[-1].params["passed"]
    recipe = yaml_value((tmp_path / "o" / "recipes" / "student-unet.onnx.fp32.yaml").read_text(encoding="utf-8"))
    assert recipe["inputs"]["source"] == str(onnx_art.path.resolve())
    assert recipe["steps"]["student-unet"]["teachers"] == ["@source"]
    student = load_artifact(tmp_path / "o" / "steps" / "student-unet")
    assert student.manifest.lineage[-1].step == "distill"
    stored = store_dir(load_teacher(onnx_art))  # the ONNX file's answers, where a recipe or distill would find them
    assert len(list(stored.glob("*.npy"))) > 0
    pruned = Builder(quick(profile), 32, "search.txt", "train", teacher="@source").base_steps("pruned-0.5")
    assert pruned["pruned-0.5"]["model"] == "@source" and pruned["pruned-0.5"]["kd"]


def test_ctrl_c_in_a_training_step_stops_the_search_unrecorded_and_the_next_run_builds_it(tmp_path, trained,
                                                                                          synth_data, profile,
                                                                                          monkeypatch):
    import edgecut.recipe.runner as runner
    from edgecut.training.loop import TrainingInterrupted

    real = runner.run_recipe

    def interrupted(recipe, *args, **kwargs):
        if recipe.name.startswith("pruned"):
            raise TrainingInterrupted("interrupted at epoch 1, step 3; checkpoint saved")
        return real(recipe, *args, **kwargs)

    monkeypatch.setattr(runner, "run_recipe", interrupted)
    lines: list[str] = []
    with pytest.raises(EdgecutError, match="interrupted; every candidate finished so far is kept"):
        optimize(trained.path, synth_data, tmp_path / "o", quick(profile, prune_ratios=(0.3,)), progress=False,
                 say=lines.append)
    assert not any(ln.startswith("pruned-0.3") and "failed" in ln for ln in lines)
    saved = json.loads((tmp_path / "o" / "search.json").read_text(encoding="utf-8"))["candidates"]
    assert "model.onnx.fp32" in saved and not any(name.startswith("pruned") for name in saved)
    monkeypatch.setattr(runner, "run_recipe", real)
    again: list[str] = []
    optimize(trained.path, synth_data, tmp_path / "o", quick(profile, prune_ratios=(0.3,)), progress=False,
             say=again.append)
    assert any(ln.startswith("pruned-0.3.onnx.fp32: building") for ln in again)


def test_a_search_judges_exports_by_val_iou_so_parity_only_stops_broken_ones(profile):
    from edgecut.search.candidates import SEARCH_PARITY

    builder = Builder(quick(profile), 32, "search.txt", "train")
    bars = {m: builder.export("model", "onnx", m).steps[f"model.onnx.{m}"]["parity"]["tolerances"]
            for m in ("fp32", "fp16", "ptq")}
    assert bars == {"fp32": SEARCH_PARITY["fp32"], "fp16": SEARCH_PARITY["fp16"], "ptq": SEARCH_PARITY["int8"]}
    assert bars["fp32"]["max_abs_diff"] > 1e-4 and bars["fp16"]["mask_iou"] < 0.999  # looser than export's own


def test_the_paragraph_counts_reused_failures_with_the_failures():
    from types import SimpleNamespace

    from edgecut.search.optimize import OptimizeResult
    from edgecut.search.result import paragraph

    ref = Row(name="model", label="reference", status="measured", iou=0.9, holdout_iou=0.9, cost=10.0, unit="ms")
    rows = [ref, Row(name="a", label="candidate", status="measured", reused=True, iou=0.5, cost=1.0, unit="ms"),
            Row(name="b", label="candidate", status="failed", reused=True),
            Row(name="c", label="candidate", status="measured", iou=0.4, cost=2.0, unit="ms")]
    search = SimpleNamespace(config=SimpleNamespace(max_iou_drop=0.01))
    text = paragraph(search, OptimizeResult(None, ref, rows))
    assert "2 candidate(s) measured and 1 failed (2 of these reused from earlier runs)" in text
