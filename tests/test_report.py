"""edgecut.report: the comparison table (md, csv, html), the Pareto plot and ``edgecut compare``."""

from __future__ import annotations

import base64
import csv
import hashlib
import io as _stdio
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgecut.measure.record import (Accuracy, BenchRecord, Latency, Memory, Throughput, WorstImage, append_records,
                                  machine_label)
from edgecut.cli import app
from edgecut.errors import EdgecutError, InputError
from edgecut.report import CompareConfig, compare, load
from edgecut.report.pareto import frontier

PNG = b"\x89PNG\r\n\x1a\n"
ENV_A = {"cpu": {"model": "Test CPU A", "arch": "x86_64", "cores": 2, "flags": ["avx2"]}, "gpus": [],
         "target": "local", "edgecut": "0.1.0", "backends": {"torch": "2.4.1", "onnxruntime": "1.19.0"}}
ENV_B = {**ENV_A, "cpu": {"model": "Other CPU B", "arch": "aarch64", "cores": 8, "flags": []}}
DATA = ("synth/val", 20)


def rec(name: str, p50: float | None, iou: float | None, *, fmt: str = "torch", precision: str = "fp32",
        backend: str = "torch", macs: float | None = None, params: float | None = None, size_mb: float = 10.0,
        run_id: str = "run-1", env: dict | None = None, unstable: bool = False, data: tuple[str, int] = DATA,
        worst: list[WorstImage] | None = None) -> BenchRecord:
    """A record as 'edgecut bench' writes it, with the numbers a test needs to check by hand."""
    lat = None if p50 is None else Latency(
        p50_ms=p50, p90_ms=p50 * 1.2, p99_ms=p50 * 1.5, mean_ms=p50 * 1.05, std_ms=p50 * (0.3 if unstable else 0.02),
        min_ms=p50 * 0.9, cov=0.3 if unstable else 0.02, first_ms=p50 * 3, warmup=5, iterations=50, unstable=unstable)
    acc = None if iou is None else Accuracy(data=data[0], count=data[1], input_size=(64, 64),
                                            metrics={"iou": iou, "mae": 1 - iou, "s_measure": iou - 0.01, "max_f": iou},
                                            worst=worst or [])
    return BenchRecord(run_id=run_id, created="2025-01-02T10:00:00+00:00", name=name, artifact=f"runs/{name}",
                       sha256=hashlib.sha256(name.encode()).hexdigest(), format=fmt, precision=precision,
                       backend=backend, device="cpu", input_size=(64, 64), batch=1, threads=2,
                       params=None if params is None else int(params), macs=None if macs is None else int(macs),
                       size_mb=size_mb, latency=lat, accuracy=acc, env=env or ENV_A,
                       throughput=[Throughput(batch=1, p50_ms=p50 or 1.0, images_per_s=100.0),
                                   Throughput(batch=8, p50_ms=50.0, images_per_s=160.0)],
                       memory=Memory(peak_rss_mb=321.5))


def fixture_records() -> list[BenchRecord]:
    worst = [WorstImage(name="img_07", iou=0.41, cutout="cutouts/img_07.png"),
             WorstImage(name="img_03", iou=0.52, cutout="cutouts/big.png"),
             WorstImage(name="img_09", iou=0.55, cutout="cutouts/gone.png"),
             WorstImage(name="img_11", iou=0.60)]
    return [
        rec("teacher", 40.0, 0.90, macs=50e9, params=31e6, size_mb=118.0),
        rec("teacher-onnx", 32.0, 0.905, fmt="onnx", backend="onnxruntime", macs=50e9, params=31e6, size_mb=117.0),
        rec("teacher-int8", 16.0, 0.871, fmt="onnx", precision="int8", backend="onnxruntime", macs=50e9, size_mb=30.0),
        rec("student", 8.0, 0.88, macs=2e9, params=3e6, size_mb=12.0, worst=worst),
        rec("u2netp-ref", 20.0, None, size_mb=4.5),  # untrained reference: latency only, no params
        rec("student-onnx", 5.0, 0.879, fmt="onnx", backend="onnxruntime", macs=2e9, unstable=True),
        rec("student-arm", 3.0, 0.86, fmt="onnx", precision="int8", backend="onnxruntime", env=ENV_B),
        rec("student-int8", 4.0, 0.865, fmt="onnx", precision="int8", backend="onnxruntime", run_id="run-2"),
        rec("student-ecssd", 8.5, 0.7, data=("ecssd/val", 100)),
    ]


