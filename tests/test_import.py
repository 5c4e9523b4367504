"""``edgecut import``: a user's own model in (a state dict and its class, TorchScript, a torch.export
program, ONNX, a torchvision model with a dict output), and every stage taking it, each command
run through the CLI in a fresh process as a user runs it."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

# The seed article's U-Net (section 4.3.2), with the fixes it needs to run: its skip joins a
# half-size map to a full-size one with the wrong channel count, and it ends in a ReLU over three
# channels. Here the up-path is resized onto the skip, takes both maps' 128 channels and returns
# one channel of logits. A sigmoid variant and a tuple-returning variant sit beside it.
SEED_UNET = '''
import torch
import torch.nn as nn
import torch.nn.functional as F


class UNet(nn.Module):
    def __init__(self):
        super(UNet, self).__init__()
        self.down_conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1)
        self.down_pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.down_conv2 = nn.Conv2d(64, 128, kernel_size=3, stride=1, padding=1)
        self.down_pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.up_conv1 = nn.ConvTranspose2d(128, 64, kernel_size=2, stride=2)
        self.up_conv2 = nn.Conv2d(128, 1, kernel_size=3, stride=1, padding=1)

    def forward(self, x):
        d1 = F.relu(self.down_conv1(x))
        p1 = self.down_pool1(d1)
        d2 = F.relu(self.down_conv2(p1))
        p2 = self.down_pool2(d2)
        u1 = F.relu(self.up_conv1(p2))
        u1 = F.interpolate(u1, size=d1.shape[-2:])
        u1 = torch.cat((u1, d1), 1)
        return self.up_conv2(u1)


class ProbUNet(UNet):
    def forward(self, x):
        return torch.sigmoid(super().forward(x))


class SideUNet(UNet):
    def forward(self, x):
        y = super().forward(x)
        return y, F.avg_pool2d(y, 2)


class OtherNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 1, 1)

    def forward(self, x):
        return self.head(F.relu(self.stem(x)))
'''

pytestmark = pytest.mark.slow


def edgecut(*args, ok: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``edgecut ARGS`` in a fresh process; with ``ok`` it must succeed."""
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "edgecut.cli", *(str(a) for a in args)], capture_output=True,
                       text=True, timeout=280, env=env, cwd=cwd)
    if ok:
        assert p.returncode == 0, p.stdout + p.stderr
    return p


def manifest(folder: Path) -> dict:
    return json.loads((folder / "edgecut.json").read_text())


