"""benchmarks/gpu.py, the prepared GPU run (the package benchmarks/gpu/): its plan fits the device's
limits, --dry-run says what is missing and prints the device command, and --smoke runs every part on
this CPU (slow)."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import time
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.py"
STATUSES = {"ok", "skipped", "failed", "error"}


@pytest.fixture(scope="module")
def gpu():
    """The package's modules, imported as the script imports them: benchmarks/ first on the path."""
    before = set(sys.modules)
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        yield SimpleNamespace(**{name: importlib.import_module(f"gpu.{name}")
                                 for name in ("plan", "scheduler", "parts", "train", "prepare", "cli")})
    finally:
        sys.path.remove(str(SCRIPT.parent))
        for name in set(sys.modules) - before:
            if name in ("gpu", "common") or name.startswith("gpu."):
                del sys.modules[name]


def test_plan_fits_the_device_limits(gpu):
    plan = gpu.plan
    assert [p.name for p in plan.PLAN] == list(gpu.parts.PARTS) == [p.name for p in plan.SMOKE_PLAN]
    assert plan.plan_problems(plan.PLAN, plan.DEADLINE_S) == []
    assert plan.plan_problems(plan.SMOKE_PLAN, plan.SMOKE_DEADLINE_S) == []
    assert sum(p.budget_s for p in plan.PLAN) <= plan.DEADLINE_S < 8 * 60
    assert len(plan.PLAN) + 2 <= 8  # a JSON per part, summary.json and gpu.log come back from $OUT
    assert plan.DEADLINE_S < plan.DEVICE_TIMEOUT_S <= 600


def test_plan_problems_name_what_does_not_fit(gpu):
    plan = gpu.plan
    over = plan.PLAN + (plan.Part("extra", 60, 5, "more"),)
    assert any("add up to 515 s, over the 470 s deadline" in p for p in plan.plan_problems(over, plan.DEADLINE_S))
    assert any("not under 480 s" in p for p in plan.plan_problems(plan.PLAN, 480))
    bad = (plan.Part("a", 10, 20, ""), plan.Part("a", 10, 1, ""))
    problems = plan.plan_problems(bad, 100)
    assert any("its minimum 20 s" in p for p in problems) and any("repeat" in p for p in problems)
    many = tuple(plan.Part(f"p{i}", 1, 1, "") for i in range(7))
    assert any("at most 8 come back" in p for p in plan.plan_problems(many, 100))


def test_budget_option_changes_one_part(gpu):
    args = type("A", (), {"smoke": False, "deadline_s": None, "budget": ["tensorrt=300"]})()
    plan, deadline = gpu.plan.chosen_plan(args)
    assert {p.name: p.budget_s for p in plan}["tensorrt"] == 300 and deadline == gpu.plan.DEADLINE_S
    assert gpu.plan.plan_problems(plan, deadline)  # over the deadline now: the run refuses it
    args.budget = ["nope=3"]
    with pytest.raises(SystemExit, match="PART=SECONDS"):
        gpu.plan.chosen_plan(args)


def test_choose_epochs(gpu):
    # 100 steps of 0.05 s, 4 s validation, 1 s checkpoint: (5 + 4 + 1) * 1.15 = 11.5 s an epoch
    choose_epochs = gpu.train.choose_epochs
    epochs, est = choose_epochs(200, 100, 0.05, 4.0, 1.0, start_s=3.0, max_epochs=100)
    assert est["epoch_estimate_s"] == 11.5 and est["reserve_s"] == 16.0 and epochs == 16  # (200 - 16) // 11.5
    assert choose_epochs(200, 100, 0.05, 4.0, 1.0, 3.0, max_epochs=4)[0] == 4
    assert choose_epochs(20, 100, 0.05, 4.0, 1.0, 3.0, max_epochs=100)[0] == 0  # not one epoch: the part skips


def test_clock_and_skips(gpu):
    clock = gpu.scheduler.Clock(10)
    assert gpu.scheduler.skip_if_short(clock, 5) is None
    assert "needs about 50.0 s" in gpu.scheduler.skip_if_short(clock, 50)


