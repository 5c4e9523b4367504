"""``bench`` and ``eval`` on a target: ``arm64-emu`` (the emulated aarch64 CPU), ``ssh://user@host[:port]``
(a device), or a device profile whose ``reach`` is one of those.

Each model goes to the target as a deployment bundle (staged once per artifact, profile and runner in edgecut's
cache) and runs there through the bundle's runner, that is, through the device's own runtime, never through torch.
What comes back becomes the same :class:`BenchRecord` a local bench writes, with the target's name and fingerprint:
``arm64-emu`` records **instructions** per inference (not milliseconds: no latency), ``ssh://`` the **latency**
measured on the device; both record **parity** against this machine's Runner of the same artifact and **accuracy**
on the data images, scored here.

What each record holds: docs/design-decisions.md#target-bench
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from edgecut import io
from edgecut.artifact import Artifact, load_artifact
from edgecut.errors import EdgecutError, InputError
from edgecut.measure.record import (Accuracy, BenchRecord, Hooks, Instructions, Latency, TargetParity, WorstImage,
                                  append_records, new_run_id, read_records)
from edgecut.runtime.base import backend_for
from edgecut.targets import arm64, ssh
from edgecut.targets import runner as device_runner
from edgecut.formats import BUNDLED
from edgecut.targets.bundle import bundle, verify_bundle
from edgecut.targets.profiles import Profile, load_profile

PARITY_IMAGES = 4  # synthetic photos for parity when no --data is given
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Where:
    """A resolved ``--target``: where it runs (``arm64-emu`` or an ssh URL), the bundle's profile, and how
    much a bench measures there."""

    target: str
    profile: Profile
    identity: Path | None = None  # ssh key
    python: str = "python3"  # the device's Python
    count_iters: int = 3  # arm64-emu: inferences whose instructions are counted per model
    bench_iters: int = 50  # a device: timed runner calls per record

    @property
    def emulated(self) -> bool:
        return self.target == "arm64-emu"


def resolve(target: str, *, threads: int | None = None, identity: Path | None = None,
            python: str = "python3") -> Where:
    """``arm64-emu``, ``ssh://user@host[:port]`` or a device profile's name or path -> Where."""
    if target == "local":
        raise EdgecutError("--target local is this machine: bench without --target")
    if target == "arm64-emu":
        profile = Profile(name="arm64-emu", description="emulated Cortex-A76 (qemu-user), ONNX Runtime or OpenVINO",
                          arch="aarch64", formats=arm64.FORMATS, precisions=PRECISIONS, threads=threads, reach=target)
    elif target.startswith("ssh://"):
        ssh.parse(target)
        profile = Profile(name="ssh-device", description=f"the device at {target}", arch="aarch64",
                          formats=BUNDLED, precisions=PRECISIONS, threads=threads, reach=target)
    else:
        profile = load_profile(target)
        if profile.reach == "local":
            raise EdgecutError(f"device profile {profile.name} has reach: local (nothing to reach it by); set its "
                               "reach to ssh://user@host, or give --target ssh://user@host")
        if profile.reach == "arm64-emu" and not set(profile.formats) & set(arm64.FORMATS):
            raise EdgecutError(f"device profile {profile.name}: arm64-emu runs {', '.join(arm64.FORMATS)}; add one "
                               "to formats")
        if threads is not None:
            profile = profile.model_copy(update={"threads": threads})
    return Where(profile.reach, profile, identity, python)


def staged_bundle(art: Artifact, profile: Profile) -> Path:
    """The bundle of ``art`` for ``profile`` in edgecut's cache, written once per artifact, profile and runner."""
    key = hashlib.sha256(json.dumps([art.sha256, profile.model_dump(mode="json"),
                                     io.sha256_file(Path(device_runner.__file__))]).encode()).hexdigest()[:16]
    dest = io.cache_dir() / "bundles" / key
    with io.exclusive(dest):
        if (dest / device_runner.SUMS).is_file():
            try:
                verify_bundle(dest)
                return dest
            except EdgecutError:
                pass  # changed in the cache: written again below
        bundle(art.path, dest, profile, overwrite=True)
    return dest


