"""Running a recipe: every step in order, each one skipped when its inputs and settings have not changed.

A step's cache key is the sha256 of its kind, its whole config (defaults filled in) and a
fingerprint of everything it reads (an artifact's model sha256, a data folder's file names and
contents, not times, so a copied or restored folder is the same; a records file's sha256).
``run_dir/.recipe/<step>.json`` keeps the key of the step's last run and whether it finished: a
finished step with the same key is a cache hit; an unfinished one with the same key resumes (the
stages resume exactly); any other is run afresh, its old output removed. A changed setting
therefore re-runs that step and, because its output changes, everything that reads it, and
nothing before it. The run ends with ``recipe.lock.yaml``:
the recipe with every default filled in and the versions that ran it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecut import io
from edgecut.errors import EdgecutError, InputError
from edgecut.recipe.schema import REF, Recipe, StepSpec, output_of

STATE_DIR = ".recipe"
LOCK_FILE = "recipe.lock.yaml"
REPORT_FILES = ("report.md", "report.csv", "report.html", "pareto.png")


@dataclass
class StepRun:
    """What happened to one step: cached, resumed, ran (or would, in a dry run)."""

    name: str
    kind: str
    status: str  # "cached" | "resume" | "run"
    output: Path
    key: str
    seconds: float = 0.0
    summary: str = ""


# ------------------------------------------------------------------------------------ keys


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _paths(value: Any) -> list[str]:
    """Every string in ``value`` that names an existing file or folder."""
    if isinstance(value, dict):
        return [p for v in value.values() for p in _paths(v)]
    if isinstance(value, (list, tuple)):
        return [p for v in value for p in _paths(v)]
    if isinstance(value, (str, Path)) and str(value) and os.path.exists(value):
        return [str(value)]
    if isinstance(value, str) and ".py:" in value and os.path.isfile(value.rpartition(":")[0]):
        return [value.rpartition(":")[0]]  # an import's class_path: the class's file is read too
    return []


def fingerprint(path: str | os.PathLike) -> str:
    """What a step reads, summarised: an artifact's model sha256, a file's sha256, a folder's listing."""
    from edgecut.artifact import is_artifact, load_artifact

    path = Path(path)
    if is_artifact(path):
        return "artifact:" + load_artifact(path, verify=False).sha256
    if path.is_file():
        return "file:" + io.sha256_file(path)
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts):
            h.update(f"{p.relative_to(path)}\0{_file_sha256(p)}\n".encode())
    return "folder:" + h.hexdigest()


_HASHES: dict[tuple[str, int, int], str] = {}  # (path, size, mtime): sha256, for the plan's repeated looks


def _file_sha256(p: Path) -> str:
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = io.sha256_file(p)
    return _HASHES[key]


