"""How ``bench`` measures: :class:`BenchConfig` (light: no torch, so a recipe is checked in a fraction of a second)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from edgecut.errors import EdgecutError
from edgecut.formats import BACKENDS
from edgecut.measure.latency import KEEP_QUANTILE, min_ci_runs
from edgecut.runtime.timing import LatencyConfig


@dataclass(frozen=True)
class BenchConfig:
    """How every model of one ``bench`` call is measured."""

    backend: str | None = None  # None: the artifact format's own backend
    device: str = "cpu"
    threads: tuple[int | None, ...] = (None,)  # one record per entry; None: the backend's default (all CPUs)
    batch: int = 1  # batch of the latency measurement
    batches: tuple[int, ...] = ()  # throughput also at these batch sizes
    size: tuple[int, int] | None = None  # input (H, W); None: each model's ModelSpec size
    latency: LatencyConfig = LatencyConfig()
    end_to_end: bool = True  # also time the whole cut-out of one image file
    accuracy_batch: int = 1
    worst: int = 6  # worst images kept per record (their cut-outs saved)
    isolate: bool = True  # latency in a fresh process per record (False: in this process; tests, debugging)
    repeats: int = 1  # worker runs per record, interleaved across records; the run at the `keep` quantile of
    # their p50s is kept, and runs apart by > latency.REPEAT_SPREAD flag it
    keep: float = KEEP_QUANTILE  # 0.5: the median run
    precision: float | None = None  # after `repeats` runs, go on until the p50's 95% interval is within +-this
    # fraction of it (edgecut.measure.latency.quantile_ci) ...
    max_repeats: int = 20  # ... or this many runs (then the record is flagged unstable)
    canary: bool = True  # CPU: sample the parallel-speedup canary around each run (edgecut.measure.canary)
    max_wait_s: float = 120.0  # per record: wait at most this long for a busy machine (0: never wait, only flag)
    target: str = "local"
    data: str | os.PathLike | None = None  # data set (images/ + masks/) for accuracy; None: latency only
    split: str | None = None  # split file or name of data
    limit: int | None = None  # score only the first N images
    reference: str | os.PathLike | None = None  # artifact every model's outputs are compared with (needs data)

    def validate(self) -> None:
        if self.backend is not None and self.backend not in BACKENDS:
            raise EdgecutError(f"backend {self.backend!r}: use one of {', '.join(BACKENDS)}")
        if self.repeats < 1:
            raise EdgecutError(f"repeats must be at least 1, got {self.repeats}")
        if self.precision is not None and not 0 < self.precision < 1:
            raise EdgecutError(f"precision must be between 0 and 100% of the p50, got {self.precision:.0%} (a fraction "
                               "here, 0.02 for +-2%; a percent on the command line, --precision 2)")
        if not 0 < self.keep < 1:
            raise EdgecutError(f"keep (--keep) is the quantile of the runs' p50s kept, between 0 and 1 "
                               f"(0.5: the median); got {self.keep}")
        least = min_ci_runs(self.keep)
        if self.precision is not None and self.max_repeats < max(self.repeats, least):
            raise EdgecutError(f"max_repeats (--max-repeats) {self.max_repeats} cannot reach a precision: it takes "
                               f"at least {max(self.repeats, least)} runs (repeats, and {least} for a 95% interval)")
        if self.max_wait_s < 0:
            raise EdgecutError(f"max_wait_s must be 0 or more, got {self.max_wait_s}")
        if self.batch < 1 or any(b < 1 for b in self.batches):
            raise EdgecutError("batch sizes must be at least 1")
        if any(t is not None and t < 1 for t in self.threads):
            raise EdgecutError(f"threads must be at least 1, got {self.threads}")
        if self.size is not None and min(self.size) < 1:
            raise EdgecutError(f"input size must be positive, got {self.size}")
        if self.data is None and (self.split is not None or self.limit is not None):
            raise EdgecutError("--split and --limit choose images of --data: give --data too")
        if self.reference is not None and self.data is None:
            raise EdgecutError("--reference compares outputs on the --data images: give --data too")
