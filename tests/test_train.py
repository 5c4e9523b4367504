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
from edgecut.training.train import train

# runs compared for identical weights pin their precision: "auto" is chosen by timing, which may differ
ARGS = ["--arch", "unet", "--width", "4", "--depth", "2", "--size", "32", "--epochs", "3", "--batch", "4",
        "--precision", "fp32",
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
        import edgecut.training.train as train_module
        real_fit = train_module.fit
        def fit(*a, **k):
            k["callbacks"] = [lambda s: os.kill(os.getpid(), signal.SIGKILL) if s.global_step == 7 else None]
            return real_fit(*a, **k)
        train_module.fit = fit
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


def test_auto_precision_is_fp32_without_native_bf16_and_the_faster_one_with_it(synth_data, tmp_path, monkeypatch):
    from edgecut import env
    from edgecut.training import loop

    monkeypatch.setattr(env, "native_bf16", lambda: False)  # an AVX2-only CPU: bf16 is not even tried
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    art = _tiny_train(synth_data, tmp_path / "avx2")
    used = art.manifest.lineage[-1].params["precision_used"]
    assert used["chosen"] == "fp32" and used["tried"] == ["fp32"] and "no native bf16" in used["note"]

    monkeypatch.setattr(env, "native_bf16", lambda: True)
    for faster in ("bf16", "fp32"):  # the measured times decide (stood in for here: real ones are timing)
        monkeypatch.setattr(loop._Run, "_step_ms", lambda self, batch, p, f=faster: 1.0 if p == f else 3.0)
        art = _tiny_train(synth_data, tmp_path / faster)
        used = art.manifest.lineage[-1].params["precision_used"]
        assert used["chosen"] == faster and used["step_ms"] == {"fp32": 3.0 if faster == "bf16" else 1.0,
                                                                "bf16": 1.0 if faster == "bf16" else 3.0}


def test_bf16_is_not_native_where_onednn_is_capped_below_it(monkeypatch):
    from edgecut import env

    monkeypatch.setattr(env, "cpu_info", lambda: {"flags": ["avx2", "avx512f", "avx512_bf16"]})
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert env.native_bf16()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # oneDNN keeps to AVX2 kernels: bf16 is emulated
    assert not env.native_bf16()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_amx")
    assert env.native_bf16()
    monkeypatch.setattr(env, "cpu_info", lambda: {"flags": ["avx2"]})
    assert not env.native_bf16()


def test_timing_the_precisions_leaves_the_run_as_it_was(synth_data, tmp_path, monkeypatch):
    """Timing touches the weights' batch-norm statistics and the random state; both are put back, so a
    run that measured gives the weights of a run told the winning precision."""
    from edgecut import env

    monkeypatch.setattr(env, "native_bf16", lambda: True)
    measured = _tiny_train(synth_data, tmp_path / "auto")
    chosen = measured.manifest.lineage[-1].params["precision_used"]["chosen"]
    told = _tiny_train(synth_data, tmp_path / "told", precision=chosen)
    a, b = io.load_weights(measured.model_path), io.load_weights(told.model_path)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_resumed_run_keeps_the_precision_it_started_with(synth_data, tmp_path, monkeypatch):
    from edgecut import env
    from edgecut.training import loop

    monkeypatch.setattr(env, "native_bf16", lambda: True)
    monkeypatch.setattr(loop._Run, "_step_ms", lambda self, batch, p: 1.0 if p == "bf16" else 3.0)
    first = _tiny_train(synth_data, tmp_path / "run")
    assert first.manifest.lineage[-1].params["precision_used"]["chosen"] == "bf16"
    monkeypatch.setattr(loop._Run, "_step_ms", lambda self, batch, p: 1.0 if p == "fp32" else 3.0)  # would now pick fp32
    again = train(synth_data, tmp_path / "run", _tiny(), resume=True, progress=False)  # a finished run, resumed
    assert again.manifest.lineage[-1].params["precision_used"]["chosen"] == "bf16"


def test_the_epoch_line_is_short_and_the_history_has_everything(synth_data, tmp_path):
    from edgecut.training.progress import epoch_line

    line = epoch_line({"epoch": 2, "loss": 0.41234, "lr": 9.8e-4, "val_iou": 0.6123, "val_mae": 0.0831,
                       "val_s_measure": 0.7, "val_max_f": 0.8, "elapsed_s": 12.34}, 8)
    assert line == "epoch 3/8  loss 0.4123  lr 9.80e-04  val IoU 0.6123  MAE 0.0831  12 s"
    _tiny_train(synth_data, tmp_path / "run")
    history = io.read_json(tmp_path / "run" / "history.json")
    assert {"val_iou", "val_mae", "val_s_measure", "val_max_f", "loss", "lr"} <= set(history[0])


def test_validation_scores_the_model_in_fp32_as_it_will_run(synth_data, monkeypatch):
    import edgecut.training.train as train_module
    from edgecut.artifact import ModelSpec
    from edgecut.data.folder import find_samples

    monkeypatch.setattr(train_module, "native_bf16", lambda: True)  # even where bf16 autocast would be fast
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(torch.is_autocast_enabled("cpu"))
            return x[:, :1] * 0.0

    spec = ModelSpec(input_size=(32, 32))
    samples = find_samples(synth_data, "val")[:4]
    train_module.validator(samples, spec, torch.device("cpu"), batch_size=4)(Probe())
    train_module.validator(samples, spec, torch.device("cpu"), batch_size=4, amp=True)(Probe())
    assert seen == [False, True]


def test_auto_fine_tunes_a_trained_model_in_fp32_where_it_validates_worse_under_the_faster_precision(synth_data,
                                                                                                   monkeypatch):
    """Where bf16 times faster, a fine-tune keeps it only if the model scores as well under it; a run from
    scratch (nothing trained to lose) is not checked."""
    from edgecut import env
    from edgecut.models.store import build
    from edgecut.training import loop

    monkeypatch.setattr(env, "native_bf16", lambda: True)
    monkeypatch.setattr(loop._Run, "_step_ms", lambda self, batch, p: 1.0 if p == "bf16" else 3.0)
    seen: list[bool] = []

    def validate(model):  # 0.80 in fp32; under autocast as much lower as ``drop`` says
        seen.append(torch.is_autocast_enabled("cpu"))
        return {"iou": 0.80 - (drop if seen[-1] else 0.0)}

    def chosen(fine_tune: bool) -> dict:
        from edgecut.data.folder import find_samples
        from edgecut.data.transforms import SegmentationDataset

        model = build({"name": "unet", "kwargs": {"width": 4, "depth": 2}})
        train_set = SegmentationDataset(find_samples(synth_data, "train"), model.default_spec.with_size(32), train=True)
        run = loop._Run(model, len(train_set), LoopConfig(batch_size=4, epochs=1), Path("unused"),
                        loop.Task(validate=validate, fine_tune=fine_tune))
        run.choose_precision(train_set)
        return run.state.precision

    drop = 0.02
    worse = chosen(fine_tune=True)
    assert worse["chosen"] == "fp32" and worse["val_iou"] == {"fp32": 0.8, "bf16": 0.78} and "fp32" in worse["note"]
    assert seen == [False, True]
    drop = 0.002
    assert chosen(fine_tune=True)["chosen"] == "bf16"
    seen.clear()
    assert chosen(fine_tune=False)["chosen"] == "bf16" and not seen
