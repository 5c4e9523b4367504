"""Accuracy of a Runner (or of saved prediction maps) on a folder data set.

Every image goes through ``ModelSpec.preprocess`` at the spec's input size; the prediction
is resized back to the image's own size and scored there with every metric of
:mod:`edgecut.metrics`. Per-image scores are kept so the worst images can be listed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecut import io
from edgecut.artifact import ModelSpec
from edgecut.data.folder import Sample, check_pairs, load_pair
from edgecut.errors import InputError, NonFiniteOutput
from edgecut.metrics import MAX_F_CONVENTION, SegMetrics


@dataclass
class EvalResult:
    metrics: dict[str, float]
    per_image: list[dict[str, Any]] = field(default_factory=list)
    count: int = 0

    def worst(self, k: int = 5, key: str = "iou") -> list[dict[str, Any]]:
        return sorted(self.per_image, key=lambda r: r.get(key, 0.0))[:k]

    def to_json(self, **extra: Any) -> dict[str, Any]:
        return {"metrics": self.metrics, "count": self.count, "max_f_convention": MAX_F_CONVENTION,
                "per_image": self.per_image, **extra}


def is_eval_json(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds scores ``edgecut eval --json`` wrote (:meth:`EvalResult.to_json`)."""
    try:
        data = io.read_json(path)
    except InputError:
        return False
    return isinstance(data, dict) and {"metrics", "count", "max_f_convention", "per_image"} <= data.keys()


def _progress(enabled: bool, total: int, what: str):
    from edgecut.progress import Tracker

    return Tracker(what, total, enabled=enabled)


def evaluate(runner, samples: Sequence[Sample], *, batch_size: int = 1, composites: bool = True,
             progress: bool = True, on_output: Callable[[Sample, np.ndarray], None] | None = None,
             normalize: bool = False, check: bool = True) -> EvalResult:
    """Run every sample through ``runner`` and score it at the image's own resolution.

    ``on_output(sample, probability)`` sees each prediction at the model's input size (e.g. to
    compare it with a reference model's) without a second pass. ``normalize``: min-max normalise
    each prediction first (as SOD toolboxes score saliency maps). ``check``: decode every pair
    first and list all unusable ones at once (:func:`~edgecut.data.folder.check_pairs`).
    """
    if check:
        check_pairs(samples, progress=progress)
    spec = runner.spec
    acc = SegMetrics(threshold=spec.threshold, normalize=normalize)
    prog = _progress(progress, len(samples), "evaluating")
    with prog:
        for start in range(0, len(samples), batch_size):
            chunk = samples[start : start + batch_size]
            pairs = [load_pair(s) for s in chunk]
            try:
                probs = spec.to_probability(runner(spec.preprocess([img for img, _ in pairs])))
            except NonFiniteOutput as e:
                where = getattr(runner, "path", None) or "the model"
                raise NonFiniteOutput(f"{where}: {e} (image {chunk[0].name}"
                                      f"{f' and {len(chunk) - 1} more' if len(chunk) > 1 else ''})") from None
            for s, (img, mask), prob in zip(chunk, pairs, probs):
                if on_output is not None and mask is not None:
                    on_output(s, prob)
                _score(acc, spec, s, img, mask, prob, composites)
            prog.advance(len(chunk))
    return EvalResult(acc.results(), acc.per_image, len(samples))


def evaluate_outputs(spec: ModelSpec, samples: Sequence[Sample], outputs: dict[str, np.ndarray], *,
                     composites: bool = True, progress: bool = True) -> EvalResult:
    """Score raw model outputs computed elsewhere (a target's runner), keyed by image file name,
    exactly as :func:`evaluate` scores a Runner's: probability, resized back, at the image's size."""
    check_pairs(samples, progress=progress)
    acc = SegMetrics(threshold=spec.threshold)
    prog = _progress(progress, len(samples), "scoring")
    with prog:
        for s in samples:
            if s.image.name not in outputs:
                raise InputError(s.image, "has no output from the target", "run it again; the runner skipped it")
            img, mask = load_pair(s)
            _score(acc, spec, s, img, mask, spec.to_probability(outputs[s.image.name])[0], composites)
            prog.advance()
    return EvalResult(acc.results(), acc.per_image, len(samples))


def _score(acc: SegMetrics, spec: ModelSpec, s: Sample, img: np.ndarray, mask: np.ndarray | None,
           prob: np.ndarray, composites: bool) -> None:
    """One image's prediction at the model's input size, resized back and scored at the image's own."""
    if mask is None:
        raise InputError(s.image, "has no mask", "evaluation needs masks/ beside images/")
    acc.update(spec.resize_back(prob, img.shape[:2]), mask, image=img if composites else None, name=s.name)


def evaluate_predictions(pred_dir: str | os.PathLike, samples: Sequence[Sample], *, composites: bool = True,
                         progress: bool = True, normalize: bool = False) -> EvalResult:
    """Score saved prediction maps (8-bit PNG, same names as the images) against the masks.

    Maps of another size are resized to the mask's size, as the SOD toolboxes do; ``normalize``
    min-max normalises each map first, as they do too (published saliency maps expect it).
    """
    check_pairs(samples, progress=progress)
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise InputError(pred_dir, "prediction folder not found")
    by_stem = {p.stem: p for p in io.list_images(pred_dir)}
    missing = [s.name for s in samples if s.name not in by_stem]
    if missing:
        shown = ", ".join(missing[:5]) + (f" ... and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise InputError(pred_dir, f"{len(missing)} prediction map(s) missing: {shown}",
                         "save one map per image, named like the image")
    acc = SegMetrics(normalize=normalize)
    prog = _progress(progress, len(samples), "scoring")
    with prog:
        for s in samples:
            img, mask = load_pair(s)
            pred = io.read_mask(by_stem[s.name], note=False).astype(np.float32) / 255.0
            if pred.shape != mask.shape:
                pred = np.clip(ModelSpec.resize_back(pred, mask.shape), 0.0, 1.0)
            acc.update(pred, mask, image=img if composites else None, name=s.name)
            prog.advance()
    return EvalResult(acc.results(), acc.per_image, len(samples))
