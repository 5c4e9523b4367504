"""The teachers' answers, computed once: the soft-label store distillation reads instead of
running its teachers every step.

For each training image a teacher's output on the whole image and on its mirror image, at the
teacher's own input size, is kept as float16 logits (clamped to +-16: float16 probabilities would
round a confident teacher to 0 or 1) in ``$EDGECUT_CACHE/soft-labels/<teacher key>/<image
sha256>.npy``. The key is the teacher's sha256 and spec, so a second run, a recipe step or
``edgecut optimize`` finds the same maps; an interrupted fill keeps every map it wrote.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgecut import io
from edgecut.data.folder import Sample, load_pair

STORE_VERSION = 1
LOGIT_LIMIT = 16.0  # stored logits are clamped to this: p = 1 - 1e-7 either way
FILL_BATCH = 8  # images per teacher call while filling (each with its mirror image)


def teacher_key(sha256: str, spec_json: str) -> str:
    """The store folder's name for a teacher: its model files and how it is fed."""
    return hashlib.sha256(f"{STORE_VERSION}\0{sha256}\0{spec_json}".encode()).hexdigest()[:32]


def image_key(path: Path) -> str:
    """An image's content hash (the name of its maps): renaming or moving it keeps its maps."""
    return io.sha256_file(path)


@dataclass(frozen=True)
class SoftLabels:
    """The stored maps of a data set's samples: ``labels(i)`` is sample ``i``'s array of shape
    (teachers, 2, H, W), float16 logits, plain then mirrored, memory-mapped."""

    files: tuple[tuple[Path, ...], ...]  # per sample, per teacher

    def __len__(self) -> int:
        return len(self.files)

    def __call__(self, index: int) -> list[np.ndarray]:
        return [np.load(p, mmap_mode="r") for p in self.files[index]]


def store_dir(teacher, root: Path | None = None) -> Path:
    """Where ``teacher``'s maps live (:class:`~edgecut.compress.distill.Teacher`)."""
    base = root or io.cache_dir() / "soft-labels"
    return base / teacher_key(teacher.sha256, teacher.spec.model_dump_json())


def _teacher_logits(teacher, images: list[np.ndarray], device: torch.device) -> np.ndarray:
    """The teacher's logits at its input size for ``images`` and their mirrors: (2, N, H, W) float16."""
    from edgecut.training.losses import as_logits

    x = teacher.spec.preprocess(images)
    both = torch.from_numpy(np.concatenate([x, x[..., ::-1]])).to(device)
    with torch.no_grad():
        out = as_logits(teacher.module(both), teacher.spec).float().clamp(-LOGIT_LIMIT, LOGIT_LIMIT)
    out = out[:, 0].cpu().numpy().astype(np.float16)
    return out.reshape(2, len(images), *out.shape[-2:])


def fill(teachers: Sequence, samples: Sequence[Sample], *, device: torch.device | str = "cpu",
         root: Path | None = None, progress: bool = True) -> SoftLabels:
    """Every sample's maps from every teacher, computing only those not stored yet."""
    from edgecut.progress import Tracker

    device = torch.device(device)
    keys = [image_key(s.image) for s in samples]
    files = []
    for t in teachers:
        folder = io.make_dirs(store_dir(t, root))
        meta = folder / "teacher.json"
        if not meta.is_file():
            io.write_json(meta, {"source": t.source, "sha256": t.sha256, "spec": json.loads(t.spec.model_dump_json()),
                                 "store_version": STORE_VERSION, "logit_limit": LOGIT_LIMIT})
        paths = [folder / f"{k}.npy" for k in keys]
        first = {k: i for i, k in reversed(list(enumerate(keys)))}  # the same image twice is computed once
        todo = [i for i in first.values() if not paths[i].is_file()]
        todo.sort()
        with Tracker(f"teacher's answers ({Path(t.source).name})", len(todo), enabled=progress and bool(todo),
                     transient=False) as bar:
            for start in range(0, len(todo), FILL_BATCH):
                chunk = todo[start:start + FILL_BATCH]
                maps = _teacher_logits(t, [load_pair(samples[i])[0] for i in chunk], device)
                for j, i in enumerate(chunk):
                    with io.atomic_path(paths[i]) as tmp:
                        with open(tmp, "wb") as f:
                            np.save(f, np.ascontiguousarray(maps[:, j]))
                bar.advance(len(chunk))
        files.append(paths)
    return SoftLabels(tuple(zip(*files)) if files else ())