def md_table(md: str) -> dict[str, dict[str, str]]:
    """The markdown table as {name without marks or bold: {header: cell}}."""
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        name = cells[0].strip("*").split(" ")[0]
        rows[name] = dict(zip(header, cells))
    return rows


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("report")
    records = root / "bench" / "records.jsonl"
    append_records(records, fixture_records()[:5])
    append_records(records, fixture_records()[5:])  # several appends, one file
    cut = records.parent / "cutouts"
    cut.mkdir()
    rgba = np.zeros((30, 40, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[5:25, 10:30, 3] = 255  # an opaque square on a transparent background
    Image.fromarray(rgba, "RGBA").save(cut / "img_07.png")
    Image.fromarray(np.full((400, 300, 4), 128, np.uint8), "RGBA").save(cut / "big.png")
    return records, compare(records, root / "out", CompareConfig(title="Compression <results> & co"))


def test_writes_the_four_files_atomically(written):
    records, result = written
    out = records.parent.parent / "out"
    assert [p.name for p in result.paths] == ["report.md", "report.csv", "report.html", "pareto.png"]
    assert all(p.parent == out and p.is_file() for p in result.paths)
    assert (out / "pareto.png").read_bytes().startswith(PNG)
    assert not list(out.glob(".*.tmp"))  # no temporary file left behind


def test_default_baseline_is_the_largest_fp32_torch_record(written):
    _, result = written
    assert result.baseline.name == "teacher" and result.baseline.backend == "torch"
    assert result.rows[0].is_baseline and result.rows[0].record.name == "teacher"
    same_machine = [r.latency_ms for r in result.rows[1:] if r.same_machine]
    assert same_machine[:-1] == sorted(same_machine[:-1])  # by p50 ...
    assert result.rows[-1].record.name == "student-arm"  # ... other machines last


def test_markdown_speedups_deltas_and_marks(written):
    records, result = written
    md = (records.parent.parent / "out" / "report.md").read_text()
    assert md.startswith("# Compression <results> & co\n")
    rows = md_table(md)
    assert set(rows) == {r.name for r in fixture_records()}
    assert rows["teacher"]["speed-up"] == "1.00x" and rows["teacher"]["ΔIoU"] == "+0.0000"
    assert md.count("| **teacher** |") == 1
    assert rows["teacher-int8"]["speed-up"] == "2.50x"  # 40 ms / 16 ms, by hand
    assert rows["student"]["speed-up"] == "5.00x"
    assert rows["teacher-int8"]["ΔIoU"] == "-0.0290" and rows["teacher-onnx"]["ΔIoU"] == "+0.0050"
    # another machine: no speed-up, a dagger on the name and a footnote naming the machine
    assert rows["student-arm"]["speed-up"] == "—" and rows["student-arm"]["name"].endswith("†")
    assert f"- † measured on {machine_label(ENV_B)}" in md
    assert "Records from 2 machines" in md.split("|")[0]  # said at the top, before the table
    # another run on the same machine: the ratio, marked
    assert rows["student-int8"]["speed-up"] == "10.00x *" and "measured in another run" in md
    # unstable latency: marked, and explained
    assert rows["student-onnx"]["p50 ms"] == "5.00 ⚠" and "above 10%" in md
    # no accuracy, no params: dashes
    ref = rows["u2netp-ref"]
    assert ref["IoU"] == ref["ΔIoU"] == ref["params (M)"] == ref["MACs (G)"] == "—" and ref["speed-up"] == "2.00x"
    # another data set: no ΔIoU, a footnote; the data column appears because data sets differ
    assert rows["student-ecssd"]["ΔIoU"] == "— §" and rows["student-ecssd"]["data"] == "ecssd/val (100)"
    assert "Baseline: teacher (torch fp32 on torch/cpu" in md
    for fact in ("Test CPU A", "threads 2", "batch 1", "input 64x64", "synth/val, 20 images", "torch 2.4.1",
                 "onnxruntime 1.19.0", "2025-01-02"):
        assert fact in md.split("How to read")[0]


def test_csv_has_raw_numbers_that_round_trip(written):
    records, result = written
    text = (records.parent.parent / "out" / "report.csv").read_text()
    table = list(csv.DictReader(_stdio.StringIO(text)))
    assert len(table) == len(fixture_records()) and text.count("\n") == len(table) + 1
    by = {r["name"]: r for r in table}
    assert by["teacher"]["baseline"] == "true" and float(by["teacher"]["speedup"]) == 1.0
    assert float(by["teacher-int8"]["speedup"]) == 2.5 and float(by["teacher-int8"]["iou"]) == 0.871
    assert float(by["teacher-int8"]["delta_iou"]) == pytest.approx(-0.029)
    assert by["student-arm"]["speedup"] == "" and by["student-arm"]["same_machine"] == "false"
    assert by["student-arm"]["machine"] != by["teacher"]["machine"]
    assert by["student-int8"]["run_id"] == "run-2" and by["student-int8"]["same_run"] == "false"
    assert by["student-onnx"]["unstable"] == "true" and float(by["student-onnx"]["cov"]) == 0.3
    assert by["u2netp-ref"]["iou"] == by["u2netp-ref"]["params"] == by["u2netp-ref"]["delta_iou"] == ""
    assert int(by["teacher"]["macs"]) == 50_000_000_000 and int(by["teacher"]["params"]) == 31_000_000
    assert float(by["teacher"]["throughput_images_per_s"]) == 160.0 and by["teacher"]["throughput_batch"] == "8"
    assert float(by["teacher"]["peak_rss_mb"]) == 321.5 and by["teacher"]["threads"] == "2"
    assert float(by["teacher"]["max_f"]) == 0.9  # every metric, not only the table's
    for row in result.rows:  # every float written is the float read back
        assert float(by[row.record.name]["p50_ms"]) == row.record.latency.p50_ms
        assert "x" not in by[row.record.name]["speedup"]


def test_html_is_self_contained_and_escaped(written):
    records, _ = written
    page = (records.parent.parent / "out" / "report.html").read_text()
    assert "Compression &lt;results&gt; &amp; co" in page and "<results>" not in page
    assert "<table>" in page and "10.00x *" in page and "5.00 ⚠" in page and "† measured on" in page
    assert 'src="http' not in page and "<link" not in page and "<script" not in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    decoded = [base64.b64decode(b) for b in images]
    assert all(d.startswith(PNG) for d in decoded)
    plot, *thumbs = decoded
    assert plot == (records.parent.parent / "out" / "pareto.png").read_bytes()
    # the worst cut-out strip: the small RGBA kept as it is, the tall one shrunk to 160 px, the missing one skipped
    sizes = {}
    for t in thumbs:
        img = Image.open(_stdio.BytesIO(t))
        assert img.mode == "RGBA"
        sizes[img.size] = np.array(img)[..., 3]
    assert set(sizes) == {(40, 30), (120, 160)}
    assert sizes[(40, 30)][0, 0] == 0 and sizes[(40, 30)][15, 20] == 255  # transparency survives
    assert "img_07" in page and "IoU 0.410" in page and "img_11" in page and "no cut-out saved" in page
    assert "img_09: cut-out not found" in page
    assert "linear-gradient(45deg" in page  # the checkerboard behind the cut-outs


def test_pareto_frontier():
    assert frontier([(1, 0.5), (2, 0.4), (3, 0.9), (2, 0.6)]) == [0, 3, 2]
    assert frontier([]) == []
    assert frontier([(5, 0.1), (5, 0.3)]) == [1]


def test_chosen_baseline_and_unknown_name(tmp_path):
    records = append_records(tmp_path / "r.jsonl", fixture_records())
    result = compare(records, tmp_path / "out", CompareConfig(baseline="student"))
    rows = md_table((tmp_path / "out" / "report.md").read_text())
    assert result.baseline.name == "student"
    assert rows["student"]["speed-up"] == "1.00x" and rows["teacher"]["speed-up"] == "0.20x"
    assert rows["teacher"]["ΔIoU"] == "+0.0200"
    with pytest.raises(EdgecutError, match="'nope' matches no record name.*'teacher', 'teacher-onnx'"):
        compare(records, tmp_path / "out2", CompareConfig(baseline="nope"))


def test_baseline_name_with_several_backends_uses_its_torch_record(tmp_path):
    recs = [rec("teacher", 50.0, 0.9, fmt="onnx", backend="onnxruntime", macs=5e9),
            rec("teacher", 40.0, 0.9, macs=5e9), rec("small", 10.0, 0.8, macs=1e9)]
    result = compare(recs, tmp_path)
    assert result.baseline.backend == "torch"
    assert {r.record.name: r.speedup for r in result.rows if r.record.backend != "onnxruntime"} == \
        {"teacher": 1.0, "small": 4.0}
    assert any("has 2 records; speed-ups are against its torch record" in n for n in result.notes)


def test_latest_record_of_a_measurement_wins(tmp_path):
    path = append_records(tmp_path / "r.jsonl", [rec("a", 10.0, 0.5), rec("a", 20.0, 0.6)])
    (only,) = load(path)
    assert only.latency.p50_ms == 20.0


def test_missing_and_empty_records_files(tmp_path):
    with pytest.raises(InputError, match="gone.jsonl"):
        compare([tmp_path / "gone.jsonl"], tmp_path / "out")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(InputError, match="empty.jsonl: holds no bench records"):
        compare(tmp_path / "empty.jsonl", tmp_path / "out")
    with pytest.raises(InputError, match="no records given"):
        compare([], tmp_path / "out")


def test_cli_compare_writes_the_report(tmp_path):
    one = append_records(tmp_path / "one.jsonl", fixture_records()[:4])
    two = append_records(tmp_path / "two.jsonl", fixture_records()[4:])
    res = CliRunner().invoke(app, ["compare", str(one), str(two), "--out", str(tmp_path / "out"),
                                   "--baseline", "teacher", "--title", "[bold]x"])
    assert res.exit_code == 0, res.output
    for name in ("report.md", "report.csv", "report.html", "pareto.png"):
        assert (tmp_path / "out" / name).is_file()
        assert name in res.output.replace("\n", "")
    assert "teacher-int8" in res.output and "2.50x" in res.output


def test_without_matplotlib_the_tables_are_still_written(tmp_path, monkeypatch):
    import edgecut.report.pareto as pareto

    monkeypatch.setattr(pareto, "available", lambda module: False)
    result = compare(fixture_records()[:3], tmp_path)
    assert [p.name for p in result.paths] == ["report.md", "report.csv", "report.html"]
    assert "edgecut[plot]" in (tmp_path / "report.html").read_text()


def test_metric_named_like_a_column_gets_its_own_csv_column(tmp_path):
    r = rec("teacher", 10.0, 0.8, macs=5e9)
    r.accuracy.metrics["precision"] = 0.25  # SegMetrics reports pixel precision; the csv also has the model precision
    append_records(tmp_path / "r.jsonl", [r])
    compare(tmp_path / "r.jsonl", tmp_path / "out")
    (row,) = csv.DictReader((tmp_path / "out" / "report.csv").open())
    assert row["precision"] == "fp32" and float(row["metric_precision"]) == 0.25


def test_labels_of_points_at_one_place_are_stacked_not_overlapped():
    from edgecut.report.pareto import LABEL_OFFSET, label_offsets

    texts = ["teacher", "teacher-onnx", "teacher-openvino", "student"]
    offsets = label_offsets([(100.0, 100.0), (101.0, 100.5), (100.5, 99.8), (400.0, 40.0)], texts, 7.0)
    assert offsets[3] == LABEL_OFFSET  # alone: the usual place
    ys = sorted(dy for _, dy in offsets[:3])
    assert all(b - a >= 7.0 * 1.3 - 1.0 for a, b in zip(ys, ys[1:]))  # a line apart (give or take the points' own offset)


def test_log_axis_labels_only_2_3_5_between_decades():
    from edgecut.report.pareto import _minor_tick

    assert [_minor_tick(v) for v in (0.8, 0.9, 2, 3, 4, 5, 20, 60, 0.3)] == ["", "", "2", "3", "", "5", "20", "", "0.3"]


def test_busy_records_hold_each_canary_against_the_best_of_its_machine_and_threads():
    from edgecut.measure.record import Host
    from edgecut.report.table import busy_records

    early, late, arm, flagged, bare = (rec("early", 1.0, 0.5), rec("late", 1.0, 0.5), rec("arm", 1.0, 0.5, env=ENV_B),
                                       rec("flagged", 1.0, 0.5), rec("bare", 1.0, 0.5))
    early.host = Host(parallel_speedup=1.6, best_speedup=1.6)  # its own run only ever saw the busy level
    late.host = Host(parallel_speedup=1.95, best_speedup=1.97)
    arm.host = Host(parallel_speedup=1.0, best_speedup=1.0)  # another machine: held against its own level
    flagged.host = Host(parallel_speedup=1.95, best_speedup=1.97, busy=True)  # bench said so
    assert busy_records([early, late, arm, flagged, bare]) == {id(early), id(flagged)}


def test_the_renderers_live_apart_from_the_building():
    import edgecut.report as report
    from edgecut.report import render, table

    assert report.to_markdown is render.to_markdown and report.to_csv is render.to_csv
    assert not hasattr(table, "to_markdown") and not hasattr(table, "to_csv")


def test_the_answer_is_the_baseline_the_best_student_and_the_best_int8():
    from edgecut.report import build_report
    from edgecut.report.answer import answer

    def arch(r, name):
        return r.model_copy(update={"arch": name})

    records = [
        arch(rec("teacher", 40.0, 0.90, macs=50e9), "unet"),
        arch(rec("teacher-int8", 16.0, 0.895, fmt="onnx", precision="int8", backend="onnxruntime"), "unet"),
        arch(rec("student", 4.0, 0.880), "mobilenet"),
        arch(rec("student-onnx", 2.0, 0.875, fmt="onnx", backend="onnxruntime"), "mobilenet"),  # as good, faster
        arch(rec("student-small", 1.0, 0.70, fmt="onnx", backend="onnxruntime"), "mobilenet"),  # faster, worse
        arch(rec("student-int8", 1.5, 0.80, fmt="onnx", precision="int8", backend="onnxruntime"), "mobilenet"),
    ]
    picked = [(role, row.record.name) for role, row in answer(build_report(records, baseline="teacher"))]
    assert picked == [("baseline", "teacher"), ("student", "student-onnx"), ("int8", "teacher-int8")]
