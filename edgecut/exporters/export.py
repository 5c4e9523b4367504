"""``export``: a model artifact in, a parity-checked artifact of another format or precision out.

The formats are rows of :data:`edgecut.formats.FORMATS`; :func:`export` does everything else the same way for
each: (1) refuse what cannot work before any work is done (format, precision, parent format, options of another
format, a missing backend, a device the format does not run on); (2) run the format's function in a hidden staging
folder beside ``out``; (3) check parity against the parent, image by image, through both Runners
(:mod:`edgecut.exporters.parity`): outside tolerance, the staging folder is deleted and a
:class:`~edgecut.exporters.parity.ParityError` names the worst image and the number; (4) optionally
(``require_faster``) time the new model against its parent and refuse a slower one; (5) write ``edgecut.json``
(lineage with an ``export`` step, parity and calibration reports) and move the folder into place, so a folder
holding ``edgecut.json`` always passed its check. QAT ends in the same manifest and gate.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgecut import io
from edgecut.artifact import Artifact, Manifest, Step, is_artifact, load_artifact, tool_versions, write_artifact
from edgecut.errors import EdgecutError, InputError
from edgecut._optional import load as load_ref
from edgecut.exporters.config import FORMAT_GROUPS, ExportConfig, Exported
from edgecut.formats import EXPORT_FORMATS, Format


@io.writes_out
def export(source: Artifact | str | os.PathLike, out: str | os.PathLike, config: ExportConfig = ExportConfig(), *,
           resume: bool = False, progress: bool = True) -> Artifact:
    """Export ``source`` as ``config`` says into ``out``; return the new, parity-checked artifact.

    ``resume=True`` returns the export already in ``out`` when it was made from this parent in
    this format and precision (an export is atomic: there is nothing half-done to continue).
    """
    import edgecut.exporters.parity as parity

    parent = source if isinstance(source, Artifact) else load_artifact(source)
    fmt = _refusals(parent, config)
    tol = parity.resolve_tolerances(config.precision, config.parity.tolerances)
    out = Path(out)
    if resume and _finished(out, parent, config):
        return load_artifact(out)
    _check_out(out, parent, config.overwrite)
    io.check_output(out, need_bytes=sum(entry.size for entry in parent.manifest.files.values()))
    with io.staged_dir(out, "staging", config.overwrite) as staging:
        with _Status(progress, f"exporting to {config.format} {config.precision}") as status:
            result = load_ref(fmt.exporter)(parent, staging, config)
            step = Step(step="export", params=_step_params(config, result), parent_sha256=parent.sha256)
            manifest = manifest_for(parent, result, step, config.format, config.precision)
            candidate = Artifact(staging, manifest)  # not written yet: nothing looks valid before parity
            if fmt.not_run_here:  # written for another kind of machine: nothing here can run it
                manifest.metrics["parity"] = {"passed": None, "checked": False, "reason": fmt.not_run_here}
            else:
                status.update("checking parity against the parent")
                check = parity.against_parent(parent, candidate, tol, config.parity, seed=config.seed,
                                              device=config.device, threads=config.threads)
                manifest.metrics["parity"] = check.report
                parity.ensure(check.report, what=f"{config.format} {config.precision} export of {parent.path}")
            if config.require_faster:  # refused earlier for a format nothing here runs
                status.update("timing against the parent")
                manifest.metrics["speed_vs_parent"] = _require_faster(check.parent_runner, check.runner,
                                                                      check.images[0].image)
        write_artifact(staging, manifest, result.files)
    return load_artifact(out)


def manifest_for(parent: Artifact, result: Exported, step: Step, format: str, precision: str) -> Manifest:
    """The manifest of a model converted from ``parent``: its arch, params and MACs, its lineage plus ``step``."""
    return Manifest(format=format, precision=precision, model_file=result.model_file, arch=parent.manifest.arch,
                    spec=result.spec, params=parent.manifest.params, macs=parent.manifest.macs,
                    lineage=[*parent.manifest.lineage, step], tools=tool_versions(*result.tools),
                    metrics=dict(result.metrics))


def _refusals(parent: Artifact, config: ExportConfig) -> Format:
    """The format's row, once every request that cannot work has been refused (before any work)."""
    from edgecut import _optional

    fmt = EXPORT_FORMATS.get(config.format)
    if fmt is None:
        raise EdgecutError(f"unknown export format {config.format!r}; known: {', '.join(EXPORT_FORMATS)}")
    if config.precision not in fmt.precisions:
        reason = dict(fmt.why_not).get(config.precision)
        if reason:
            raise EdgecutError(f"format {fmt.name} has no {config.precision}: {reason}")
        raise EdgecutError(f"format {fmt.name} supports precision {', '.join(fmt.precisions)}, "
                           f"not {config.precision!r}")
    config.validate()
    if config.dynamic and fmt.fixed_size:
        raise EdgecutError(f"{parent.path}: {fmt.fixed_size}; export at the app's size, without --dynamic")
    calib = config.calib
    if config.precision == "int8" and fmt.minmax_only and (calib.method != "minmax" or calib.exclude_nodes
                                                            or calib.exclude_op_types):
        raise EdgecutError(f"{fmt.minmax_only}: --calib-method {calib.method} and --exclude / --exclude-op do not "
                           f"apply to --format {fmt.name}")
    if parent.manifest.format not in fmt.parents:
        raise EdgecutError(f"{parent.path}: a {parent.manifest.format} artifact cannot be exported to {fmt.name} "
                           f"(it converts from {', '.join(fmt.parents)} artifacts)")
    foreign = [name for group in FORMAT_GROUPS if group not in fmt.groups for name in config.set_options(group)]
    if foreign:
        raise EdgecutError(f"{', '.join(foreign)}: not an option of format {fmt.name}")
    if config.require_faster and fmt.not_run_here:
        raise EdgecutError(f"--require-faster cannot time a {fmt.name} model: {fmt.not_run_here}")
    for module in fmt.modules:
        _optional.ensure(module, f"exporting to {fmt.name}")  # imported by the format's function
    if config.device.partition(":")[0] == "cpu" and fmt.devices and "cpu" not in fmt.devices:  # before a long build, not after it
        raise EdgecutError(f"a {fmt.name} model runs on {', '.join(fmt.devices)}, not the CPU: its parity check "
                           f"needs --device {fmt.devices[0]}")
    return fmt


