"""Fuzz, second file: the files edgecut parses and the places it writes, through the ``edgecut`` command.

Every case runs ``edgecut ...`` in this process as the terminal would (``edgecut.cli.main``, its
stdout and stderr captured at the file descriptors, so what a library prints counts too) and ends
in exit code 0, 1 (some inputs failed, each on one line) or 2 (one clean error): never a
traceback, never past its time limit, and nothing written outside the output it names. Cases are
drawn from fixed seeds with readable ids (``recipe-alias-bomb-L7W9-seed3``); one re-runs alone::

    pytest tests/fuzz/test_fuzz_hostile.py -k "recipe-alias-bomb-L7W9-seed3"

Groups (numbered after tests/fuzz/test_fuzz.py's four): 5. recipes (YAML bombs, duplicate keys,
names, values); 6. manifests (JSON bombs, fields that size a model); 7. symlink and file shapes
among inputs and data sets; 8. mask encodings; 9. outputs that collide with what is there.
"""

from __future__ import annotations

import io as _bio
import json
import math
import os
import shutil
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from conftest import cli_command, make_tiny_artifact

SEED = 20_251  # the seed of tests/fuzz/test_fuzz.py; every case is drawn from (SEED, group, case number)
TIMEOUT = 30  # seconds per case: a hang (an alias bomb took minutes) is a failure


def _rng(group: int, case: int) -> np.random.Generator:
    return np.random.default_rng([SEED, group, case])


def _edgecut(capfd, *args: str) -> tuple[int, str]:
    """``edgecut ARGS`` as a terminal runs it: (exit code, everything printed on stdout and stderr)."""
    from edgecut.cli import main

    command = cli_command()
    capfd.readouterr()
    with mock.patch.object(sys, "argv", ["edgecut", *map(str, args)]), \
            mock.patch("edgecut.cli.app", lambda *a, **k: command(*a, **k)):
        try:
            main()
            code = 0
        except SystemExit as e:  # any other exception fails the case: it would be a traceback
            code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    seen = capfd.readouterr()
    text = seen.out + seen.err
    assert "Traceback" not in text and 'File "' not in text, f"a traceback reached the terminal:\n{text[-3000:]}"
    assert code in (0, 1, 2), (code, text[-2000:])
    if code == 2:
        assert "error:" in text, text[-2000:]
    return code, text