def test_unprepared_data_is_reported(gpu, tmp_path):
    prepare = gpu.prepare
    problems, counts = prepare.data_problems(tmp_path / "ecssd320")
    assert counts == {} and "not prepared" in problems[0] and "--prepare" in problems[0]
    root = tmp_path / "half"
    for sub in ("images", "masks", "splits"):
        (root / sub).mkdir(parents=True)
    (root / prepare.PREPARED).write_text("{}")
    (root / "splits" / "train.txt").write_text("a\nb\n")
    (root / "images" / "a.jpg").write_bytes(b"x")
    problems, counts = prepare.data_problems(root)
    assert counts == {"images": 1, "masks": 0, "train": 2, "val": 0}
    text = "\n".join(problems)
    assert "2 names, ECSSD's train split has 800" in text and "val split has 200" in text
    assert "2 train name(s) without images/NAME.jpg and masks/NAME.png" in text and "expected 1000" in text


def test_wheel_checks(gpu, tmp_path):
    prepare = gpu.prepare
    pins = prepare.pins()
    assert set(prepare.WHEELS) <= set(pins)  # every carried wheel is pinned in constraints.txt
    problems, files = prepare.wheel_problems(tmp_path, pins)
    assert files == [] and len(problems) == len(prepare.WHEELS) and all("no wheel of" in p for p in problems)
    for name in prepare.WHEELS:
        tag = "cp312-cp312-manylinux_2_17_x86_64" if name == "pydantic_core" else "py3-none-any"
        (tmp_path / f"{name}-{pins[name]}-{tag}.whl").write_bytes(b"")
    assert prepare.wheel_problems(tmp_path, pins)[0] == []
    (tmp_path / "pydantic-0.1-py3-none-any.whl").write_bytes(b"")
    (tmp_path / "numpy-2.0-cp311-cp311-manylinux_2_17_x86_64.whl").write_bytes(b"")
    text = "\n".join(prepare.wheel_problems(tmp_path, pins)[0])
    assert "2 wheels of pydantic" in text and "numpy-2.0" in text


def test_device_command(gpu):
    run = gpu.prepare.device_command()
    assert run["carry"] == [".gpu"] and run["timeout_s"] <= 600 and len(run["command"]) <= 2000
    cmd = run["command"]
    assert cmd.startswith(gpu.prepare.PIP_INSTALL + " && ") and "--target /tmp/site .gpu/wheels/*.whl" in cmd
    assert "PYTHONPATH=/tmp/site:$PWD" in cmd and "PYTHONUNBUFFERED=1" in cmd
    assert "python3 benchmarks/gpu.py --out $OUT" in cmd and "| tee $OUT/gpu.log" in cmd


def test_carried_size_counts_the_tree_and_the_carried_folder(gpu):
    size = gpu.prepare.carried_size()
    assert size["tree_files"] > 50 and size["tree_bytes"] > 0
    assert size["total_bytes"] == size["tree_bytes"] + sum(size["carried_bytes"].values())
    assert size["ignored"] == {".gpu": True}  # .gitignore: the folder travels only as carried


