"""Folder data sets, the training data set and the epoch batch sampler (edgecut.data)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from edgecut.artifact import ModelSpec
from edgecut.data.folder import Sample, find_samples, load_pair, read_split
from edgecut.data.transforms import EpochBatchSampler, SegmentationDataset
from edgecut.errors import InputError


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def _dataset(root: Path, images=(), masks=(), size=(8, 10)) -> Path:
    h, w = size
    for name in images:
        _png(root / "images" / name, np.full((h, w, 3), 90, np.uint8))
    for name in masks:
        m = np.zeros((h, w), np.uint8)
        m[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 255
        _png(root / "masks" / name, m)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    return root


# --------------------------------------------------------------------------- find_samples


def test_find_samples_all(synth_data):
    samples = find_samples(synth_data)
    assert [s.name for s in samples] == [f"{i:05d}" for i in range(24)]
    for s in samples:
        assert s.image == synth_data / "images" / f"{s.name}.png"
        assert s.mask == synth_data / "masks" / f"{s.name}.png"


def test_find_samples_split_by_name_and_by_path(synth_data):
    val_names = (synth_data / "splits" / "val.txt").read_text().split()
    train_names = (synth_data / "splits" / "train.txt").read_text().split()
    by_name = find_samples(synth_data, "val")
    assert [s.name for s in by_name] == val_names
    by_path = find_samples(synth_data, synth_data / "splits" / "train.txt")
    assert [s.name for s in by_path] == train_names
    assert not set(val_names) & set(train_names)
    assert len(val_names) + len(train_names) == 24
    by_str_path = find_samples(synth_data, str(synth_data / "splits" / "val.txt"))
    assert by_str_path == by_name


def test_find_samples_unknown_split(synth_data):
    with pytest.raises(InputError, match="split file not found"):
        find_samples(synth_data, "test")


def test_orphans_both_ways_in_one_error(tmp_path):
    root = _dataset(tmp_path / "d", images=["a.png", "b.jpg", "lonely_img.png"],
                    masks=["a.png", "b.png", "lonely_mask.png"])
    with pytest.raises(InputError) as e:
        find_samples(root)
    msg = str(e.value)
    assert "without a mask" in msg and "lonely_img" in msg
    assert "without an image" in msg and "lonely_mask" in msg
    assert e.value.path == str(root)


def test_many_orphans_are_summarised(tmp_path):
    root = _dataset(tmp_path / "d", images=[f"i{k}.png" for k in range(8)])
    with pytest.raises(InputError, match=r"8 image\(s\) without a mask: i0, i1, i2, i3, i4 \.\.\. and 3 more"):
        find_samples(root)


def test_split_name_absent(tmp_path):
    root = _dataset(tmp_path / "d", images=["a.png", "b.png"], masks=["a.png", "b.png"])
    split = root / "splits" / "val.txt"
    split.parent.mkdir()
    split.write_text("a\nghost.jpg\n")
    with pytest.raises(InputError) as e:
        find_samples(root, "val")
    assert "ghost" in str(e.value) and "without an image" in str(e.value)
    assert e.value.path == str(split)


def test_duplicate_stems(tmp_path):
    root = _dataset(tmp_path / "d", images=["a.jpg", "a.png"], masks=["a.png"])
    with pytest.raises(InputError) as e:
        find_samples(root)
    assert "a.jpg" in str(e.value) and "a.png" in str(e.value)


def test_no_images_folder(tmp_path):
    with pytest.raises(InputError, match="images/"):
        find_samples(tmp_path)


def test_unlabelled_data_without_masks(tmp_path):
    root = tmp_path / "d"
    _png(root / "images" / "x.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(InputError, match="masks/"):
        find_samples(root)
    samples = find_samples(root, masks=False)
    assert samples == [Sample("x", root / "images" / "x.png", None)]
    image, mask = load_pair(samples[0])
    assert image.shape == (4, 4, 3) and mask is None


def test_empty_images_folder(tmp_path):
    root = _dataset(tmp_path / "d")
    with pytest.raises(InputError, match="no images"):
        find_samples(root)


def test_read_split_format(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text("# header\n\na.jpg\n  b  # comment\nc.PNG\nd.v2\n")
    assert read_split(p) == ["a", "b", "c", "d.v2"]
    p.write_text("# nothing\n\n")
    with pytest.raises(InputError, match="no names"):
        read_split(p)


# --------------------------------------------------------------------------- load_pair


def test_load_pair(synth_data):
    s = find_samples(synth_data)[0]
    image, mask = load_pair(s)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 255}


def test_load_pair_mask_of_wrong_size(tmp_path):
    root = _dataset(tmp_path / "d", images=["a.png"])
    _png(root / "masks" / "a.png", np.zeros((9, 10), np.uint8))
    (s,) = find_samples(root)
    with pytest.raises(InputError) as e:
        load_pair(s)
    assert e.value.path == str(root / "masks" / "a.png")
    assert "10x9" in str(e.value) and "10x8" in str(e.value)


# --------------------------------------------------------------------------- SegmentationDataset


@pytest.fixture(scope="module")
def train_set(synth_data):
    spec = ModelSpec(input_size=(24, 40), size_divisor=4)
    return SegmentationDataset(find_samples(synth_data)[:6], spec, train=True, seed=11)


def test_train_items_depend_only_on_epoch_and_index(train_set, synth_data):
    a = train_set[(2, 3)]
    train_set[(0, 1)]  # other draws in between change nothing
    torch.rand(5)
    b = train_set[(2, 3)]
    fresh = SegmentationDataset(train_set.samples, train_set.spec, train=True, seed=11)
    c = fresh[(2, 3)]
    for other in (b, c):
        assert torch.equal(a["image"], other["image"])
        assert torch.equal(a["mask"], other["mask"])
    assert a["index"] == 3


def test_train_items_differ_across_epochs_and_seeds(train_set):
    for i in range(3):
        assert not torch.equal(train_set[(0, i)]["image"], train_set[(1, i)]["image"])
    other_seed = SegmentationDataset(train_set.samples, train_set.spec, train=True, seed=12)
    assert not torch.equal(train_set[(0, 0)]["image"], other_seed[(0, 0)]["image"])


def test_train_items_leave_global_rng_alone(train_set):
    state = torch.random.get_rng_state()
    train_set[(0, 0)]
    assert torch.equal(torch.random.get_rng_state(), state)


def test_train_item_shapes_and_mask_values(train_set):
    for key in [(0, 0), (1, 4), 5]:
        item = train_set[key]
        assert item["image"].shape == (3, 24, 40) and item["image"].dtype == torch.float32
        assert item["mask"].shape == (1, 24, 40) and item["mask"].dtype == torch.float32
        assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}
        assert type(item["image"]) is torch.Tensor  # plain tensors, not tv_tensors
    assert len(train_set) == 6


def test_eval_items_match_spec_preprocess(synth_data):
    spec = ModelSpec(input_size=(24, 40), size_divisor=4)
    samples = find_samples(synth_data, "val")
    ds = SegmentationDataset(samples, spec, train=False)
    item = ds[1]
    image, mask = load_pair(samples[1])
    assert item["image"].shape == (3, 24, 40) and item["mask"].shape == (1, 24, 40)
    assert np.array_equal(item["image"].numpy(), spec.preprocess(image)[0])
    assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}
    assert item["mask"].sum() > 0  # the synthetic shots all hold an object
    assert torch.equal(ds[(5, 1)]["image"], item["image"])  # no augmentation: the epoch is ignored


# --------------------------------------------------------------------------- EpochBatchSampler


def _flat(batches):
    return [i for b in batches for (_, i) in b]


def test_sampler_is_deterministic_per_seed_and_epoch():
    a = list(EpochBatchSampler(20, 4, epoch=3, seed=1))
    b = list(EpochBatchSampler(20, 4, epoch=3, seed=1))
    assert a == b
    assert all(e == 3 for batch in a for (e, _) in batch)
    assert sorted(_flat(a)) == list(range(20))
    assert _flat(a) != _flat(list(EpochBatchSampler(20, 4, epoch=4, seed=1)))
    assert _flat(a) != _flat(list(EpochBatchSampler(20, 4, epoch=3, seed=2)))
    assert _flat(list(EpochBatchSampler(20, 4, epoch=3, shuffle=False))) == list(range(20))


@pytest.mark.parametrize("start", [0, 1, 3, 5, 7])
def test_sampler_start_batch_skips_exactly(start):
    full = list(EpochBatchSampler(22, 4, epoch=1, seed=5))
    assert len(full) == 5  # 22 // 4, last partial batch dropped
    resumed = EpochBatchSampler(22, 4, epoch=1, seed=5, start_batch=start)
    assert list(resumed) == full[start:]
    assert len(resumed) == max(0, 5 - start)


def test_sampler_ranks_are_disjoint_and_cover():
    n = 12
    shards = [list(EpochBatchSampler(n, 3, epoch=2, seed=0, shard=(r, 2))) for r in (0, 1)]
    a, b = _flat(shards[0]), _flat(shards[1])
    assert len(a) == len(b) == 6
    assert not set(a) & set(b)
    assert sorted(a + b) == list(range(n))
    assert len(shards[0]) == len(shards[1]) == 2  # every rank runs the same number of steps


def test_sampler_without_drop_last_covers_odd_counts():
    n = 11
    shards = [EpochBatchSampler(n, 4, epoch=0, seed=0, shard=(r, 2), drop_last=False) for r in (0, 1)]
    a, b = _flat(list(shards[0])), _flat(list(shards[1]))
    assert len(a) == len(b) == 6  # padded by wrapping
    assert set(a) | set(b) == set(range(n))
    assert shards[0].num_batches() == shards[1].num_batches() == 2
    assert [len(batch) for batch in shards[0]] == [4, 2]
