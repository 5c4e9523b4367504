"""Latency of a callable: warm-up by time and count, then timed calls for a minimum time and count.

The first call is timed on its own (it pays for lazy initialisation, allocation and kernel
selection) and reported separately, outside the distribution. Percentiles use numpy's linear
interpolation. The plain coefficient of variation (std / mean) is reported, but the unstable
flag uses its robust form, 1.4826 x MAD / median, which a few scheduler hiccups do not move
while a distribution wide in its middle does; the tail is in p99. Used by bench, by export's
``--require-faster`` and by prune's before/after latency.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

UNSTABLE_COV = 0.10  # robust CoV above this: flag the measurement


@dataclass(frozen=True)
class LatencyConfig:
    warmup_s: float = 1.0  # warm up for at least this long ...
    warmup_min: int = 5  # ... and at least this many calls
    min_time_s: float = 3.0  # then time calls for at least this long ...
    min_iters: int = 20  # ... and at least this many
    max_iters: int = 100_000  # stop here even if min_time_s is not reached


class Latency(BaseModel):
    """Latency statistics of one call in milliseconds: what :func:`measure` returns and what a
    :class:`~edgecut.measure.record.BenchRecord` stores (its JSON is the record's ``latency``)."""

    model_config = ConfigDict(extra="forbid")

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    cov: float  # coefficient of variation, std / mean
    robust_cov: float | None = None  # 1.4826 * median absolute deviation / median; the unstable flag uses it
    # (None: a record written before it was measured)
    first_ms: float  # the very first call, not included above
    warmup: int  # calls made while warming up (after the first)
    iterations: int  # timed calls
    unstable: bool

    def to_json(self) -> dict[str, Any]:
        """The statistics as plain values, floats rounded to 4 decimals (what a worker sends and records keep)."""
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.model_dump().items()}


def measure(fn: Callable[[], Any], config: LatencyConfig = LatencyConfig(),
            sync: Callable[[], None] | None = None) -> Latency:
    """Time ``fn()``; ``sync`` (e.g. ``torch.cuda.synchronize``) runs after every call."""
    def timed() -> float:
        t0 = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        return time.perf_counter() - t0

    first = timed()
    warm, start = 0, time.perf_counter()
    while warm < config.warmup_min or time.perf_counter() - start < config.warmup_s:
        timed()
        warm += 1
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < config.max_iters and (len(times) < config.min_iters
                                             or time.perf_counter() - start < config.min_time_s):
        times.append(timed())
    return summarize(times, first, warm)


def summarize(times_s: list[float] | np.ndarray, first_s: float, warmup: int) -> Latency:
    ms = np.asarray(times_s, dtype=np.float64) * 1e3
    if ms.size == 0:
        raise ValueError("no timed iterations")
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    mean, std = float(ms.mean()), float(ms.std(ddof=1)) if ms.size > 1 else 0.0
    cov = std / mean if mean > 0 else 0.0
    robust_cov = float(1.4826 * np.median(np.abs(ms - p50)) / p50) if p50 > 0 else 0.0
    return Latency(p50_ms=float(p50), p90_ms=float(p90), p99_ms=float(p99), mean_ms=mean, std_ms=std,
               min_ms=float(ms.min()), cov=cov, robust_cov=robust_cov, first_ms=first_s * 1e3,
               warmup=warmup, iterations=int(ms.size), unstable=robust_cov > UNSTABLE_COV)
