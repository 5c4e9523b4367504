"""Recipes: checked before anything runs, every step cached by its inputs and settings, resumable."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edgecut.cli import app
from edgecut.recipe import LOCK_FILE, RecipeError, load_recipe, plan, run_recipe

ROOT = Path(__file__).resolve().parents[1]

TINY = """\
name: tiny
description: a recipe the tests run
steps:
  data: {step: synth, count: 24, size: 32, seed: 3}
  train:
    step: train
    data: "@data"
    arch: unet
    arch_kwargs: {width: 4, depth: 2}
    size: 32
    epochs: 1
    batch: 4
    precision: fp32
  onnx: {step: export, model: "@train", format: onnx, threads: 1}
  bench:
    step: bench
    models: ["@train", "@onnx"]
    data: "@data"
    split: val
    isolate: false
    end_to_end: false
    canary: false
    latency: {warmup_s: 0.0, warmup_min: 1, min_time_s: 0.0, min_iters: 3}
  compare: {step: compare, records: ["@bench"], baseline: train}
"""


def _write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, line, match", [
    ("steps:\n  a: {step: synth\n", 3, "not valid YAML"),
    ("steps:\n  a: {step: synth, count: 4, colour: red}\n", 2, "unknown key 'colour'"),
    ("steps:\n  a: {step: sinth}\n", 2, "did you mean 'synth'"),
    ("steps:\n  t:\n    step: train\n    data: '@nope'\n", 4, "no step of this recipe"),
    ("steps:\n  t:\n    step: train\n    data: no/such/folder\n", 4, "does not exist"),
    ("steps:\n  a:\n    step: synth\n    count: many\n", 4, "count"),
    ("steps:\n  a: {step: prune, model: '@b'}\n  b: {step: prune, model: '@a'}\n", 2, "in a circle"),
    ("steps:\n  t: {step: train, data: '@d', epoch: 3}\n  d: {step: synth}\n", 2, "did you mean 'epochs'"),
    ("steps:\n  e: {step: export, model: '@d', count: 3}\n  d: {step: synth}\n", 2, "several groups"),
    ("steps:\n  t: {step: train}\n", 2, "needs 'data:'"),
    ("stepz: {}\n", 1, "'steps:'"),
])
def test_a_malformed_recipe_is_refused_with_its_line_before_anything_runs(tmp_path, text, line, match):
    path = _write(tmp_path, text)
    started = time.perf_counter()
    res = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "run")])
    assert isinstance(res.exception, RecipeError), res.output
    assert f"{path}:{line}" in str(res.exception) and match in str(res.exception)
    assert time.perf_counter() - started < 2.0 and not (tmp_path / "run").exists()  # nothing written


def test_set_overrides_must_name_a_step_and_a_key(tmp_path):
    path = _write(tmp_path, TINY)
    with pytest.raises(RecipeError, match="no step 'nope'"):
        load_recipe(path, {"nope.epochs": 2})
    with pytest.raises(RecipeError, match="unknown key 'epochz'"):
        load_recipe(path, {"train.epochz": 2})
    assert load_recipe(path, {"train.epochs": 2}).steps["train"].config.loop.epochs == 2  # routed into loop


@pytest.mark.slow
def test_a_recipe_runs_then_every_step_is_cached_and_a_change_reruns_only_what_follows(tmp_path):
    path = _write(tmp_path, TINY)
    run_dir = tmp_path / "run"
    first = run_recipe(load_recipe(path, run_dir=run_dir), run_dir, progress=False, say=lambda _: None)
    assert [r.status for r in first] == ["run"] * 5
    assert (run_dir / "report.md").is_file() and (run_dir / LOCK_FILE).is_file()
    rows = (run_dir / "report.md").read_text()
    assert "| **train** |" in rows and "| onnx |" in rows
    lock = yaml.safe_load((run_dir / LOCK_FILE).read_text())
    assert lock["steps"]["train"]["loop"]["lr"] == 1e-3 and "torch" in lock["versions"]  # defaults filled in

    again = run_recipe(load_recipe(path, run_dir=run_dir), run_dir, progress=False, say=lambda _: None)
    assert [r.status for r in again] == ["cached"] * 5

    changed = load_recipe(path, {"train.lr": 3e-3}, run_dir=run_dir)
    assert [r.status for r in plan(changed, run_dir)] == ["cached", "run", "run", "run", "run"]
    assert [r.status for r in run_recipe(changed, run_dir, progress=False, say=lambda _: None)] == \
        ["cached", "run", "run", "run", "run"]
    # a change whose output is the same keeps what follows cached: one more epoch whose validation is no
    # better ships the weights of the first (its warm-up does not depend on the epoch count)
    longer = load_recipe(path, {"train.lr": 3e-3, "train.epochs": 2}, run_dir=run_dir)
    statuses = [r.status for r in run_recipe(longer, run_dir, progress=False, say=lambda _: None)]
    assert statuses[:2] == ["cached", "run"]
    from edgecut.artifact import load_artifact

    best = load_artifact(run_dir / "train").manifest.lineage[-1].params["best_epoch"]
    assert statuses[2:] == (["cached"] * 3 if best == 0 else ["run"] * 3)
    assert [r.status for r in plan(longer, run_dir, from_step="onnx")] == ["cached", "cached", "run", "run", "run"]
    assert [r.name for r in plan(longer, run_dir, only="bench")] == ["bench"]


@pytest.mark.slow
def test_a_step_key_does_not_depend_on_how_the_recipe_and_run_folder_are_spelled(tmp_path, monkeypatch):
    from edgecut.recipe.runner import step_key

    (tmp_path / "sub").mkdir()
    path = _write(tmp_path / "sub", TINY)
    (tmp_path / "run").mkdir()
    monkeypatch.chdir(tmp_path)
    spelled = [(path, tmp_path / "run"), (Path("sub/r.yaml"), Path("run")), (Path("sub/../sub/r.yaml"), Path("./run"))]
    keys = [{name: step_key(spec) for name, spec in load_recipe(p, run_dir=r).steps.items()} for p, r in spelled]
    assert keys[0] == keys[1] == keys[2]


def test_an_interrupted_step_resumes(tmp_path, monkeypatch):
    import edgecut.measure.bench as bench_module

    path = _write(tmp_path, TINY)
    run_dir = tmp_path / "run"

    def killed(models, out, config, **kw):  # a bench killed after it wrote its first record
        Path(out).write_text("")
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(bench_module, "bench", killed)
        with pytest.raises(KeyboardInterrupt):
            run_recipe(load_recipe(path, run_dir=run_dir), run_dir, progress=False, say=lambda _: None)
    recipe = load_recipe(path, run_dir=run_dir)
    # --only and --from run a finished step again, but an interrupted one picks up where it stopped
    assert [r.status for r in plan(recipe, run_dir, only="bench")] == ["resume"]
    assert [r.status for r in plan(recipe, run_dir, from_step="bench")] == ["cached", "cached", "cached", "resume",
                                                                             "run"]
    runs = run_recipe(recipe, run_dir, progress=False, say=lambda _: None)
    assert [r.status for r in runs] == ["cached", "cached", "cached", "resume", "run"]
    assert len((run_dir / "bench.jsonl").read_text().splitlines()) == 2
    assert [r.status for r in plan(recipe, run_dir, only="bench")] == ["run"]


def test_dry_run_says_what_would_run_and_writes_nothing(tmp_path):
    path = _write(tmp_path, TINY)
    res = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "run"), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "data" in res.output and "would" in res.output and not (tmp_path / "run").exists()


INPUTS = """\
name: mine
inputs:
  model: my-model
  data: my-data
