"""Is the machine giving us the cores we asked for? A parallel-speedup canary.

On a shared host a neighbour can take the physical cores behind our virtual CPUs without anything showing inside the
guest; what changes is how well threads run *together*. The canary times a float32 GEMM (numpy's BLAS) on one thread
and on ``threads`` threads: :func:`parallel_speedup` is ``t(1) / t(threads)``. A sample is only compared with this
machine's quiet level at the same thread count (:class:`Canary`, remembered across runs), and :func:`is_busy` is the
one rule: below ``BUSY_FRACTION`` of it, the machine is busy. ``edgecut bench`` samples around each worker run
(:meth:`Canary.guarded`) and records what it saw (:class:`edgecut.measure.record.Host`); ``edgecut compare`` applies
the same rule (:func:`edgecut.report.table.busy_records`).

Why, and how bench and compare use it: docs/design-decisions.md#canary (the numbers: docs/measuring.md)
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from edgecut import io

T = TypeVar("T")
BUSY_FRACTION = 0.88  # a canary below this fraction of the best seen: the machine is busy (here: 1.65 / 1.97 = 0.84)
GEMM_SIZE = 384  # float32 n x n GEMM: about 1 ms on one core of an AVX-512 CPU
POLL_S = 1.0  # seconds between samples while waiting for the machine


def is_busy(speedup: float | None, best: float | None) -> bool:
    """True when a canary ``speedup`` is below ``BUSY_FRACTION`` of the quiet level ``best``.

    False when either is unknown (None): without a sample or a quiet level the machine cannot be
    called busy.
    """
    return speedup is not None and best is not None and speedup < BUSY_FRACTION * best


def parallel_speedup(threads: int | None, *, calls: int = 15) -> float | None:
    """``t(1 thread) / t(threads)`` of a float32 GEMM through numpy's BLAS (median of ``calls`` each).

    None where it cannot tell: one thread (nothing to compare), more threads than CPUs, or no
    ``threadpoolctl`` to set the BLAS thread count.
    """
    n = threads or os.cpu_count() or 1
    if n < 2 or n > (os.cpu_count() or 1):
        return None
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    a = np.random.default_rng(0).random((GEMM_SIZE, GEMM_SIZE), dtype=np.float32)
    out = np.empty_like(a)  # written in place: a fresh result array each call would time page faults too

    def median_ms(k: int, count: int) -> float:
        with threadpool_limits(limits=k, user_api="blas"):
            for _ in range(3):  # the pool's threads start and wake here, not inside the timing
                np.matmul(a, a, out=out)
            times = []
            for _ in range(count):
                t0 = time.perf_counter()
                np.matmul(a, a, out=out)
                times.append(time.perf_counter() - t0)
        return statistics.median(times)

    one = median_ms(1, calls)
    many = median_ms(n, 2 * calls)
    return one / many if many > 0 else None


def cache_file() -> Path:
    """Where the canary's recent samples are remembered: in edgecut's cache folder (:func:`io.cache_dir`)."""
    return io.cache_dir() / "canary.json"


def _read_cache() -> dict:
    """Every machine's remembered samples; {} when there are none or the file is unreadable."""
    try:
        everything = json.loads(cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return everything if isinstance(everything, dict) else {}


@dataclass
class Canary:
    """The machine's quiet parallel speedup per thread count, and the busy/quiet decision.

    ``best(threads)`` is the 90th percentile of the recent samples (a stray high sample does not
    make every later one look busy). With a ``machine`` id the last ``KEEP`` samples are
    remembered across runs, per machine, in :func:`cache_file`: a run that starts while the host
    is busy would otherwise take the busy level for the best.
    """

    machine: str | None = None
    sample_fn: Callable[[int | None], float | None] | None = None  # None: parallel_speedup
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    samples: dict[int | None, list[float]] = field(default_factory=dict)

    KEEP = 200

    def __post_init__(self) -> None:
        if self.machine is None:
            return
        try:
            for threads, values in _read_cache().get(self.machine, {}).items():
                self.samples.setdefault(int(threads), []).extend(float(v) for v in values)
        except (ValueError, TypeError, AttributeError):  # not what save() writes: start afresh
            self.samples.clear()

    def sample(self, threads: int | None, remember: bool = True) -> float | None:
        """One canary; ``remember`` counts it towards :meth:`best` (polls while waiting do not: a long busy
        phase polled every second would otherwise crowd the quiet samples out of the percentile)."""
        s = (self.sample_fn or parallel_speedup)(threads)
        if s is not None and remember:
            self.samples.setdefault(threads, []).append(s)
        return s

    def best(self, threads: int | None) -> float | None:
        seen = self.samples.get(threads)
        return float(np.percentile(seen[-self.KEEP:], 90)) if seen else None

    def busy(self, threads: int | None, speedup: float | None) -> bool:
        """:func:`is_busy` against :meth:`best` at ``threads``."""
        return is_busy(speedup, self.best(threads))

    def wait_quiet(self, threads: int | None, max_wait_s: float,
                   on_wait: Callable[[float, float, float], None] | None = None) -> tuple[float | None, float]:
        """Sample until the machine is not busy or ``max_wait_s`` has passed; (last speedup, seconds waited).

        ``on_wait(speedup, best, waited_s)`` is called before each pause (a progress line).
        """
        start, paused = self.clock(), False
        while True:
            s = self.sample(threads, remember=not paused)
            waited = self.clock() - start if paused else 0.0
            if s is None or not self.busy(threads, s) or waited >= max_wait_s:
                return s, waited
            if on_wait is not None:
                on_wait(s, self.best(threads), waited)
            self.sleep(min(POLL_S, max(0.0, max_wait_s - waited)))
            paused = True

    def guarded(self, threads: int | None, run: Callable[[], T], max_wait_s: float, max_retries: int,
                on_wait: Callable[[str], None] | None = None) -> tuple[T, float | None, float, int]:
        """``run()`` taken while the machine's cores are ours, if that happens in time.

        Before the run the canary is sampled until the machine is not busy (:meth:`wait_quiet`, at
        most ``max_wait_s`` in all); right after it, once more: a run that ended busy is run again
        while waiting time and ``max_retries`` are left. ``on_wait`` gets a line when a wait starts
        and when it ends. Returns (the kept run's result, the canary right after it, seconds
        waited, runs discarded).
        """
        waited, retries = 0.0, 0
        while True:
            told = []

            def tell(speedup: float, best: float, so_far: float) -> None:
                if not told and on_wait is not None:
                    on_wait(f"the machine is busy (parallel speedup {speedup:.2f} at {threads} threads, "
                            f"{best:.2f} when quiet): waiting up to {max_wait_s - waited:.0f} s")
                told.append(so_far)

            s, w = self.wait_quiet(threads, max(0.0, max_wait_s - waited), tell)
            waited += w
            if told and on_wait is not None:
                on_wait(f"quiet again after {w:.0f} s" if not self.busy(threads, s)
                        else f"still busy after {w:.0f} s: measuring anyway (the record is flagged if it stays so)")
            got = run()
            after = self.sample(threads)
            if self.busy(threads, after) and waited < max_wait_s and retries < max_retries:
                retries += 1
                continue
            return got, after, waited, retries

    def save(self) -> None:
        """Remember the last ``KEEP`` samples per thread count for this machine (best effort)."""
        if self.machine is None or not self.samples:
            return
        everything = _read_cache()
        everything[self.machine] = {str(t): [round(v, 4) for v in vs[-self.KEEP:]]
                                    for t, vs in self.samples.items() if t is not None}
        try:
            from edgecut import io

            io.write_json(cache_file(), everything)
        except OSError:  # a read-only home: no memory across runs, nothing else changes
            pass
