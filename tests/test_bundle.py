"""Device profiles and deployment bundles: the standalone runner feeds a model as edgecut does, runs
in a Python without torch or edgecut, and refuses a bundle whose files changed."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecut.errors import EdgecutError, InputError
from edgecut.targets import runner as device_runner
from edgecut.targets.bundle import bundle, verify_bundle
from edgecut.targets.profiles import PROFILE_DIR, load_profile, profile_names

LEAN_PACKAGES = {"onnx": ("numpy", "numpy.libs", "PIL", "pillow.libs", "cv2", "opencv_python_headless.libs",
                          "onnxruntime"),
                 "openvino": ("numpy", "numpy.libs", "PIL", "pillow.libs", "cv2", "opencv_python_headless.libs",
                              "openvino", "openvino.libs", "openvino_telemetry")}


def test_every_shipped_profile_loads_and_a_bad_one_names_its_file_and_key(tmp_path):
    names = profile_names()
    assert {"jetson-orin-nano", "raspberry-pi-5", "android-arm64", "x86-avx512", "x86-avx2"} <= set(names)
    for name in names:
        p = load_profile(name)
        assert p.name == name and p.formats and p.precisions
    assert load_profile(PROFILE_DIR / "raspberry-pi-5.yaml").threads == 4
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\narch: aarch64\nformats: [onnx]\nprecisions: [fp32]\ncolour: red\n")
    with pytest.raises(EdgecutError, match=r"bad\.yaml.*colour"):
        load_profile(bad)
    bad.write_text("name: x\narch: sparc\nformats: [onnx]\nprecisions: [fp32]\n")
    with pytest.raises(EdgecutError, match=r"bad\.yaml.*arch"):
        load_profile(bad)
    with pytest.raises(EdgecutError, match="raspberry-pi-5"):  # the profiles there are named
        load_profile("raspberry-pi-9")


@pytest.mark.parametrize("size", [(32, 32), (48, 40), (17, 90), (300, 200)])
def test_the_runner_preprocesses_and_postprocesses_exactly_as_the_model_spec(size, trained):
    spec = trained.manifest.spec
    as_json = json.loads(trained.manifest.model_dump_json())["spec"]
    image = np.random.default_rng(sum(size)).integers(0, 256, (*size, 3), dtype=np.uint8)
    assert np.array_equal(device_runner.preprocess(as_json, image), spec.preprocess(image))
    out = np.random.default_rng(1).standard_normal((1, 1, *spec.input_size)).astype(np.float32) * 8
    prob = spec.to_probability(out)
    assert np.array_equal(device_runner.to_probability(as_json, out), prob)
    assert np.array_equal(device_runner.resize_back(prob[0], size), spec.resize_back(prob[0], size))


@pytest.mark.parametrize("kind", ["photo", "alpha", "gray", "deep"])
def test_the_runner_decodes_and_composes_exactly_as_edgecut_remove(kind, tmp_path):
    from test_cli import make_inputs

    from edgecut import io
    from edgecut.cutout import compose, encode_cutout

    path = make_inputs(tmp_path)[kind]  # JPEG, RGBA PNG, gray PNG, 16-bit PNG
    image = io.read_image(path)
    assert np.array_equal(device_runner.read_image(path), image)
    alpha = np.random.default_rng(2).random(image.shape[:2]).astype(np.float32)
    for fmt in ("rgba", "mask", "composite"):
        assert np.array_equal(device_runner.compose(image, alpha, fmt), compose(image, alpha, fmt))
    out = tmp_path / "out.png"
    device_runner.write_png(out, compose(image, alpha, "rgba"))
    assert out.read_bytes() == encode_cutout(compose(image, alpha, "rgba"))  # the bytes edgecut remove writes


@pytest.fixture(scope="module")
def onnx_model(trained, tmp_path_factory):
    from edgecut.exporters import ExportConfig, export

    return export(trained, tmp_path_factory.mktemp("bundle") / "onnx", ExportConfig(format="onnx"))


def _lean_python(tmp_path: Path, fmt: str) -> tuple[list[str], dict]:
    """This interpreter without its site-packages: only the runner's own packages on the path."""
    import numpy

    site = Path(numpy.__file__).resolve().parents[1]
    lean = tmp_path / "lean-site"
    lean.mkdir()
    for name in LEAN_PACKAGES[fmt]:
        if (site / name).exists():
            (lean / name).symlink_to(site / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return [sys.executable, "-S"], {**env, "PYTHONPATH": str(lean)}


def _cutouts_match(tmp_path: Path, folder: Path, model: Path, images: Path, python: list[str], env: dict) -> None:
    from edgecut.io import read_mask

    p = subprocess.run([*python, str(folder / "runner.py"), "remove", str(images), "--out", str(tmp_path / "device"),
                        "--format", "mask"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    p = subprocess.run([sys.executable, "-m", "edgecut.cli", "remove", str(images), "--model", str(model), "--out",
                        str(tmp_path / "edgecut"), "--format", "mask"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    names = sorted(f.name for f in (tmp_path / "edgecut").iterdir())
    assert names and names == sorted(f.name for f in (tmp_path / "device").iterdir())
    for name in names:
        a, b = read_mask(tmp_path / "device" / name) > 127, read_mask(tmp_path / "edgecut" / name) > 127
        union = (a | b).sum()
        assert union == 0 or (a & b).sum() / union >= 0.999, name


@pytest.mark.slow
def test_a_bundle_runs_without_torch_and_cuts_out_what_edgecut_remove_does(onnx_model, synth_data, tmp_path):
    folder = bundle(onnx_model.path, tmp_path / "pi", "raspberry-pi-5")
    files = {p.name for p in folder.iterdir()}
    assert files == {"model.onnx", "edgecut.json", "runner.py", "requirements.txt", "bundle.json", "README.md",
                     "SHA256SUMS"}
    requirements = (folder / "requirements.txt").read_text()
    assert "onnxruntime==" in requirements and "numpy==" in requirements and "torch" not in requirements
    assert "python3 runner.py remove" in (folder / "README.md").read_text()
    assert len(verify_bundle(folder)) == 6
    python, env = _lean_python(tmp_path, "onnx")
    p = subprocess.run([*python, "-c", "import torch"], capture_output=True, text=True, env=env)
    assert p.returncode != 0 and "No module named 'torch'" in p.stderr  # the runner's Python has no torch
    p = subprocess.run([*python, "-c", "import edgecut"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert p.returncode != 0
    _cutouts_match(tmp_path, folder, onnx_model.path, synth_data / "images", python, env)
    p = subprocess.run([*python, str(folder / "runner.py"), "bench", "--iters", "3"], capture_output=True, text=True,
                       env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout)
    assert result["format"] == "onnx" and result["iterations"] == 3 and result["threads"] == 4


@pytest.mark.slow
@pytest.mark.openvino
def test_an_openvino_bundle_runs_without_torch(trained, synth_data, tmp_path):
    pytest.importorskip("openvino")
    from edgecut.exporters import ExportConfig, export

    ov = export(trained, tmp_path / "ov", ExportConfig(format="openvino"))
    folder = bundle(ov.path, tmp_path / "x86", "x86-avx512")
    assert {"model.xml", "model.bin"} <= {p.name for p in folder.iterdir()}
    python, env = _lean_python(tmp_path, "openvino")
    _cutouts_match(tmp_path, folder, ov.path, synth_data / "images", python, env)


def test_a_changed_added_or_missing_file_is_refused_by_verify_and_by_the_runner(onnx_model, tmp_path):
    folder = bundle(onnx_model.path, tmp_path / "b", "x86-avx512")
    model = folder / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(EdgecutError, match=r"model\.onnx: changed since the bundle was written"):
        verify_bundle(folder)
    p = subprocess.run([sys.executable, str(folder / "runner.py"), "verify"], capture_output=True, text=True)
    assert p.returncode == 2 and "model.onnx: changed" in p.stderr and "Traceback" not in p.stderr
    folder = bundle(onnx_model.path, tmp_path / "c", "x86-avx512")
    (folder / "extra.py").write_text("import os\n")
    with pytest.raises(EdgecutError, match=r"extra\.py: not in SHA256SUMS"):
        verify_bundle(folder)
    (folder / "extra.py").unlink()
    (folder / "bundle.json").unlink()
    with pytest.raises(EdgecutError, match=r"bundle\.json: missing"):
        verify_bundle(folder)


def test_a_model_the_device_cannot_run_is_refused_with_the_export_to_make(trained, onnx_model, tmp_path):
    with pytest.raises(EdgecutError, match=r"holds a torch model.*edgecut export .* --format onnx"):
        bundle(trained.path, tmp_path / "a", "jetson-orin-nano")
    assert not (tmp_path / "a").exists()
    folder = bundle(onnx_model.path, tmp_path / "j", "jetson-orin-nano")
    readme = (folder / "README.md").read_text()
    assert "trtexec --onnx=model.onnx" in readme and "input:1x3x32x32" in readme
    assert json.loads((folder / "bundle.json").read_text())["providers"][0] == "TensorrtExecutionProvider"
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(EdgecutError, match="already holds files"):
        bundle(onnx_model.path, tmp_path / "full", "x86-avx512")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_an_ort_model_bundles_for_android_with_its_operator_list(onnx_model, tmp_path):
    from edgecut.exporters import ExportConfig, export

    ort_only = load_profile("android-arm64").model_copy(update={"formats": ("ort",)})
    with pytest.raises(InputError, match="edgecut export .* --format ort"):
        bundle(onnx_model.path, tmp_path / "x", ort_only)
    ort = export(onnx_model.path, tmp_path / "ort", ExportConfig(format="ort", threads=1))
    folder = bundle(ort.path, tmp_path / "b", "android-arm64")
    assert (folder / "model.ort").is_file() and (folder / "required_operators.config").is_file()
    assert "onnxruntime==" in (folder / "requirements.txt").read_text()


def test_the_cli_bundles_and_verifies(onnx_model, tmp_path):
    from typer.testing import CliRunner

    from edgecut.cli import app

    res = CliRunner().invoke(app, ["bundle", str(onnx_model.path), "--target", "android-arm64", "--out",
                                   str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["bundle", "verify", str(tmp_path / "b")])
    assert res.exit_code == 0 and "match SHA256SUMS" in res.output
    res = CliRunner().invoke(app, ["bundle", str(onnx_model.path)])
    assert res.exit_code != 0


@pytest.mark.slow
@pytest.mark.arm64
@pytest.mark.timeout(600)
def test_a_bundle_runs_on_arm64_emu_and_cuts_out_what_x86_does(onnx_model, synth_data, tmp_path, arm64_root):
    from edgecut.io import read_mask
    from edgecut.targets import arm64
    from edgecut.targets.run_bundle import run_bundle

    root = arm64_root
    assert arm64.is_ready(root) and arm64.setup(root, say=lambda _: None) == root  # idempotent
    probe = arm64.run_python(["-c", "import platform, sys; print(platform.machine(), 'torch' in sys.modules)"],
                             root=root)
    assert probe.stdout.split() == ["aarch64", "False"]
    folder = bundle(onnx_model.path, tmp_path / "pi", "raspberry-pi-5")
    images = synth_data / "images"
    p = run_bundle(folder, ["remove", str(images), "--out", str(tmp_path / "arm"), "--format", "mask"], "arm64-emu",
                   root=root)
    assert p.returncode == 0, p.stdout + p.stderr
    p = subprocess.run([sys.executable, "-m", "edgecut.cli", "remove", str(images), "--model", str(onnx_model.path),
                        "--out", str(tmp_path / "x86"), "--format", "mask"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    inter = union = 0
    for f in sorted((tmp_path / "x86").iterdir()):
        a, b = read_mask(f) > 127, read_mask(tmp_path / "arm" / f.name) > 127
        inter, union = inter + (a & b).sum(), union + (a | b).sum()
    assert union > 0 and inter / union >= 0.999  # NEON MLAS kernels against x86's: the same masks
    p = run_bundle(folder, ["bench", "--iters", "2"], "arm64-emu", root=root)
    result = json.loads(p.stdout)
    assert result["target"] == "arm64-emu" and result["machine"]["machine"] == "aarch64"
    assert "not device time" in result["time"]


@contextlib.contextmanager
def _cores_taken():
    """Two busy processes for the block: every core of a 2-core machine taken."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        yield
    finally:
        for h in hogs:
            h.kill()
            h.wait()


@pytest.mark.slow
@pytest.mark.arm64
@pytest.mark.timeout(600)
def test_arm64_instruction_counts_repeat_and_parity_holds_for_fp32_and_int8(trained, onnx_model, synth_data, tmp_path,
                                                                            arm64_root):
    from edgecut.exporters import ExportConfig, export
    from edgecut.targets import arm64
    from edgecut.measure.target import bundle_parity as parity

    root = arm64_root
    int8 = export(trained, tmp_path / "int8", ExportConfig(format="onnx", precision="int8"))
    counts = {}
    for name, model in (("fp32", onnx_model), ("int8", int8)):
        folder = bundle(model.path, tmp_path / f"b-{name}", "raspberry-pi-5")
        first = arm64.count_instructions(folder, 2, root=root)
        with _cores_taken():  # a loaded host makes the guest's inference slower, never longer in instructions
            second = arm64.count_instructions(folder, 2, root=root)
        # equal on a quiet host; a loaded one moved a count by up to 1.4e-4 (benchmarks/README.md, arm64.py)
        assert first["instructions_per_inference"] > 0
        assert abs(first["instructions_per_inference"] - second["instructions_per_inference"]) \
            <= 1e-3 * first["instructions_per_inference"]
        counts[name] = first["instructions_per_inference"]
        check = parity(folder, synth_data / "images", "arm64-emu", root=root)
        assert check["images"] == 24
        if name == "fp32":
            assert check["max_abs_diff"] <= 1e-4
        assert 0.0 <= check["mask_iou_min"] <= 1.0  # INT8: reported (ARM's integer kernels may round otherwise)
    assert counts["fp32"] != counts["int8"]


@pytest.mark.slow
def test_a_bundle_runs_on_an_ssh_device_and_the_cutouts_come_back(onnx_model, synth_data, tmp_path, loopback_sshd,
                                                                   monkeypatch):
    from edgecut.targets.run_bundle import run_bundle

    url, key, device_tmp = loopback_sshd
    folder = bundle(onnx_model.path, tmp_path / "dev", "raspberry-pi-5")
    images = synth_data / "images"
    p = run_bundle(folder, ["remove", str(images), "--out", str(tmp_path / "back"), "--format", "mask"], url,
                   identity=key, python=sys.executable)
    assert p.returncode == 0, p.stdout + p.stderr
    assert sorted(f.name for f in (tmp_path / "back").iterdir()) == sorted(f.stem + ".png" for f in images.iterdir())
    p = run_bundle(folder, ["bench", "--iters", "2"], url, identity=key, python=sys.executable)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["target"] == url
    port = url.rsplit(":", 1)[1]
    seen = subprocess.run(["ssh", "-i", str(key), "-p", port, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                           "-o", "UserKnownHostsFile=/dev/null", url[len("ssh://"):].rsplit(":", 1)[0],
                           "echo $TMPDIR"], capture_output=True, text=True, timeout=30).stdout.strip()
    assert seen == str(device_tmp)  # the runner's mktemp -d made its folder there ...
    assert list(device_tmp.glob("edgecut-bundle.*")) == []  # ... and it is gone
    with pytest.raises(EdgecutError, match="ssh://user@host"):
        run_bundle(folder, ["bench"], "ssh://")