def _tree(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` (links not followed) with its kind and, for files, size and content hash."""
    import hashlib

    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                out[str(p.relative_to(root))] = ("link", os.readlink(p))
            elif p.is_file():
                out[str(p.relative_to(root))] = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
            elif p.is_dir():
                out[str(p.relative_to(root))] = ("dir",)
            else:
                out[str(p.relative_to(root))] = ("special",)
    return out


def _outside_unchanged(before: dict, after: dict, out: str) -> None:
    """Nothing but ``out`` (and what lies under it) was added, changed or removed (a lock file or a
    staging folder beside it is removed when its writer ends: left, it counts)."""
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    stray = sorted(k for k in changed if k != out and not k.startswith(out + os.sep))
    assert not stray, f"written outside {out}: {stray[:5]}"


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    """An untrained tiny U-Net artifact (width 4, depth 2, 32 px spec)."""
    return make_tiny_artifact(tmp_path_factory.mktemp("fuzz2-torch") / "model")


@pytest.fixture(scope="module")
def data4(tmp_path_factory):
    """Four synthetic 32 px pairs (images/, masks/, splits/)."""
    from edgecut.data.synth import generate

    return generate(tmp_path_factory.mktemp("fuzz2-data") / "data", 4, 32, seed=7, progress=False)


# ================================================================== 5. recipes

N_RECIPES = 110
GOOD = ("name: fuzz\nsteps:\n  data: {step: synth, count: 4, size: 32}\n"
        "  teacher: {step: train, data: '@data', arch: unet, arch_kwargs: {width: 4, depth: 2}, size: 32, epochs: 1}\n")
RECIPE_KINDS = {"alias-bomb": 14, "alias-self": 8, "alias-one": 6, "merge": 5, "dup-key": 14, "deep": 8, "name": 12,
                "step-name": 8, "value": 20, "junk": 10, "set": 10, "huge": 1}
NAMES = ["../..", "../escaped", "/etc", "..", ".", "", "a/b", "-x", "ok.name", "x" * 300, "5", "[1, 2]", "'..\\\\x'",
         ".hidden"]
VALUES = {  # setting of the data or teacher step -> hostile values (YAML text)
    "data.count": ["-5", "0", "1000000000000", "1.5", "x", "null", "true", "[]", "{}", "1e308", ".nan", "4"],
    "data.size": ["-1", "0", "31", "4097", "1e9", "'32'"],
    "teacher.epochs": ["-1", "1e6", "1.5", ".inf"],
    "teacher.batch": ["0", "-3", "100000", "2.5"],
    "teacher.lr": ["0", "-1", ".nan", ".inf", "x"],
    "teacher.size": ["0", "-32", "100000", "1e9"],
    "teacher.ema": ["1.5", "0", "-0.1"],
    "teacher.workers": ["-1", "100000"],
}


def _recipe_cases() -> list[tuple[str, str, int]]:
    cases, kinds = [], list(RECIPE_KINDS)
    weights = np.array(list(RECIPE_KINDS.values()), float)
    for i in range(N_RECIPES):
        g = _rng(5, i)
        kind = kinds[g.choice(len(kinds), p=weights / weights.sum())]
        label = kind
        if kind == "alias-bomb":
            label = f"{kind}-L{int(g.integers(2, 10))}W{int(g.integers(2, 10))}"
        elif kind == "value":
            key = list(VALUES)[int(g.integers(len(VALUES)))]
            label = f"{kind}-{key}-{int(g.integers(len(VALUES[key])))}"
        elif kind in ("name", "step-name"):
            label = f"{kind}-{int(g.integers(len(NAMES)))}"
        cases.append((f"recipe-{label}-seed{i}", label, i))
    return cases


def _recipe_text(label: str, g: np.random.Generator) -> tuple[str, list[str], bool]:
    """(recipe text, extra command-line arguments, whether it must be refused)."""
    kind = label.split("-L")[0] if label.startswith("alias-bomb") else "-".join(label.split("-")[:2]) \
        if label.startswith(("alias-", "dup-", "step-")) else label.split("-")[0]
    if kind == "alias-bomb":  # level k is a list of W aliases to level k-1: W ** L leaves once expanded
        levels, width = (int(x) for x in label.split("-L")[1].split("W"))
        lines = [f"x0: &x0 [{', '.join(['lol'] * width)}]"]
        lines += [f"x{k}: &x{k} [{', '.join([f'*x{k - 1}'] * width)}]" for k in range(1, levels)]
        if g.integers(2):  # the top level expanded into a step's setting
            return "\n".join(lines) + "\n" + GOOD.replace("count: 4", f"count: 4, note: *x{levels - 1}"), [], True
        return GOOD + "\n".join(lines) + "\n", [], True
    if kind == "alias-self":
        return [f"steps: &s\n  a: *s\n", f"{GOOD}other: &o {{x: [*o]}}\n", "steps: &s {a: [1, [2, *s]]}\n",
                f"name: &n fuzz\n{GOOD.split(chr(10), 1)[1]}  again: {{step: synth, note: *n}}\n"][int(g.integers(4))], \
            [], True
    if kind == "alias-one":
        return GOOD.replace("count: 4", "count: &c 4").replace("size: 32, epochs", "size: *c, epochs"), [], True
    if kind == "merge":
        return "base: &b {step: synth, count: 4}\nsteps:\n  data: {<<: *b, size: 32}\n", [], True
    if kind == "dup-key":
        return [GOOD + "name: twice\n", GOOD.replace("count: 4,", "count: 4, count: 8,"),
                GOOD + "  data: {step: synth, count: 2}\n", GOOD.replace("epochs: 1}", "epochs: 1, size: 64}")][
            int(g.integers(4))], [], True
    if kind == "deep":
        depth = int(g.choice([65, 200, 1000, 20000]))
        if g.integers(2):
            return GOOD.replace("count: 4", f"count: 4, note: {'[' * depth}{']' * depth}"), [], True
        nest = "".join(f"{'  ' * (k + 2)}k{k}:\n" for k in range(min(depth, 300)))
        return GOOD + f"  deep:\n    step: synth\n{nest}{'  ' * (min(depth, 300) + 2)}v: 1\n", [], True
    if kind == "name":
        name = NAMES[int(label.split("-")[1])]
        return f"name: {name or json.dumps(name)}\n" + GOOD.split("\n", 1)[1], [], name not in ("ok.name", "x" * 300)
    if kind == "step-name":
        name = NAMES[int(label.split("-")[2])]
        return GOOD.replace("  data:", f"  {json.dumps(name)}:").replace("'@data'", json.dumps("@" + name)), [], \
            name not in ("ok.name", "x" * 300)
    if kind == "value":
        key, k = label.split("-", 1)[1].rsplit("-", 1)
        step, setting = key.split(".")
        value = VALUES[key][int(k)]
        text = GOOD.replace("count: 4}", f"count: 4, {setting}: {value}}}") if step == "data" and setting != "count" \
            else GOOD.replace("count: 4", f"count: {value}") if setting == "count" \
            else GOOD.replace("epochs: 1}", f"epochs: 1, {setting}: {value}}}") if setting != "epochs" \
            else GOOD.replace("epochs: 1", f"epochs: {value}")
        return text, [], value not in ("4",)
    if kind == "junk":
        data = GOOD.encode()
        pick = int(g.integers(4))
        if pick == 0:
            data = data[: int(g.integers(len(data)))]
        elif pick == 1:
            b = bytearray(data)
            for _ in range(int(g.integers(1, 6))):
                b[int(g.integers(len(b)))] = int(g.integers(256))
            data = bytes(b)
        elif pick == 2:
            data = data.replace(b"  ", b"\t", 1)
        else:
            data = g.bytes(int(g.integers(1, 3000)))
        return data.decode("latin-1"), [], False
    if kind == "set":
        value = ["*x", "&a [*a]", "[" * 5000 + "]" * 5000, "{a: 1, a: 2}", "[1, 2", "-5", "0", "x" * 10_000,
                 "!!python/object:os.system ls"][int(g.integers(9))]
        return GOOD, ["--set", f"data.count={value}"], True
    if kind == "huge":
        return GOOD + "# " + "x" * (1 << 20) + "\n", [], True
    raise AssertionError(label)


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("label, case", [c[1:] for c in _recipe_cases()], ids=[c[0] for c in _recipe_cases()])
def test_recipes(tmp_path, monkeypatch, capfd, label, case):
    g = _rng(5, case)
    text, extra, refused = _recipe_text(label, g)
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text, encoding="latin-1" if label == "junk" else "utf-8")
    before, beside = _tree(tmp_path), sorted(os.listdir(tmp_path.parent))
    code, out = _edgecut(capfd, "run", recipe, "--dry-run", *extra)
    if refused:
        assert code == 2, f"accepted:\n{out[-1500:]}"
        if not label.startswith(("set", "huge")):
            assert "r.yaml:" in out, f"no file:line in the error:\n{out[-1500:]}"  # where to look
    assert _tree(tmp_path) == before and sorted(os.listdir(tmp_path.parent)) == beside, "a dry run wrote something"


# ================================================================== 6. manifests

N_MANIFESTS = 80
SIZE_FIELDS = {  # dotted path in edgecut.json -> values a hand or a fuzzer may put there
    "arch.kwargs.width": [0, -1, 3, 5, 8, 64, 4097, 10**9, 2**63, 1.5, "4", None, [], True],
    "arch.kwargs.depth": [0, 1, 3, 9, 40, 10**6, -2, 2.0, "2"],
    "arch.kwargs.in_channels": [1, 4, 10**9, 0],
    "arch.kwargs.bilinear": [True, "yes"],
    "arch.kwargs.extra": [1],
    "arch.name": ["mobilenet_v3_small_unet", "u2netp", "unet ", "nope", 5],
    "arch.channels": [{"inc.0": {"in": 3, "out": 10**9, "groups": 1}}, {"inc.0": {"in": 3, "out": 2, "groups": 1}},
                      {"nope.0": {"out": 4}}, {"inc.1": {"out": -4}}, {"inc.0": {"in": 3, "out": 4, "groups": 1}},
                      {"head": {"in": 4, "out": 1, "groups": 1}}, [], "x"],
    "spec.input_size": [[32, 32], [31, 33], [1, 1], [64, 48], [0, 32], [2**20, 2**20]],
}


def _manifest_cases() -> list[tuple[str, str, int]]:
    cases = []
    for i in range(N_MANIFESTS):
        g = _rng(6, i)
        if g.random() < 0.35:
            where = ["whole", "metrics", "lineage", "arch.kwargs", "spec", "files", "tools"][int(g.integers(7))]
            depth = int(g.choice([65, 300, 5000, 200_000]))
            cases.append((f"manifest-deep-{where}-{depth}-seed{i}", f"deep:{where}:{depth}", i))
        elif g.random() < 0.04:
            cases.append((f"manifest-big-seed{i}", "big", i))
        else:
            field = list(SIZE_FIELDS)[int(g.integers(len(SIZE_FIELDS)))]
            k = int(g.integers(len(SIZE_FIELDS[field])))
            cases.append((f"manifest-size-{field}-{k}-seed{i}", f"size:{field}:{k}", i))
    return cases


def _nested(depth: int, g: np.random.Generator) -> str:
    opener, closer = ("[", "]") if g.integers(2) else ('{"a":', "}")
    return opener * depth + "1" + closer * depth


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("op, case", [c[1:] for c in _manifest_cases()], ids=[c[0] for c in _manifest_cases()])
def test_manifests(art, tmp_path, capfd, op, case):
    from edgecut import runtime
    from edgecut.errors import EdgecutError, InputError

    g = _rng(6, case)
    folder = tmp_path / "art"
    shutil.copytree(art.path, folder)
    manifest = json.loads((folder / "edgecut.json").read_text())
    kind, *rest = op.split(":")
    if kind == "deep":
        where, depth = rest[0], int(rest[1])
        if where == "whole":
            text = _nested(depth, g)
        else:
            marker = "\"@@DEEP@@\""
            *parents, key = where.split(".")
            target = manifest
            for p in parents:
                target = target[p]
            target[key] = "@@DEEP@@"
            text = json.dumps(manifest).replace(marker, _nested(depth, g))
    elif kind == "big":
        manifest["metrics"]["note"] = "x" * (65 << 20)  # above the 64 MB a manifest may take
        text = json.dumps(manifest)
    else:
        field, k = rest[0], int(rest[1])
        *parents, key = field.split(".")
        target = manifest
        for p in parents:
            target = target.setdefault(p, {}) if isinstance(target.get(p, {}), dict) else target
        target[key] = SIZE_FIELDS[field][k]
        text = json.dumps(manifest)
    (folder / "edgecut.json").write_text(text)
    before = _tree(tmp_path)

    code, out = _edgecut(capfd, "info", folder)
    if kind in ("deep", "big"):
        assert code == 2 and ("nested deeper than" in out or "above the limit" in out), out[-1500:]
    try:
        runner = runtime.load(folder, threads=1)
    except EdgecutError as e:
        assert str(e).strip()
        if kind == "size" and not isinstance(e, InputError):
            assert "edgecut.json" in str(e) or "arch" in str(e) or "spec" in str(e), str(e)
        runner = None
    if runner is not None:  # what loaded must be the model the weights describe, and run
        assert kind == "size"
        h, w = runner.spec.input_size
        if h * w <= 256 * 256:
            from edgecut.data.synth import render

            x = runner.spec.preprocess(render(case % 5, 32, seed=1)[0])
            try:
                prob = runner.spec.to_probability(runner(x))
                assert np.isfinite(prob).all() and prob.shape == (1, h, w)
            except EdgecutError:
                pass
    assert _tree(tmp_path) == before


# ================================================================== 7. symlink and file shapes

N_SHAPES = 60
SHAPES = ("self-loop", "two-cycle", "chain-to-loop", "dangling-abs", "dangling-rel", "link-to-dir", "link-to-good",
          "link-outside", "fifo", "dir-named-png", "link-to-dev-zero", "empty-file", "good")


def _shape_cases() -> list[tuple[str, tuple[str, ...], str, int]]:
    cases = []
    for i in range(N_SHAPES):
        g = _rng(7, i)
        picked = tuple(sorted({SHAPES[int(j)] for j in g.integers(len(SHAPES), size=int(g.integers(1, 5)))}))
        where = ("remove", "remove-file", "data-images", "data-masks", "out-links")[i % 5]
        cases.append((f"shapes-{where}-{'+'.join(picked)}-seed{i}", picked, where, i))
    return cases


def _make_shape(folder: Path, shape: str, name: str, good: Path, outside: Path) -> dict[str, str]:
    """Make entry ``name`` of ``folder`` (and the links it needs) of this shape: each entry made, and
    what it is to a reader: ``ok`` (an image), ``bad`` (one failure line) or ``skip`` (a folder)."""
    p, stem = folder / name, Path(name).stem
    if shape == "self-loop":
        p.symlink_to(name)
    elif shape == "two-cycle":
        p.symlink_to(f"{stem}-b.png")
        (folder / f"{stem}-b.png").symlink_to(name)
        return {name: "bad", f"{stem}-b.png": "bad"}
    elif shape == "chain-to-loop":
        p.symlink_to(f"{stem}-1.png")
        (folder / f"{stem}-1.png").symlink_to(f"{stem}-2.png")
        (folder / f"{stem}-2.png").symlink_to(f"{stem}-1.png")
        return {name: "bad", f"{stem}-1.png": "bad", f"{stem}-2.png": "bad"}
    elif shape == "dangling-abs":
        p.symlink_to(outside.parent / "no-such-file.png")
    elif shape == "dangling-rel":
        p.symlink_to("../nowhere/x.png")
    elif shape == "link-to-dir":
        p.symlink_to(outside.parent / "empty-folder")
        return {name: "skip"}
    elif shape in ("link-to-good", "link-outside"):
        p.symlink_to(good if shape == "link-to-good" else outside)
        return {name: "ok"}
    elif shape == "fifo":
        os.mkfifo(p)
    elif shape == "dir-named-png":
        p.mkdir()
        return {name: "skip"}
    elif shape == "link-to-dev-zero":
        p.symlink_to("/dev/zero")  # a device: reading it would never end
    elif shape == "empty-file":
        p.write_bytes(b"")
    elif shape == "good":
        shutil.copy(good, p)
        return {name: "ok"}
    return {name: "bad"}


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("shapes, where, case", [c[1:] for c in _shape_cases()], ids=[c[0] for c in _shape_cases()])
def test_shapes(art, data4, tmp_path, capfd, shapes, where, case):
    good = sorted((data4 / "images").iterdir())[0]
    outside = tmp_path / "outside.png"
    shutil.copy(good, outside)
    (tmp_path / "empty-folder").mkdir()
    work = tmp_path / "work"
    if where.startswith("data"):
        shutil.copytree(data4, work)
        folder = work / ("images" if where == "data-images" else "masks")
    else:
        folder = work / "in"
        folder.mkdir(parents=True)
        shutil.copy(good, folder / "plain.png")
    made: dict[str, str] = {}
    for k, shape in enumerate(shapes):
        made.update(_make_shape(folder, shape, f"z{k}-{shape}.png", good, outside))
    out = tmp_path / "out"
    if where == "out-links":  # the output folder holds links where the cut-outs go: replaced, never followed
        out.mkdir()
        (out / "plain.png").symlink_to(tmp_path / "target-outside.png")
        (out / f"z0-{shapes[0]}.png").symlink_to(f"z0-{shapes[0]}.png")
    before = _tree(tmp_path)

    if where.startswith("data"):  # every entry added has no partner or is no file: the check refuses, naming it
        code, text = _edgecut(capfd, "data", "check", work)
        assert code == 2, text[-1500:]
        assert any(Path(n).stem in text for n in made), f"none of {sorted(made)} named:\n{text[-1500:]}"
        assert _tree(tmp_path) == before
        return
    inputs = [folder] if where != "remove-file" else [folder / n for n in sorted(os.listdir(folder))]
    code, text = _edgecut(capfd, "remove", *inputs, "--model", art.path, "--out", out, "--workers", "1")
    bad = sorted(n for n, v in made.items() if v == "bad")
    assert code == (1 if bad else 0), text[-2000:]
    lines = [ln for ln in text.splitlines() if ln.startswith("error ")]
    assert len(lines) == len(bad), f"one line per bad input, {bad}:\n{text[-2000:]}"
    for name in bad:
        assert any(f"{name}:" in ln for ln in lines), f"{name} has no line:\n{text[-2000:]}"
    written = sorted(p.name for p in out.iterdir() if not p.is_symlink()) if out.is_dir() else []
    assert written == sorted(["plain.png", *(n for n, v in made.items() if v == "ok")]), (made, written)
    assert not (tmp_path / "target-outside.png").exists(), "a cut-out was written through a link out of --out"
    _outside_unchanged(before, _tree(tmp_path), "out")


# ================================================================== 8. mask encodings

N_MASKS = 70
ENCODINGS = {  # name -> the encoding decode_mask must report
    "L": "gray", "L-soft": "gray", "1bit": "gray", "rgb-gray": "gray", "jpeg-gray": "gray",
    "rgb-red": "colour", "rgb-green": "colour", "rgb-blue": "colour", "rgb-yellow": "colour", "rgb-magenta": "colour",
    "palette-red": "colour", "jpeg-red": "colour", "rgba-alpha": "alpha", "la-alpha": "alpha", "p-trns": "alpha",
    "rgba-opaque-red": "colour", "i16": "wide", "f32": "wide", "L-01": "binary", "red-01": "binary",
}


def _mask_cases() -> list[tuple[str, str, int]]:
    names = list(ENCODINGS)
    return [(f"mask-{names[i % len(names)]}-seed{i}", names[i % len(names)], i) for i in range(N_MASKS)]


def _encode_mask(kind: str, m: np.ndarray, g: np.random.Generator) -> tuple[bytes, str]:
    from PIL import Image

    buf = _bio.BytesIO()
    colour = {"red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1), "yellow": (1, 1, 0), "magenta": (1, 0, 1)}
    suffix = ".png"
    if kind in ("L", "L-soft"):
        Image.fromarray(m).save(buf, "PNG")
    elif kind == "1bit":
        Image.fromarray(m).convert("1").save(buf, "PNG")
    elif kind == "rgb-gray":
        Image.fromarray(np.dstack([m] * 3)).save(buf, "PNG")
    elif kind.startswith("rgb-") and kind.split("-")[1] in colour:
        c = np.array(colour[kind.split("-")[1]], np.uint16)
        Image.fromarray((m[..., None] * c).astype(np.uint8)).save(buf, "PNG")
    elif kind == "palette-red":
        img = Image.fromarray((m > 127).astype(np.uint8), "P")
        img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
        img.save(buf, "PNG")
    elif kind in ("jpeg-gray", "jpeg-red"):
        rgb = np.dstack([m] * 3) if kind == "jpeg-gray" else np.dstack([m, np.zeros_like(m), np.zeros_like(m)])
        Image.fromarray(rgb).save(buf, "JPEG", quality=95, subsampling=0)
        suffix = ".jpg"
    elif kind == "rgba-alpha":
        rgb = g.integers(0, 256, (*m.shape, 3), dtype=np.uint8)  # a cut-out: any colour under the alpha
        Image.fromarray(np.dstack([rgb, m])).save(buf, "PNG")
    elif kind == "la-alpha":
        Image.merge("LA", (Image.fromarray(255 - m), Image.fromarray(m))).save(buf, "PNG")
    elif kind == "p-trns":
        img = Image.fromarray((m > 127).astype(np.uint8), "P")
        img.putpalette([9, 9, 9, 200, 30, 30] + [0] * 762)
        img.save(buf, "PNG", transparency=0)
    elif kind == "rgba-opaque-red":
        Image.fromarray(np.dstack([m, np.zeros_like(m), np.zeros_like(m), np.full_like(m, 255)])).save(buf, "PNG")
    elif kind == "i16":
        Image.fromarray(m.astype(np.uint16) * 257).save(buf, "PNG")
    elif kind == "f32":
        Image.fromarray(m.astype(np.float32) / 255).save(buf, "TIFF")
        suffix = ".tif"
    elif kind == "L-01":
        Image.fromarray((m > 127).astype(np.uint8)).save(buf, "PNG")
    elif kind == "red-01":
        Image.fromarray(np.dstack([(m > 127).astype(np.uint8), np.zeros_like(m), np.zeros_like(m)])).save(buf, "PNG")
    else:
        raise AssertionError(kind)
    return buf.getvalue(), suffix


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("kind, case", [c[1:] for c in _mask_cases()], ids=[c[0] for c in _mask_cases()])
def test_masks(data4, tmp_path, capfd, kind, case):
    from edgecut import io
    from edgecut.errors import DataWarning

    g = _rng(8, case)
    h, w = (int(v) for v in g.integers(8, 40, size=2))
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx, ry, rx = g.uniform(0.3, 0.7) * h, g.uniform(0.3, 0.7) * w, g.uniform(0.2, 0.45) * h, g.uniform(0.2, 0.45) * w
    m = np.where(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1, 255, 0).astype(np.uint8)  # a product's blob
    m[0, 0], m[h // 2, w // 2] = 0, 255  # both classes present
    if kind == "L-soft":
        m[h // 2] = 128  # a soft edge is gray, as the layout allows
    data, suffix = _encode_mask(kind, m, g)
    path = tmp_path / f"m{suffix}"
    path.write_bytes(data)
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        got = io.read_mask(path)
    notes = [w for w in seen if issubclass(w.category, DataWarning)]
    mask, encoding = io.decode_mask(path)
    assert encoding == ENCODINGS[kind], (kind, encoding)
    assert np.array_equal(got, mask) and got.shape == m.shape and got.dtype == np.uint8
    assert bool(notes) == (encoding != "gray"), (kind, [str(n.message) for n in notes])
    fg, want = got > 127, m > 127
    if kind.startswith("jpeg"):
        assert (fg & want).sum() / max((fg | want).sum(), 1) > 0.95
    else:
        assert np.array_equal(fg, want), f"{kind}: the foreground read is not the one drawn"

    dataset = tmp_path / "data"
    shutil.copytree(data4, dataset)
    victim = sorted((dataset / "masks").iterdir())[case % 4]
    image = sorted((dataset / "images").iterdir())[case % 4]
    from PIL import Image

    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(image)  # the image takes the mask's size
    victim.unlink()
    shutil.copy(path, victim.with_suffix(suffix))
    code, text = _edgecut(capfd, "data", "check", dataset)
    assert code == 0, text[-1500:]
    assert (victim.with_suffix(suffix).name in text) == (encoding != "gray"), text[-1500:]


# ================================================================== 9. outputs that collide with what is there

N_OUTPUTS = 72
COMMANDS = ("eval-json", "compare", "export", "remove", "synth", "bench")
COLLISIONS = ("absent", "user-file", "ours", "empty-dir", "user-dir", "fifo", "self-loop", "dangling-out",
              "under-file", "link-to-user-file")


def _output_cases() -> list[tuple[str, str, str, bool, int]]:
    cases = []
    for i in range(N_OUTPUTS):
        g = _rng(9, i)
        command = COMMANDS[i % len(COMMANDS)] if i < 60 else COMMANDS[int(g.integers(len(COMMANDS) - 1))]
        if command in ("export", "bench"):  # the slow ones: fewer of them
            command = command if g.random() < 0.5 else "eval-json"
        collision = COLLISIONS[int(g.integers(len(COLLISIONS)))]
        overwrite = bool(g.integers(2))
        cases.append((f"out-{command}-{collision}{'-overwrite' if overwrite else ''}-seed{i}", command, collision,
                      overwrite, i))
    return cases


def _records(art, data4, tmp_path_factory) -> Path:
    from edgecut.measure.bench import bench
    from edgecut.measure.config import BenchConfig
    from edgecut.runtime.timing import LatencyConfig

    out = tmp_path_factory.mktemp("fuzz2-records") / "b.jsonl"
    bench([art.path], out, BenchConfig(threads=(1,), isolate=False, end_to_end=False, canary=False,
                                       latency=LatencyConfig(warmup_s=0.0, warmup_min=1, min_time_s=0.0, min_iters=3)),
          progress=False)
    return out


@pytest.fixture(scope="module")
def records(art, data4, tmp_path_factory):
    return _records(art, data4, tmp_path_factory)


def _ours(command: str, target: Path, art, records: Path, data4: Path, capfd) -> None:
    """What the command itself wrote there on an earlier run."""
    if command == "eval-json":
        _edgecut(capfd, "eval", art.path, "--data", data4, "--json", target)
    elif command == "compare":
        _edgecut(capfd, "compare", records, "--out", target)
    elif command == "export":
        shutil.copytree(art.path, target)  # an artifact edgecut wrote: export asks for --overwrite all the same
    elif command == "remove":
        target.mkdir()
    elif command == "synth":
        _edgecut(capfd, "data", "synth", "--out", target, "--count", "2", "--size", "32")
    elif command == "bench":
        shutil.copy(records, target)


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("command, collision, overwrite, case", [c[1:] for c in _output_cases()],
                         ids=[c[0] for c in _output_cases()])
def test_outputs(art, data4, records, tmp_path, capfd, command, collision, overwrite, case):
    name = {"eval-json": "scores.json", "bench": "b.jsonl"}.get(command, "out")
    target = tmp_path / "work" / name
    target.parent.mkdir()
    user_text = b"the user's own file\n"
    outside = tmp_path / "outside"
    if collision == "user-file":
        target.write_bytes(user_text)
    elif collision == "ours":
        _ours(command, target, art, records, data4, capfd)
    elif collision == "empty-dir":
        target.mkdir()
    elif collision == "user-dir":
        target.mkdir()
        (target / ("report.md" if command == "compare" else "notes.txt")).write_bytes(user_text)
    elif collision == "fifo":
        os.mkfifo(target)
    elif collision == "self-loop":
        target.symlink_to(target.name)
    elif collision == "dangling-out":
        target.symlink_to(outside / name)
    elif collision == "under-file":
        (tmp_path / "work" / "blocker").write_bytes(user_text)
        target = tmp_path / "work" / "blocker" / name
    elif collision == "link-to-user-file":
        outside.mkdir()
        (outside / name).write_bytes(user_text)
        target.symlink_to(outside / name)
    flag = ["--overwrite"] if overwrite and command in ("eval-json", "compare", "export", "remove") else []
    args = {"eval-json": ["eval", art.path, "--data", data4, "--json", target],
            "compare": ["compare", records, "--out", target],
            "export": ["export", art.path, "--out", target, "--threads", "1", "--parity-count", "2"],
            "remove": ["remove", data4 / "images", "--model", art.path, "--out", target, "--workers", "0"],
            "synth": ["data", "synth", "--out", target, "--count", "2", "--size", "32"],
            "bench": ["bench", art.path, "--out", target, "--in-process", "--no-e2e", "--warmup", "0", "--min-time",
                      "0", "--min-iters", "3", "--threads", "1", "--max-wait", "0"] + (["--resume"] if overwrite else [])}
    before = _tree(tmp_path)
    code, text = _edgecut(capfd, *args[command], *flag)

    after = _tree(tmp_path)
    _outside_unchanged(before, after, str(target.relative_to(tmp_path)))
    assert not (outside / name).exists() or (outside / name).read_bytes() == user_text, "written through a link"
    if collision in ("user-file", "user-dir", "link-to-user-file") and not flag:
        changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        users = [k for k, v in before.items() if v[0] == "file" and (tmp_path / k).read_bytes() == user_text]
        assert not set(users) & changed, f"a file edgecut did not write was replaced:\n{text[-1500:]}"
    if collision in ("fifo", "self-loop", "under-file"):
        assert code == 2, f"{collision}: accepted:\n{text[-1500:]}"
    if collision == "absent":
        assert code == 0, text[-1500:]
