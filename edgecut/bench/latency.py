"""Latency of a callable: warm-up by time and count, then timed runs for a minimum time and count.

The first call is timed on its own (it pays for lazy initialisation, allocation and kernel
selection) and is reported separately; it is not part of the distribution. Percentiles use
numpy's linear interpolation. The plain coefficient of variation (std / mean) is reported, but
the unstable flag uses its robust form, 1.4826 x MAD / median, above ``UNSTABLE_COV``: on a
shared 2-core machine a few scheduler hiccups (tens of ms in thousands of 1 ms calls) push the
plain CoV of a perfectly repeatable measurement past 30%, while they leave the median and
the MAD alone; a distribution that is wide in its middle (another process competing, the CPU
changing clocks) still raises the robust one. The tail is in p99.

Repeated runs (``bench --repeats``, each a fresh worker process) become one number here too:
the run at the ``KEEP_QUANTILE`` of their p50s is kept, with a distribution-free 95% interval
(:func:`quantile_ci`), and runs that disagree flag it (:func:`repeat_notes`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

UNSTABLE_COV = 0.10  # std / mean above this: flag the measurement
KEEP_QUANTILE = 0.25  # of repeated runs, the one at this quantile of their p50s is kept (bench.run._finish)
REPEAT_SPREAD = 0.05  # the kept run must agree with another repeated run within this, or the record is unstable


@dataclass(frozen=True)
class LatencyConfig:
    warmup_s: float = 1.0  # warm up for at least this long ...
    warmup_min: int = 5  # ... and at least this many calls
    min_time_s: float = 3.0  # then time calls for at least this long ...
    min_iters: int = 20  # ... and at least this many
    max_iters: int = 100_000  # stop here even if min_time_s is not reached


@dataclass(frozen=True)
class LatencyStats:
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    cov: float  # coefficient of variation, std / mean
    robust_cov: float  # 1.4826 * median absolute deviation / median; the unstable flag uses it
    first_ms: float  # the very first call, not included above
    warmup: int  # calls made while warming up (after the first)
    iterations: int  # timed calls
    unstable: bool

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def measure(fn: Callable[[], Any], config: LatencyConfig = LatencyConfig(),
            sync: Callable[[], None] | None = None) -> LatencyStats:
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


def summarize(times_s: list[float] | np.ndarray, first_s: float, warmup: int) -> LatencyStats:
    ms = np.asarray(times_s, dtype=np.float64) * 1e3
    if ms.size == 0:
        raise ValueError("no timed iterations")
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    mean, std = float(ms.mean()), float(ms.std(ddof=1)) if ms.size > 1 else 0.0
    cov = std / mean if mean > 0 else 0.0
    robust_cov = float(1.4826 * np.median(np.abs(ms - p50)) / p50) if p50 > 0 else 0.0
    return LatencyStats(p50_ms=float(p50), p90_ms=float(p90), p99_ms=float(p99), mean_ms=mean, std_ms=std,
                        min_ms=float(ms.min()), cov=cov, robust_cov=robust_cov, first_ms=first_s * 1e3,
                        warmup=warmup, iterations=int(ms.size), unstable=robust_cov > UNSTABLE_COV)


def quantile_ci(values: list[float] | np.ndarray, q: float,
                confidence: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free confidence interval of the ``q`` quantile of what ``values`` sample.

    The number of values below the true quantile is Binomial(n, q), so the order statistics
    ``x(j) <= xi_q <= x(u)`` hold it with probability ``P(j <= B < u)`` whatever the distribution;
    ``j`` is the highest and ``u`` the lowest that leave at most ``(1 - confidence) / 2`` on each
    side. None when ``values`` are too few: for 95%, 6 for the median (``[min, max]`` of 6 covers
    96.9%; 9 drop the extremes) and 13 for the lower quartile (its interval of 20 is
    ``[x(2), x(10)]``).
    """
    x = np.sort(np.asarray(values, dtype=np.float64))
    n, tail = x.size, (1 - confidence) / 2
    pmf = [math.comb(n, k) * q ** k * (1 - q) ** (n - k) for k in range(n + 1)]
    cdf = np.cumsum(pmf)  # cdf[k] = P(B <= k)
    j = sum(1 for k in range(1, n + 1) if cdf[k - 1] <= tail + 1e-12)  # P(B < j) <= tail, highest j
    u = next((u for u in range(1, n + 1) if 1 - cdf[u - 1] <= tail + 1e-12), None)  # P(B >= u) <= tail
    if j == 0 or u is None:
        return None
    return float(x[j - 1]), float(x[u - 1])


def min_ci_runs(q: float) -> int:
    """The fewest runs whose ``q`` quantile has a 95% interval (6 for the median, 13 for the lower quartile)."""
    return next(n for n in range(2, 200) if quantile_ci(range(n), q) is not None)


def kept_index(n: int, q: float) -> int:
    """Which of ``n`` runs sorted by p50 is kept: the ``q`` quantile, nearest rank (3 runs: the middle one)."""
    return int(q * (n - 1) + 0.5)


def half_width(value: float, ci: tuple[float, float]) -> float:
    """The wider side of the interval ``ci`` around ``value``, as a fraction of ``value``."""
    return max(value - ci[0], ci[1] - value) / value


def kept_half_width(p50s: list[float], q: float) -> float | None:
    """The 95% interval of the kept run's p50, as a fraction of it (its wider side); None: too few runs."""
    ci = quantile_ci(p50s, q)
    return None if ci is None else half_width(sorted(p50s)[kept_index(len(p50s), q)], ci)


def repeat_notes(p50s: list[float], kept: int) -> tuple[bool, list[str]]:
    """(unstable, notes) of repeated runs: unstable unless the kept run agrees with another within REPEAT_SPREAD.

    One run of three that the machine slowed down (a neighbour's burst on a shared host) does not
    make the kept one wrong; two runs that disagree with each other and with the third do.
    ``p50s`` are sorted; ``kept`` is the index of the kept run.
    """
    m = p50s[kept]
    closest = min(abs(p - m) for i, p in enumerate(p50s) if i != kept) / m
    runs = ", ".join(f"{p:.4g}" for p in p50s)
    if closest > REPEAT_SPREAD:
        return True, [f"worker runs disagree: p50 {runs} ms; none within {REPEAT_SPREAD:.0%} of the kept one"]
    if (p50s[-1] - p50s[0]) / m > REPEAT_SPREAD:
        return False, [f"worker runs p50 {runs} ms: an outlier run, the kept one agrees with another within "
                       f"{closest:.1%}"]
    return False, []
