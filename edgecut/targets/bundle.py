"""Deployment bundles: an artifact plus the device runner, for one device profile.

A bundle folder holds the artifact's files and ``edgecut.json`` as they are, ``runner.py`` (the
standalone runner: numpy, Pillow, OpenCV and the one runtime), ``requirements.txt`` pinned to the
versions tested here, ``bundle.json`` (the profile, the source artifact), a ``README.md`` with the
device's commands and ``SHA256SUMS`` over every file, written last. ``verify_bundle`` (and the
runner itself, before it runs) refuses a bundle whose files changed.
"""

from __future__ import annotations

import os
import shutil
from importlib import metadata
from pathlib import Path

from edgecut import io
from edgecut.artifact import MANIFEST, Artifact, load_artifact
from edgecut.errors import EdgecutError, InputError
from edgecut.formats import BUNDLED, FORMATS
import edgecut.targets.runner as device_runner
from edgecut.targets.profiles import Profile, load_profile

BASE_PACKAGES = ("numpy", "pillow", "opencv-python-headless")


def bundle(model: str | os.PathLike, out: str | os.PathLike, target: str | os.PathLike | Profile, *,
           overwrite: bool = False) -> Path:
    """Write the bundle of artifact ``model`` for device profile ``target`` (a name, a path or a
    Profile) into ``out``; the artifact must already be in a format and precision the device runs."""
    art = load_artifact(model)
    profile = target if isinstance(target, Profile) else load_profile(target)
    m = art.manifest
    if m.format == "classical":
        raise InputError(art.path, "is a classical baseline, which bundles do not carry (runner.py runs networks)",
                         "bench the baseline on this machine beside the models: edgecut bench MODELS BASELINE")
    if m.format not in profile.formats:
        fmt = profile.formats[0]
        how = (f"export it first: edgecut export {art.path} --format {fmt} --out DIR, then bundle DIR"
               if m.format in ("torch", "torchscript", "pt2") or m.format == "onnx" and fmt in ("openvino", "ort") else
               "bundle the model it was exported from, exported to one of those")
        raise InputError(art.path, f"holds a {m.format} model; {profile.name} runs {', '.join(profile.formats)}", how)
    if m.format not in BUNDLED:  # the device runs it, but not through runner.py (Core ML: in an app)
        raise InputError(art.path, f"holds a {m.format} model, which {profile.name} runs inside an app, not "
                         f"through a bundle's runner.py (it runs {', '.join(BUNDLED)})",
                         f"add {art.model_path.parent.name if m.format == 'coreml' else art.model_path.name} to "
                         "the app's project, or bundle an export in one of those formats")
    if m.precision not in profile.precisions:
        raise InputError(art.path, f"is {m.precision}; {profile.name} runs {', '.join(profile.precisions)}",
                         f"export it at one of those (edgecut export ... --precision {profile.precisions[0]})")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise InputError(out, "already holds files", "choose a new --out, or pass --overwrite to replace it")
    notes = _notes(art, profile)
    with io.staged_dir(out, "bundle") as staging:
        _write(art, profile, staging, notes, out.name)
    return out


def verify_bundle(folder: str | os.PathLike) -> dict[str, str]:
    """Every file of the bundle against SHA256SUMS, and the model files against edgecut.json; the sums."""
    folder = Path(folder)
    if not (folder / device_runner.SUMS).is_file():
        raise InputError(folder, f"is no bundle (no {device_runner.SUMS})", "give a folder edgecut bundle wrote")
    try:
        sums = device_runner.check_sums(folder)
    except device_runner.BundleError as e:
        raise EdgecutError(str(e)) from None
    manifest = load_artifact(folder, verify=False).manifest  # its files were hashed just now: compare, not rehash
    for name, entry in manifest.files.items():
        if sums.get(name) != entry.sha256:
            raise EdgecutError(f"{folder / name}: its sha256 differs from edgecut.json's; the bundle is not the "
                               "artifact it was written from (write it again with edgecut bundle)")
    return sums