steps:
  pruned: {step: prune, model: "@model", data: "@data", ratio: 0.5, epochs: 1}
  onnx: {step: export, model: "@pruned", format: onnx, parity: {data: "@data", count: 4}}
"""


def test_inputs_name_outside_paths_once_and_set_points_them_elsewhere(tmp_path, tiny_artifact, synth_data,
                                                                       monkeypatch):
    path = _write(tmp_path, INPUTS)
    with pytest.raises(RecipeError, match="input 'model'.*does not exist") as e:
        load_recipe(path)
    assert f"{path}:3" in str(e.value) and "--set inputs.model=PATH" in str(e.value)
    monkeypatch.chdir(tiny_artifact.path.parent)  # --set paths are the command line's: from where it runs
    rec = load_recipe(path, {"inputs.model": tiny_artifact.path.name, "inputs.data": str(synth_data)},
                      run_dir=tmp_path / "run")
    assert rec.steps["pruned"].sources["model"] == str(tiny_artifact.path)
    assert rec.steps["onnx"].config.parity.data == synth_data and rec.steps["pruned"].needs == []
    with pytest.raises(RecipeError, match="no input 'weights'"):
        load_recipe(path, {"inputs.weights": "x"})
    clash = _write(tmp_path, INPUTS.replace("  data: my-data", "  onnx: my-data"), "clash.yaml")
    with pytest.raises(RecipeError, match="both an input and a step"):
        load_recipe(clash)


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.stem)
def test_the_ready_recipes_are_valid(recipe, tmp_path, tiny_artifact, synth_data):
    if "ecssd" in recipe.stem and not (ROOT.parent / "shared" / "data" / "ecssd").is_dir():
        pytest.skip("ECSSD is not beside this checkout (../shared/data/ecssd)")
    given = yaml.safe_load(recipe.read_text()).get("inputs") or {}
    if any("shared" in str(v) for v in given.values()) and not (ROOT.parent / "shared").is_dir():
        pytest.skip("its real data and models are not beside this checkout (../shared)")
    mine = {"model": tiny_artifact.path, "data": synth_data}  # what a user passes with --set inputs.NAME=PATH
    missing = {k: v for k, v in given.items() if not (recipe.parent / v).exists()}
    loaded = load_recipe(recipe, {f"inputs.{k}": str(mine[k]) for k in missing}, run_dir=tmp_path / "run")
    assert loaded.steps and all(s.config is not None for s in loaded.steps.values())


def test_a_data_folder_is_known_by_its_contents_not_its_file_times(tmp_path):
    from edgecut.recipe.runner import fingerprint

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "images" / "a.png").write_bytes(b"\x89PNG one")
    (data / "images" / "b.png").write_bytes(b"\x89PNG two")
    (data / ".cache").write_text("ignored")
    before = fingerprint(data)
    for p in (data / "images").iterdir():  # a restored or copied folder: the same files, new times
        os.utime(p, (1_000_000_000, 1_000_000_000))
    assert fingerprint(data) == before
    (data / ".cache").write_text("still ignored")
    assert fingerprint(data) == before
    (data / "images" / "b.png").write_bytes(b"\x89PNG 2wo")  # same size, other bytes
    assert fingerprint(data) != before


NEEDS = """\
name: needs
steps:
  data: {step: synth, count: 24, size: 32, seed: 3}
  train: {step: train, data: "@data", arch: unet, arch_kwargs: {width: 4, depth: 2}, size: 32, epochs: 1, batch: 4}
  pruned: {step: prune, model: "@train", ratio: 0.5}
  ov: {step: export, model: "@train", format: openvino, precision: int8, calib: {data: "@data", count: 4}}