def _resolved(value: Any) -> Any:
    """``value`` with every path that exists written one way (absolute, links followed), so a key does not
    depend on the folder the recipe was started from or on how its path was spelled."""
    if isinstance(value, dict):
        return {k: _resolved(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolved(v) for v in value]
    if isinstance(value, str) and value and os.path.exists(value):
        return os.path.realpath(value)
    return value


def step_key(spec: StepSpec) -> str:
    config, sources = _resolved(_jsonable(spec.config)), _resolved(_jsonable(spec.sources))
    read = {p: fingerprint(p) for p in sorted(set(_paths(sources) + _paths(config)))}
    blob = json.dumps({"kind": spec.kind.name, "config": config, "sources": sources, "reads": read}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


# ------------------------------------------------------------------------------------ state


def _state_path(run_dir: Path, name: str) -> Path:
    return run_dir / STATE_DIR / f"{name}.json"


def _state(run_dir: Path, name: str) -> dict[str, Any]:
    path = _state_path(run_dir, name)
    try:
        return io.read_json(path) if path.is_file() else {}
    except InputError:  # a damaged state file: the step runs again
        return {}


def _finished(spec: StepSpec, out: Path) -> bool:
    from edgecut.artifact import is_artifact

    writes = spec.kind.writes
    if writes == "artifact":
        return is_artifact(out)
    if writes == "report":
        return (out / "report.md").is_file()
    return out.exists()


def _clear(spec: StepSpec, out: Path) -> None:
    """Remove a step's old output (the run folder's own files only) before it runs afresh."""
    if spec.kind.writes == "report":
        for name in REPORT_FILES:
            (out / name).unlink(missing_ok=True)
    elif spec.kind.writes == "records":
        out.unlink(missing_ok=True)
        shutil.rmtree(out.with_name(out.stem + "-cutouts"), ignore_errors=True)
    elif out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()


# ------------------------------------------------------------------------------------ what the steps need


def _artifacts_read(value: Any) -> list[Path]:
    """The existing artifact folders among a step's sources (a step's output that exists from an earlier run too)."""
    from edgecut.artifact import is_artifact

    if isinstance(value, (list, tuple)):
        return [p for v in value for p in _artifacts_read(v)]
    if isinstance(value, (str, Path)) and is_artifact(value):
        return [Path(value)]
    return []


def missing_needs(recipe: Recipe) -> dict[str, list[str]]:
    """Step name -> the optional packages (import names) and converter environments (``env:NAME``) it
    needs that this machine lacks: its own (:attr:`StepKind.needs`) and its sources' runtimes."""
    import edgecut.converters.envs as envs
    from edgecut import _optional
    from edgecut.artifact import load_artifact
    from edgecut.formats import FORMATS

    missing: dict[str, list[str]] = {}
    for name, spec in recipe.steps.items():
        needs = list(spec.kind.needs(spec.config))
        for path in _artifacts_read(list(spec.sources.values())):
            row = FORMATS.get(load_artifact(path, verify=False).manifest.format)
            needs += [row.runtime_module] if row is not None and row.runtime_module else []
        lacking = [n for n in dict.fromkeys(needs)
                   if not (envs.is_ready(n[4:]) if n.startswith("env:") else _optional.available(n))]
        if lacking:
            missing[name] = lacking
    return missing


def check_needs(recipe: Recipe) -> None:
    """One error naming every step whose packages are missing and the one command that installs them all."""
    from edgecut._optional import EXTRAS
    from edgecut.errors import MissingBackendError

    missing = missing_needs(recipe)
    if not missing:
        return
    wanted = [n for lacking in missing.values() for n in lacking]
    extras = sorted({EXTRAS[n.split(".")[0]] for n in wanted if n.split(".")[0] in EXTRAS})
    plain = sorted({n for n in wanted if not n.startswith("env:") and n.split(".")[0] not in EXTRAS})
    envs_needed = sorted({n[4:] for n in wanted if n.startswith("env:")})
    steps = "; ".join(f"{name} ({recipe.steps[name].kind.name}) needs {', '.join(lacking)}"
                      for name, lacking in missing.items())
    fixes = []
    if extras or plain:
        fixes.append("pip install " + " ".join(([f"'edgecut[{','.join(extras)}]'"] if extras else []) + plain))
    fixes += [f"edgecut env setup {e}" for e in envs_needed]
    raise MissingBackendError(f"{recipe.path}: {len(missing)} step(s) need what this machine lacks, so nothing "
                              f"was run: {steps}. Install it all with: {' && '.join(fixes)}")


# ------------------------------------------------------------------------------------ plan and run


def plan(recipe: Recipe, run_dir: Path, *, from_step: str | None = None, only: str | None = None) -> list[StepRun]:
    """What each step would do now: cached, resume or run (``from_step`` and after, or ``only``, run even
    when finished; one of them that was interrupted resumes)."""
    forced = _forced(recipe, from_step, only)
    runs: list[StepRun] = []
    for name, spec in recipe.steps.items():
        upstream_changes = any(r.status != "cached" for r in runs if r.name in spec.needs)
        run = decide(spec, run_dir, forced=name in forced, after_changes=upstream_changes)
        if only and name != only and run.status != "cached" and name in _upstream(recipe, only):
            raise EdgecutError(f"--only {only}: step {name!r}, which it reads, has not run with these settings; "
                               f"run the recipe without --only first (or --from {name})")
        runs.append(run)
    if only:
        runs = [r for r in runs if r.name == only]
    return runs


def _forced(recipe: Recipe, from_step: str | None, only: str | None) -> set[str]:
    """The steps that run whatever their cache says: ``from_step`` and every step after it, or ``only``."""
    names = list(recipe.steps)
    for asked in (from_step, only):
        if asked is not None and asked not in recipe.steps:
            raise EdgecutError(f"no step {asked!r} in {recipe.path}; its steps: {', '.join(names)}")
    return set(names[names.index(from_step):]) if from_step else {only} if only else set()


def decide(spec: StepSpec, run_dir: Path, *, forced: bool = False, after_changes: bool = False) -> StepRun:
    """Whether ``spec`` is cached, resumes or runs, by its key now (``after_changes``: something it reads
    will change first, so it runs; ``forced``: a finished step runs again, an interrupted one resumes)."""
    out = output_of(run_dir, spec.name, spec.kind)
    if after_changes:
        return StepRun(spec.name, spec.kind.name, "run", out, "")
    state, key = _state(run_dir, spec.name), step_key(spec)
    if state.get("key") == key and state.get("status") == "running" and out.exists():
        status = "resume"
    elif forced:
        return StepRun(spec.name, spec.kind.name, "run", out, "")
    elif state.get("key") == key and state.get("status") == "done" and _finished(spec, out):
        status = "cached"
    else:
        status = "run"
    return StepRun(spec.name, spec.kind.name, status, out, key)


def _upstream(recipe: Recipe, name: str) -> set[str]:
    seen, todo = set(), list(recipe.steps[name].needs)
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(recipe.steps[n].needs)
    return seen


def run_recipe(recipe: Recipe, run_dir: str | os.PathLike, *, from_step: str | None = None, only: str | None = None,
               progress: bool = True, say: Callable[[str], None] = print) -> list[StepRun]:
    """Run (or skip) every step of ``recipe`` into ``run_dir``; write ``recipe.lock.yaml``; what happened."""
    check_needs(recipe)  # before any step runs or anything is written
    run_dir = io.make_dirs(run_dir)
    done: list[StepRun] = []
    with io.exclusive(run_dir / STATE_DIR):
        planned = plan(recipe, run_dir, from_step=from_step, only=only)  # refusals (--only, --from) first
        forced = _forced(recipe, from_step, only)
        for step in planned:
            spec = recipe.steps[step.name]
            # decided again now that what it reads has run: an unchanged output keeps it cached
            run = decide(spec, run_dir, forced=step.name in forced)
            if run.status == "cached":
                say(f"{run.name}: cached ({run.kind}, {_relative(run.output, run_dir)})")
                done.append(run)
                continue
            run.key = run.key or step_key(spec)
            say(f"{run.name}: {'resuming' if run.status == 'resume' else 'running'} {run.kind}")
            started = time.perf_counter()
            _execute(spec, run, run_dir, progress)
            run.seconds = time.perf_counter() - started
            run.summary = summarize(spec, run.output)
            io.write_json(_state_path(run_dir, run.name), {"key": run.key, "status": "done",
                                                           "seconds": round(run.seconds, 1)})
            done.append(run)
        write_lock(recipe, run_dir)
    return done


def _execute(spec: StepSpec, run: StepRun, run_dir: Path, progress: bool) -> None:
    if run.status == "run":
        _clear(spec, run.output)
    io.write_json(_state_path(run_dir, run.name), {"key": run.key, "status": "running"})
    fn = spec.kind.function()
    sources = [spec.sources[s] for s in spec.kind.sources]
    extra = {}
    if spec.kind.labels:  # display names of the listed sources: the steps they came from, or the folders
        extra[spec.kind.labels] = [_label(v) for v in spec.raw_sources[spec.kind.sources[0]]]
    fn(*sources, run.output, spec.config, resume=run.status == "resume", progress=progress, **extra)


def _label(value: Any) -> str:
    text = str(value)
    return text[len(REF):] if text.startswith(REF) else Path(text).name


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root)) or "."
    except ValueError:
        return str(path)


