"""Failures found by probing edgecut with hostile input and faults, one test each (numbered as found).

Every case ends in success or one clear edgecut error: never a traceback, a hang or a silently
wrong number, and nothing half-written is visible.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_UNET, make_tiny_artifact
from typer.testing import CliRunner

from edgecut import io, runtime
from edgecut.artifact import load_artifact
from edgecut.cli import app
from edgecut.data.folder import find_samples
from edgecut.errors import DataWarning, EdgecutError, InputError, NonFiniteOutput, OutputError
from edgecut.exporters import ExportConfig, export
from edgecut.measure.accuracy import evaluate


def _copy_data(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def _edit_manifest(art_dir: Path, **changes) -> None:
    path = art_dir / "edgecut.json"
    manifest = json.loads(path.read_text())
    for dotted, value in changes.items():
        target = manifest
        *parents, key = dotted.split(".")
        for p in parents:
            target = target[p]
        if value is _DELETE:
            target.pop(key)
        else:
            target[key] = value
    path.write_text(json.dumps(manifest))


_DELETE = object()


# ------------------------------------------------------------------ 1. writes fail with one clear error


def test_1_a_full_disk_fails_each_remaining_cutout_clearly_and_remove_goes_on(tiny_artifact, synth_data, tmp_path,
                                                                             monkeypatch):
    from edgecut.cutout import remove_background

    images = sorted((synth_data / "images").iterdir())[:6]
    real, written = os.replace, []

    def fills_up(src, dest):  # the disk is full after two cut-outs: the third write fails
        if len(written) >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(Path(dest).name)
        return real(src, dest)

    monkeypatch.setattr(os, "replace", fills_up)
    runner = runtime.load(tiny_artifact)
    report = remove_background(images, runner, tmp_path / "out", progress=False)
    monkeypatch.setattr(os, "replace", real)
    assert len(report.written) == 2 and len(report.failed) == 4  # every input was tried
    assert all("cannot write: no space left on the device" in msg for _, msg in report.failed)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(written)  # nothing half-written


def test_1_out_under_a_regular_file_is_one_error_for_remove_export_and_eval(tiny_artifact, synth_data, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    res = CliRunner().invoke(app, ["remove", str(synth_data / "images"), "--model", str(tiny_artifact.path),
                                   "--out", str(blocker / "out")])
    assert isinstance(res.exception, OutputError) and "a file is in the way" in str(res.exception)
    with pytest.raises(OutputError, match="a file is in the way"):
        export(tiny_artifact, blocker / "onnx", ExportConfig(threads=1))
    res = CliRunner().invoke(app, ["eval", str(tiny_artifact.path), "--data", str(synth_data), "--json",
                                   str(blocker / "x.json")])
    assert isinstance(res.exception, OutputError) and str(blocker / "x.json") in str(res.exception)


def test_1_a_read_only_folder_is_one_error(tiny_artifact, tmp_path, monkeypatch):
    import tempfile

    def denied(*a, **k):  # root writes anywhere: the refusal a user would get is simulated
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", denied)
    with pytest.raises(OutputError, match="permission denied"):
        export(tiny_artifact, tmp_path / "onnx", ExportConfig(threads=1))
    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(OutputError, match=r"x\.json: cannot write: permission denied"):
        io.write_json(tmp_path / "x.json", {})


# ------------------------------------------------------------------ 2. model files are verified


def test_2_a_manifest_whose_sha256_is_zeros_is_refused(tiny_artifact, synth_data, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(tiny_artifact.path, art)
    manifest = json.loads((art / "edgecut.json").read_text())
    manifest["files"]["model.safetensors"]["sha256"] = "0" * 64
    (art / "edgecut.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="does not match the sha256"):
        runtime.load(art)
    res = CliRunner().invoke(app, ["eval", str(art), "--data", str(synth_data)])
    assert isinstance(res.exception, InputError)
    res = CliRunner().invoke(app, ["info", str(art)])  # the manifest can still be read, with the damage said
    assert res.exit_code == 0 and "DAMAGED" in res.output


def test_2_bit_flipped_weights_are_refused_before_use(tiny_artifact, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(tiny_artifact.path, art)
    weights = art / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x10  # a weight's bits, not the header: this file would load and give other numbers
    weights.write_bytes(bytes(data))
    with pytest.raises(InputError, match="re-export or restore"):
        runtime.load(art)
    assert runtime.load(load_artifact(art, verify=False)) is not None  # a user who knows why can opt out


def test_2_a_bit_flipped_onnx_never_crashes_unchecked(trained, tmp_path, monkeypatch):
    onnx_art = export(trained, tmp_path / "onnx", ExportConfig(threads=1))
    x = np.zeros((1, 3, 32, 32), np.float32)
    rng = np.random.default_rng(0)
    monkeypatch.setenv("EDGECUT_NO_VERIFY", "1")  # past the sha256 check: the runtime's own errors must be clean
    data = onnx_art.model_path.read_bytes()
    for k in range(20):
        flipped = bytearray(data)
        flipped[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
        broken = tmp_path / f"b{k}"
        shutil.copytree(onnx_art.path, broken)
        (broken / "model.onnx").write_bytes(bytes(flipped))
        try:
            runtime.load(broken, threads=1)(x)
        except EdgecutError:
            pass
    monkeypatch.delenv("EDGECUT_NO_VERIFY")
    with pytest.raises(InputError, match="sha256"):
        runtime.load(broken)


# ------------------------------------------------------------------ 3. very large images


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` (and holds one row of data)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * (3 * width + 1))) + \
        chunk(b"IEND", b"")


def test_3_a_decompression_bomb_is_one_error_and_remove_goes_on(tiny_artifact, synth_data, tmp_path):
    from edgecut.cutout import remove_background

    bomb = tmp_path / "in" / "bomb.png"
    bomb.parent.mkdir()
    bomb.write_bytes(_png_header(30000, 30000))
    with pytest.raises(InputError, match="above the cap"):
        io.read_image(bomb)
    good = sorted((synth_data / "images").iterdir())[0]
    shutil.copy(good, tmp_path / "in" / good.name)
    report = remove_background([tmp_path / "in"], runtime.load(tiny_artifact), tmp_path / "out", progress=False)
    assert [p.name for p, _ in report.failed] == ["bomb.png"] and len(report.written) == 1


# ------------------------------------------------------------------ 4. models that output NaN


def test_4_nan_output_is_one_error_naming_the_model(synth_data, tmp_path):
    from edgecut.models.store import build, save_model

    model = build(TINY_UNET).eval()
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    art = save_model(tmp_path / "nan", model, TINY_UNET, model.default_spec.with_size(32))
    with pytest.raises(NonFiniteOutput, match=str(art.path)):
        evaluate(runtime.load(art), find_samples(synth_data, "val"), progress=False)
    sick = make_tiny_artifact(tmp_path / "std0")
    _edit_manifest(sick.path, **{"spec.std": [0.0, 0.2, 0.2]})
    with pytest.raises(InputError, match="spec.std"):
        runtime.load(sick.path)


# ------------------------------------------------------------------ 5. masks stored as 0/1


def test_5_masks_of_zeros_and_ones_are_read_as_binary_with_a_note(tiny_artifact, synth_data, tmp_path):
    data = _copy_data(synth_data, tmp_path / "data")
    for mask in (data / "masks").iterdir():
        io.write_image(mask, (io.read_mask(mask) > 127).astype(np.uint8))  # 0 and 1
    with pytest.warns(DataWarning):
        assert io.read_mask(next((data / "masks").iterdir())).max() == 255
    samples = find_samples(data, "val")
    with pytest.warns(DataWarning, match="only the values 0 and 1"):
        scores = evaluate(runtime.load(tiny_artifact), samples, progress=False).metrics
    reference = evaluate(runtime.load(tiny_artifact), find_samples(synth_data, "val"), progress=False).metrics
    assert scores["iou"] == pytest.approx(reference["iou"])  # not 0: the masks were understood


# ------------------------------------------------------------------ 6. two writers, one folder


def test_6_a_second_export_into_a_folder_being_written_fails_clearly(tiny_artifact, tmp_path):
    out = tmp_path / "onnx"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from edgecut import io
        with io.exclusive({str(out)!r}):
            print("holding", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(OutputError, match=f"another edgecut process \\(pid {holder.pid}\\) is writing it"):
            export(tiny_artifact, out, ExportConfig(threads=1))
    finally:
        holder.kill()
        holder.wait()
    with pytest.warns(DataWarning, match=f"left by edgecut process {holder.pid}"):  # killed: its lock file stayed
        assert export(tiny_artifact, out, ExportConfig(threads=1)).manifest.format == "onnx"  # free again
    assert not list(tmp_path.glob(".*.lock"))


# ------------------------------------------------------------------ 7. ONNX with external data


def test_7_an_onnx_artifact_with_external_data_exports(trained, tmp_path):
    import onnx

    from edgecut.artifact import write_artifact

    fp32 = export(trained, tmp_path / "fp32", ExportConfig(threads=1))
    model = onnx.load(str(fp32.model_path))
    split = tmp_path / "split"
    split.mkdir()
    onnx.save_model(model, str(split / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=0)
    art = write_artifact(tmp_path / "ext", fp32.manifest.model_copy(update={"files": {}}),
                         {"model.onnx": split / "model.onnx", "model.onnx.data": split / "model.onnx.data"})
    fp16 = export(art, tmp_path / "fp16", ExportConfig(precision="fp16", threads=1))
    assert fp16.manifest.metrics["parity"]["passed"] and set(fp16.manifest.files) == {"model.onnx"}


# ------------------------------------------------------------------ 8. hand-edited manifests


@pytest.mark.parametrize("edit, match", [
    ({"spec.size_divisor": 0}, "spec.size_divisor"),
    ({"arch.kwargs.width": 0}, "cannot be built"),
    ({"arch.kwargs.width": -4}, "cannot be built"),
    ({"arch.kwargs.width": "four"}, "cannot be built"),
    ({"precision": "int8"}, "not precision 'int8'"),
    ({"spec": _DELETE}, "spec: Field required"),
    ({"format": "tflite2"}, "not one edgecut knows"),
])
def test_8_hand_edited_manifests_are_refused_by_field(tiny_artifact, tmp_path, edit, match):
    art = tmp_path / "art"
    shutil.copytree(tiny_artifact.path, art)
    _edit_manifest(art, **edit)
    with pytest.raises(EdgecutError, match=match):
        runtime.load(art)(np.zeros((1, 3, 32, 32), np.float32))


def test_8_info_shows_a_non_numeric_metric_and_a_fake_torchscript_is_refused(tiny_artifact, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(tiny_artifact.path, art)
    _edit_manifest(art, metrics={"val": {"iou": "high"}})
    res = CliRunner().invoke(app, ["info", str(art)])
    assert res.exit_code == 0 and "high" in res.output
    _edit_manifest(art, format="torchscript", arch=None)
    with pytest.raises(InputError, match="not a readable TorchScript file"):
        runtime.load(load_artifact(art, verify=False))


# ------------------------------------------------------------------ 9. leftovers and bad training images


def test_9_a_half_written_checkpoint_is_removed_on_resume(synth_data, tmp_path):
    from edgecut.training.config import LoopConfig, TrainConfig
    from edgecut.training.train import train

    config = TrainConfig(arch_kwargs={"width": 4, "depth": 2}, size=32, loop=LoopConfig(epochs=1, batch_size=4))
    train(synth_data, tmp_path / "run", config, progress=False)
    stale = tmp_path / "run" / "checkpoints" / ".last.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")  # what a kill during the write leaves
    train(synth_data, tmp_path / "run", config, resume=True, progress=False)
    assert not stale.exists()


def test_9_every_bad_training_image_is_found_before_training_starts(synth_data, tmp_path):
    from edgecut.training.config import LoopConfig, TrainConfig
    from edgecut.training.train import train

    data = _copy_data(synth_data, tmp_path / "data")
    names = sorted((data / "images").iterdir())
    names[3].write_bytes(names[3].read_bytes()[:200])  # truncated
    names[17].write_bytes(b"not an image")
    config = TrainConfig(arch_kwargs={"width": 4, "depth": 2}, size=32, loop=LoopConfig(epochs=1, batch_size=4))
    with pytest.raises(InputError) as e:
        train(data, tmp_path / "run", config, progress=False)
    assert "2 of 24 image/mask pair(s) cannot be used" in str(e.value)
    assert names[3].name in str(e.value) and names[17].name in str(e.value)
    assert not (tmp_path / "run" / "checkpoints").exists()  # found before the first step


def test_eval_normalize_scores_saliency_maps_min_max_normalised(synth_data, tmp_path):
    preds = tmp_path / "preds"
    for mask in (synth_data / "masks").iterdir():
        m = io.read_mask(mask).astype(np.float32) / 255
        io.write_image(preds / mask.name, (40 + 60 * m).astype(np.uint8))  # a faint map: 40 .. 100
    plain = CliRunner().invoke(app, ["eval", "--data", str(synth_data), "--pred", str(preds), "--json",
                                     str(tmp_path / "plain.json")])
    norm = CliRunner().invoke(app, ["eval", "--data", str(synth_data), "--pred", str(preds), "--normalize", "--json",
                                    str(tmp_path / "norm.json")])
    assert plain.exit_code == 0 and norm.exit_code == 0, plain.output + norm.output
    iou = {k: io.read_json(tmp_path / f"{k}.json")["metrics"]["iou"] for k in ("plain", "norm")}
    assert iou["plain"] < 0.01 and iou["norm"] == pytest.approx(1.0)  # 100/255 < 0.5; normalised it is the mask
    assert io.read_json(tmp_path / "norm.json")["normalized"] is True


# ================================================================== third round: an independent probe's findings
# (each failed before its fix: a hang, a RecursionError, a 100 GB allocation, a traceback, a silent loss)


def _invoke(args: list[str]):
    """``edgecut ARGS`` in this process: (exit code, the exception it ended with, if any, and its output)."""
    res = CliRunner().invoke(app, args)
    return res.exit_code, res.exception if not isinstance(res.exception, SystemExit) else None, res.output


@pytest.mark.timeout(20)
def test_10_a_yaml_alias_bomb_is_refused_at_once_naming_the_line(tmp_path):
    from edgecut.recipe import RecipeError, load_recipe

    levels = "".join(f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * 9)}]\n" for i in range(1, 9))
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text("steps:\n  a: {step: synth, count: 4, size: 32}\nx0: &x0 [lol, lol, lol, lol, lol, lol, lol, "
                      "lol, lol]\n" + levels)  # nine levels of nine: 387 million strings once expanded
    with pytest.raises(RecipeError, match=r"bomb\.yaml:4: not valid YAML: the alias \*x0 is refused"):
        load_recipe(recipe)
    code, exc, _ = _invoke(["run", str(recipe), "--dry-run"])
    assert isinstance(exc, RecipeError)


def test_11_a_self_referencing_alias_is_one_error_not_a_recursion(tmp_path):
    from edgecut.recipe import RecipeError, load_recipe

    recipe = tmp_path / "self.yaml"
    recipe.write_text("steps: &s\n  a: *s\n")
    with pytest.raises(RecipeError, match=r"self\.yaml:2: .*alias \*s is refused"):
        load_recipe(recipe)


@pytest.mark.parametrize("command", ["info", "eval", "remove", "bench", "export"])
def test_12_a_manifest_of_deeply_nested_brackets_is_one_error_for_every_command(tiny_artifact, synth_data, tmp_path,
                                                                                command):
    art = tmp_path / "art"
    shutil.copytree(tiny_artifact.path, art)
    (art / "edgecut.json").write_text("[" * 100_000 + "]" * 100_000)
    args = {"info": ["info", str(art)], "eval": ["eval", str(art), "--data", str(synth_data)],
            "remove": ["remove", str(synth_data / "images"), "--model", str(art), "--out", str(tmp_path / "cut")],
            "bench": ["bench", str(art), "--out", str(tmp_path / "b.jsonl"), "--in-process"],
            "export": ["export", str(art), "--out", str(tmp_path / "onnx")]}[command]
    code, exc, _ = _invoke(args)
    assert isinstance(exc, InputError) and "nested deeper than 64 levels" in str(exc), repr(exc)
    assert str(art / "edgecut.json") in str(exc)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kwargs, field", [({"width": 1_000_000_000}, "cannot be built"),
                                           ({"width": 8}, r"arch\.kwargs .* does not fit the weights: inc\.0\.weight"),
                                           ({"depth": 3}, r"arch\.kwargs .* does not fit the weights")])
def test_13_manifest_sizes_are_checked_against_bounds_and_the_weights_before_anything_is_built(
        tiny_artifact, synth_data, tmp_path, kwargs, field):
    art = tmp_path / "art"
    shutil.copytree(tiny_artifact.path, art)
    _edit_manifest(art, **{f"arch.kwargs.{k}": v for k, v in kwargs.items()})  # edgecut.json is not hashed
    with pytest.raises(InputError, match=field) as e:
        runtime.load(art)
    assert str(art / "edgecut.json") in str(e.value)
    for args in (["eval", str(art), "--data", str(synth_data)],
                 ["remove", str(synth_data / "images"), "--model", str(art), "--out", str(tmp_path / "cut")],
                 ["export", str(art), "--out", str(tmp_path / "onnx")]):
        code, exc, _ = _invoke(args)
        assert isinstance(exc, InputError) and "edgecut.json" in str(exc), (args, repr(exc))


def test_13_a_channels_entry_that_the_weights_contradict_is_named(tiny_artifact, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(tiny_artifact.path, art)
    _edit_manifest(art, **{"arch.channels": {"inc.0": {"in": 3, "out": 2, "groups": 1}}})
    with pytest.raises(InputError, match=r"arch\.channels\.inc\.0 .* does not fit the weights"):
        runtime.load(art)


def test_13_a_fixed_size_model_refuses_a_spec_of_another_size_before_any_batch(tiny_artifact, tmp_path):
    onnx_art = export(tiny_artifact, tmp_path / "onnx", ExportConfig(threads=1))  # fixed at 32x32
    _edit_manifest(onnx_art.path, **{"spec.input_size": [4096, 4096]})
    with pytest.raises(InputError, match="spec.input_size is 4096x4096 but the model takes 32x32 inputs only"):
        runtime.load(onnx_art.path)


def test_14_a_symlink_loop_among_the_inputs_is_one_line_and_the_rest_are_cut_out(tiny_artifact, synth_data, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in sorted((synth_data / "images").iterdir())[:2]:
        shutil.copy(p, folder / p.name)
    (folder / "loop.png").symlink_to("loop.png")  # a link to itself
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")
    os.mkfifo(folder / "pipe.png")  # never opened: it would block
    code, exc, out = _invoke(["remove", str(folder), str(folder / "loop.png"), "--model", str(tiny_artifact.path),
                              "--out", str(tmp_path / "cut")])
    assert code == 1 and exc is None, repr(exc)
    assert len(list((tmp_path / "cut").iterdir())) == 2
    assert out.count("symbolic link that loops") == 2 and "broken symbolic link" in out and "named pipe" in out


def test_15_a_recipe_name_cannot_lead_its_run_folder_out_of_runs(tmp_path, monkeypatch):
    from edgecut.recipe import RecipeError, load_recipe

    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: ../../escaped\nsteps:\n  data: {step: synth, count: 2, size: 32}\n")
    with pytest.raises(RecipeError, match=r"r\.yaml:1: recipe name '\.\./\.\./escaped' is no plain folder name"):
        load_recipe(recipe)
    assert load_recipe(recipe, run_dir=tmp_path / "mine").name == "../../escaped"  # --out names the folder
    odd = tmp_path / "...yaml"  # no name: its stem, '..', would be runs/..
    odd.write_text("steps:\n  data: {step: synth, count: 2, size: 32}\n")
    with pytest.raises(RecipeError, match="its file name '..'"):
        load_recipe(odd)


def test_16_eval_json_does_not_replace_a_file_edgecut_did_not_write(tiny_artifact, synth_data, tmp_path):
    mine = tmp_path / "notes.json"
    mine.write_text('{"mine": true}\n')
    code, exc, _ = _invoke(["eval", str(tiny_artifact.path), "--data", str(synth_data), "--json", str(mine)])
    assert isinstance(exc, OutputError) and "a file edgecut did not write" in str(exc)
    assert mine.read_text() == '{"mine": true}\n'
    code, exc, _ = _invoke(["eval", str(tiny_artifact.path), "--data", str(synth_data), "--json", str(mine),
                            "--overwrite"])
    assert code == 0 and "metrics" in io.read_json(mine)
    code, exc, _ = _invoke(["eval", str(tiny_artifact.path), "--data", str(synth_data), "--json", str(mine)])
    assert code == 0, repr(exc)  # its own earlier scores are replaced without asking


def test_16_compare_does_not_replace_report_files_edgecut_did_not_write(tmp_path):
    from edgecut.report import CompareConfig, compare

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.md").write_text("my own notes\n")
    with pytest.raises(OutputError, match="report.md: cannot write: a file edgecut did not write"):
        compare([], tmp_path / "out")
    assert (tmp_path / "out" / "report.md").read_text() == "my own notes\n"
    with pytest.raises(EdgecutError):  # allowed now, and refused for having no records
        compare([], tmp_path / "out", CompareConfig(overwrite=True))


def _red(mask: np.ndarray) -> np.ndarray:
    rgb = np.zeros((*mask.shape, 3), np.uint8)
    rgb[..., 0] = mask  # 0/255 in R, G = B = 0: luminance would peak at 76
    return rgb


def test_17_a_pure_red_mask_is_foreground_with_a_note_and_data_check_lists_it(tiny_artifact, synth_data, tmp_path):
    data = _copy_data(synth_data, tmp_path / "data")
    for mask in (data / "masks").iterdir():
        io.write_image(mask, _red(io.read_mask(mask)))
    with pytest.warns(DataWarning, match="colour masks are read as the largest of R, G and B"):
        assert io.read_mask(next((data / "masks").iterdir())).max() == 255
    with pytest.warns(DataWarning, match="colour masks"):
        red = evaluate(runtime.load(tiny_artifact), find_samples(data, "val"), progress=False).metrics
    gray = evaluate(runtime.load(tiny_artifact), find_samples(synth_data, "val"), progress=False).metrics
    assert red["iou"] == pytest.approx(gray["iou"]) and gray["iou"] > 0  # not 0: the masks were understood
    code, exc, out = _invoke(["data", "check", str(data)])
    assert code == 0 and exc is None
    assert "24 mask(s) not 8-bit grayscale" in out and out.count("is in colour") == 24


def test_18_a_recipe_key_given_twice_is_refused_naming_both_lines(tmp_path):
    from edgecut.recipe import RecipeError, load_recipe

    recipe = tmp_path / "twice.yaml"
    recipe.write_text("steps:\n  data:\n    step: synth\n    count: 8\n    size: 32\n    count: 4\n")
    with pytest.raises(RecipeError, match=r"twice\.yaml:6: .*the key 'count' is given twice \(first on line 4\)"):
        load_recipe(recipe)


@pytest.mark.slow
def test_19_importing_a_torch_save_zip_named_pt2_prints_one_line_and_no_traceback(tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "model.pt2")
    done = subprocess.run([sys.executable, "-m", "edgecut.cli", "import", str(tmp_path / "model.pt2"), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "Ran into the following error" not in done.stderr, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "not a readable torch.export program" in lines[0] and "archive_format" in lines[0]


def test_20_train_refuses_an_out_it_cannot_write_before_the_first_step(synth_data, tmp_path, monkeypatch):
    import tempfile

    from edgecut.training.config import LoopConfig, TrainConfig
    from edgecut.training.train import train

    steps = []
    config = TrainConfig(arch_kwargs={"width": 4, "depth": 2}, size=32, loop=LoopConfig(epochs=1, batch_size=4))
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a run folder")
    with pytest.raises(OutputError, match="it is a file, not a folder"):
        train(synth_data, blocker, config, progress=False, callbacks=[steps.append])
    assert blocker.read_text() == "a file, not a run folder"

    (tmp_path / "ro").mkdir()
    real = tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):  # a read-only mount (root writes anywhere: simulated)
        if dir is not None and Path(dir) == tmp_path / "ro":
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(OutputError, match="read-only"):
        train(synth_data, tmp_path / "ro", config, progress=False, callbacks=[steps.append])
    assert steps == []  # not one training step ran


def test_20_train_refuses_an_out_on_a_disk_without_room_for_its_checkpoints(synth_data, tmp_path, monkeypatch):
    from collections import namedtuple

    from edgecut.training.config import LoopConfig, TrainConfig
    from edgecut.training.train import train

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(OutputError, match="MB are needed but only 0.0 MB are free"):
        train(synth_data, tmp_path / "run", TrainConfig(arch_kwargs={"width": 4, "depth": 2}, size=32,
                                                        loop=LoopConfig(epochs=1)), progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_21_what_a_killed_export_left_is_cleaned_up_by_the_next_with_a_note(tiny_artifact, tmp_path):
    out = tmp_path / "onnx"
    killed = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from pathlib import Path
        from edgecut import io
        with io.exclusive({str(out)!r}), io.staged_dir({str(out)!r}, "staging") as staging:
            (staging / "model.onnx").write_bytes(b"half")
            print("staging", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    assert killed.stdout.readline().strip() == "staging"
    killed.kill()  # SIGKILL: no finally runs
    killed.wait()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".onnx.lock", f".onnx.staging-{killed.pid}-" + left[1].rsplit("-", 1)[1]]
    with pytest.warns(DataWarning) as notes:
        export(tiny_artifact, out, ExportConfig(threads=1))
    text = " ".join(str(w.message) for w in notes)
    assert f"left by edgecut process {killed.pid}" in text and "removed 1 leftover staging folder" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]


def test_22_a_recipe_value_out_of_range_is_refused_at_load_with_its_line(tmp_path):
    from edgecut.recipe import RecipeError, load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  data:\n    step: synth\n    size: 32\n    count: -5\n"
                      "  t: {step: train, data: '@data', epochs: 1,\n      batch: 0}\n")
    with pytest.raises(RecipeError, match=r"r\.yaml:5: step 'data': count must be between 1 and"):
        load_recipe(recipe)
    recipe.write_text(recipe.read_text().replace("count: -5", "count: 5"))
    with pytest.raises(RecipeError, match=r"r\.yaml:7: step 't': batch_size must be from 1"):
        load_recipe(recipe)


def test_23_folders_fifos_and_broken_links_in_images_are_named_for_what_they_are(synth_data, tmp_path):
    data = _copy_data(synth_data, tmp_path / "data")
    names = sorted(p.stem for p in (data / "images").iterdir())
    (data / "images" / f"{names[0]}.png").unlink()
    (data / "images" / f"{names[0]}.png").mkdir()
    (data / "images" / f"{names[1]}.png").unlink()
    os.mkfifo(data / "images" / f"{names[1]}.png")
    (data / "images" / f"{names[2]}.png").unlink()
    (data / "images" / f"{names[2]}.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(InputError) as e:
        find_samples(data)
    msg = str(e.value)
    assert "3 entries are named like images but no image files" in msg and "without an image" not in msg
    for part in ("is a folder", "is a named pipe (FIFO)", "is a broken symbolic link"):
        assert part in msg