"""


def test_a_step_that_needs_a_missing_package_stops_the_run_before_any_step(tmp_path, monkeypatch, capsys):
    from edgecut import _optional
    from edgecut.cli import main

    real = _optional.available
    monkeypatch.setattr(_optional, "available", lambda m: m not in ("torch_pruning", "nncf") and real(m))
    path = _write(tmp_path, NEEDS)
    monkeypatch.setattr("sys.argv", ["edgecut", "run", str(path), "--out", str(tmp_path / "run")])
    started = time.perf_counter()
    with pytest.raises(SystemExit) as code:
        main()
    seconds = time.perf_counter() - started
    err = capsys.readouterr().err
    assert code.value.code == 2 and len(err.strip().splitlines()) == 1, err
    text = " ".join(err.split())
    assert "pruned (prune) needs torch_pruning" in text and "ov (export) needs nncf" in text, text
    assert "pip install 'edgecut[openvino,prune]'" in text, text
    assert not (tmp_path / "run").exists(), "nothing runs, nothing is written"
    print(f"refused in {seconds:.2f} s")


def test_what_the_steps_need_comes_from_the_step_and_format_tables(tmp_path, tiny_artifact, monkeypatch):
    import edgecut.converters.envs as envs
    from edgecut import _optional
    from edgecut.recipe import missing_needs

    monkeypatch.setattr(_optional, "available", lambda m: False)
    monkeypatch.setattr(envs, "is_ready", lambda name: False)
    text = NEEDS + f"""\
  lite: {{step: export, model: "@train", format: tflite}}
  ov-fp32: {{step: export, model: "@train", format: openvino}}
  bench: {{step: bench, models: ["{tiny_artifact.path}"], data: "@data", split: val}}
"""
    missing = missing_needs(load_recipe(_write(tmp_path, text), run_dir=tmp_path / "run"))
    assert missing["pruned"] == ["torch_pruning"]
    assert missing["ov"] == ["onnx", "openvino", "nncf"] and missing["ov-fp32"] == ["onnx", "openvino"]
    assert missing["lite"] == ["ai_edge_litert", "env:litert"]
    assert missing["bench"] == ["torch"]  # an artifact it reads: its format's runtime
    assert "data" not in missing and "train" not in missing


def test_the_run_ends_with_the_answer_on_screen(tmp_path):
    path = _write(tmp_path, TINY)
    res = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    tail = res.output[res.output.index("the answer"):]
    assert "baseline" in tail and "train" in tail and "speed-up" in tail and "IoU" in tail
    assert "done in" in tail  # the answer is the last table, just above the closing line


def test_a_partial_run_has_no_answer_to_show(tmp_path):
    path = _write(tmp_path, TINY)
    res = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "run"), "--only", "data"])
    assert res.exit_code == 0, res.output
    assert "the answer" not in res.output
