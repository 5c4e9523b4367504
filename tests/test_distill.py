"""Knowledge distillation: the losses on known values, the objective, distill() and its CLI,
unlabelled images, exact resume, and DistributedDataParallel under torchrun."""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_STUDENT
from torch import nn
from typer.testing import CliRunner

from edgecut import io
from edgecut.artifact import ModelSpec, load_artifact
from edgecut.cli import app
from edgecut.compress.config import DistillConfig
from edgecut.compress.distill import (DistillObjective, distill, load_teacher, make_adapters,
                                      renormalise)
from edgecut.errors import EdgecutError, InputError, ModelError
from edgecut.training.config import LoopConfig
from edgecut.training.loop import TrainingInterrupted
from edgecut.training.losses import (bce_dice_loss, boundary_loss, boundary_weights, edge_band, ensemble_probability,
                                  feature_loss, kd_loss, soften)

STUDENT = {"width": 2, "depth": 2}  # 1,959 parameters; the teacher (conftest TINY_UNET) has 7,549


@pytest.fixture(scope="module")
def other_teacher(tmp_path_factory):
    """A teacher of another shape (unet width 3, depth 1)."""
    from edgecut.models.store import build, save_model

    arch = {"name": "unet", "kwargs": {"width": 3, "depth": 1}}
    torch.manual_seed(1)
    model = build(arch).eval()
    return save_model(tmp_path_factory.mktemp("t2") / "model", model, arch, model.default_spec.with_size(32))


def _distill(teachers, data, out, *, dconfig=DistillConfig(), train=None, unlabeled=None, **kw):
    loop = LoopConfig(**{"epochs": 1, "batch_size": 4, **(train or {})})
    config = dataclasses.replace(dconfig, student="unet", student_kwargs=STUDENT, size=32, loop=loop,
                                 unlabeled=str(unlabeled) if unlabeled else None)
    return distill([t.path if hasattr(t, "path") else t for t in teachers], data, out, config, progress=False, **kw)


# --------------------------------------------------------------------------- losses


def test_kd_loss_is_zero_when_the_student_matches_and_positive_otherwise():
    torch.manual_seed(0)
    z = torch.randn(2, 1, 5, 5) * 3
    for t in (1.0, 2.0, 4.0):
        assert kd_loss(z, soften(z, t), t).abs() < 1e-6
        assert kd_loss(z + 0.5, soften(z, t), t) > 1e-4
        assert kd_loss(-z, soften(z, t), t) > kd_loss(z + 0.5, soften(z, t), t)


