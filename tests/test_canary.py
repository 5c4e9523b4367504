"""The parallel-speedup canary: the real probe, the busy/quiet decision, waiting, memory, and bench's use of it."""

from __future__ import annotations

import json
import math
import os

import pytest

from edgecut.measure import canary as canary_mod
from edgecut.measure.canary import BUSY_FRACTION, Canary, cache_file, is_busy
from edgecut.measure.canary import parallel_speedup as real_parallel_speedup  # conftest replaces the module's
from edgecut.runtime.timing import LatencyConfig
from edgecut.measure.record import Hooks, read_records
from edgecut.measure.bench import bench
from edgecut.measure.config import BenchConfig
from edgecut.report.table import build_report

FAST = LatencyConfig(warmup_s=0.0, warmup_min=1, min_time_s=0.0, min_iters=3)


class Script:
    """A canary that answers from a list (and a clock that only moves when slept)."""

    def __init__(self, values):
        self.values, self.calls, self.now = list(values), 0, 0.0

    def __call__(self, threads):
        self.calls += 1
        return self.values.pop(0) if self.values else 2.0

    def sleep(self, s):
        self.now += s

    def clock(self):
        return self.now


def test_real_canary_measures_a_speedup_where_it_can_and_says_none_where_it_cannot():
    assert real_parallel_speedup(1) is None  # nothing to compare
    assert real_parallel_speedup((os.cpu_count() or 1) + 1) is None  # more threads than CPUs
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one CPU: no parallel speedup to measure")
    s = real_parallel_speedup(2)
    # about 1.95 on two free cores, 1.65 while the host takes one, far below 1 while another process
    # keeps a core busy: a ratio of timings, so only its existence is a machine-independent fact
    assert s is not None and math.isfinite(s) and s > 0


def test_is_busy_below_the_fraction_of_the_quiet_level_and_never_without_one():
    assert is_busy(1.65, 1.97) and not is_busy(1.90, 1.97)
    assert not is_busy(BUSY_FRACTION * 2.0, 2.0)  # at the fraction exactly: not busy
    assert not is_busy(None, 1.97) and not is_busy(1.0, None) and not is_busy(None, None)


def test_busy_is_relative_to_the_90th_percentile_of_what_was_seen():
    c = Canary(sample_fn=Script([]))
    for v in [1.95, 1.97, 1.96, 1.94, 1.98, 1.95, 1.96, 1.97, 1.95, 2.60]:  # one stray high sample
        c.samples.setdefault(2, []).append(v)
    assert c.best(2) == pytest.approx(1.98, abs=0.07)  # the stray 2.6 does not set the bar
    assert c.busy(2, 1.65) and not c.busy(2, 1.85) and not c.busy(2, None)
    assert c.best(4) is None and not c.busy(4, 1.0)  # nothing seen at 4 threads: cannot call it busy


def test_wait_quiet_waits_for_the_machine_then_gives_up_at_the_limit():
    script = Script([2.0, 1.6, 1.6, 1.95])
    c = Canary(sample_fn=script, sleep=script.sleep, clock=script.clock)
    assert c.wait_quiet(2, 60) == (2.0, 0.0)  # quiet: no wait
    told = []
    s, waited = c.wait_quiet(2, 60, lambda speedup, best, w: told.append((speedup, best)))
    assert s == 1.95 and waited == pytest.approx(2 * canary_mod.POLL_S) and told == [(1.6, pytest.approx(1.96)), (1.6, pytest.approx(1.96))]
    stuck = Script([2.0] + [1.5] * 100)
    c = Canary(sample_fn=stuck, sleep=stuck.sleep, clock=stuck.clock)
    c.wait_quiet(2, 60)
    s, waited = c.wait_quiet(2, 5.0)
    assert s == 1.5 and waited == pytest.approx(5.0)  # gave up: the caller measures anyway and flags
    assert c.wait_quiet(2, 0.0)[1] == 0.0  # no waiting at all