def test_a_tree_outside_git_is_named_not_counted(gpu, tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    size = gpu.prepare.carried_size(tmp_path)
    assert "not a git work tree" in size["error"] and str(tmp_path) in size["error"]


def test_dry_run_without_prepared_files_says_so(gpu, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gpu.prepare, "DATA_DIR", ROOT / "no-such-folder" / "ecssd320")
    monkeypatch.setattr(gpu.prepare, "WHEEL_DIR", ROOT / "no-such-folder" / "wheels")
    assert gpu.cli.main(["--dry-run", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "NOT READY (data)" in out and "python benchmarks/gpu.py --prepare" in out and "NOT READY (wheels)" in out
    assert "python3 benchmarks/gpu.py --out $OUT" in out
    report = json.loads((tmp_path / "dry_run.json").read_text())
    assert report["problems"]["plan"] == [] and not report["ready"]
    assert report["budget_total_s"] <= report["deadline_s"] < 480


def test_dry_run_command(tmp_path):
    p = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(tmp_path)], capture_output=True,
                       text=True, timeout=120)
    report = json.loads((tmp_path / "dry_run.json").read_text())
    assert p.returncode == (0 if report["ready"] else 1), p.stdout + p.stderr
    assert ("READY" in p.stdout) and (report["ready"] or "NOT READY" in p.stdout)
    assert report["device_run"]["carry"] == [".gpu"] and report["problems"]["plan"] == []


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_smoke_runs_every_part_on_the_cpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("the smoke run is the CPU rehearsal; on a GPU machine run the real one")
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out), "--work", str(tmp_path / "work")],
                       capture_output=True, text=True, timeout=800, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["smoke"] and summary["device"] == "cpu" and set(summary["parts"]) == {
        "env", "pytest", "torch", "tensorrt", "onnxruntime", "train"}
    assert sorted(f.name for f in out.iterdir()) == sorted([f"{n}.json" for n in summary["parts"]] + ["summary.json"])
    parts = {n: json.loads((out / f"{n}.json").read_text()) for n in summary["parts"]}
    for name, part in parts.items():
        assert part["complete"] and part["status"] != "error", (name, part.get("error"))
        assert {"python", "cpu", "backends", "gpus"} <= set(part["machine"]) and part["run_id"] == summary["run_id"]
        for m in part["measurements"]:
            assert m["status"] in STATUSES and m["status"] != "error", (name, m)
            assert m["status"] != "skipped" or m["reason"], (name, m)
    rows = {m["name"]: m for m in parts["torch"]["measurements"]}
    assert rows["teacher fp32 batch 1"]["status"] == "ok" and rows["student bf16-autocast batch 4"]["images_per_s"] > 0
    assert rows["teacher fp16 batch 1"]["status"] == "skipped" and "CUDA" in rows["teacher fp16 batch 1"]["reason"]
    assert rows["student compile-bf16 batch 1"]["status"] in ("ok", "skipped")
    trt = parts["tensorrt"]["measurements"]
    assert len(trt) == 8 and all(m["status"] == "skipped" for m in trt)  # no TensorRT, no GPU: never a number
    assert all("p50_ms" not in m for m in trt) and all("tensorrt" in m["export_refusal"] for m in trt)
    ort = {m["name"]: m for m in parts["onnxruntime"]["measurements"]}
    assert ort["onnxruntime cuda"]["status"] == "skipped" and "onnxruntime-gpu" in ort["onnxruntime cuda"]["reason"]
    assert ort["student onnxruntime cpu parity"]["parity"]["passed"]
    (test,) = parts["pytest"]["measurements"]
    assert test["command"] == 'python3 -m pytest -m "gpu or tensorrt" -q' and test["rc"] in (0, 5) and test["output"]
    train = {m["name"]: m for m in parts["train"]["measurements"]}
    assert train["train"]["epochs"] >= 1 and train["train"]["epochs_per_s"] > 0 and train["train"]["history"]
    assert 0 <= train["val"]["metrics"]["iou"] <= 1 and parts["train"]["plan"]["epochs"] == train["train"]["epochs"]


def test_parts_write_as_they_go_and_skip_what_misses_the_deadline(gpu, tmp_path):
    scheduler = gpu.scheduler

    def overruns(run, rec, clock):
        rec.add(scheduler.row("first", "ok", p50_ms=1.0))
        assert json.loads(rec.path.read_text())["complete"] is False  # on disk before the part ends
        time.sleep(2.2)  # past its budget and the deadline's share (margins of 0.7 s: a loaded machine is slow)

    def breaks(run, rec, clock):
        raise RuntimeError("boom")

    plan = (gpu.plan.Part("a", 0.5, 0.1, ""), gpu.plan.Part("b", 0.5, 0.1, ""), gpu.plan.Part("c", 0.5, 1.5, ""))
    run = scheduler.Run(out=tmp_path, work=tmp_path, smoke=True, sizes=gpu.plan.SMOKE, device="cpu", command="x",
                        data=None, data_note="none", deadline=scheduler.Clock(3.0), machine={"python": "3"})
    summary = scheduler.run_parts(run, plan, ["a", "b", "c"], {"a": overruns, "b": breaks, "c": overruns})
    assert {n: p["status"] for n, p in summary["parts"].items()} == {"a": "ok", "b": "error", "c": "skipped"}
    b, c = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "bc")
    assert "RuntimeError: boom" in b["error"]["reason"] and b["complete"]
    assert re.fullmatch(r"0\.\d s left before the 3\.0 s deadline; this part needs at least 1\.5 s", c["reason"])
    assert json.loads((tmp_path / "summary.json").read_text())["parts"] == summary["parts"]