def test_kd_loss_known_values_and_t_squared_scaling():
    s = torch.zeros(1, 1, 2, 2)  # the student says 0.5 everywhere
    sure = torch.ones(1, 1, 2, 2)  # the teacher is certain: no entropy to subtract
    assert float(kd_loss(s, sure, 1.0)) == pytest.approx(math.log(2), rel=1e-6)
    assert float(kd_loss(s, sure, 3.0)) == pytest.approx(9 * math.log(2), rel=1e-6)
    torch.manual_seed(1)
    z, p = torch.randn(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    assert float(kd_loss(z, p, 4.0)) == pytest.approx(16 * float(kd_loss(z / 4, p, 1.0)), rel=1e-5)


def test_teachers_are_averaged_in_probability_not_in_logits():
    a, b = torch.full((1, 1, 2, 2), 10.0), torch.full((1, 1, 2, 2), -2.0)
    p = ensemble_probability([a, b])
    expected = (torch.sigmoid(torch.tensor(10.0)) + torch.sigmoid(torch.tensor(-2.0))) / 2  # 0.5596
    assert torch.allclose(p, torch.full_like(p, float(expected)))
    assert float(p[0, 0, 0, 0]) < 0.6 < float(torch.sigmoid(torch.tensor(4.0)))  # mean logit 4 would say 0.98
    p2 = ensemble_probability([a, b], temperature=2.0)
    assert float(p2[0, 0, 0, 0]) == pytest.approx(float((torch.sigmoid(torch.tensor(5.0))
                                                          + torch.sigmoid(torch.tensor(-1.0))) / 2))


def test_boundary_weights_concentrate_on_edges():
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1  # an 8x8 square
    band = edge_band(mask, width=1)
    w = boundary_weights(mask, width=1, edge_gain=4.0)
    assert band[0, 0, 3:13, 3:13].sum() == 10 * 10 - 6 * 6  # a ring 2 pixels wide around the edge
    assert float(w[0, 0, 4, 8]) == 5.0 and float(w[0, 0, 3, 8]) == 5.0  # on the edge, inside and out
    assert float(w[0, 0, 8, 8]) == 1.0 and float(w[0, 0, 0, 0]) == 1.0  # deep inside, far outside
    assert torch.equal(edge_band(torch.ones(1, 1, 8, 8)), torch.zeros(1, 1, 8, 8))  # no edge, no band
    # the same number of wrong pixels costs more on the edge than inside the object
    logits = torch.where(mask > 0, 5.0, -5.0)
    wrong_edge, wrong_inside = logits.clone(), logits.clone()
    wrong_edge[..., 4, 4:8] = -5.0
    wrong_inside[..., 7, 6:10] = -5.0
    assert boundary_loss(wrong_edge, mask, 1) > 2 * boundary_loss(wrong_inside, mask, 1)


def test_feature_loss_is_zero_through_an_identity_adapter_and_scale_free():
    torch.manual_seed(2)
    f = torch.randn(2, 6, 8, 8)
    adapter = nn.Conv2d(6, 6, 1)
    with torch.no_grad():
        adapter.weight.copy_(torch.eye(6).view(6, 6, 1, 1))
        adapter.bias.zero_()
    assert float(feature_loss(adapter(f).detach(), f)) < 1e-6
    assert float(feature_loss(10 * f + 3, f)) < 1e-6  # standardised: scale and offset do not matter
    assert float(feature_loss(torch.randn(2, 6, 8, 8), f)) > 0.5
    small = torch.nn.functional.avg_pool2d(f, 2)  # a student feature of another spatial size is resized
    assert 0 < float(feature_loss(small, f)) < float(feature_loss(torch.randn(2, 6, 4, 4), f))
    with pytest.raises(ValueError, match="adapt"):
        feature_loss(torch.randn(2, 3, 8, 8), f)


def test_sample_weights_default_to_the_plain_mean_and_can_leave_images_out():
    torch.manual_seed(3)
    z, m = torch.randn(3, 1, 6, 6), (torch.rand(3, 1, 6, 6) > 0.5).float()
    plain = bce_dice_loss(z, m)
    assert float(bce_dice_loss(z, m, sample_weight=torch.ones(3))) == pytest.approx(float(plain), rel=1e-6)
    only_first = bce_dice_loss(z, m, sample_weight=torch.tensor([1.0, 0.0, 0.0]))
    assert float(only_first) == pytest.approx(float(bce_dice_loss(z[:1], m[:1])), rel=1e-6)


def test_renormalise_gives_what_the_other_spec_would_have_made():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    a = ModelSpec(input_size=(8, 8))
    b = ModelSpec(input_size=(8, 8), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    xa, xb = torch.from_numpy(a.preprocess(img)), torch.from_numpy(b.preprocess(img))
    assert torch.allclose(renormalise(xa, a, b), xb, atol=1e-5)
    assert renormalise(xa, a, a) is xa


# --------------------------------------------------------------------------- the objective


def test_objective_uses_the_teachers_mask_for_unlabelled_images_and_their_mean_for_kd(tiny_artifact, other_teacher):
    teachers = [load_teacher(tiny_artifact.path), load_teacher(other_teacher.path)]
    cfg = DistillConfig(temperature=2.0, alpha=0.3)
    objective = DistillObjective(teachers, tiny_artifact.spec, cfg)
    torch.manual_seed(4)
    x = torch.randn(2, 3, 32, 32)
    mask = torch.zeros(2, 1, 32, 32)
    mask[0, :, 8:24, 8:24] = 1
    batch = {"image": x, "mask": mask, "labeled": torch.tensor([1.0, 0.0])}
    student = nn.Conv2d(3, 1, 3, padding=1)
    loss, logs = objective(student, batch)
    with torch.no_grad():
        t = [m.module(x) for m in teachers]
        logits = student(x)
    target = mask.clone()
    target[1] = (ensemble_probability(t)[1] > 0.5).float()  # the unlabelled image: the teachers' hard mask
    assert logs["gt"] == pytest.approx(float(bce_dice_loss(logits, target)), rel=1e-5)
    assert logs["kd"] == pytest.approx(float(kd_loss(logits, ensemble_probability(t, 2.0), 2.0)), rel=1e-5)
    assert float(loss.detach()) == pytest.approx(0.7 * logs["gt"] + 0.3 * logs["kd"], rel=1e-5)
    loss.backward()
    assert student.weight.grad is not None
    assert all(p.grad is None for m in teachers for p in m.module.parameters())  # frozen


def test_feature_kd_needs_taps(tiny_artifact):
    teacher = load_teacher(tiny_artifact.path)
    with pytest.raises(ModelError, match="feature_taps.*--feature-kd"):
        make_adapters(nn.Conv2d(3, 1, 1), [teacher], (32, 32))
    from edgecut.models.store import build

    adapters, strides = make_adapters(build({"name": "unet", "kwargs": STUDENT}), [teacher], (32, 32))
    assert strides == [[1, 2, 4]]
    assert {k: (a.in_channels, a.out_channels) for k, a in adapters.items()} == \
        {"0_1": (2, 4), "0_2": (4, 8), "0_4": (8, 16)}


def test_bad_settings_and_missing_teacher_are_clear_errors(synth_data, tmp_path):
    with pytest.raises(EdgecutError, match="alpha"):
        DistillConfig(alpha=1.5)
    with pytest.raises(InputError, match="not found"):
        _distill([tmp_path / "nope"], synth_data, tmp_path / "run")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "edgecut.json").write_text("{not json")
    with pytest.raises(InputError, match="junk"):
        _distill([tmp_path / "junk"], synth_data, tmp_path / "run")
    with pytest.raises(EdgecutError, match="--unlabeled"):
        distill([tmp_path / "x"], None, tmp_path / "run", DistillConfig(student="unet"))
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- distill()


def test_two_teachers_with_feature_and_edge_terms_make_a_student_artifact(synth_data, tmp_path, tiny_artifact,
                                                                          other_teacher):
    cfg = DistillConfig(feature_kd=True, boundary_weight=0.5)
    art = _distill([tiny_artifact, other_teacher], synth_data, tmp_path / "student", dconfig=cfg)
    m = art.manifest
    assert m.arch == {"name": "unet", "kwargs": STUDENT} and m.params == 1959 and m.spec.input_size == (32, 32)
    step = m.lineage[-1]
    assert step.step == "distill" and step.parent_sha256 == tiny_artifact.sha256
    assert [t["sha256"] for t in step.params["teachers"]] == [tiny_artifact.sha256, other_teacher.sha256]
    assert step.params["feature_kd"] and step.params["boundary_weight"] == 0.5 and step.params["train_images"] == 19
    assert {"iou", "mae", "s_measure"} <= set(m.metrics["val"])
    history = io.read_json(tmp_path / "student" / "history.json")
    assert {"gt", "kd", "feat", "edge"} <= set(history[0])
    # the adapters are checkpointed for resuming but not shipped
    ck = torch.load(tmp_path / "student" / "checkpoints" / "last.pt", weights_only=True)
    assert set(ck["extra"][0]) == {f"{t}_{s}.{p}" for t, s in (("0", 1), ("0", 2), ("0", 4), ("1", 1), ("1", 2))
                                   for p in ("weight", "bias")}
    assert set(io.load_weights(art.model_path)) == set(ck["model"])


def test_mobilenet_student_learns_features_from_a_unet_teacher(synth_data, tmp_path, tiny_artifact):
    cfg = DistillConfig(feature_kd=True)
    cfg = dataclasses.replace(cfg, student=TINY_STUDENT["name"], student_kwargs=TINY_STUDENT["kwargs"], size=32,
                              loop=LoopConfig(epochs=1, batch_size=4))
    art = distill([tiny_artifact.path], synth_data, tmp_path / "student", cfg, progress=False)
    assert art.manifest.arch == TINY_STUDENT
    ck = torch.load(tmp_path / "student" / "checkpoints" / "last.pt", weights_only=True)
    assert sorted(ck["extra"][0]) == ["0_2.bias", "0_2.weight", "0_4.bias", "0_4.weight"]  # strides both tap


def test_distill_from_unlabelled_images_only(tmp_path, synth_data, tiny_artifact):
    images = tmp_path / "photos"
    shutil.copytree(synth_data / "images", images / "images")
    art = _distill([tiny_artifact], None, tmp_path / "student", unlabeled=images)
    step = art.manifest.lineage[-1]
    assert step.params["unlabeled_images"] == 24 and step.params["train_images"] == 0
    assert art.manifest.metrics == {}  # nothing to validate on
    assert load_artifact(art.path, verify=True).manifest.params == 1959


def test_labelled_and_unlabelled_images_mix(tmp_path, synth_data, tiny_artifact):
    from edgecut.data.folder import Sample, find_samples
    from edgecut.data.transforms import SegmentationDataset

    samples = find_samples(synth_data)[:2]
    ds = SegmentationDataset([samples[0], Sample("x", samples[1].image, None)], tiny_artifact.spec, train=True,
                             unlabeled=True)
    a, b = ds[0, 0], ds[0, 1]
    assert float(a["labeled"]) == 1.0 and float(b["labeled"]) == 0.0
    assert b["mask"].shape == a["mask"].shape and float(b["mask"].sum()) == 0
    with pytest.raises(ValueError, match="no mask"):
        SegmentationDataset([Sample("x", samples[1].image, None)], tiny_artifact.spec, train=True)[0, 0]
    art = _distill([tiny_artifact], synth_data, tmp_path / "student", unlabeled=synth_data, train={"batch_size": 8})
    assert art.manifest.lineage[-1].params["unlabeled_images"] == 24


def test_interrupted_distillation_resumes_to_the_same_weights(synth_data, tmp_path, tiny_artifact):
    cfg = DistillConfig(feature_kd=True)
    train = {"epochs": 2, "ema_decay": 0.9, "precision": "fp32"}  # pinned: "auto" is chosen by timing
    full = _distill([tiny_artifact], synth_data, tmp_path / "full", dconfig=cfg, train=train)

    def stop(state):
        if state.global_step == 6:  # epoch 2, step 2 of 4
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted, match="--resume"):
        _distill([tiny_artifact], synth_data, tmp_path / "cut", dconfig=cfg, train=train, callbacks=[stop])
    with pytest.raises(InputError, match="alpha"):
        _distill([tiny_artifact], synth_data, tmp_path / "cut", dconfig=DistillConfig(feature_kd=True, alpha=0.9),
                 train=train, resume=True)
    resumed = _distill([tiny_artifact], synth_data, tmp_path / "cut", dconfig=cfg, train=train, resume=True)
    a, b = io.load_weights(full.model_path), io.load_weights(resumed.model_path)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ca = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)
    cb = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.equal(ca["extra"][0][k], cb["extra"][0][k]) for k in ca["extra"][0])


