"""``edgecut bench`` and ``edgecut eval`` with ``--target``: the models go to the target as bundles, run
through the target's own runtime, and come back as BenchRecords with the target's fingerprint,
instruction counts (arm64-emu) or device latency (ssh), parity against this machine, and accuracy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgecut.cli import app
from edgecut.errors import EdgecutError
from edgecut.measure.record import read_records


@pytest.fixture(scope="module")
def onnx_pair(trained, tmp_path_factory):
    """The tiny trained U-Net as ONNX FP32 and INT8 (calibrated on synthetic photos)."""
    from edgecut.exporters import ExportConfig, export

    root = tmp_path_factory.mktemp("target-bench")
    return (export(trained, root / "fp32", ExportConfig(format="onnx")),
            export(trained, root / "int8", ExportConfig(format="onnx", precision="int8")))


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "edgecut.cli", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def test_target_refusals_name_the_option_and_the_fix(onnx_pair, trained, tmp_path):
    fp32, _ = onnx_pair
    out = str(tmp_path / "r.jsonl")
    cases = [
        (["bench", str(fp32.path), "--out", out, "--target", "arm64-emu", "--size", "64"], "--size is not used"),
        (["bench", str(fp32.path), "--out", out, "--target", "arm64-emu", "--threads", "1,2"], "one thread"),
        (["bench", str(trained.path), "--out", out, "--target", "arm64-emu"], "edgecut export"),
        (["bench", str(fp32.path), "--out", out, "--target", "ssh://"], "ssh://user@host"),
        (["bench", str(fp32.path), "--out", out, "--target", "android-arm64"], "reach: local"),
        (["bench", str(fp32.path), "--out", out, "--target", "no-such-device"], "no device profile"),
    ]
    for args, expected in cases:
        res = CliRunner().invoke(app, args)  # main() prints an EdgecutError as one line, exit code 2
        assert isinstance(res.exception, EdgecutError) and expected in str(res.exception), (args, res.exception)
    assert not Path(out).exists()  # nothing was measured, nothing written


@pytest.mark.slow
@pytest.mark.arm64
@pytest.mark.timeout(900)
def test_bench_on_arm64_emu_writes_records_with_repeatable_instruction_counts_and_parity(onnx_pair, synth_data,
                                                                                          tmp_path, arm64_env):
    fp32, int8 = onnx_pair
    runs = []
    for k in range(2):
        out = tmp_path / f"arm{k}.jsonl"
        p = _cli("bench", str(fp32.path), str(int8.path), "--name", "fp32", "--name", "int8", "--out", str(out),
                 "--target", "arm64-emu", "--data", str(synth_data), "--limit", "3", "--count-iters", "2")
        assert p.returncode == 0, p.stdout + p.stderr
        runs.append({r.name: r for r in read_records(out)})
    first, second = runs
    for name in ("fp32", "int8"):
        rec = first[name]
        assert rec.target == "arm64-emu" and rec.env["target"] == "arm64-emu" and rec.threads == 1
        assert rec.latency is None and any("not device time" in n for n in rec.notes)
        assert rec.instructions.cpu == "cortex-a76" and rec.instructions.per_inference > 0
        assert rec.instructions.per_inference == second[name].instructions.per_inference  # exact, not timed
        assert rec.parity.count == 3 and rec.accuracy.count == 3 and "iou" in rec.accuracy.metrics
        assert 0.0 <= rec.parity.mask_iou_min <= 1.0  # INT8: reported
    assert first["fp32"].parity.max_abs_diff <= 1e-4
    assert first["fp32"].instructions.per_inference != first["int8"].instructions.per_inference
    p = _cli("compare", str(tmp_path / "arm0.jsonl"), "--out", str(tmp_path / "report"))
    assert p.returncode == 0, p.stdout + p.stderr
    report = (tmp_path / "report" / "report.md").read_text()
    assert "arm64-emu" in report and "instructions" in report
    p = _cli("eval", str(fp32.path), "--data", str(synth_data), "--split", "val", "--target", "arm64-emu", "--json",
             str(tmp_path / "eval.json"))
    assert p.returncode == 0, p.stdout + p.stderr
    scored = json.loads((tmp_path / "eval.json").read_text())
    assert scored["target"] == "arm64-emu" and scored["parity"]["max_abs_diff"] <= 1e-4


@pytest.mark.slow
def test_bench_on_an_ssh_device_writes_its_latency_parity_and_accuracy(onnx_pair, synth_data, tmp_path,
                                                                        loopback_sshd):
    url, key, _ = loopback_sshd
    fp32, _ = onnx_pair
    out = tmp_path / "dev.jsonl"
    res = CliRunner().invoke(app, ["bench", str(fp32.path), "--out", str(out), "--target", url, "--identity", str(key),
                                   "--device-python", sys.executable, "--data", str(synth_data), "--limit", "3",
                                   "--threads", "1"])
    assert res.exit_code == 0, res.output
    (rec,) = read_records(out)
    assert rec.target == url and rec.env["target"] == url and rec.env["cpu"]["cores"] >= 1
    assert rec.latency is not None and rec.latency.p50_ms > 0 and rec.latency.iterations == 50
    assert rec.instructions is None and rec.threads == 1
    assert rec.parity.count == 3 and rec.parity.max_abs_diff <= 1e-4 and rec.accuracy.count == 3
    res = CliRunner().invoke(app, ["bench", str(fp32.path), "--out", str(out), "--target", url, "--identity", str(key),
                                   "--device-python", sys.executable, "--threads", "1", "--resume"])
    assert res.exit_code == 0 and "already in" in res.output, res.output
    res = CliRunner().invoke(app, ["target", "parity", url, str(_bundle(fp32, tmp_path)), "--images",
                                   str(synth_data / "images"), "--identity", str(key), "--device-python",
                                   sys.executable])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["images"] == 24


def _bundle(art, tmp_path: Path) -> Path:
    from edgecut.targets.bundle import bundle

    return bundle(art.path, tmp_path / "bundle", "raspberry-pi-5")


@pytest.mark.slow
@pytest.mark.arm64
@pytest.mark.timeout(900)
@pytest.mark.parametrize("fmt,precision,backend,exact", [
    ("openvino", "fp32", "openvino", False), ("ort", "fp32", "onnxruntime", True), ("ncnn", "fp32", "ncnn", True),
    ("ncnn", "int8", "ncnn", True), ("tflite", "fp32", "litert", True)])
def test_phone_and_board_formats_run_on_arm64_emu_with_parity(fmt, precision, backend, exact, trained, synth_data,
                                                              tmp_path, arm64_env, request):
    """OpenVINO's aarch64 wheel (its ARM CPU plugin), ONNX Runtime's mobile format (through the
    aarch64 onnxruntime) and ncnn's aarch64 wheel in the sysroot (FP32, and INT8 through its ARM int8
    kernels): parity and accuracy on the emulated Cortex-A76, and LiteRT through ai-edge-litert's
    aarch64 wheel. OpenVINO's instruction count is marked inexact (its thread pool); ORT's, ncnn's
    (OpenMP on one thread) and LiteRT's are exact, like ONNX's."""
    if fmt == "ncnn":
        pytest.importorskip("pnnx", reason="ncnn export needs the ncnn extra: pip install 'edgecut[ncnn]'")
    if fmt == "tflite":
        pytest.importorskip("ai_edge_litert", reason="LiteRT needs the litert extra: pip install 'edgecut[litert]'")
        request.getfixturevalue("litert_env")  # the converter environment
    from edgecut.exporters import ExportConfig, ParityConfig, export

    loose = ParityConfig(tolerances={"mask_iou": 0.9})  # int8 kernels differ between CPUs (test_ncnn.py)
    art = export(trained, tmp_path / fmt, ExportConfig(format=fmt, precision=precision, parity=loose))
    out = tmp_path / f"{fmt}.jsonl"
    p = _cli("bench", str(art.path), "--out", str(out), "--target", "arm64-emu", "--data", str(synth_data), "--limit",
             "2", "--count-iters", "1")
    assert p.returncode == 0, p.stdout + p.stderr
    (rec,) = read_records(out)
    assert (rec.format, rec.backend, rec.target) == (fmt, backend, "arm64-emu") and rec.latency is None
    # ARM's int8 kernels round other than x86's: one quantisation step apart at most, not float noise
    assert rec.parity.count == 2 and rec.parity.max_abs_diff <= (0.1 if precision == "int8" else 1e-4)
    assert rec.accuracy.count == 2 and rec.precision == precision
    assert rec.instructions.per_inference > 0 and rec.instructions.exact is exact