def _step_params(config: ExportConfig, result: Exported) -> dict[str, Any]:
    params = {"format": config.format, "precision": config.precision, **result.params}
    if config.precision == "int8":
        params["calib"] = {**{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config.calib).items()},
                           "seed": config.seed}
    if result.notes:
        params["notes"] = result.notes
    return params


def _finished(out: Path, parent: Artifact, config: ExportConfig) -> bool:
    """Whether ``out`` already holds this export of ``parent`` (resume); another export there is an error."""
    if not is_artifact(out):
        return False
    last = load_artifact(out).manifest.lineage[-1:]
    if last and last[0].step == "export" and last[0].parent_sha256 == parent.sha256 and \
            (last[0].params.get("format"), last[0].params.get("precision")) == (config.format, config.precision):
        return True
    raise InputError(out, f"holds another model than the {config.format} {config.precision} export of {parent.path}",
                     "choose a new --out, or pass --overwrite to replace it")


def _check_out(out: Path, parent: Artifact, overwrite: bool) -> None:
    if io.resolved(out) == io.resolved(parent.path):
        raise EdgecutError(f"--out {out} is the parent artifact itself; choose another folder")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise InputError(out, "already exists and is not empty", "choose a new --out folder or pass --overwrite")


def _require_faster(parent_runner, runner, image) -> dict[str, Any]:
    """p50 latency of both models on this machine (batch 1, the spec's size); refuse a slower one."""
    from edgecut.runtime.timing import LatencyConfig, measure

    config = LatencyConfig(warmup_s=0.5, warmup_min=3, min_time_s=1.5, min_iters=10)
    batch = runner.spec.preprocess(image)
    base = measure(lambda: parent_runner(batch), config)
    new = measure(lambda: runner(batch), config)
    speed = {"parent_p50_ms": round(base.p50_ms, 4), "p50_ms": round(new.p50_ms, 4),
             "speedup": round(base.p50_ms / new.p50_ms, 4), "input_size": list(runner.spec.input_size),
             "threads": getattr(runner, "threads", None), "device": runner.device}
    if new.p50_ms > base.p50_ms:
        raise EdgecutError(f"the export is slower than its parent on this machine: p50 {new.p50_ms:.3f} ms vs "
                           f"{base.p50_ms:.3f} ms ({speed['speedup']:.2f}x); nothing was written "
                           "(drop --require-faster to keep it anyway)")
    return speed


class _Status:
    """The phase of a long step: a transient spinner on a terminal, a line per phase in a log."""

    def __init__(self, enabled: bool, text: str) -> None:
        from edgecut.progress import Tracker

        self._tracker = Tracker(text, None, enabled=enabled)

    def __enter__(self) -> _Status:
        self._tracker.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._tracker.__exit__(*exc)

    def update(self, text: str) -> None:
        self._tracker.update(text)
