"""Composites: real foregrounds on other photos' backgrounds, with the pasted mask, the same bytes every time."""

from __future__ import annotations

import numpy as np
import pytest

from edgecut import io
from edgecut.data.composite import composite
from edgecut.data.config import CompositeConfig
from edgecut.data.folder import find_samples, load_pair
from edgecut.errors import InputError


def test_composites_are_reproducible_labelled_pairs(synth_data, tmp_path):
    a = composite(synth_data, tmp_path / "a", CompositeConfig(count=6, seed=2), progress=False)
    b = composite(synth_data, tmp_path / "b", CompositeConfig(count=6, seed=2), progress=False)
    pairs = find_samples(a)
    assert len(pairs) == 6
    for s in pairs:
        image, mask = load_pair(s)
        assert image.shape[:2] == mask.shape and set(np.unique(mask)) <= {0, 255} and (mask == 255).any()
        assert (b / "images" / s.image.name).read_bytes() == s.image.read_bytes()


def test_the_mask_is_where_the_foreground_was_pasted(synth_data, tmp_path):
    """On a plain grey backdrop, the pixels that changed are the pasted foreground."""
    back = tmp_path / "backs"
    io.write_image(back / "images" / "grey.png", np.full((48, 48, 3), 128, np.uint8))
    out = composite(synth_data, tmp_path / "c", CompositeConfig(count=4, backgrounds=str(back)), progress=False)
    for s in find_samples(out):
        image, mask = load_pair(s)
        import cv2

        changed = np.abs(image.astype(int) - 128).max(axis=2) > 12
        inside = mask == 255
        near = cv2.dilate(mask, np.ones((5, 5), np.uint8)) == 255  # the feathered edge reaches a pixel further
        assert changed[inside].mean() > 0.6 and not changed[~near].any()


def test_a_folder_of_other_settings_is_refused(synth_data, tmp_path):
    composite(synth_data, tmp_path / "c", CompositeConfig(count=2), progress=False)
    composite(synth_data, tmp_path / "c", CompositeConfig(count=2), progress=False)  # the same: completed
    with pytest.raises(InputError, match="other settings"):
        composite(synth_data, tmp_path / "c", CompositeConfig(count=3), progress=False)


def test_the_teacher_labels_several_folders_of_extra_images(synth_data, tmp_path, tiny_artifact):
    from edgecut.compress.config import DistillConfig
    from edgecut.compress.distill import distill
    from edgecut.training.config import LoopConfig

    extra = composite(synth_data, tmp_path / "composites", CompositeConfig(count=8), progress=False)
    config = DistillConfig(student="unet", student_kwargs={"width": 2, "depth": 2}, size=32,
                           unlabeled=(str(extra), str(synth_data)), loop=LoopConfig(epochs=1, batch_size=8))
    art = distill([tiny_artifact.path], synth_data, tmp_path / "student", config, progress=False)
    params = art.manifest.lineage[-1].params
    assert params["unlabeled"] == [str(extra), str(synth_data)] and params["unlabeled_images"] == 8 + 24
