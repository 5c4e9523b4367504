"""edgecut.measure: latency statistics, records, and ``bench`` through every Runner on tiny models."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from edgecut.measure.latency import quantile_ci
from edgecut.runtime.timing import LatencyConfig, measure, summarize
from edgecut.measure.record import BenchRecord, append_records, latest, machine_id, read_records
from edgecut.measure.bench import bench
from edgecut.measure.config import BenchConfig
from edgecut.cli import app
from edgecut.env import fingerprint
from edgecut.errors import EdgecutError, InputError
from edgecut.exporters import ExportConfig, export
from edgecut.report.table import build_report

FAST = LatencyConfig(warmup_s=0.02, warmup_min=2, min_time_s=0.05, min_iters=5)


def cfg(**kw) -> BenchConfig:
    return BenchConfig(**{"threads": (1,), "latency": FAST, "isolate": False, "worst": 2, **kw})


@pytest.fixture(scope="module")
def onnx_art(trained, tmp_path_factory):
    return export(trained, tmp_path_factory.mktemp("bench") / "onnx", ExportConfig(format="onnx", precision="fp32"))


def test_summary_statistics_by_hand():
    s = summarize([0.001, 0.002, 0.003, 0.004, 0.010], first_s=0.05, warmup=3)
    assert s.p50_ms == pytest.approx(3.0) and s.min_ms == pytest.approx(1.0) and s.first_ms == pytest.approx(50.0)
    assert s.mean_ms == pytest.approx(4.0) and s.std_ms == pytest.approx(np.std([1, 2, 3, 4, 10], ddof=1))
    assert s.unstable and s.cov == pytest.approx(s.std_ms / 4.0)  # CoV 0.79 is far above 10 %
    assert not summarize([0.010, 0.0101, 0.0099], 0.02, 1).unstable


def test_a_few_spikes_do_not_make_a_steady_measurement_unstable():
    s = summarize([0.001] * 95 + [0.030] * 5, first_s=0.01, warmup=1)  # scheduler hiccups on a busy machine
    assert s.cov > 1.0 and s.robust_cov == 0.0 and not s.unstable and s.p99_ms == pytest.approx(30.0)
    wide = summarize(list(np.linspace(0.001, 0.002, 50)), first_s=0.01, warmup=1)  # a wide middle
    assert wide.robust_cov > 0.1 and wide.unstable


def test_repeated_worker_runs_keep_the_median_and_flag_disagreement(onnx_art, tmp_path, monkeypatch):
    import edgecut.measure.bench as bench_module

    real, p50s = bench_module.measure_latency, iter([3.0, 1.0, 2.0, 1.0, 1.01, 1.02, 1.0, 1.02, 1.5])

    def fake(*args, **kw):
        got = real(*args, **kw)
        got["latency"]["p50_ms"] = next(p50s)
        return got

    monkeypatch.setattr(bench_module, "measure_latency", fake)
    (a,) = bench([onnx_art], tmp_path / "a.jsonl", cfg(repeats=3, end_to_end=False), progress=False).records
    assert a.latency_runs_ms == [1.0, 2.0, 3.0] and a.latency.p50_ms == 2.0 and a.latency.unstable
    assert "worker runs disagree: p50 1, 2, 3 ms" in a.notes[0]
    (b,) = bench([onnx_art], tmp_path / "b.jsonl", cfg(repeats=3, end_to_end=False), progress=False).records
    assert b.latency_runs_ms == [1.0, 1.01, 1.02] and b.latency.p50_ms == 1.01 and not b.notes
    (c,) = bench([onnx_art], tmp_path / "c.jsonl", cfg(repeats=3, end_to_end=False), progress=False).records
    assert c.latency.p50_ms == 1.02 and "an outlier run" in c.notes[0]  # one slow run of three: the median holds
    assert "disagree" not in c.notes[0]


def test_quantile_ci_is_the_distribution_free_order_statistic_interval():
    def median_ci(values):
        return quantile_ci(values, 0.5)

    assert median_ci([1, 2, 3, 4, 5]) is None  # [min, max] of 5 covers only 93.75%
    assert median_ci([6, 1, 5, 2, 4, 3]) == (1, 6) and median_ci(range(1, 11)) == (2, 9)
    assert median_ci(range(1, 21)) == (6, 15)
    assert quantile_ci(range(1, 13), 0.25) is None and quantile_ci(range(1, 21), 0.25) == (2, 10)
    rng = np.random.default_rng(0)  # a skewed distribution: the interval still holds the true median (ln 2)
    draws = rng.exponential(size=(4000, 10))
    cis = np.array([median_ci(d) for d in draws])
    covered = np.mean((cis[:, 0] <= np.log(2)) & (np.log(2) <= cis[:, 1]))
    assert 0.96 < covered < 0.99  # 97.9% in theory for 10 values
    quartile = np.log(4 / 3)  # the lower quartile of the same distribution, from 20 values
    cis = np.array([quantile_ci(d, 0.25) for d in rng.exponential(size=(4000, 20))])
    assert 0.95 < np.mean((cis[:, 0] <= quartile) & (quartile <= cis[:, 1])) < 0.99


def _scripted_p50s(monkeypatch, values):
    import edgecut.measure.bench as bench_module

    real = getattr(bench_module.measure_latency, "__wrapped__", bench_module.measure_latency)
    p50s, seen = iter(values), []

    def fake(art, *args, **kw):
        got = real(art, *args, **kw)
        got["latency"]["p50_ms"] = next(p50s)
        got["latency"]["unstable"] = False  # scripted runs; the real timing's own spread is not under test
        seen.append(art.path)
        return got

    fake.__wrapped__ = real  # scripting again replaces this script
    monkeypatch.setattr(bench_module, "measure_latency", fake)
    return seen


def test_precision_measures_again_until_the_p50_is_known_then_stops(onnx_art, tmp_path, monkeypatch):
    seen = _scripted_p50s(monkeypatch, [0.8, 1.3, 1.3, 1.0, 1.02, 0.99, 1.0, 1.3, 1.01, 0.98, 1.3, 1.0, 1.0, 1.0,
                                        1.3, 1.0, 1.3, 1.01, 1.3, 1.0] + [1.0] * 5)
    (a,) = bench([onnx_art], tmp_path / "a.jsonl", cfg(repeats=3, precision=0.05, max_repeats=25, end_to_end=False),
                 progress=False).records
    # the lower quartile's interval is [x(1), ...] = [0.8, ...] up to 19 runs; at 20 it is [x(2), x(10)]: +-2%
    assert len(seen) == 20 and a.latency.p50_ms == 1.0 and a.latency_ci_ms == (0.98, 1.0) and not a.latency.unstable
    row = build_report([a]).rows[0]
    assert row.cells["p50"] == "1.00 ±2.0%" and row.values["p50_ci_lo_ms"] == 0.98

    seen = _scripted_p50s(monkeypatch, [1.0, 1.5, 0.7] * 5)
    (b,) = bench([onnx_art], tmp_path / "b.jsonl", cfg(precision=0.05, max_repeats=13, end_to_end=False),
                 progress=False).records
    assert len(seen) == 13 and b.latency.unstable and "p50 known to +-42.9% only after 13 runs" in b.notes[-1]
    assert read_records(tmp_path / "b.jsonl")[0].latency_ci_ms == (0.7, 1.0)


def test_the_lower_quartile_run_is_kept_so_a_slow_phase_does_not_move_it(onnx_art, tmp_path, monkeypatch):
    _scripted_p50s(monkeypatch, [1.0, 1.3, 1.01, 1.3, 1.32] * 2)  # two runs quick, three in a slow phase
    (a,) = bench([onnx_art], tmp_path / "a.jsonl", cfg(repeats=5, end_to_end=False), progress=False).records
    (b,) = bench([onnx_art], tmp_path / "b.jsonl", cfg(repeats=5, keep=0.5, end_to_end=False), progress=False).records
    assert a.latency.p50_ms == 1.01 and b.latency.p50_ms == 1.3 and a.latency_ci_ms is None


def test_the_same_model_under_two_names_is_measured_twice_interleaved(onnx_art, tmp_path, monkeypatch):
    seen = _scripted_p50s(monkeypatch, [1.0, 2.0, 1.1, 2.1, 1.0])
    res = bench([onnx_art, onnx_art], tmp_path / "t.jsonl", cfg(repeats=2, end_to_end=False), names=["a", "b"],
                progress=False)
    assert [r.name for r in res.records] == ["a", "b"] and len(seen) == 4
    assert [r.latency_runs_ms for r in res.records] == [[1.0, 1.1], [2.0, 2.1]]  # a, b, a, b
    res = bench([onnx_art, onnx_art], tmp_path / "u.jsonl", cfg(end_to_end=False), progress=False)
    assert len(res.records) == 1 and len(res.skipped) == 1 and len(seen) == 5  # one name twice: one measurement


def test_one_latency_type_whose_json_a_record_keeps():
    """measure() returns the very type a BenchRecord stores; its JSON is the record format, so old records read."""
    from edgecut.measure import record
    from edgecut.runtime import timing

    assert record.Latency is timing.Latency
    lat = record.Latency(**summarize([0.001, 0.002, 0.004], 0.01, 1).to_json())
    assert lat.model_dump_json() == (
        '{"p50_ms":2.0,"p90_ms":3.6,"p99_ms":3.96,"mean_ms":2.3333,"std_ms":1.5275,"min_ms":1.0,"cov":0.6547,'
        '"robust_cov":0.7413,"first_ms":10.0,"warmup":1,"iterations":3,"unstable":true}')
    old = json.loads(lat.model_dump_json())
    del old["robust_cov"]  # records written before the robust CoV was measured
    assert record.Latency.model_validate(old).robust_cov is None
    with pytest.raises(ValueError):
        record.Latency.model_validate({**old, "p95_ms": 1.0})  # nothing unknown slips in


def test_measure_warms_up_then_times_at_least_the_minimum():
    calls = []
    s = measure(lambda: calls.append(1), LatencyConfig(warmup_s=0.0, warmup_min=4, min_time_s=0.0, min_iters=7))
    assert (s.warmup, s.iterations) == (4, 7) and len(calls) == 1 + 4 + 7  # the first call is timed on its own


def test_bench_torch_and_onnx_with_accuracy_agreement_and_cutouts(trained, onnx_art, synth_data, tmp_path):
    out = tmp_path / "runs.jsonl"
    res = bench([trained, onnx_art], out, cfg(batches=(2,), data=synth_data, split="val", reference=trained.path),
                progress=False)
    a, b = res.records
    assert (a.backend, b.backend) == ("torch", "onnxruntime") and a.run_id == b.run_id
    assert a.sha256 == trained.sha256 and (a.format, b.format, b.precision) == ("torch", "onnx", "fp32")
    assert a.threads == b.threads == 1 and a.input_size == (32, 32) and a.macs == trained.manifest.macs
    assert a.size_mb == pytest.approx(trained.model_path.stat().st_size / 2**20)
    for r in (a, b):
        # both measured, never compared: for a 32 px model the cut-out's p50 and the model's are
        # within timing noise of each other (a clean CI run saw 1.15 against 1.30 ms)
        assert r.latency.iterations >= 5 and r.latency.p50_ms > 0 and r.end_to_end.p50_ms > 0
        assert [t.batch for t in r.throughput] == [1, 2] and r.throughput[1].images_per_s > 0
        assert r.memory.peak_rss_mb > 0 and r.accuracy.count == 5 and r.accuracy.data == "data/val"
        assert 0 <= r.accuracy.metrics["iou"] <= 1 and {"mae", "s_measure", "max_f"} <= set(r.accuracy.metrics)
        assert len(r.accuracy.worst) == 2 and r.accuracy.worst[0].iou <= r.accuracy.worst[1].iou
        for w in r.accuracy.worst:  # RGBA cut-outs beside the records, paths relative to the file's folder
            png = out.parent / w.cutout
            assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
        assert r.env["cpu"]["model"] and r.env["target"] == "local" and "backends" in r.env
    assert a.agreement is None  # the reference itself is not compared with itself
    assert b.agreement.reference == trained.path.name and b.agreement.count == 5
    assert b.agreement.max_abs_diff < 1e-4 and b.agreement.mask_iou_min == 1.0
    assert a.accuracy.metrics["iou"] == pytest.approx(b.accuracy.metrics["iou"], abs=1e-3)


def test_records_round_trip_through_json(trained, synth_data, tmp_path):
    out = tmp_path / "r.jsonl"
    (rec,) = bench([trained], out, cfg(data=synth_data, limit=3), progress=False).records
    (back,) = read_records(out)
    assert back.model_dump() == rec.model_dump() and back.source == out and rec.source is None
    assert json.loads(out.read_text().splitlines()[0])["schema_version"] == 1
    line = rec.to_json_line()
    assert BenchRecord.model_validate_json(line).model_dump() == rec.model_dump() and "\n" not in line


def test_isolated_worker_measures_in_a_fresh_process(onnx_art, tmp_path):
    (rec,) = bench([onnx_art], tmp_path / "iso.jsonl", cfg(isolate=True), progress=False).records
    assert rec.latency.iterations >= 5 and rec.accuracy is None and rec.end_to_end is not None
    # a fresh process without torch: well below what this test process (torch loaded) holds
    assert 0 < rec.memory.peak_rss_mb < 400


def test_thread_sweep_gives_one_record_per_thread_count_and_resume_skips_them(onnx_art, tmp_path):
    out = tmp_path / "sweep.jsonl"
    res = bench([onnx_art], out, cfg(threads=(1, 2), end_to_end=False), progress=False)
    assert [r.threads for r in res.records] == [1, 2] and all(r.end_to_end is None for r in res.records)
    with pytest.raises(InputError, match="--resume"):
        bench([onnx_art], out, cfg(threads=(1,)), progress=False)
    again = bench([onnx_art], out, cfg(threads=(1, 2, 3), end_to_end=False), resume=True, progress=False)
    assert [r.threads for r in again.records] == [3] and len(again.skipped) == 2
    assert len(read_records(out)) == 3


def test_openvino_runner_is_benched(trained, synth_data, tmp_path):
    pytest.importorskip("openvino")
    ov = export(trained, tmp_path / "ov", ExportConfig(format="openvino", precision="fp32"))
    (rec,) = bench([ov], tmp_path / "ov.jsonl", cfg(data=synth_data, limit=3), progress=False).records
    assert (rec.backend, rec.format) == ("openvino", "openvino") and rec.latency.p50_ms > 0
    assert rec.size_mb == pytest.approx(sum(e.size for e in ov.manifest.files.values()) / 2**20)


def test_other_input_size_scales_macs_and_fixed_exports_refuse_it(trained, onnx_art, tmp_path):
    (rec,) = bench([trained], tmp_path / "s.jsonl", cfg(size=(64, 64), end_to_end=False), progress=False).records
    assert rec.input_size == (64, 64) and rec.macs == trained.manifest.macs * 4
    with pytest.raises(EdgecutError, match="--dynamic"):  # exported for 32x32 only
        bench([onnx_art], tmp_path / "t.jsonl", cfg(size=(64, 64)), progress=False)


def test_refusals_name_the_fix(trained, onnx_art, synth_data, tmp_path):
    with pytest.raises(EdgecutError, match="export it first"):
        bench([onnx_art], tmp_path / "a.jsonl", cfg(backend="torch"), progress=False)
    with pytest.raises(EdgecutError, match="jsonl"):
        bench([trained], tmp_path / "a.json", cfg(), progress=False)
    with pytest.raises(EdgecutError, match="give --data too"):
        bench([trained], tmp_path / "a.jsonl", cfg(reference=trained.path), progress=False)
    with pytest.raises(EdgecutError, match="backend"):
        bench([trained], tmp_path / "a.jsonl", cfg(backend="tflite"), progress=False)
    with pytest.raises(EdgecutError, match="between 0 and 100% of the p50, got 200%"):
        bench([trained], tmp_path / "a.jsonl", cfg(precision=2.0), progress=False)
    with pytest.raises(EdgecutError, match="cannot reach a precision: it takes at least 13"):
        bench([trained], tmp_path / "a.jsonl", cfg(precision=0.02, max_repeats=12), progress=False)
    with pytest.raises(EdgecutError, match="is the quantile of the runs"):
        bench([trained], tmp_path / "a.jsonl", cfg(keep=1.5), progress=False)
    assert not (tmp_path / "a.jsonl").exists()  # every refusal comes before the first measurement


def test_broken_records_file_names_the_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"schema_version": 1}\n')
    with pytest.raises(InputError, match="line 1 is not a bench record"):
        read_records(p)
    p.write_text('{"name": "x", "run_i')
    with pytest.raises(InputError, match="line 1 is not JSON"):
        read_records(p)
    p.write_text(json.dumps({"schema_version": 99}) + "\n")
    with pytest.raises(InputError, match="newer edgecut"):
        read_records(p)
    with pytest.raises(InputError, match="not found"):
        read_records(tmp_path / "missing.jsonl")


def test_machine_id_follows_hardware_not_library_versions():
    env = fingerprint()
    upgraded = {**env, "backends": {**env["backends"], "onnxruntime": "99.0"}}
    other = {**env, "cpu": {**env["cpu"], "model": "Another CPU"}}
    assert machine_id(env) == machine_id(upgraded) != machine_id(other)


def test_latest_keeps_the_last_of_repeated_measurements(trained, tmp_path):
    out = tmp_path / "r.jsonl"
    (first,) = bench([trained], out, cfg(end_to_end=False), progress=False).records
    second = first.model_copy(update={"run_id": "later"})
    append_records(out, [second])
    assert [r.run_id for r in latest(read_records(out))] == ["later"]


def test_cli_bench_then_compare(trained, onnx_art, synth_data, tmp_path):
    out = tmp_path / "cli.jsonl"
    res = CliRunner().invoke(app, ["bench", str(trained.path), str(onnx_art.path), "--out", str(out), "--data",
                                   str(synth_data), "--split", "val", "--threads", "1", "--warmup", "0.02",
                                   "--min-time", "0.05", "--min-iters", "5", "--in-process", "--name", "teacher",
                                   "--name", "teacher-onnx"])
    assert res.exit_code == 0, res.output
    assert "teacher-onnx" in res.output and [r.name for r in read_records(out)] == ["teacher", "teacher-onnx"]
    res = CliRunner().invoke(app, ["compare", str(out), "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    assert {p.name for p in (tmp_path / "rep").iterdir()} == {"report.md", "report.csv", "report.html", "pareto.png"}
    assert "1.00x" in (tmp_path / "rep" / "report.md").read_text()
    res = CliRunner().invoke(app, ["bench", str(trained.path), "--out", str(tmp_path / "x.jsonl"), "--threads", "a"])
    assert res.exit_code != 0 and "integers" in str(res.exception)