def target_outputs(folder: Path, files: Sequence[Path], target: str, *, root: Path | None = None,
                   identity: Path | None = None, python: str = "python3") -> dict[str, np.ndarray]:
    """The raw model outputs of ``files`` computed on ``target`` by the bundle's runner, by file name."""
    from edgecut.targets.run_bundle import run_bundle

    names: dict[str, Path] = {}
    for f in files:
        if f.name in names:
            raise InputError(f, f"has the file name of {names[f.name]}; the runner keys outputs by file name",
                             "rename one of them")
        names[f.name] = f
    with tempfile.TemporaryDirectory(prefix="edgecut-outputs-") as tmp:
        out = Path(tmp) / "outputs.npz"
        p = run_bundle(folder, ["outputs", *map(str, files), "--out", str(out)], target, root=root,
                       identity=identity, python=python)
        if p.returncode != 0:
            raise EdgecutError(f"the runner on {target} failed: {(p.stderr or p.stdout).strip()[-400:]}")
        with np.load(out) as got:
            return {k: got[k] for k in got.files}


def compare_outputs(art: Artifact, files: Sequence[Path], there: dict[str, np.ndarray], target: str,
                    threads: int | None = None) -> TargetParity:
    """This machine's Runner of ``art`` on the same files against the target's outputs."""
    from edgecut import runtime
    from edgecut.metrics import mask_iou

    runner = runtime.load(art, threads=threads)
    spec = runner.spec
    diffs, ious = [], []
    for path in files:
        here = np.asarray(runner(spec.preprocess(io.read_image(path))), np.float32)
        other = there[path.name]
        if other.shape != here.shape:
            raise EdgecutError(f"{path.name}: the output on {target} has shape {other.shape}, here {here.shape}")
        diffs.append(float(np.abs(here - other).max()))
        ious.append(mask_iou(spec.to_probability(here)[0] > spec.threshold,
                             spec.to_probability(other)[0] > spec.threshold))
    if not diffs:
        raise EdgecutError("no images to compare")
    return TargetParity(against="local", backend=runner.backend, count=len(diffs), max_abs_diff=max(diffs),
                        mask_iou_mean=float(np.mean(ious)), mask_iou_min=float(min(ious)))


def parity_images() -> list[Path]:
    """A few synthetic product photos in the cache, for parity when no data set is given."""
    from edgecut.data.synth import render

    folder = io.make_dirs(io.cache_dir() / "parity-images" / "v1")
    paths = []
    for i in range(PARITY_IMAGES):
        dest = folder / f"synthetic-{i}.png"
        if not dest.is_file():
            image, _ = render(i, 160, seed=11)
            io.write_bytes(dest, io.encode_image(image, ".png"))
        paths.append(dest)
    return paths


def bundle_parity(folder: str | os.PathLike, images: str | os.PathLike, target: str = "arm64-emu", *,
           root: Path | None = None, identity: Path | None = None, python: str = "python3") -> dict:
    """The same images through this machine's Runner and the bundle's runner on ``target``: the
    largest absolute difference of the raw outputs, and the mask IoU per image (mean and worst)."""
    from edgecut.cutout import expand_inputs
    from edgecut.targets.bundle import verify_bundle

    if not Path(images).exists():
        raise InputError(images, "not found", "give a folder of images or an image file")
    folder = Path(folder).resolve()
    verify_bundle(folder)
    files = list(expand_inputs([images]))
    if not files:
        raise EdgecutError(f"{images}: no images")
    there = target_outputs(folder, files, target, root=root, identity=identity, python=python)
    got = compare_outputs(load_artifact(folder), files, there, target)
    return {"target": target, "images": got.count, "max_abs_diff": got.max_abs_diff,
            "mask_iou_mean": got.mask_iou_mean, "mask_iou_min": got.mask_iou_min}


