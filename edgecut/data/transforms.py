"""Joint image + mask transforms (torchvision transforms v2) and the training data set.

Training augmentation follows the seed articles: random resized crop, horizontal flip, a
small rotation and colour jitter, then scaling and mean/std normalisation taken from the
:class:`~edgecut.artifact.ModelSpec`. Evaluation uses ``ModelSpec.preprocess`` itself, so
validation sees exactly what a deployed model sees.

Randomness is a pure function of (seed, epoch, index): every sample is augmented under its
own seeded RNG, so an interrupted run resumes bit for bit and data-loader workers change
nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from torchvision import tv_tensors
from torchvision.transforms import v2

from edgecut.artifact import ModelSpec
from edgecut.data.folder import Sample, load_pair


@dataclass(frozen=True)
class AugmentConfig:
    scale: tuple[float, float] = (0.5, 1.0)  # area range of RandomResizedCrop
    hflip: float = 0.5  # probability of a horizontal flip
    rotation: float = 10.0  # max degrees either way
    jitter: float = 0.25  # brightness, contrast and saturation jitter
    hue: float = 0.02


def train_transform(spec: ModelSpec, aug: AugmentConfig = AugmentConfig()) -> v2.Compose:
    """Joint transform on (tv_tensors.Image uint8, tv_tensors.Mask uint8)."""
    return v2.Compose([
        v2.RandomResizedCrop(spec.input_size, scale=aug.scale, antialias=True),
        v2.RandomHorizontalFlip(aug.hflip),
        v2.RandomRotation(aug.rotation, fill={tv_tensors.Image: 255, tv_tensors.Mask: 0}),
        v2.ColorJitter(aug.jitter, aug.jitter, aug.jitter, aug.hue),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(spec.mean), list(spec.std)),
    ])


class SoftLabel(tv_tensors.Image):
    """Teacher logits riding along an image's geometric augmentation (bilinear, as the image; filled
    with a sure background where a rotation uncovers the corners)."""


def soft_label_transforms(spec: ModelSpec, aug: AugmentConfig, fill: float) -> tuple[v2.Compose, v2.Compose]:
    """(geometric, photometric) for training with stored teacher maps: the crop and rotation move the
    image, its mask and the teachers' maps alike; the colours change the image alone. The mirror is
    decided before them (a stored map exists for the mirror image)."""
    geometric = v2.Compose([
        v2.RandomResizedCrop(spec.input_size, scale=aug.scale, antialias=True),
        v2.RandomRotation(aug.rotation, fill={tv_tensors.Image: 255, tv_tensors.Mask: 0, SoftLabel: fill}),
    ])
    photometric = v2.Compose([
        v2.ColorJitter(aug.jitter, aug.jitter, aug.jitter, aug.hue),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(spec.mean), list(spec.std)),
    ])
    return geometric, photometric


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


SOFT_FILL = -16.0  # a stored teacher logit where rotation leaves no image: certain background


class SegmentationDataset(Dataset):
    """Samples -> dict(image=float CHW normalised, mask=float 1xHxW in {0,1}, index=int,
    labeled=float 1 or 0).

    Items are addressed by (epoch, index) pairs from :class:`EpochBatchSampler`, so the
    augmentation of a sample depends only on the seed, the epoch and the index. With
    ``unlabeled=True`` samples without a mask are allowed (distillation labels them with
    its teachers): their mask is all zeros and ``labeled`` is 0. With ``soft_labels`` (a
    callable index -> one array (2, h, w) of stored logits per teacher: whole image, mirror
    image) a training item also holds ``teacher``: those logits moved with the image, teachers x H x W.
    """

    def __init__(self, samples: Sequence[Sample], spec: ModelSpec, train: bool, seed: int = 0,
                 aug: AugmentConfig = AugmentConfig(), cache: bool = False, unlabeled: bool = False,
                 soft_labels: Callable[[int], list[np.ndarray]] | None = None) -> None:
        self.samples = list(samples)
        self.spec = spec
        self.train = train
        self.seed = seed
        self.unlabeled = unlabeled
        self.aug = aug
        self.transform = train_transform(spec, aug) if train else None
        self.soft_labels = soft_labels if train else None
        self.soft_transforms = soft_label_transforms(spec, aug, SOFT_FILL) if self.soft_labels else None
        self.cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        image, mask = load_pair(self.samples[index])
        if mask is None and not self.unlabeled:
            raise ValueError(f"{self.samples[index].image}: no mask (training needs labelled data)")
        if self.cache is not None:
            self.cache[index] = (image, mask)
        return image, mask

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor | int]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        image, mask = self._load(index)
        labeled = torch.tensor(float(mask is not None))
        if mask is None:
            mask = np.zeros(image.shape[:2], np.uint8)
        if not self.train:
            x = torch.from_numpy(self.spec.preprocess(image)[0])
            h, w = self.spec.input_size
            import cv2

            m = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
            return {"image": x, "mask": torch.from_numpy(m > 127).float()[None], "index": index, "labeled": labeled}
        if self.soft_labels is not None:
            return self._with_soft_labels(epoch, index, image, mask, labeled)
        img_t = tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1))
        mask_t = tv_tensors.Mask(torch.from_numpy(mask)[None])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, epoch, index))
            img_t, mask_t = self.transform(img_t, mask_t)
        return {"image": img_t.as_subclass(torch.Tensor), "mask": (mask_t.as_subclass(torch.Tensor) > 127).float(),
                "index": index, "labeled": labeled}


    def _with_soft_labels(self, epoch: int, index: int, image: np.ndarray, mask: np.ndarray,
                          labeled: torch.Tensor) -> dict[str, torch.Tensor | int]:
        """A training item whose teachers' stored maps move exactly as the image and its mask."""
        import cv2

        geometric, photometric = self.soft_transforms  # type: ignore[misc]
        h, w = image.shape[:2]
        maps = self.soft_labels(index)  # type: ignore[misc]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, epoch, index))
            mirror = bool(torch.rand(()) < self.aug.hflip)
            if mirror:  # the teachers' answers on the mirror image are stored as such
                image, mask = image[:, ::-1], mask[:, ::-1]
            side = 1 if mirror else 0
            soft = np.stack([cv2.resize(np.asarray(m[side], np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
                             for m in maps])
            img_t = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
            mask_t = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(mask))[None])
            img_t, mask_t, soft_t = geometric(img_t, mask_t, SoftLabel(torch.from_numpy(soft)))
            img_t = photometric(img_t)
        return {"image": img_t.as_subclass(torch.Tensor), "mask": (mask_t.as_subclass(torch.Tensor) > 127).float(),
                "teacher": soft_t.as_subclass(torch.Tensor).float(), "index": index, "labeled": labeled}


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of (epoch, index) for one epoch: a seeded shuffle, an optional rank shard
    (``shard``: this process's rank and the world size, as :func:`edgecut.training.distributed.world`
    gives them), and a start batch for resuming in the middle of an epoch."""

    def __init__(self, n: int, batch_size: int, epoch: int, seed: int = 0, shuffle: bool = True,
                 drop_last: bool = True, start_batch: int = 0, shard: tuple[int, int] = (0, 1)) -> None:
        self.n, self.batch_size, self.epoch, self.seed = n, batch_size, epoch, seed
        self.shuffle, self.drop_last, self.start_batch = shuffle, drop_last, start_batch
        self.rank, self.world_size = shard

    def _order(self) -> list[int]:
        if not self.shuffle:
            order = list(range(self.n))
        else:
            g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, 2**32 - 1))
            order = torch.randperm(self.n, generator=g).tolist()
        per_rank = self.n // self.world_size if self.drop_last else -(-self.n // self.world_size)
        order = (order * 2)[: per_rank * self.world_size]  # pad by wrapping when not dropping
        return order[self.rank :: self.world_size]

    def num_batches(self) -> int:
        k = len(self._order())
        return k // self.batch_size if self.drop_last else -(-k // self.batch_size)

    def __len__(self) -> int:
        return max(0, self.num_batches() - self.start_batch)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = self._order()
        for b in range(self.start_batch, self.num_batches()):
            yield [(self.epoch, i) for i in order[b * self.batch_size : (b + 1) * self.batch_size]]
