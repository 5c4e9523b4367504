"""The soft-label store: the teachers' answers computed once, found again by content, moved with each crop."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch

from edgecut.compress import soft_labels
from edgecut.compress.config import DistillConfig
from edgecut.compress.distill import distill, load_teacher
from edgecut.data.folder import find_samples, load_pair
from edgecut.data.transforms import SegmentationDataset
from edgecut.errors import EdgecutError
from edgecut.training.config import LoopConfig


def _counting(teacher):
    calls = []
    forward = teacher.module.forward

    def counted(x):
        calls.append(x.shape[0])
        return forward(x)

    teacher.module.forward = counted
    return calls


def test_the_maps_are_the_teachers_answers_on_the_image_and_its_mirror(tiny_artifact, synth_data, tmp_path):
    teacher = load_teacher(tiny_artifact)
    samples = find_samples(synth_data, "train")[:5]
    store = soft_labels.fill([teacher], samples, root=tmp_path, progress=False)
    maps = store(2)[0]
    assert maps.shape == (2, *teacher.spec.input_size) and maps.dtype == np.float16
    x = torch.from_numpy(teacher.spec.preprocess(load_pair(samples[2])[0]))
    with torch.no_grad():
        plain, mirrored = teacher.module(x), teacher.module(x.flip(-1))
    assert np.abs(maps[0] - plain[0, 0].numpy()).max() < 0.02  # float16
    assert np.abs(maps[1] - mirrored[0, 0].numpy()).max() < 0.02


def test_a_second_run_computes_nothing_and_a_copied_image_is_found_by_its_content(tiny_artifact, synth_data,
                                                                                  tmp_path):
    teacher = load_teacher(tiny_artifact)
    samples = find_samples(synth_data, "train")[:6]
    calls = _counting(teacher)
    first = soft_labels.fill([teacher], samples, root=tmp_path / "store", progress=False)
    assert sum(calls) == 2 * 6  # each image and its mirror, once
    copy = tmp_path / "copy"
    shutil.copytree(synth_data, copy)
    again = soft_labels.fill([teacher], find_samples(copy, "train")[:6], root=tmp_path / "store", progress=False)
    assert sum(calls) == 2 * 6 and again.files == first.files
    other = load_teacher(tiny_artifact)
    other.sha256 = "f" * 64  # another teacher: another folder
    assert soft_labels.store_dir(other, tmp_path / "store") != soft_labels.store_dir(teacher, tmp_path / "store")


def _mask_as_teacher(samples, size=(32, 32), swap: bool = False):
    """Stored 'answers' that are the true masks (as logits of +-8): plain, then mirrored."""
    import cv2

    def labels(index):
        mask = load_pair(samples[index])[1]
        small = [cv2.resize(m, size[::-1], interpolation=cv2.INTER_LINEAR) for m in (mask, mask[:, ::-1])]
        logits = [np.where(m > 127, 8.0, -8.0).astype(np.float16) for m in small]
        return [np.stack(logits[::-1] if swap else logits)]

    return labels


@pytest.mark.parametrize("swap", [False, True])
def test_each_crop_moves_the_stored_map_as_it_moves_the_mask(synth_data, swap):
    from edgecut.artifact import ModelSpec

    samples = find_samples(synth_data, "train")
    ds = SegmentationDataset(samples, ModelSpec(input_size=(32, 32)), train=True, seed=1,
                             soft_labels=_mask_as_teacher(samples, swap=swap))
    ious = []
    for epoch in range(3):
        for i in range(len(samples)):
            item = ds[(epoch, i)]
            assert item["teacher"].shape == (1, 32, 32) and item["image"].shape == (3, 32, 32)
            a, b = item["teacher"][0] > 0, item["mask"][0] > 0.5
            if b.sum() > 20:
                ious.append(float((a & b).sum() / (a | b).sum()))
    # 32 px crops: bilinear maps against nearest-neighbour masks differ by a pixel at the edges (0.89 here;
    # 0.96 at 128 px); the mirror's map used for the plain image (or the reverse) falls to 0.50
    if swap:
        assert np.mean(ious) < 0.65
    else:
        assert np.mean(ious) > 0.8 and min(ious) > 0.5


def test_without_the_store_the_items_are_as_before(synth_data):
    from edgecut.artifact import ModelSpec

    samples = find_samples(synth_data, "train")
    plain = SegmentationDataset(samples, ModelSpec(input_size=(32, 32)), train=True, seed=1)
    item = plain[(0, 3)]
    assert "teacher" not in item
    assert torch.equal(item["image"], plain[(0, 3)]["image"])  # a pure function of (seed, epoch, index)


def _config(**kw) -> DistillConfig:
    return DistillConfig(student="unet", student_kwargs={"width": 2, "depth": 2}, size=32,
                         loop=LoopConfig(epochs=2, batch_size=4, precision="fp32"), **kw)


def test_distillation_runs_its_teacher_once_per_image_not_once_per_step(tiny_artifact, synth_data, tmp_path,
                                                                         monkeypatch):
    import edgecut.compress.distill as distill_module

    monkeypatch.setenv("EDGECUT_CACHE", str(tmp_path / "cache"))  # a store of its own: other tests fill the shared one

    calls = []
    real = distill_module.load_teacher

    def counting_teacher(source, device="cpu"):
        t = real(source, device)
        calls.append(_counting(t))
        return t

    monkeypatch.setattr(distill_module, "load_teacher", counting_teacher)
    art = distill([tiny_artifact.path], synth_data, tmp_path / "stored", _config(), progress=False)
    n = len(find_samples(synth_data, "train"))
    assert sum(calls[0]) == 2 * n  # every image and its mirror, before the first step; no call in 2 epochs
    assert art.manifest.lineage[-1].params["teacher_cache"] is True
    distill([tiny_artifact.path], synth_data, tmp_path / "again", _config(), progress=False)
    assert sum(calls[1]) == 0  # a second run finds every answer stored
    distill([tiny_artifact.path], synth_data, tmp_path / "live", _config(teacher_cache=False), progress=False)
    assert sum(calls[2]) >= 2 * (n // 4) * 4 // 2  # on the fly: every step's batch


def test_feature_distillation_cannot_read_features_from_the_store():
    with pytest.raises(EdgecutError, match="features"):
        dataclasses.replace(_config(), feature_kd=True, teacher_cache=True)
    assert not _config(feature_kd=True).stored_teachers and _config().stored_teachers
