"""How a search measures a candidate: ``edgecut bench`` here for accuracy, and on the target for speed.

- Accuracy: val IoU on the search images, at each image's own resolution, through this machine's
  Runner of the artifact (``bench`` with data).
- Speed on a local target: that record's model-only p50 (ms) at each thread count tried; the
  fastest is the candidate's. On ``arm64-emu``: guest instructions per inference (one thread, one
  inference, exact; not device time) from ``bench --target``, whose parity against this machine's
  outputs is kept beside it. On an ssh device: the device's p50.
- The model itself and the classical baselines run only here: their speed is this machine's.

Records go to ``out/measure/NAME.jsonl`` (and ``NAME-TARGET.jsonl``); a rerun resumes them.
"""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgecut import io
from edgecut.errors import EdgecutError
from edgecut.search.config import OptimizeConfig
from edgecut.search.state import Row, Splits


def prepare_splits(data: Path, folder: Path, config: OptimizeConfig) -> Splits:
    """The search and held-out image lists: the val split halved (every other image), or ``config.holdout``."""
    from edgecut.data.folder import find_samples

    val = config.val_split or ("val" if (data / "splits" / "val.txt").is_file() else None)
    names = [s.name for s in find_samples(data, val)]
    if config.holdout is not None:
        held = [s.name for s in find_samples(data, config.holdout)]
        search = [n for n in names if n not in set(held)]
    else:
        search, held = names[0::2], names[1::2]
    if len(search) < 2 or len(held) < 1:
        raise EdgecutError(f"{data}: {len(names)} validation image(s) is too few to search on and hold out; "
                           "give at least 3 (splits/val.txt), or --holdout with images of its own")
    io.make_dirs(folder)
    paths = {}
    for label, listed in (("search", search), ("holdout", held)):  # named by content: searches sharing a steps
        text = "\n".join(listed) + "\n"  # folder find the same file, so their steps' keys agree
        path = folder / f"{label}-{hashlib.sha256(text.encode()).hexdigest()[:12]}.txt"
        paths[label] = path if path.is_file() else io.write_text(path, text)
    train = "train" if (data / "splits" / "train.txt").is_file() else None
    return Splits(paths["search"], paths["holdout"], train, {"search": len(search), "holdout": len(held)})


