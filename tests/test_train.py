"""The training loop: exact resume after SIGKILL, refusals, schedule, EMA."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from edgecut import io
from edgecut.errors import InputError
from edgecut.training.config import LoopConfig
from edgecut.training.loop import lr_factor
from edgecut.training.config import TrainConfig
from edgecut.training.run import train

ARGS = ["--arch", "unet", "--width", "4", "--depth", "2", "--size", "32", "--epochs", "3", "--batch", "4",
        "--save-every", "2", "--threads", "1", "--ema", "0.9"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgecut.cli", *args], capture_output=True, text=True, timeout=240)


def _state(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True, map_location="cpu")


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_identical_weights(synth_data, tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    done = _cli("train", "--data", str(synth_data), "--out", str(full), *ARGS)
    assert done.returncode == 0, done.stderr

    # The same CLI run, SIGKILLed by itself after global step 7 (epoch 2, step 3 of 4):
    # the last checkpoint is at step 2 of epoch 2, so step 3 is redone after resuming.
    script = textwrap.dedent(f"""
        import os, signal, sys
        import edgecut.training.run as run
        real_fit = run.fit
        def fit(*a, **k):
            k["callbacks"] = [lambda s: os.kill(os.getpid(), signal.SIGKILL) if s.global_step == 7 else None]
            return real_fit(*a, **k)
        run.fit = fit
        from edgecut.cli import main
        sys.argv = ["edgecut", "train", "--data", {str(synth_data)!r}, "--out", {str(killed)!r}, *{ARGS!r}]
        main()
    """)
    died = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert died.returncode == -signal.SIGKILL, died.stderr
    st = _state(killed)["state"]
    assert (st["epoch"], st["step_in_epoch"], st["steps_per_epoch"]) == (1, 2, 4)  # mid-epoch
    assert not (killed / "edgecut.json").exists()

    resumed = _cli("train", "--data", str(synth_data), "--out", str(killed), *ARGS, "--resume")
    assert resumed.returncode == 0, resumed.stderr

    a, b = _state(full), _state(killed)
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs after resume"
    wa, wb = io.load_weights(full / "model.safetensors"), io.load_weights(killed / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert io.read_json(full / "history.json")[-1]["val_iou"] == io.read_json(killed / "history.json")[-1]["val_iou"]


def _tiny(**loop) -> TrainConfig:
    return TrainConfig(arch_kwargs={"width": 4, "depth": 2}, size=32, loop=LoopConfig(**{"epochs": 1, "batch_size": 4,
                                                                                          **loop}))


def _tiny_train(data, out, **loop):
    return train(data, out, _tiny(**loop), progress=False)


def test_train_writes_artifact_with_val_metrics(synth_data, tmp_path):
    art = _tiny_train(synth_data, tmp_path / "run")
    m = art.manifest
    assert m.format == "torch" and m.params == 7549 and m.macs > 0
    assert m.spec.input_size == (32, 32)
    assert {"iou", "mae", "s_measure", "max_f"} <= set(m.metrics["val"])
    assert m.lineage[0].step == "train" and m.lineage[0].params["train_images"] == 19
    assert (tmp_path / "run" / "checkpoints" / "best.safetensors").is_file()


def test_existing_run_is_not_overwritten_without_resume(synth_data, tmp_path):
    _tiny_train(synth_data, tmp_path / "run")
    before = (tmp_path / "run" / "model.safetensors").read_bytes()
    with pytest.raises(InputError, match="--resume"):
        _tiny_train(synth_data, tmp_path / "run")
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == before


def test_resume_with_other_settings_is_refused(synth_data, tmp_path):
    _tiny_train(synth_data, tmp_path / "run")
    with pytest.raises(InputError, match="batch_size"):
        train(synth_data, tmp_path / "run", _tiny(batch_size=2), resume=True, progress=False)


def test_resume_without_checkpoint_is_an_error(synth_data, tmp_path):
    with pytest.raises(InputError, match="nothing to resume"):
        train(synth_data, tmp_path / "run", _tiny(), resume=True, progress=False)


def test_lr_schedule_warms_up_then_decays_to_floor():
    total, warmup = 100, 10
    f = [lr_factor(s, total, warmup, 0.01) for s in range(total + 1)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert f[-1] == pytest.approx(0.01)
    assert math.isclose(lr_factor(55, total, warmup, 0.0), 0.5, abs_tol=1e-9)


def test_too_few_images_for_a_batch_is_a_clear_error(synth_data, tmp_path):
    with pytest.raises(InputError, match="lower --batch"):
        _tiny_train(synth_data, tmp_path / "run", batch_size=64)


def test_ema_forgets_the_initial_weights():
    from edgecut.training.loop import ema_update

    update = ema_update(0.998)
    ema = [torch.zeros(3)]  # the "initial weights"
    for n in range(1, 601):  # 600 steps of a model that sits at 1.0
        update(ema, [torch.ones(3)], torch.tensor(n))
    # a plain 0.998 EMA would be 1 - 0.998**600 = 0.70 here
    assert float(ema[0][0]) > 0.95
    counters = [torch.tensor(5)]
    update(counters, [torch.tensor(9)], torch.tensor(3))
    assert int(counters[0]) == 9