def user_module(path: Path):
    spec = importlib.util.spec_from_file_location(f"user_{path.stem}_{abs(hash(path))}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fit(model: torch.nn.Module, data: Path, steps: int = 40) -> torch.nn.Module:
    """A user's few training steps: 32 px photos scaled to 0..1 with ImageNet mean/std (edgecut's default spec)."""
    from edgecut.artifact import ModelSpec
    from edgecut.data.synth import render

    torch.manual_seed(0)
    spec = ModelSpec(input_size=(32, 32))
    pairs = [render(i, 32, seed=5) for i in range(16)]
    x = torch.from_numpy(spec.preprocess([p[0] for p in pairs]))
    y = torch.from_numpy(np.stack([p[1] for p in pairs])[:, None] / 255.0).float()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def seed(tmp_path_factory, synth_data):
    """The seed U-Net's file, its trained state dict (torch.save), and the same model as TorchScript,
    as a torch.export program and as ONNX."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("seed")
    code = root / "seed_unet.py"
    code.write_text(SEED_UNET)
    model = fit(user_module(code).UNet(), synth_data)
    torch.save(model.state_dict(), root / "model.pth")
    x = torch.zeros(1, 3, 32, 32)
    torch.jit.save(torch.jit.trace(model, (x,)), str(root / "model_ts.pt"))
    torch.export.save(torch.export.export(model, (x,)), str(root / "model.pt2"))
    torch.onnx.export(model, (x,), str(root / "model.onnx"), dynamo=False, input_names=["input"],
                      output_names=["mask"], dynamic_axes={"input": {0: "b"}, "mask": {0: "b"}})
    torch.onnx.export(model, (x,), str(root / "model_b1.onnx"), dynamo=False)  # as most people do: batch 1 only
    return {"root": root, "code": code, "model": model, "data": synth_data}


def distill_from(teacher: Path, out: Path, data: Path) -> dict:
    edgecut("distill", "--teacher", teacher, "--student", "mobilenet_v3_small_unet", "--width-mult", "0.25",
            "--size", "32", "--epochs", "1", "--batch", "8", "--precision", "fp32", "--data", data, "--out", out)
    m = manifest(out)
    assert m["format"] == "torch" and m["arch"]["name"] == "mobilenet_v3_small_unet"
    assert m["lineage"][-1]["step"] == "distill"
    return m


def test_the_seed_unet_from_its_class_file_through_eval_prune_export_and_distill(seed, tmp_path):
    root, data = seed["root"], seed["data"]
    art = tmp_path / "teacher"
    edgecut("import", root / "model.pth", "--class", f"{seed['code']}:UNet", "--size", "32", "32",
            "--data", data, "--out", art)
    m = manifest(art)
    assert m["arch"]["class_path"] == f"{seed['code'].resolve()}:UNet" and len(m["arch"]["class_sha256"]) == 64
    spec_source = m["metrics"]["import"]["spec_source"]
    assert spec_source["input_size"] == "given" and spec_source["output"] == "measured"
    assert spec_source["mean"] == "default" and m["spec"]["output"] == "logits"
    info = edgecut("info", art).stdout
    assert "input_size" in info and "(given)" in info and "(measured)" in info and "(default)" in info

    # the artifact rebuilds the user's class and returns what the user's model returns
    from edgecut.models.store import load_model

    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(load_model(art).module(x), seed["model"](x))

    assert "IoU" in edgecut("eval", art, "--data", data).stdout

    pruned = tmp_path / "pruned"
    edgecut("prune", art, "--ratio", "0.5", "--no-latency", "--out", pruned)
    before, after = manifest(art)["macs"], manifest(pruned)["macs"]
    assert after < 0.6 * before, (before, after)
    assert manifest(pruned)["arch"]["class_path"] == m["arch"]["class_path"]
    assert "IoU" in edgecut("eval", pruned, "--data", data).stdout  # reloads in a fresh process

    onnx_art = tmp_path / "onnx"
    out = edgecut("export", art, "--format", "onnx", "--parity-data", data, "--out", onnx_art).stdout
    assert "parity on" in out and manifest(onnx_art)["format"] == "onnx"

    distill_from(art, tmp_path / "student", data)


@pytest.mark.parametrize("name", ["model_ts.pt", "model.onnx", "model_b1.onnx", "model.pt2"])
def test_torchscript_onnx_and_pt2_models_are_distill_teachers(seed, tmp_path, name):
    root, data = seed["root"], seed["data"]
    art = tmp_path / "teacher"
    edgecut("import", root / name, "--data", data, "--out", art)
    m = manifest(art)
    assert m["format"] == {"model_ts.pt": "torchscript", "model.onnx": "onnx", "model_b1.onnx": "onnx",
                           "model.pt2": "pt2"}[name]
    sources = m["metrics"]["import"]["spec_source"]
    assert m["spec"]["output"] == "logits" and sources["output"] == "measured"
    if name == "model_ts.pt":  # a TorchScript file does not say what size it takes: the default, and info says so
        assert sources["input_size"] == "default" and "(default)" in edgecut("info", art).stdout
    else:  # the exported graph fixes 32 x 32
        assert tuple(m["spec"]["input_size"]) == (32, 32) and sources["input_size"] == "file"
    assert "IoU" in edgecut("eval", art, "--data", data).stdout
    edgecut("remove", data / "images", "--model", art, "--out", tmp_path / "cutouts")
    assert len(list((tmp_path / "cutouts").iterdir())) == len(list((data / "images").iterdir()))
    edgecut("bench", art, "--data", data, "--limit", "4", "--warmup", "0", "--min-time", "0", "--min-iters", "3",
            "--no-e2e", "--in-process", "--max-wait", "0", "--out", tmp_path / "bench.jsonl")
    record = json.loads((tmp_path / "bench.jsonl").read_text().splitlines()[0])
    assert record["format"] == m["format"] and record["accuracy"]["count"] == 4
    student = distill_from(art, tmp_path / "student", data)
    from edgecut.artifact import load_artifact

    assert student["lineage"][-1]["params"]["teachers"][0]["sha256"] == load_artifact(art).sha256
    if m["format"] == "onnx":  # feature distillation reads a torch module's inner maps: an ONNX file has none
        p = edgecut("distill", "--teacher", art, "--student", "mobilenet_v3_small_unet", "--width-mult", "0.25",
                    "--size", "32", "--epochs", "1", "--feature-kd", "--data", data, "--out", tmp_path / "fkd",
                    ok=False)
        assert p.returncode != 0 and "feature" in p.stdout + p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("name,fmt", [("model_ts.pt", "onnx"), ("model.pt2", "onnx"),
                                      pytest.param("model_ts.pt", "openvino", marks=pytest.mark.openvino)])
def test_torchscript_and_pt2_export_with_the_parity_gate(seed, tmp_path, name, fmt):
    pytest.importorskip("openvino") if fmt == "openvino" else None
    root, data = seed["root"], seed["data"]
    art = tmp_path / "in"
    edgecut("import", root / name, "--data", data, "--out", art)
    out = edgecut("export", art, "--format", fmt, "--parity-data", data, "--out", tmp_path / "out").stdout
    assert "parity on" in out and manifest(tmp_path / "out")["format"] == fmt


def test_lraspp_with_a_dict_output_is_imported_pruned_and_exported(tmp_path, synth_data):
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    torch.manual_seed(0)
    model = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=1).eval()
    torch.save(model.state_dict(), tmp_path / "lraspp.pth")
    cls = "torchvision.models.segmentation:lraspp_mobilenet_v3_large"
    kwargs = json.dumps({"weights": None, "weights_backbone": None, "num_classes": 1})
    args = ["import", tmp_path / "lraspp.pth", "--class", cls, "--kwargs", kwargs, "--size", "64", "64",
            "--data", synth_data, "--count", "4"]
    p = edgecut(*args, "--out", tmp_path / "nokey", ok=False)
    assert p.returncode != 0 and "--output-key" in p.stdout + p.stderr and "out" in p.stdout + p.stderr
    art = tmp_path / "lraspp"
    edgecut(*args, "--output-key", "out", "--force", "--out", art)  # untrained: its masks may be one class
    m = manifest(art)
    assert m["arch"]["output"] == {"key": "out"} and m["lineage"][-1]["params"]["force"] is True
    assert isinstance(m["metrics"]["import"]["warnings"], list)

    pruned = tmp_path / "pruned"
    edgecut("prune", art, "--ratio", "0.3", "--no-latency", "--out", pruned)
    assert manifest(pruned)["macs"] < manifest(art)["macs"]
    edgecut("export", pruned, "--format", "onnx", "--parity-data", synth_data, "--parity-count", "4",
            "--out", tmp_path / "onnx")
    assert manifest(tmp_path / "onnx")["format"] == "onnx"


# ---------------------------------------------------------------------------- refusals


def saved(tmp_path: Path, seed, cls: str) -> Path:
    mod = user_module(seed["code"])
    torch.manual_seed(0)
    model = getattr(mod, cls)()
    model.load_state_dict(seed["model"].state_dict())
    path = tmp_path / f"{cls}.pth"
    torch.save(model.state_dict(), path)
    return path


def test_a_probability_model_declared_as_logits_is_refused_with_its_range(seed, tmp_path):
    weights = saved(tmp_path, seed, "ProbUNet")
    common = ["import", weights, "--class", f"{seed['code']}:ProbUNet", "--size", "32", "32", "--data", seed["data"]]
    p = edgecut(*common, "--output", "logits", "--out", tmp_path / "a", ok=False)
    text = p.stdout + p.stderr
    assert p.returncode != 0 and "Traceback" not in text
    assert "declared logits" in text and "lie in [0." in text and "--output probability" in text
    assert not (tmp_path / "a").exists()
    edgecut(*common, "--out", tmp_path / "b")  # measured: probability
    m = manifest(tmp_path / "b")
    assert m["spec"]["output"] == "probability" and m["metrics"]["import"]["spec_source"]["output"] == "measured"
    edgecut(*common, "--output", "logits", "--force", "--out", tmp_path / "c")
    assert any("declared logits" in w for w in manifest(tmp_path / "c")["metrics"]["import"]["warnings"])


def test_a_wrong_class_names_the_missing_and_unexpected_keys(seed, tmp_path):
    p = edgecut("import", seed["root"] / "model.pth", "--class", f"{seed['code']}:OtherNet", "--out", tmp_path / "a",
                ok=False)
    text = p.stdout + p.stderr
    assert p.returncode != 0 and "Traceback" not in text
    assert "missing" in text and "stem.weight" in text and "unexpected" in text and "down_conv1.weight" in text


def test_tuples_need_an_index_state_dicts_a_class_and_a_changed_class_file_is_refused(seed, tmp_path):
    weights = saved(tmp_path, seed, "SideUNet")
    common = ["import", weights, "--size", "32", "32", "--data", seed["data"]]
    p = edgecut(*common, "--out", tmp_path / "a", ok=False)
    assert p.returncode != 0 and "--class" in p.stdout + p.stderr
    code = tmp_path / "side.py"
    code.write_text(SEED_UNET)
    p = edgecut(*common, "--class", f"{code}:SideUNet", "--out", tmp_path / "b", ok=False)
    assert p.returncode != 0 and "tuple" in p.stdout + p.stderr and "--output-index" in p.stdout + p.stderr
    art = tmp_path / "c"
    edgecut(*common, "--class", f"{code}:SideUNet", "--output-index", "0", "--out", art)
    assert manifest(art)["arch"]["output"] == {"index": 0}
    assert "IoU" in edgecut("eval", art, "--data", seed["data"]).stdout
    code.write_text(SEED_UNET + "\n# edited\n")
    p = edgecut("eval", art, "--data", seed["data"], ok=False)
    text = p.stdout + p.stderr
    assert p.returncode != 0 and "Traceback" not in text and str(code) in text and "changed" in text


def test_a_pt2_with_pickled_objects_is_refused_and_never_run(seed, tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    src = seed["root"] / "model.pt2"
    for target in ("sample_inputs", "weight_0"):
        bad = tmp_path / f"{target}.pt2"
        with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bad, "w") as zout:
            for item in zin.infolist():
                data = zin.read(item)
                if item.filename.endswith("sample_inputs/model.pt") and target == "sample_inputs":
                    data = pickle.dumps(Evil(), protocol=2)
                if target == "weight_0":
                    if item.filename.endswith("weights/weight_0"):
                        data = pickle.dumps(Evil(), protocol=2)
                    elif item.filename.endswith("model_weights_config.json"):
                        config = json.loads(data)
                        for entry in config["config"].values():
                            entry["use_pickle"] = True
                        data = json.dumps(config).encode()
                zout.writestr(item, data)
        p = edgecut("import", bad, "--out", tmp_path / f"out-{target}", ok=False)
        text = p.stdout + p.stderr
        assert p.returncode != 0 and "Traceback" not in text and bad.name in text, text
        assert "holds pickled objects" in text and "weights_only" not in text and not marker.exists(), text


def test_python_api_imports_an_in_memory_module(seed, tmp_path, trained):
    import edgecut
    from edgecut.artifact import ModelSpec
    from edgecut.models.store import load_model

    model = load_model(trained.path).module  # a trained TINY_UNET (width 4, depth 2) object
    with pytest.raises(edgecut.EdgecutError, match="pass kwargs="):  # built with options the call must repeat
        edgecut.import_model(model, out=tmp_path / "bare", progress=False)
    art = edgecut.import_model(model, out=tmp_path / "m", config=edgecut.ImportConfig(kwargs={"width": 4, "depth": 2}),
                               spec=ModelSpec(input_size=(32, 32), output="logits"), progress=False)
    assert art.manifest.format == "torch" and art.manifest.metrics["import"]["spec_source"]["mean"] == "given"
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_model(art.path).module(x), model(x))
    local = user_module(seed["code"]).UNet()  # a class from a file imported by hand: not importable again
    with pytest.raises(edgecut.EdgecutError, match="not imported by name"):
        edgecut.import_model(local, out=tmp_path / "local", progress=False)
    assert not (tmp_path / "local").exists() and not (tmp_path / "bare").exists()


def test_a_recipe_starts_from_a_model_file_with_an_import_step(seed, tmp_path):
    import shutil

    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copy(seed["code"], folder / "net.py")
    shutil.copy(seed["root"] / "model.pth", folder / "model.pth")
    (folder / "recipe.yaml").write_text(
        "name: mine\nsteps:\n"
        "  mine: {step: import, model: model.pth, class_path: net.py:UNet, size: [32, 32], count: 2}\n"
        "  mine-onnx: {step: export, model: '@mine', format: onnx, parity: {count: 4}}\n")
    run = ["run", folder / "recipe.yaml", "--out", tmp_path / "run"]
    edgecut(*run, cwd=tmp_path)  # the class file is found beside the recipe, not in the working folder
    m = manifest(tmp_path / "run" / "mine")
    assert m["arch"]["class_path"] == f"{(folder / 'net.py').resolve()}:UNet"
    assert manifest(tmp_path / "run" / "mine-onnx")["format"] == "onnx"
    assert "import │ cached" in edgecut(*run, cwd=tmp_path).stdout
    (folder / "net.py").write_text(SEED_UNET + "\n# edited\n")  # the class's file is one of the step's inputs
    assert "import │ run" in edgecut(*run, cwd=tmp_path).stdout