# --------------------------------------------------------------------------- bench


# BenchConfig fields a target bench does not use: refused when set, so nothing is silently ignored
UNUSED = {"backend": "the bundle runs the format's own runtime", "device": "the target's CPU runs it",
          "batch": "the runner measures batch 1", "batches": "the runner measures batch 1",
          "size": "the bundle runs at the artifact's size (export at another size for it)",
          "reference": "parity against this machine's Runner is measured instead", "precision": "not on a target",
          "repeats": "one runner run per record"}


def check_config(config, where: Where) -> None:
    from edgecut.measure.config import BenchConfig

    default = BenchConfig()
    for f in fields(BenchConfig):
        if f.name in UNUSED and getattr(config, f.name) != getattr(default, f.name):
            raise EdgecutError(f"--{f.name.replace('_', '-')} is not used with --target {where.target}: "
                               f"{UNUSED[f.name]}")
    if where.emulated and len(config.threads) > 1:
        raise EdgecutError("--threads lists are for devices: arm64-emu counts instructions on one thread")


def bench_on_target(models: Sequence[str | os.PathLike | Artifact], out: str | os.PathLike, config, where: Where, *,
                    resume: bool = False, names: Sequence[str] | None = None, progress: bool = True,
                    hooks: Hooks = Hooks()):
    """One record per model (and per thread count, on a device), appended to ``out`` as each finishes;
    ``where.count_iters`` inferences counted (emulated) or ``where.bench_iters`` timed (a device) per record."""
    from edgecut.measure.bench import BenchResult, _samples, model_size_mb, named_models, records_out, scaled_macs

    config.validate()
    check_config(config, where)
    out = records_out(out, resume)
    plans = named_models(models, names)
    for art, _ in plans:  # every refusal before the first measurement
        _runnable(art, where)
    if where.emulated:
        arm64.python_command()  # refuses an unbuilt sysroot now, with the command that builds it
    samples, data_name = _samples(config.data, config.split, config.limit)
    files = [s.image for s in samples] if samples else parity_images()
    done = {r.key for r in read_records(out)} if resume and out.exists() else set()
    run_id = new_run_id()
    result = BenchResult()
    say, count_iters = hooks.say, where.count_iters
    env = _emulator_env() if where.emulated else None
    for art, name in plans:
        folder = staged_bundle(art, where.profile)
        for threads in ((1,) if where.emulated else config.threads):
            threads = threads or where.profile.threads
            if say:
                say(f"{name}: on {where.target}")
            latency, device_env = (None, env) if where.emulated else _device_latency(folder, where, threads)
            rec = _record(art, name, where, threads, device_env, run_id, model_size_mb(art), scaled_macs(art, art.spec))
            if rec.key in done:
                result.skipped.append(f"{name} ({where.target}, {threads or 'default'} threads)")
                continue
            rec.latency = latency
            if where.emulated:
                if say:
                    say(f"{name}: counting instructions ({count_iters} inferences, emulated)")
                got = arm64.count_instructions(folder, count_iters)
                rec.instructions = Instructions(per_inference=got["instructions_per_inference"],
                                                iterations=got["iterations"], process_total=got["instructions_process"],
                                                cpu=arm64.CPU, emulator=env["emulator"]["qemu"], exact=got["exact"],
                                                note=got["note"])
                rec.notes.append("no latency: emulated time is not device time; instructions per inference rank "
                                 "artifacts on aarch64")
            if say:
                say(f"{name}: outputs of {len(files)} image(s) on {where.target}")
            there = target_outputs(folder, files, where.target, identity=where.identity, python=where.python)
            rec.parity = compare_outputs(art, files, there, where.target)
            if samples:
                from edgecut.measure.accuracy import evaluate_outputs

                scored = evaluate_outputs(art.spec, samples, there, progress=progress)
                rec.accuracy = Accuracy(data=data_name, count=scored.count, input_size=tuple(art.spec.input_size),
                                        metrics={k: float(v) for k, v in scored.metrics.items()},
                                        worst=[WorstImage(name=r["name"], iou=float(r["iou"]), mae=r.get("mae"))
                                               for r in scored.worst(config.worst)])
            append_records(out, [rec])
            result.records.append(rec)
            if hooks.on_record is not None:
                hooks.on_record(rec)
    return result


