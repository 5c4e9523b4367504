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


def _stems(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in io.list_images(folder):
        if p.stem in out:
            raise InputError(p, f"two files share the name {p.stem!r} ({out[p.stem].name} and {p.name})",
                             "keep one image per name")
        out[p.stem] = p
    return out


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
    images = _stems(img_dir)
    mask_files = _stems(mask_dir) if mask_dir.is_dir() else {}
    if masks and not mask_dir.is_dir():
        raise InputError(root, "no masks/ folder", "a labelled data set holds images/ and masks/")
    split_file = resolve_split(root, split)
    wanted = read_split(split_file) if split_file else sorted(images)
    problems = []
    missing_img = [n for n in wanted if n not in images]
    if missing_img:
        problems.append(f"{len(missing_img)} listed name(s) without an image: {_listing(missing_img)}")
    if masks:
        no_mask = [n for n in wanted if n in images and n not in mask_files]
        if no_mask:
            problems.append(f"{len(no_mask)} image(s) without a mask: {_listing(no_mask)}")
        if split_file is None:
            orphans = sorted(set(mask_files) - set(images))
            if orphans:
                problems.append(f"{len(orphans)} mask(s) without an image: {_listing(orphans)}")
    if problems:
        raise InputError(split_file or root, "; ".join(problems), "every image needs a mask of the same name")
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


def subset(items: Sequence[T], count: int | None, seed: int = 0) -> list[T]:
    """``count`` of ``items`` drawn reproducibly (numpy's generator seeded with ``seed``), kept in
    their original order; all of them when ``count`` is None or not smaller than their number."""
    if count is None or count >= len(items):
        return list(items)
    idx = sorted(int(i) for i in np.random.default_rng(seed).choice(len(items), size=count, replace=False))
    return [items[i] for i in idx]