def test_the_quiet_level_is_remembered_per_machine_across_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECUT_CACHE", str(tmp_path / "cache"))
    first = Canary(machine="m1", sample_fn=Script([1.97, 1.96]))
    first.sample(2), first.sample(2)
    first.save()
    later = Canary(machine="m1", sample_fn=Script([1.62]))
    assert later.busy(2, later.sample(2))  # a run that starts while the host is busy still knows the quiet level
    assert Canary(machine="other", sample_fn=Script([1.62])).best(2) is None
    cache_file().write_text("{ not json")  # a broken cache is started afresh, never an error
    broken = Canary(machine="m1", sample_fn=Script([1.9]))
    assert broken.best(2) is None
    broken.sample(2)
    broken.save()
    assert json.loads(cache_file().read_text()) == {"m1": {"2": [1.9]}}


def test_bench_measures_a_run_again_when_the_host_took_the_cores_during_it(trained, tmp_path, monkeypatch):
    # before run 1: quiet; after it: busy (run discarded); then busy once more (a pause), quiet, and quiet after
    script = Script([2.0, 1.5, 1.5, 2.0, 2.0])
    monkeypatch.setattr(canary_mod, "parallel_speedup", script)
    monkeypatch.setattr(canary_mod, "POLL_S", 0.01)
    runs = []
    import edgecut.measure.bench as bench_module

    real = bench_module.measure_latency
    monkeypatch.setattr(bench_module, "measure_latency", lambda *a, **k: runs.append(1) or real(*a, **k))
    waits = []
    res = bench([trained.path], tmp_path / "b.jsonl", BenchConfig(threads=(2,), latency=FAST, end_to_end=False,
                                                                   isolate=False, max_wait_s=30),
                progress=False, hooks=Hooks(say=waits.append))
    host = res.records[0].host
    assert len(runs) == 2 and host.discarded_runs == 1 and not host.busy and host.parallel_speedup == 2.0
    assert host.waited_s > 0 and any("busy" in w for w in waits) and any("quiet again" in w for w in waits)
    assert not any("taking our cores" in n for n in res.records[0].notes)  # (3 timed calls may still be noisy)
    assert read_records(tmp_path / "b.jsonl")[0].host == host


def test_bench_flags_a_record_the_host_stayed_busy_through(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(canary_mod, "parallel_speedup", Script([2.0, 1.5]))
    res = bench([trained.path], tmp_path / "b.jsonl", BenchConfig(threads=(2,), latency=FAST, end_to_end=False,
                                                                   isolate=False, max_wait_s=0),
                progress=False)
    rec = res.records[0]
    assert rec.host.busy and rec.host.discarded_runs == 0 and rec.latency.unstable
    assert any("taking our cores" in n for n in rec.notes)


def test_compare_flags_a_row_against_the_best_quiet_level_of_all_compared_records(trained, tmp_path, monkeypatch):
    # the first record's run only ever saw the busy level; the second saw the quiet one
    for name, values in (("early", [1.6, 1.6]), ("late", [1.96, 1.97])):
        monkeypatch.setenv("EDGECUT_CACHE", str(tmp_path / name))  # no memory between the two runs
        monkeypatch.setattr(canary_mod, "parallel_speedup", Script(values))
        bench([trained.path], tmp_path / f"{name}.jsonl", BenchConfig(threads=(2,), latency=FAST, end_to_end=False,
                                                                      isolate=False), names=[name], progress=False)
    early, late = read_records([tmp_path / "early.jsonl", tmp_path / "late.jsonl"])
    assert not early.host.busy and early.host.parallel_speedup < BUSY_FRACTION * late.host.best_speedup
    for r in (early, late):  # 3 timed calls can be noisy on a loaded machine; only the canary is under test here
        r.latency.unstable = False
    report = build_report([early, late], baseline="late")
    rows = {r.record.name: r for r in report.rows}
    assert rows["early"].unstable and rows["early"].values["host_busy"] is True
    assert not rows["late"].unstable and rows["late"].values["host_busy"] is False
    assert "⚠" in rows["early"].cells["p50"] and any("taking our CPU cores" in t for _, t in report.footnotes)