def _runnable(art: Artifact, where: Where) -> None:
    fmt = art.manifest.format
    if fmt not in where.profile.formats:
        raise InputError(art.path, f"holds a {fmt} model; {where.target} runs {', '.join(where.profile.formats)}",
                         f"export it first: edgecut export {art.path} --format onnx --out DIR")
    if art.manifest.precision not in where.profile.precisions:
        raise InputError(art.path, f"is {art.manifest.precision}; {where.profile.name} runs "
                                   f"{', '.join(where.profile.precisions)}", "export it at one of those")


def _emulator_env() -> dict[str, Any]:
    from edgecut.env import fingerprint

    root = arm64.default_root()
    ready = json.loads((root / arm64.READY).read_text())
    env = fingerprint("arm64-emu")
    env["emulator"] = {"qemu": f"qemu-user {ready.get('qemu_version', '?')}", "cpu": arm64.CPU,
                       "python": ready.get("python"), "packages": ready.get("wheels"),
                       "time": "emulated: not device time"}
    return env


def _device_latency(folder: Path, where: Where, threads: int | None) -> tuple[Latency, dict[str, Any]]:
    """The runner's latency on the device (``where.bench_iters`` calls), and the device's fingerprint from what it reported."""
    from edgecut.targets.run_bundle import run_bundle

    p = run_bundle(folder, ["bench", "--iters", str(where.bench_iters), *(["--threads", str(threads)] if threads else [])],
                   where.target, identity=where.identity, python=where.python)
    if p.returncode != 0:
        raise EdgecutError(f"the runner on {where.target} failed: {(p.stderr or p.stdout).strip()[-400:]}")
    got = json.loads(p.stdout.strip().splitlines()[-1])
    m = got.get("machine", {})
    env = {"target": where.target, "cpu": {"model": m.get("cpu_model"), "arch": m.get("machine"),
                                           "cores": m.get("cores")},
           "system": m.get("system"), "python": m.get("python"), "packages": m.get("runtime", {}), "gpus": [],
           "profile": where.profile.name}
    return Latency(**got["latency"]), env


def _record(art: Artifact, name: str, where: Where, threads: int | None, env: dict[str, Any], run_id: str,
            size_mb: float, macs: int | None) -> BenchRecord:
    m = art.manifest
    return BenchRecord(run_id=run_id, name=name, artifact=str(art.path), sha256=art.sha256,
                       arch=m.arch.get("name") if m.arch else None, format=m.format, precision=m.precision,
                       backend=backend_for(art), device="cpu", target=where.target,
                       input_size=tuple(art.spec.input_size), batch=1, threads=threads, params=m.params, macs=macs,
                       size_mb=size_mb, env=env)


# --------------------------------------------------------------------------- eval


def evaluate_on_target(model: str | os.PathLike, samples, where: Where, *, progress: bool = True):
    """Score ``model`` on ``samples`` from the outputs the target computed (EvalResult), and its parity."""
    from edgecut.measure.accuracy import evaluate_outputs

    art = load_artifact(model)
    _runnable(art, where)
    if where.emulated:
        arm64.python_command()
    folder = staged_bundle(art, where.profile)
    files = [s.image for s in samples]
    there = target_outputs(folder, files, where.target, identity=where.identity, python=where.python)
    return evaluate_outputs(art.spec, samples, there, progress=progress), compare_outputs(art, files, there,
                                                                                          where.target)
