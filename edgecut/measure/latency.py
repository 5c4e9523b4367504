"""Repeated latency runs become one number: the kept run, its 95% interval, and disagreement notes.

``bench --repeats`` times each model in several fresh worker processes (each timed with
:func:`edgecut.runtime.timing.measure`). The run at the ``KEEP_QUANTILE`` of their p50s is
kept, with a distribution-free 95% interval (:func:`quantile_ci`), and runs that disagree flag
it (:func:`repeat_notes`). Why the lower quartile and not the median: see docs/measuring.md.
"""

from __future__ import annotations

import math

import numpy as np

KEEP_QUANTILE = 0.25  # of repeated runs, the one at this quantile of their p50s is kept (measure.bench._finish)
REPEAT_SPREAD = 0.05  # the kept run must agree with another repeated run within this, or the record is unstable


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