class Measurer:
    def __init__(self, out: Path, data: Path, config: OptimizeConfig, splits: Splits, *, progress: bool,
                 say: Callable[[str], None]) -> None:
        from edgecut.targets.profiles import load_profile

        self.out, self.data, self.config, self.splits, self.progress, self.say = out, data, config, splits, progress, say
        self.where = None
        if config.target == "arm64-emu":
            from edgecut.measure.target import resolve

            self.where = resolve("arm64-emu")
            self.profile = self.where.profile
        else:
            self.profile = load_profile(config.target)
            if self.profile.reach != "local":
                from edgecut.measure.target import resolve

                self.where = resolve(config.target)
            elif self.profile.arch != platform.machine():
                raise EdgecutError(f"{self.profile.name} is an {self.profile.arch} device and this machine is "
                                   f"{platform.machine()}: give its profile a reach (ssh://user@host), or search with "
                                   "--target arm64-emu (instruction counts of the emulated Cortex-A76)")
        self.formats = self._formats()
        if not self.formats:
            raise EdgecutError(f"{self.profile.name}: none of its formats ({', '.join(self.profile.formats)}) can be "
                               "made from a torch model and measured here")

    def _formats(self) -> list[str]:
        from edgecut.formats import BUNDLED, FORMATS

        runnable = BUNDLED if self.where is not None else [n for n, f in FORMATS.items() if f.backend]
        unknown = [f for f in self.config.formats if f not in self.profile.formats]
        if unknown:
            raise EdgecutError(f"--formats {','.join(unknown)}: {self.profile.name} runs {', '.join(self.profile.formats)}")
        return [f for f in self.profile.formats if f in FORMATS and "torch" in FORMATS[f].parents and f in runnable
                and (not self.config.formats or f in self.config.formats)]

    def methods(self, fmt: str | None = None) -> list[str]:
        """After the FP32 anchor: the profile's other precisions in its order (int8 as post-training INT8), those
        ``fmt`` holds."""
        from edgecut.formats import FORMATS

        held = FORMATS[fmt].precisions if fmt else ("fp16", "int8")
        return [{"int8": "ptq"}.get(p, p) for p in self.profile.precisions if p != "fp32" and p in held]

    @property
    def unit(self) -> str:
        return "ms" if self.where is None or not self.where.emulated else "M instructions"

    def settings(self) -> dict[str, Any]:
        """What a measurement depends on (part of every candidate's digest)."""
        c = self.config
        return {"target": c.target, "threads": list(self.thread_counts()), "min_time_s": c.min_time_s,
                "search": self.splits.search.read_text(encoding="utf-8"), "arm_images": c.arm_images}

    def thread_counts(self) -> tuple[int | None, ...]:
        return tuple(self.config.threads) or (self.profile.threads,)

    def measure(self, cand, path: Path, label: str) -> Row:
        """Measure the artifact at ``path`` as candidate ``cand``; its row."""
        from edgecut.artifact import load_artifact
        from edgecut.measure.bench import bench, model_size_mb
        from edgecut.measure.config import BenchConfig
        from edgecut.measure.record import Hooks
        from edgecut.runtime.timing import LatencyConfig

        art = load_artifact(path)
        size = (cand.size, cand.size) if cand.size else None
        latency = LatencyConfig(warmup_s=0.2, warmup_min=3, min_time_s=self.config.min_time_s, min_iters=10)
        here_threads = self.thread_counts() if self.where is None else (self.profile.threads,)
        records = bench([art], self.out / "measure" / f"{cand.name}.jsonl", BenchConfig(
            threads=here_threads, size=size, latency=latency, end_to_end=False, worst=0, max_wait_s=30.0,
            data=self.data, split=str(self.splits.search)), names=[cand.name], resume=True, progress=False,
            hooks=Hooks(say=self.say)).records or _recorded(self.out / "measure" / f"{cand.name}.jsonl")
        fastest = min(records, key=lambda r: r.latency.p50_ms)
        parity = art.manifest.metrics.get("parity", {})
        row = Row.of(cand, label, iou=float(fastest.accuracy.metrics["iou"]), cost=fastest.latency.p50_ms,
                     unit="ms" if self.where is None else "ms (this machine)", local_ms=fastest.latency.p50_ms,
                     threads=fastest.threads, size_mb=round(model_size_mb(art), 3), artifact=str(path),
                     agreement=parity.get("mask_iou_mean") if isinstance(parity, dict) else None)
        if self.where is not None and label == "candidate":
            row.cost, row.unit, row.threads = self._on_target(cand, art), self.unit, self.profile.threads
        return row

    def _on_target(self, cand, art) -> float:
        from dataclasses import replace

        from edgecut.measure.config import BenchConfig
        from edgecut.measure.record import Hooks
        from edgecut.measure.target import bench_on_target

        where = self.where
        out = self.out / "measure" / f"{cand.name}-{where.profile.name}.jsonl"
        rec = (bench_on_target([art], out, BenchConfig(data=self.data, split=str(self.splits.search),
                                                       limit=self.config.arm_images, worst=0),
                               replace(where, count_iters=1), resume=True, names=[cand.name], progress=False,
                               hooks=Hooks(say=lambda s: self.say("  " + s))).records or _recorded(out))[-1]
        if where.emulated:
            return rec.instructions.per_inference / 1e6
        return rec.latency.p50_ms


def _recorded(path: Path):
    """The records a resumed bench skipped (measured by an earlier run into ``path``)."""
    from edgecut.measure.record import read_records

    return read_records(path)