def test_cli_distill_then_info_eval_remove(synth_data, tmp_path, tiny_artifact, other_teacher):
    out = tmp_path / "student"
    r = CliRunner().invoke(app, [str(a) for a in (
        "distill", "--teacher", tiny_artifact.path, "--teacher", other_teacher.path, "--student", "unet",
        "--width", 2, "--depth", 2, "--data", synth_data, "--out", out, "--size", 32, "--epochs", 1, "--batch", 4,
        "--temperature", 3, "--alpha", 0.7, "--feature-weight", 0.5, "--boundary-weight", 1, "--threads", 1)])
    assert r.exit_code == 0, r.output
    assert "artifact" in r.output and "1,959 params" in r.output
    params = load_artifact(out).manifest.lineage[-1].params
    assert (params["temperature"], params["alpha"], params["feature_kd"], params["feature_weight"]) == (3, 0.7, True, 0.5)
    r = CliRunner().invoke(app, ["info", str(out)])
    assert r.exit_code == 0 and "distill" in r.output
    r = CliRunner().invoke(app, ["eval", str(out), "--data", str(synth_data), "--split", "val", "--worst", "0"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["remove", str(synth_data / "images" / "00000.png"), "--model", str(out),
                                 "--out", str(tmp_path / "cut")])
    assert r.exit_code == 0 and (tmp_path / "cut").is_dir()


# --------------------------------------------------------------------------- torchrun


_HOOK = textwrap.dedent("""
    # edgecut distill under torchrun, with a test hook: every rank writes the sha256 of the
    # student's and adapters' parameters after every step; STOP_AT sends itself SIGTERM.
    import hashlib, os, signal, sys
    from pathlib import Path
    import edgecut.compress.distill as d

    real_fit, dump, stop = d.fit, Path(os.environ["DUMP"]), int(os.environ.get("STOP_AT", 0))

    def fit(model, *a, **k):
        modules = [model, *k["task"].extra_modules]
        def hook(state):
            h = hashlib.sha256()
            for m in modules:
                for p in m.parameters():
                    h.update(p.detach().float().contiguous().numpy().tobytes())
            (dump / f"rank{os.environ['RANK']}_step{state.global_step}").write_text(h.hexdigest())
            if state.global_step == stop:
                os.kill(os.getpid(), signal.SIGTERM)
        k["callbacks"] = [*k.get("callbacks", ()), hook]
        return real_fit(model, *a, **k)

    d.fit = fit
    from edgecut.cli import main
    sys.argv = ["edgecut", "distill", *sys.argv[1:]]
    main()
""")


@pytest.mark.slow
def test_torchrun_two_ranks_stay_identical_and_resume_exactly(synth_data, tmp_path, tiny_artifact):
    script = tmp_path / "hook.py"
    script.write_text(_HOOK)

    def run(out: Path, dump: Path, *extra: str, stop: int = 0) -> subprocess.CompletedProcess:
        dump.mkdir(exist_ok=True)
        env = {**os.environ, "DUMP": str(dump), "STOP_AT": str(stop), "OMP_NUM_THREADS": "1"}
        args = ["--teacher", str(tiny_artifact.path), "--student", "unet", "--width", "2", "--depth", "2",
                "--data", str(synth_data), "--out", str(out), "--size", "32", "--epochs", "2", "--batch", "4",
                "--feature-kd", "--threads", "1", "--device", "cpu", "--precision", "fp32", *extra]
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                               str(script), *args], capture_output=True, text=True, timeout=240, env=env)

    def hashes(dump: Path) -> dict[tuple[int, int], str]:
        return {(int(p.name[4]), int(p.name.split("step")[1])): p.read_text() for p in dump.iterdir()}

    full = run(tmp_path / "full", tmp_path / "h_full")
    assert full.returncode == 0, full.stderr[-3000:]
    h_full = hashes(tmp_path / "h_full")
    # 19 training images, 2 ranks, batch 4: 2 steps per epoch on each rank
    assert sorted(h_full) == [(r, s) for r in (0, 1) for s in (1, 2, 3, 4)]
    assert all(h_full[0, s] == h_full[1, s] for s in (1, 2, 3, 4))  # the ranks agree after every step
    assert len({h_full[0, s] for s in (1, 2, 3, 4)}) == 4  # and they do train

    cut = run(tmp_path / "cut", tmp_path / "h_cut", stop=3)  # SIGTERM to both ranks in epoch 2
    assert cut.returncode != 0 and "--resume" in cut.stderr
    ck = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)
    assert (ck["state"]["epoch"], ck["state"]["step_in_epoch"], ck["config"]["world_size"]) == (1, 1, 2)
    assert not (tmp_path / "cut" / "edgecut.json").exists()

    resumed = run(tmp_path / "cut", tmp_path / "h_resumed", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert sorted(hashes(tmp_path / "h_resumed")) == [(0, 4), (1, 4)]
    assert hashes(tmp_path / "h_resumed")[0, 4] == hashes(tmp_path / "h_resumed")[1, 4] == h_full[0, 4]
    a, b = io.load_weights(tmp_path / "full" / "model.safetensors"), io.load_weights(tmp_path / "cut" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert load_artifact(tmp_path / "cut").manifest.lineage[-1].params["world_size"] == 2
