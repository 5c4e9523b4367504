"""The embedded synthetic data set: deterministic, exact binary masks, resumable, safe folders."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edgecut.data import synth


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _has_enclosed_background(mask: np.ndarray) -> bool:
    """A background region that touches no border: it is walled in by foreground."""
    n, labels = cv2.connectedComponents((mask == 0).astype(np.uint8), connectivity=8)
    border = set(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]).tolist())
    return any(k not in border for k in range(1, n))


def test_generate_is_byte_identical(tmp_path):
    a = synth.generate(tmp_path / "a", 6, 48, seed=3, progress=False)
    b = synth.generate(tmp_path / "b", 6, 48, seed=3, progress=False)
    fa, fb = _files(a), _files(b)
    assert len(fa) == 6 * 2 + 3
    assert fa == fb
    assert not [name for name in fa if name.endswith(".tmp")]


def test_image_does_not_depend_on_count(tmp_path):
    small = _files(synth.generate(tmp_path / "small", 2, 40, seed=5, progress=False))
    large = _files(synth.generate(tmp_path / "large", 5, 40, seed=5, progress=False))
    for name in ("images/00000.png", "images/00001.png", "masks/00000.png", "masks/00001.png"):
        assert small[name] == large[name]
    image, mask = synth.render(4, 40, 5)
    assert np.array_equal(image, synth.render(4, 40, 5)[0])
    assert np.array_equal(mask, synth.render(4, 40, 5)[1])
    assert not np.array_equal(image, synth.render(4, 40, 6)[0])


def test_files_round_trip(tmp_path):
    root = synth.generate(tmp_path / "set", 2, 32, seed=1, progress=False)
    image, mask = synth.render(1, 32, 1)
    png = cv2.imread(str(root / "images" / "00001.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(png[..., ::-1], image)  # cv2 reads BGR
    saved = cv2.imread(str(root / "masks" / "00001.png"), cv2.IMREAD_UNCHANGED)
    assert saved.dtype == np.uint8 and saved.ndim == 2 and np.array_equal(saved, mask)
    text = (root / "synth.json").read_text()
    assert text.endswith("}\n")
    assert json.loads(text) == {"generator": "edgecut.data.synth", "version": 1, "count": 2, "size": 32,
                                "seed": 1, "categories": list(synth.CATEGORIES)}


def test_masks_are_exact_and_varied():
    seen = set()
    for i in range(30):
        image, mask = synth.render(i, 40, 0)
        assert image.shape == (40, 40, 3) and image.dtype == np.uint8
        assert mask.shape == (40, 40) and mask.dtype == np.uint8
        assert set(np.unique(mask).tolist()) <= {0, 255}
        assert 0.02 < (mask > 0).mean() < 0.9, i
        seen.add(synth.category_of(i, 0))
    assert seen == set(synth.CATEGORIES)


def test_size_changes_resolution_not_scene():
    _, small = synth.render(7, 32, 2)
    _, large = synth.render(7, 64, 2)
    down = cv2.resize(large, (32, 32), interpolation=cv2.INTER_AREA) >= 128
    assert np.mean(down == (small > 0)) > 0.95


def test_mug_handle_encloses_background():
    mugs = [(i, seed) for seed in range(3) for i in range(18) if synth.category_of(i, seed) == "mug"]
    assert mugs
    assert any(_has_enclosed_background(synth.render(i, 64, seed)[1]) for i, seed in mugs)


def test_splits_partition_the_names(tmp_path):
    root = synth.generate(tmp_path / "set", 10, 32, seed=0, val_fraction=0.3, progress=False)
    train = (root / "splits" / "train.txt").read_text().split()
    val = (root / "splits" / "val.txt").read_text().split()
    assert len(val) == 3
    assert not set(train) & set(val)
    assert sorted(train + val) == [f"{i:05d}" for i in range(10)]


def test_resume_fills_in_missing_files(tmp_path):
    root = synth.generate(tmp_path / "set", 3, 32, progress=False)
    before = _files(root)
    (root / "masks" / "00001.png").unlink()
    (root / "images" / "00002.png").unlink()
    synth.generate(root, 3, 32, progress=False)
    assert _files(root) == before


@pytest.mark.parametrize("kwargs", [
    {"count": 0}, {"count": -3}, {"count": 2.5}, {"size": 31}, {"size": 4096}, {"seed": -1},
    {"val_fraction": 1.0}, {"val_fraction": -0.1},
])
def test_bad_arguments(tmp_path, kwargs):
    args = {"count": 2, "size": 32, "seed": 0} | kwargs
    with pytest.raises(ValueError):
        synth.generate(tmp_path / "set", args.pop("count"), progress=False, **args)
    assert not (tmp_path / "set").exists()


def test_render_rejects_bad_size():
    with pytest.raises(ValueError, match="size"):
        synth.render(0, 16, 0)


def test_foreign_folder_is_left_alone(tmp_path):
    root = synth.generate(tmp_path / "set", 2, 32, seed=0, progress=False)
    before = _files(root)
    with pytest.raises(FileExistsError, match="choose a new --out or delete it") as err:
        synth.generate(root, 2, 32, seed=1, progress=False)
    assert str(root) in str(err.value)
    assert _files(root) == before

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="choose a new --out"):
        synth.generate(other, 2, 32, progress=False)
    assert _files(other) == {"notes.txt": b"mine"}
