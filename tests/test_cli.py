"""The ``edgecut`` command line: remove, info, eval, data synth, doctor, and its error handling."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgecut import io
from edgecut.cli import app, main
from edgecut.errors import EdgecutError

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("iou", "dice", "mae", "max_f", "mean_f", "adaptive_f", "s_measure", "e_measure", "weighted_f")

# good inputs: name -> (H, W), all odd sizes and none equal to the model's 32 x 32
GOOD = {"photo": (37, 50), "alpha": (29, 41), "gray": (23, 31), "deep": (19, 27)}
BAD = ("cut.jpg", "notes.jpg")


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def run_main(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """``edgecut ARGS`` through the real entry point (its EdgecutError handling), in-process."""
    monkeypatch.setattr(sys, "argv", ["edgecut", *(str(a) for a in args)])
    with pytest.raises(SystemExit) as e:
        main()
    out, err = capsys.readouterr()
    code = e.value.code
    return (0 if code is None else code), out, err


def make_inputs(folder: Path) -> dict[str, Path]:
    """A JPEG, an RGBA PNG, a gray PNG, a 16-bit PNG, a truncated JPEG and a text file named .jpg."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = {}
    h, w = GOOD["photo"]
    files["photo"] = folder / "photo.jpg"
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(files["photo"], quality=95)
    h, w = GOOD["alpha"]
    rgba = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    rgba[: h // 2, :, 3] = 0
    files["alpha"] = folder / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(files["alpha"])
    h, w = GOOD["gray"]
    files["gray"] = folder / "gray.png"
    Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L").save(files["gray"])
    h, w = GOOD["deep"]
    files["deep"] = folder / "deep.png"
    assert cv2.imwrite(str(files["deep"]), rng.integers(0, 65536, (h, w), dtype=np.uint16))
    cut = folder / "cut.jpg"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(cut, quality=90)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    files["cut"] = cut
    files["notes"] = folder / "notes.jpg"
    files["notes"].write_text("shopping list: milk, eggs\n" * 5)
    return files


def words(text: str) -> str:
    """Text with rich's line wrapping undone (runs of white space made one space)."""
    return " ".join(text.split())


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im)


# --------------------------------------------------------------------------- remove


@pytest.mark.parametrize("fmt", ["rgba", "mask", "composite"])
@pytest.mark.parametrize("as_list", [False, True], ids=["folder", "list"])
def test_remove_acceptance(tmp_path, tiny_artifact, fmt, as_list):
    files = make_inputs(tmp_path / "in")
    out = tmp_path / "out"
    inputs = [files[k] for k in ("photo", "cut", "alpha", "notes", "gray", "deep")] if as_list else [tmp_path / "in"]
    r = invoke("remove", *inputs, "--model", tiny_artifact.path, "--out", out, "--format", fmt, "--bg", "0,177,64")
    assert r.exit_code == 1, r.output
    # the good inputs are written anyway, at their original sizes
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{k}.png" for k in GOOD)
    for name, (h, w) in GOOD.items():
        a = read_png(out / f"{name}.png")
        assert a.dtype == np.uint8
        if fmt == "rgba":
            assert a.shape == (h, w, 4)
            assert np.array_equal(a[..., :3], io.read_image(files[name]))  # colour untouched
        elif fmt == "mask":
            assert a.shape == (h, w)
        else:
            assert a.shape == (h, w, 3)
    # each bad input: one error naming it
    err = r.stderr
    flat = err.replace("\n", "")
    assert flat.count("error") == len(BAD)
    for bad in BAD:
        assert str(tmp_path / "in" / bad) in flat
    for good in ("photo.jpg", "alpha.png", "gray.png", "deep.png"):
        assert good not in err
    assert "Traceback" not in r.output
    assert "wrote 4 cut-out(s)" in words(r.stdout) and "2 input(s) failed" in words(r.stdout)


def test_remove_error_is_one_line_per_bad_input(tmp_path, tiny_artifact):
    folder = tmp_path / ("inputs-" + "x" * 40)  # a realistic path length (~100 chars) for a bad input
    files = make_inputs(folder)
    r = invoke("remove", files["photo"], files["cut"], files["notes"], "--model", tiny_artifact.path,
               "--out", tmp_path / "out")
    assert r.exit_code == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == len(BAD), lines
    assert str(files["cut"]) in lines[0] and str(files["notes"]) in lines[1]