def summarize(spec: StepSpec, out: Path) -> str:
    """One line on what a step wrote (size and validation scores of an artifact, records' count, ...)."""
    from edgecut.artifact import is_artifact, load_artifact

    if spec.kind.writes == "artifact" and is_artifact(out):
        m = load_artifact(out, verify=False).manifest
        val = m.metrics.get("val") if isinstance(m.metrics.get("val"), dict) else {}
        parts = [f"{m.format} {m.precision}"]
        if m.params:
            parts.append(f"{m.params / 1e6:.2f} M params")
        if "iou" in val:
            parts.append(f"val IoU {val['iou']:.3f}")
        parity = m.metrics.get("parity")
        if isinstance(parity, dict) and "mask_iou_mean" in parity:
            parts.append(f"mask agreement {parity['mask_iou_mean']:.3f}")
        return ", ".join(parts)
    if spec.kind.writes == "records" and out.is_file():
        return f"{sum(1 for ln in out.read_text(encoding='utf-8').splitlines() if ln.strip())} record(s)"
    if spec.kind.writes == "report":
        return "report.md, report.csv, report.html" + (", pareto.png" if (out / "pareto.png").is_file() else "")
    if spec.kind.writes == "data" and (out / "images").is_dir():
        return f"{sum(1 for _ in (out / 'images').iterdir())} images"
    return ""


def write_lock(recipe: Recipe, run_dir: Path) -> Path:
    """``recipe.lock.yaml``: every step with its whole config and its sources, and the versions used."""
    from edgecut.artifact import tool_versions
    from edgecut.env import cpu_info
    from edgecut.parsing import yaml_text

    lock = {
        "recipe": str(recipe.path), "name": recipe.name, "inputs": {k: str(v) for k, v in recipe.inputs.items()},
        "steps": {name: {"step": s.kind.name, **{k: _jsonable(v) for k, v in s.sources.items()},
                         **_jsonable(s.config)} for name, s in recipe.steps.items()},
        "versions": tool_versions("openvino", "nncf", "onnxslim", "torch-pruning"),
        "cpu": {k: v for k, v in cpu_info().items() if k in ("model", "arch", "flags")},
    }
    return io.write_text(run_dir / LOCK_FILE, yaml_text(lock, sort_keys=False, width=110))