def _notes(art: Artifact, profile: Profile) -> list[str]:
    spec = art.manifest.spec
    notes = []
    if profile.input_size and tuple(profile.input_size) != tuple(spec.input_size):
        notes.append(f"the model runs at {spec.input_size[0]}x{spec.input_size[1]}; {profile.name}'s profile "
                     f"suggests {profile.input_size[0]}x{profile.input_size[1]} (export at that size for it)")
    return notes


def _write(art: Artifact, profile: Profile, dest: Path, notes: list[str], folder: str) -> None:
    m = art.manifest
    for name in [*m.files, MANIFEST]:
        shutil.copyfile(art.path / name, dest / name)
    shutil.copyfile(device_runner.__file__, dest / "runner.py")
    (dest / "requirements.txt").write_text(_requirements(m.format, profile), encoding="utf-8")
    info = {"profile": profile.model_dump(mode="json"), "source": str(art.path.resolve()), "sha256": art.sha256,
            "format": m.format, "precision": m.precision, "providers": list(profile.providers),
            "threads": profile.threads, "notes": notes}
    io.write_json(dest / "bundle.json", info)
    (dest / "README.md").write_text(_readme(art, profile, notes, folder), encoding="utf-8")
    files = sorted(p.name for p in dest.iterdir() if p.is_file())
    (dest / device_runner.SUMS).write_text("".join(f"{io.sha256_file(dest / n)}  {n}\n" for n in files),
                                           encoding="utf-8")


def pinned(packages: tuple[str, ...]) -> list[str]:
    """``name==version`` of each package as installed here (unpinned where it is not installed)."""
    out = []
    for package in packages:
        try:
            out.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            out.append(package)
    return out


def _requirements(fmt: str, profile: Profile) -> str:
    lines = [f"# {profile.name}: the versions edgecut tested this runner with",
             *pinned((*BASE_PACKAGES, FORMATS[fmt].device_package))]
    if profile.trtexec:
        lines.append("# on a Jetson: NVIDIA's onnxruntime-gpu wheel for your JetPack replaces onnxruntime")
    return "\n".join(lines) + "\n"


def _readme(art: Artifact, profile: Profile, notes: list[str], folder: str) -> str:
    m = art.manifest
    h, w = m.spec.input_size
    reach = profile.reach
    host = reach.removeprefix("ssh://").split(":")[0]
    copy = f"scp -r {folder} {host}: && ssh {host} && cd {folder}" if reach.startswith("ssh://") else \
        f"cd {folder}   # on the device"
    text = [f"# {art.path.name} for {profile.name}", "", profile.description, "",
            f"{m.format} {m.precision}, input {h}x{w} ({'any size' if m.spec.dynamic_size else 'fixed size'}), "
            f"output {m.spec.output}. Files are checked against SHA256SUMS before anything runs.", "",
            "```bash", copy, "python3 -m pip install -r requirements.txt",
            "python3 runner.py verify", "python3 runner.py remove photos/ --out cutouts/   # --format rgba|mask|composite",
            "python3 runner.py bench --iters 100" + (f" --threads {profile.threads}" if profile.threads else ""), "```"]
    if profile.trtexec and m.format == "onnx":
        shapes = f"input:1x3x{h}x{w}"
        flags = "--int8 --fp16" if m.precision == "int8" else "--fp16" if "fp16" in profile.precisions else ""
        text += ["", "Build the TensorRT engine on the board (an engine is tied to its GPU and TensorRT version):",
                 "", "```bash", f"/usr/src/tensorrt/bin/trtexec --onnx={m.model_file} --saveEngine=model.engine "
                 f"{flags} --minShapes={shapes} --optShapes={shapes} --maxShapes={shapes}".replace("  ", " "), "```"]
    if profile.notes:
        text += ["", profile.notes]
    text += [f"- note: {n}" for n in notes]
    return "\n".join(text) + "\n"