def test_remove_formats_agree(tmp_path, tiny_artifact):
    files = make_inputs(tmp_path / "in")
    outs = {}
    for fmt in ("rgba", "mask", "composite"):
        r = invoke("remove", files["photo"], "--model", tiny_artifact.path, "--out", tmp_path / fmt,
                   "--format", fmt, "--bg", "#102030")
        assert r.exit_code == 0, r.output
        outs[fmt] = read_png(tmp_path / fmt / "photo.png")
    rgba, mask, comp = outs["rgba"], outs["mask"], outs["composite"]
    assert np.array_equal(rgba[..., 3], mask)
    a = mask[..., None].astype(np.float32) / 255
    expected = rgba[..., :3].astype(np.float32) * a + np.array([16, 32, 48], np.float32) * (1 - a)
    assert np.abs(comp.astype(np.float32) - expected).max() <= 1.0


def test_remove_same_stem_twice_gets_unique_names(tmp_path, tiny_artifact):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    img = np.full((33, 35, 3), 128, np.uint8)
    io.write_image(tmp_path / "a" / "x.png", img)
    io.write_image(tmp_path / "b" / "x.jpg", img)
    r = invoke("remove", tmp_path / "a", tmp_path / "b", "--model", tiny_artifact.path, "--out", tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x-2.png", "x.png"]


def test_remove_bad_bg_colour_exits_2(monkeypatch, capsys, tmp_path, tiny_artifact):
    img = tmp_path / "a.png"
    io.write_image(img, np.zeros((8, 8, 3), np.uint8))
    code, out, err = run_main(monkeypatch, capsys, "remove", img, "--model", tiny_artifact.path,
                              "--out", tmp_path / "out", "--format", "composite", "--bg", "chartreuse-ish")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "--bg" in lines[0] and "chartreuse-ish" in lines[0] and "R,G,B" in lines[0]
    assert "Traceback" not in err + out
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bg", ["300,0,0", "1,2", "#12345", "#gggggg", ""])
def test_bad_colours_are_refused(bg):
    from edgecut.cutout import parse_color

    with pytest.raises(EdgecutError, match="not a colour"):
        parse_color(bg)


@pytest.mark.parametrize("bg,rgb", [("white", (255, 255, 255)), ("#FF8000", (255, 128, 0)),
                                    (" 1, 2 ,3 ", (1, 2, 3)), ("Green", (0, 177, 64))])
def test_good_colours(bg, rgb):
    from edgecut.cutout import parse_color

    assert parse_color(bg) == rgb


def test_remove_bad_format_exits_2(monkeypatch, capsys, tmp_path, tiny_artifact):
    code, _, err = run_main(monkeypatch, capsys, "remove", tmp_path, "--model", tiny_artifact.path,
                            "--out", tmp_path / "out", "--format", "jpeg")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "--format" in err


# --------------------------------------------------------------------------- info


def test_info_table(tiny_artifact):
    r = invoke("info", tiny_artifact.path)
    assert r.exit_code == 0, r.output
    m = tiny_artifact.manifest
    assert "params" in r.stdout and f"{m.params:,}" in r.stdout
    assert "macs" in r.stdout and f"{m.macs / 1e9:.3f} G" in r.stdout
    assert "torch" in r.stdout


def test_info_json_and_size(tiny_artifact):
    base = json.loads(invoke("info", "--json", tiny_artifact.path).stdout)
    r = invoke("info", tiny_artifact.path, "--json", "--size", "64")
    assert r.exit_code == 0, r.output
    big = json.loads(r.stdout)
    assert base["params"] == big["params"] == tiny_artifact.manifest.params
    assert base["macs"] == tiny_artifact.manifest.macs
    assert base["macs_input_size"] == [32, 32] and big["macs_input_size"] == [64, 64]
    assert big["macs"] > base["macs"]
    assert abs(big["macs"] - 4 * base["macs"]) <= 0.01 * big["macs"]


def test_info_list_archs():
    r = invoke("info", "--list-archs")
    assert r.exit_code == 0
    names = [line.split()[0] for line in r.stdout.splitlines() if line.strip()]
    assert {"unet", "mobilenet_v3_large_unet", "mobilenet_v3_small_unet", "mobilenet_v2_unet",
            "mobilenet_v3_large_lraspp"} <= set(names)
    assert "width" in r.stdout and "width_mult" in r.stdout


def test_info_errors(monkeypatch, capsys, tmp_path):
    code, _, err = run_main(monkeypatch, capsys, "info")
    assert code == 2 and "--list-archs" in err
    code, _, err = run_main(monkeypatch, capsys, "info", tmp_path)
    assert code == 2 and str(tmp_path) in err and "edgecut.json" in err
    assert len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- eval


def test_eval_model_json(tmp_path, tiny_artifact, synth_data):
    out = tmp_path / "res" / "val.json"
    r = invoke("eval", tiny_artifact.path, "--data", synth_data, "--split", "val", "--json", out)
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    val_names = (synth_data / "splits" / "val.txt").read_text().split()
    assert res["count"] == len(val_names)
    assert set(METRICS) <= set(res["metrics"])
    for k in METRICS:
        assert isinstance(res["metrics"][k], float) and 0.0 <= res["metrics"][k] <= 1.0, k
    assert "max_f_convention" in res and "max" in res["max_f_convention"]
    assert sorted(row["name"] for row in res["per_image"]) == sorted(val_names)
    assert res["split"] == "val" and res["model"] == str(tiny_artifact.path) and res["backend"] == "torch"
    assert "iou" in r.stdout and "lowest IoU" in r.stdout


def test_eval_pred_of_the_masks_is_perfect(tmp_path, synth_data):
    pred = tmp_path / "pred"
    shutil.copytree(synth_data / "masks", pred)
    out = tmp_path / "p.json"
    r = invoke("eval", "--pred", pred, "--data", synth_data, "--split", "val", "--json", out)
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    m = res["metrics"]
    assert m["iou"] == pytest.approx(1.0) and m["dice"] == pytest.approx(1.0)
    assert m["mae"] == pytest.approx(0.0, abs=1e-9)
    assert m["s_measure"] == pytest.approx(1.0, abs=1e-6)
    assert res["pred"] == str(pred)


def test_eval_pred_of_inverted_masks_is_bad(tmp_path, synth_data):
    pred = tmp_path / "pred"
    pred.mkdir()
    for name in (synth_data / "splits" / "val.txt").read_text().split():
        io.write_image(pred / f"{name}.png", 255 - io.read_mask(synth_data / "masks" / f"{name}.png"))
    out = tmp_path / "p.json"
    r = invoke("eval", "--pred", pred, "--data", synth_data, "--split", "val", "--json", out)
    assert r.exit_code == 0, r.output
    m = json.loads(out.read_text())["metrics"]
    assert m["iou"] == pytest.approx(0.0) and m["mae"] == pytest.approx(1.0)


def test_eval_pred_missing_maps(monkeypatch, capsys, tmp_path, synth_data):
    pred = tmp_path / "pred"
    pred.mkdir()
    code, _, err = run_main(monkeypatch, capsys, "eval", "--pred", pred, "--data", synth_data, "--split", "val")
    assert code == 2 and "missing" in err and str(pred) in err


@pytest.mark.parametrize("which", ["both", "neither"])
def test_eval_needs_model_xor_pred(monkeypatch, capsys, tmp_path, tiny_artifact, synth_data, which):
    args = ["eval", "--data", synth_data]
    if which == "both":
        args += [tiny_artifact.path, "--pred", tmp_path]
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "MODEL" in lines[0] and "--pred" in lines[0]
    assert "Traceback" not in out + err


def test_eval_missing_data_folder(monkeypatch, capsys, tmp_path, tiny_artifact):
    missing = tmp_path / "no_such_data"
    code, out, err = run_main(monkeypatch, capsys, "eval", tiny_artifact.path, "--data", missing)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert str(missing) in lines[0]
    assert "Traceback" not in out + err


@pytest.mark.slow
def test_real_entry_point_exit_codes(tmp_path, tiny_artifact):
    """``python -m edgecut.cli``: user errors exit 2 with one line and no traceback."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80"}
    missing = tmp_path / "no_such_data"
    p = subprocess.run([sys.executable, "-m", "edgecut.cli", "eval", str(tiny_artifact.path), "--data", str(missing)],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert p.returncode == 2, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and str(missing) in p.stderr
    assert "Traceback" not in p.stderr
    p = subprocess.run([sys.executable, "-m", "edgecut.cli", "remove", str(tmp_path), "--model",
                        str(tiny_artifact.path), "--out", str(tmp_path / "o"), "--bg", "nope"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert p.returncode == 2 and "--bg" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.slow
def test_real_entry_point_remove_partial_failure(tmp_path, tiny_artifact):
    files = make_inputs(tmp_path / "in")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "edgecut.cli", "remove", str(tmp_path / "in"), "--model",
                        str(tiny_artifact.path), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert p.returncode == 1
    assert sorted(q.name for q in (tmp_path / "out").iterdir()) == sorted(f"{k}.png" for k in GOOD)
    flat = p.stderr.replace("\n", "")
    assert str(files["cut"]) in flat and str(files["notes"]) in flat
    assert "Traceback" not in p.stderr


# --------------------------------------------------------------------------- data synth, doctor


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_data_synth_is_byte_identical(tmp_path):
    for name in ("A", "B"):
        r = invoke("data", "synth", "--out", tmp_path / name, "--count", "8", "--size", "32", "--seed", "4")
        assert r.exit_code == 0, r.output
        assert "wrote 8 images" in r.stdout
    a, b = _tree(tmp_path / "A"), _tree(tmp_path / "B")
    assert a == b
    assert sum(k.startswith("images/") for k in a) == 8 and sum(k.startswith("masks/") for k in a) == 8
    assert {"splits/train.txt", "splits/val.txt", "synth.json"} <= set(a)
    assert read_png(tmp_path / "A" / "images" / "00000.png").shape == (32, 32, 3)
    assert read_png(tmp_path / "A" / "masks" / "00007.png").shape == (32, 32)


def test_data_synth_refuses_foreign_folder(monkeypatch, capsys, tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    code, _, err = run_main(monkeypatch, capsys, "data", "synth", "--out", tmp_path, "--count", "2", "--size", "32")
    assert code == 2 and str(tmp_path) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_doctor_json():
    r = invoke("doctor", "--json")
    assert r.exit_code == 0, r.output
    env = json.loads(r.stdout)
    assert isinstance(env["cpu"]["flags"], list)
    assert env["cpu"]["cores"] >= 1
    assert "torch" in env["backends"] and env["backends"]["torch"]
    assert "torch" in env["devices"]


def _defaults(command: str) -> dict[str, object]:
    """The values a command's options take when none is given, as its config builder receives them."""
    from edgecut.cli.reference import _commands

    return {p.name: p.default for p in dict(_commands())[command].params}


@pytest.mark.parametrize("command, module, builder, base, required", [
    ("train", "train", "train_config", "TRAIN", {}),
    ("distill", "distill", "distill_config", "DISTILL", {"student": "mobilenet_v3_large_unet"}),
    ("prune", "prune", "prune_config", "PRUNE", {"ratio": 0.5}),
    ("qat", "qat", "qat_config", "QAT", {}),
    ("export", "export", "export_config", "EXPORT", {"format": "onnx", "precision": "fp32"}),
    ("bench", "bench", "bench_config", "BENCH", {}),
    ("import", "import_", "import_config", "IMPORT", {}),
    ("optimize", "optimize", "optimize_config", "OPTIMIZE", {}),
])
def test_a_command_left_at_its_defaults_builds_its_config_s_defaults(command, module, builder, base, required):
    """Each option's default is read from the config it sets: nothing given on the command line, the stage runs
    with its config's defaults (what the Python API and a recipe get)."""
    import importlib

    cli = importlib.import_module(f"edgecut.cli.{module}")
    base_config = getattr(cli, base)
    assert base_config == type(base_config)()
    assert getattr(cli, builder)({**_defaults(command), **required}) == base_config


def test_the_command_line_loads_no_backend():
    """The command modules read their defaults from the configs when imported: ``edgecut --help`` must still
    load no torch, OpenCV or runtime."""
    code = ("import sys, edgecut.cli.main; print(','.join(m for m in ('torch', 'cv2', 'onnx', 'onnxruntime', "
            "'openvino', 'tensorrt') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
