"""Folder data sets: ``images/`` + ``masks/`` with matching names, optional split files.

The layout of DUTS, DIS5K, ECSSD and a user's own catalogue::

    root/images/<name>.jpg     any common image format
    root/masks/<name>.png      8-bit, 0 background .. 255 foreground
    root/splits/train.txt      optional: one name per line (extension optional)

Images without masks, masks without images, and names listed in a split but absent are
reported together in one error that names them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

T = TypeVar("T")

from edgecut import io
from edgecut.errors import InputError

_SHOW = 5  # names shown in an error before "... and N more"


@dataclass(frozen=True)
class Sample:
    name: str
    image: Path
    mask: Path | None


def _stems(folder: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Name -> file of the images directly in ``folder``, and name -> a line for each entry named
    like an image that is no plain file (a folder, a FIFO, a broken or looping link)."""
    out: dict[str, Path] = {}
    files, odd = io.image_entries(folder)
    for p in files:
        if p.stem in out:
            raise InputError(p, f"two files share the name {p.stem!r} ({out[p.stem].name} and {p.name})",
                             "keep one image per name")
        out[p.stem] = p
    return out, {p.stem: f"{p.parent.name}/{p.name} is {problem}" for p, problem in odd}


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    return shown + (f" ... and {len(names) - _SHOW} more" if len(names) > _SHOW else "")


def read_split(path: str | os.PathLike) -> list[str]:
    """Names in a split file: one per line, blank lines and # comments ignored, extension dropped."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "split file not found")
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(Path(line).stem if Path(line).suffix.lower() in io.IMAGE_SUFFIXES else line)
    if not names:
        raise InputError(path, "split file lists no names")
    return names


def resolve_split(root: Path, split: str | os.PathLike | None) -> Path | None:
    """A split given as a file path, or as a bare name such as 'val' meaning root/splits/val.txt."""
    if split is None:
        return None
    p = Path(split)
    if p.is_file():
        return p
    named = root / "splits" / f"{split}.txt"
    if named.is_file():
        return named
    raise InputError(p, "split file not found", f"give a file path or a name with {root}/splits/<name>.txt")


def find_samples(root: str | os.PathLike, split: str | os.PathLike | None = None,
                 masks: bool = True) -> list[Sample]:
    """Pair images with masks under ``root``; with ``masks=False`` masks are optional."""
    root = Path(root)
    img_dir, mask_dir = root / "images", root / "masks"
    if not img_dir.is_dir():
        raise InputError(root, "no images/ folder", "a data set holds images/ and masks/ with matching names")
    images, odd = _stems(img_dir)
    mask_files, odd_masks = _stems(mask_dir) if mask_dir.is_dir() else ({}, {})
    if masks and not mask_dir.is_dir():
        raise InputError(root, "no masks/ folder", "a labelled data set holds images/ and masks/")
    split_file = resolve_split(root, split)
    wanted = read_split(split_file) if split_file else sorted(images)
    names = set(wanted) if split_file else {*images, *odd, *mask_files, *odd_masks}
    lines = [line for found in (odd, odd_masks if masks else {}) for n, line in sorted(found.items()) if n in names]
    unusable = {n for found in (odd, odd_masks if masks else {}) for n in found if n in names}
    problems = []
    if lines:  # one line each, not "a mask without an image"
        problems.append(f"{len(lines)} entr{'y is' if len(lines) == 1 else 'ies are'} named like images but no "
                        f"image file{'s' if len(lines) > 1 else ''}: {_listing(lines)}")
    missing_img = [n for n in wanted if n not in images and n not in unusable]
    if missing_img:
        problems.append(f"{len(missing_img)} listed name(s) without an image: {_listing(missing_img)}")
    if masks:
        no_mask = [n for n in wanted if n in images and n not in mask_files and n not in unusable]
        if no_mask:
            problems.append(f"{len(no_mask)} image(s) without a mask: {_listing(no_mask)}")
        if split_file is None:
            orphans = sorted(set(mask_files) - set(images) - unusable)
            if orphans:
                problems.append(f"{len(orphans)} mask(s) without an image: {_listing(orphans)}")
    if problems:
        raise InputError(split_file or root, "; ".join(problems), "every image needs a mask of the same name"
                         + (", and every entry of images/ and masks/ must be a plain file" if unusable else ""))
    if not wanted:
        raise InputError(img_dir, "holds no images")
    return [Sample(n, images[n], mask_files.get(n)) for n in wanted]


def load_pair(sample: Sample) -> tuple[np.ndarray, np.ndarray | None]:
    """Read one image (HxWx3 uint8 RGB) and its mask (HxW uint8), checking they match in size."""
    image = io.read_image(sample.image)
    if sample.mask is None:
        return image, None
    mask = io.read_mask(sample.mask)
    if mask.shape != image.shape[:2]:
        raise InputError(sample.mask, f"mask is {mask.shape[1]}x{mask.shape[0]} but its image "
                         f"{sample.image.name} is {image.shape[1]}x{image.shape[0]}",
                         "masks must have their image's size")
    return image, mask


def check_pairs(samples: Sequence[Sample], *, progress: bool = True, what: str = "checking images") -> None:
    """Decode every image and mask before any work starts (in parallel) and list every pair that
    cannot be used in one error, instead of stopping on the first, mid-run."""
    from concurrent.futures import ThreadPoolExecutor

    from edgecut.progress import Tracker

    def problem(sample: Sample) -> str | None:
        try:
            load_pair(sample)
        except InputError as e:
            return str(e)
        return None

    workers = min(8, os.cpu_count() or 1)  # decoding releases the GIL
    with Tracker(what, len(samples), enabled=progress and len(samples) >= 50) as bar, \
            ThreadPoolExecutor(workers) as pool:
        found = []
        for issue in pool.map(problem, samples):
            bar.advance()
            if issue:
                found.append(issue)
    if found:
        raise InputError(None, f"{len(found)} of {len(samples)} image/mask pair(s) cannot be used: "
                         + "; ".join(found), "fix or remove them, then run again")


@dataclass
class DataCheck:
    """What :func:`check_data` found: the pairs, the masks not in 8-bit grayscale (read by
    :data:`edgecut.io.MASK_RULE`) with their encoding, and every pair that cannot be used."""

    samples: list[Sample]
    encodings: dict[Path, str]  # mask -> colour | alpha | wide | binary (gray ones are not listed)
    unusable: list[str]  # one line each, naming the file


def check_data(root: str | os.PathLike, split: str | os.PathLike | None = None) -> DataCheck:
    """Every image and mask of ``root`` decoded: what ``edgecut data check`` lists."""
    from concurrent.futures import ThreadPoolExecutor

    samples = find_samples(root, split)

    def look(sample: Sample) -> tuple[str | None, str | None]:
        try:
            image = io.read_image(sample.image)
            mask, encoding = io.decode_mask(sample.mask)
        except InputError as e:
            return None, str(e)
        if mask.shape != image.shape[:2]:
            return encoding, (f"{sample.mask}: mask is {mask.shape[1]}x{mask.shape[0]} but its image "
                              f"{sample.image.name} is {image.shape[1]}x{image.shape[0]}")
        return encoding, None

    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        found = list(pool.map(look, samples))
    return DataCheck(samples, {s.mask: enc for s, (enc, _) in zip(samples, found) if enc not in (None, "gray")},
                     [problem for _, problem in found if problem])


def subset(items: Sequence[T], count: int | None, seed: int = 0) -> list[T]:
    """``count`` of ``items`` drawn reproducibly (numpy's generator seeded with ``seed``), kept in
    their original order; all of them when ``count`` is None or not smaller than their number."""
    if count is None or count >= len(items):
        return list(items)
    idx = sorted(int(i) for i in np.random.default_rng(seed).choice(len(items), size=count, replace=False))
    return [items[i] for i in idx]
