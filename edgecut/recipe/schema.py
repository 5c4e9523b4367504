"""Recipes: a YAML file of named steps, read and checked before anything runs.

A recipe names its steps in order; each says its kind (a key of :data:`edgecut.steps.STEPS`), its sources (an
earlier step's output as ``"@name"``, or a path relative to the recipe file) and its settings, under the names of
the step's config dataclass (a nested group's setting may be written flat where only one group has it). A recipe
may name its outside paths once, under ``inputs:``, so one ``--set inputs.model=PATH`` points every step at the
user's own. Every mistake (bad YAML, an unknown step or key, a wrong type, a missing input, a cycle) is one
:class:`RecipeError` naming the file, the line and the fix, before anything is written.

An example and the shorthands: docs/design-decisions.md#recipes
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecut.errors import InputError
from edgecut.steps import STEPS, StepKind

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
REF = "@"  # "@name": the output of the step called name
ALIASES = {"batch": "batch_size", "ema": "ema_decay"}  # the command line's names of loop settings
PATH_KEYS = ("data", "unlabeled", "reference", "val_data")  # settings that name files: checked to exist
OPTIONAL_SOURCES = {("distill", "data")}  # a student can learn from unlabelled images alone
TOP_KEYS = ("name", "description", "estimate", "inputs", "steps")
INPUTS = "inputs"  # --set inputs.NAME=PATH: a path of the command line, relative to where it is run


class RecipeError(InputError):
    """A recipe that cannot run: the message names the file and the line."""

    def __init__(self, path: Path, line: int | None, problem: str, fix: str = "") -> None:
        super().__init__(f"{path}:{line}" if line else path, problem, fix)


@dataclass
class StepSpec:
    """One step as the recipe gives it, checked: its kind, sources, settings and what it reads."""

    name: str
    kind: StepKind
    sources: dict[str, Any]  # source name -> path, list of paths, or None: references replaced by outputs
    raw_sources: dict[str, Any]  # as written: "@name" references kept
    settings: dict[str, Any]  # as written (with overrides), "@name" references kept
    config: Any  # the config dataclass, references replaced by the outputs' paths
    needs: list[str]  # the steps whose outputs it reads, in recipe order
    line: int | None


@dataclass
class Recipe:
    path: Path
    name: str
    description: str
    estimate: str
    inputs: dict[str, Path] = field(default_factory=dict)  # name -> path (checked to exist)
    steps: dict[str, StepSpec] = field(default_factory=dict)  # in run order (every step after what it reads)


def output_of(run_dir: Path, name: str, kind: StepKind) -> Path:
    """Where a step writes: ``run_dir/name``, a ``.jsonl`` for records, the run folder itself for a report."""
    if kind.writes == "records":
        return run_dir / f"{name}.jsonl"
    if kind.writes == "report":
        return run_dir
    return run_dir / name


# ------------------------------------------------------------------------------------ reading


def _lines(root) -> dict[tuple, int]:
    """The line (1-based) of every mapping key and sequence item, by its path in the document (the
    strict loader bounds the depth, and refuses aliases: the node tree has no cycles)."""
    import yaml

    out: dict[tuple, int] = {}
    todo = [(root, ())] if root is not None else []
    while todo:
        node, path = todo.pop()
        out.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                out[(*path, key.value)] = key.start_mark.line + 1
                todo.append((value, (*path, key.value)))
        elif isinstance(node, yaml.SequenceNode):
            todo.extend((item, (*path, i)) for i, item in enumerate(node.value))
    return out


def _parse(path: Path) -> tuple[dict[str, Any], dict[tuple, int]]:
    import yaml

    from edgecut import io, parsing

    problem = io.special_file(path)
    if problem:
        raise InputError(path, "recipe not found" if problem == "not found" else f"cannot read the recipe: {problem}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, f"cannot read the recipe ({e})") from None
    try:
        data, root = parsing.yaml_document(text)
        lines = _lines(root)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RecipeError(path, mark.line + 1 if mark else None, f"not valid YAML: {problem}",
                          getattr(e, "fix", "check the indentation and the quoting around this line")) from None
    if not isinstance(data, dict) or not isinstance(data.get("steps"), dict) or not data["steps"]:
        raise RecipeError(path, 1, "a recipe is a mapping with a 'steps:' mapping of named steps",
                          "see recipes/quickstart.yaml")
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise RecipeError(path, lines.get((unknown[0],)), f"unknown top-level key {unknown[0]!r}",
                          f"a recipe has {', '.join(TOP_KEYS)}")
    return data, lines


def _name(path: Path, lines, data: dict[str, Any], run_dir: str | os.PathLike | None) -> str:
    """The recipe's name (its ``name:`` or its file's stem): the folder under ``runs/`` it runs in
    without ``--out`` (``run_dir``), so there it must stay one plain folder name."""
    name = data.get("name") if data.get("name") is not None else path.stem
    if run_dir is None and (not isinstance(name, str) or not NAME.match(name)):
        where = "name" if data.get("name") is not None else "its file name"
        raise RecipeError(path, lines.get(("name",), 1), f"recipe {where} {name!r} is no plain folder name (the run "
                          "folder is runs/<name>)", "use letters, digits, '-', '_' and '.', or run it with --out DIR")
    return name


def load_recipe(path: str | os.PathLike, overrides: dict[str, Any] | None = None,
                run_dir: str | os.PathLike | None = None) -> Recipe:
    """Read and check the recipe at ``path``; ``overrides`` maps ``step.key`` (dotted for nested
    groups) to values that replace the recipe's. Outputs are placed under ``run_dir`` (default
    ``runs/<recipe name>``) to resolve ``"@name"`` references in settings."""
    path = Path(path)
    data, lines = _parse(path)
    name = str(_name(path, lines, data, run_dir))
    recipe = Recipe(path, name, str(data.get("description") or ""), str(data.get("estimate") or ""))
    # absolute: "@name" becomes the same path however the run folder was spelled (a step's key holds it)
    run_dir = Path(os.path.abspath(run_dir if run_dir is not None else Path("runs") / name))
    overrides = dict(overrides or {})
    recipe.inputs = _inputs(path, lines, data.get(INPUTS), overrides, data["steps"])
    raw = {k: _with_overrides(path, lines, k, v, overrides) for k, v in data["steps"].items()}
    _unused_overrides(path, raw, overrides)
    kinds = {}
    for step_name, entry in raw.items():
        where = lines.get(("steps", step_name))
        if not isinstance(step_name, str) or not NAME.match(step_name):
            raise RecipeError(path, where, f"step name {step_name!r}: use letters, digits, '-', '_' and '.'")
        if not isinstance(entry, dict) or "step" not in entry:
            raise RecipeError(path, where, f"step {step_name!r} says no kind", f"add 'step: <one of {', '.join(STEPS)}>'")
        kind = STEPS.get(entry["step"])
        if kind is None:
            close = difflib.get_close_matches(str(entry["step"]), STEPS, n=1)
            raise RecipeError(path, lines.get(("steps", step_name, "step")), f"unknown step kind {entry['step']!r}",
                              f"did you mean {close[0]!r}?" if close else f"use one of {', '.join(STEPS)}")
        kinds[step_name] = kind
    for step_name in _order(path, lines, raw, recipe.inputs):
        recipe.steps[step_name] = _step(path, lines, step_name, raw[step_name], kinds, run_dir, recipe.inputs)
    return recipe


def _inputs(path: Path, lines, given: Any, overrides: dict[str, Any], steps: dict) -> dict[str, Path]:
    """The recipe's named outside paths, ``--set inputs.NAME=PATH`` applied (and taken out of ``overrides``)."""
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise RecipeError(path, lines.get((INPUTS,)), "'inputs:' is a mapping of names to paths",
                          "write e.g. inputs: {model: path/to/artifact, data: path/to/images}")
    out: dict[str, Path] = {}
    for name, value in given.items():
        where = lines.get((INPUTS, name))
        if not isinstance(name, str) or not NAME.match(name):
            raise RecipeError(path, where, f"input name {name!r}: use letters, digits, '-', '_' and '.'")
        if name in steps:
            raise RecipeError(path, where, f"{name!r} is both an input and a step", "rename one of them")
        if not isinstance(value, str) or not value:
            raise RecipeError(path, where, f"input {name!r} is no path: {value!r}")
        out[name] = path.parent / os.path.expanduser(value)
    for key in [k for k in overrides if k.startswith(INPUTS + ".")]:
        name, value = key[len(INPUTS) + 1:], overrides.pop(key)
        if name not in out:
            raise RecipeError(path, lines.get((INPUTS,)), f"--set {key}: the recipe has no input {name!r}",
                              f"inputs: {', '.join(out) or 'none'}")
        out[name] = Path(os.path.expanduser(str(value))).absolute()  # from where the command runs
    for name, p in out.items():
        if not p.exists():
            raise RecipeError(path, lines.get((INPUTS, name)), f"input {name!r}: {p} does not exist",
                              f"give it with --set {INPUTS}.{name}=PATH")
    return out


def _with_overrides(path: Path, lines, step: str, entry: Any, overrides: dict[str, Any]) -> Any:
    if not isinstance(entry, dict):
        return entry
    entry = dict(entry)
    for key, value in overrides.items():
        target_step, _, dotted = key.partition(".")
        if target_step != step or not dotted:
            continue
        *groups, leaf = dotted.split(".")
        target = entry
        for g in groups:
            target = target.setdefault(g, {}) if isinstance(target.get(g, {}), dict) else target
            if not isinstance(target, dict):
                raise RecipeError(path, lines.get(("steps", step)), f"--set {key}: {g} is not a group of settings")
        target[leaf] = value
    return entry


def _unused_overrides(path: Path, raw: dict[str, Any], overrides: dict[str, Any]) -> None:
    for key in overrides:
        step = key.partition(".")[0]
        if step not in raw or "." not in key:
            raise RecipeError(path, None, f"--set {key}: no step {step!r} in the recipe" if "." in key else
                              f"--set {key}: write STEP.KEY=VALUE", f"steps: {', '.join(raw)}")


# ------------------------------------------------------------------------------------ order


def _refs(value: Any) -> list[str]:
    """The step names ``value`` refers to ("@name"), at any depth."""
    if isinstance(value, str) and value.startswith(REF):
        return [value[len(REF):]]
    if isinstance(value, dict):
        return [r for v in value.values() for r in _refs(v)]
    if isinstance(value, (list, tuple)):
        return [r for v in value for r in _refs(v)]
    return []


def _order(path: Path, lines, raw: dict[str, Any], inputs: dict[str, Path]) -> list[str]:
    """Step names so that every step comes after the steps it reads (recipe order otherwise)."""
    needs = {}
    for name, entry in raw.items():
        refs = [r for r in _refs({k: v for k, v in entry.items() if k != "step"}) if r not in inputs]
        for r in refs:
            if r not in raw:
                close = difflib.get_close_matches(r, [*raw, *inputs], n=1)
                raise RecipeError(path, _line_of_ref(lines, name, entry, r), f"step {name!r} reads '@{r}', which is no "
                                  "step of this recipe", f"did you mean '@{close[0]}'?" if close else
                                  f"steps: {', '.join(raw)}")
        needs[name] = list(dict.fromkeys(refs))
    order: list[str] = []
    while len(order) < len(raw):
        ready = [n for n in raw if n not in order and all(d in order for d in needs[n])]
        if not ready:
            stuck = [n for n in raw if n not in order]
            raise RecipeError(path, lines.get(("steps", stuck[0])), f"steps read each other in a circle: "
                              f"{' -> '.join(stuck)}", "a step can only read steps that do not read it")
        order.append(ready[0])
    return order


def _line_of_ref(lines, step: str, entry: dict, ref: str) -> int | None:
    for key, value in entry.items():
        if ref in _refs(value):
            return lines.get(("steps", step, key))
    return lines.get(("steps", step))


# ------------------------------------------------------------------------------------ one step


def _step(path: Path, lines, name: str, entry: dict[str, Any], kinds: dict[str, StepKind], run_dir: Path,
          inputs: dict[str, Path]) -> StepSpec:
    kind = kinds[name]
    where = lines.get(("steps", name))
    sources = {s: entry.get(s) for s in kind.sources}
    settings = {k: v for k, v in entry.items() if k not in ("step", *kind.sources)}
    base = path.parent

    def resolve(value: Any, key: tuple) -> Any:  # "@name" -> that step's output; a relative path -> from the recipe
        if isinstance(value, str) and value.startswith(REF):
            ref = value[len(REF):]
            return str(inputs[ref]) if ref in inputs else str(output_of(run_dir, ref, kinds[ref]))
        if isinstance(value, str) and key[-1] in (*PATH_KEYS, *kind.sources):
            p = Path(os.path.expanduser(value))
            p = p if p.is_absolute() else base / p
            if not p.exists():
                raise RecipeError(path, lines.get(("steps", name, *key)), f"step {name!r}: {key[-1]} {value!r} "
                                  f"does not exist (looked for {p})", "give a path relative to the recipe file")
            return str(p)
        if isinstance(value, str) and key[-1] == "class_path" and ".py:" in value:  # a class in a file beside it
            file, _, cls = value.rpartition(":")
            p = Path(os.path.expanduser(file))
            p = p if p.is_absolute() else base / p
            if not p.is_file():
                raise RecipeError(path, lines.get(("steps", name, *key)), f"step {name!r}: class_path {value!r}: "
                                  f"no file {p}", "give path/to/file.py:ClassName relative to the recipe file")
            return f"{p}:{cls}"
        if isinstance(value, dict):
            return {k: resolve(v, (*key, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v, key) for v in value]
        return value

    for s in kind.sources:
        if entry.get(s) is None and (kind.name, s) not in OPTIONAL_SOURCES:
            raise RecipeError(path, where, f"step {name!r} ({kind.name}) needs '{s}:'",
                              "give an earlier step ('@name') or a path")
    resolved = {s: resolve(v, (s,)) for s, v in sources.items() if v is not None}
    config = build_config(kind.config(), resolve(settings, ()), path, lines, ("steps", name), name)
    needs = [r for r in dict.fromkeys(_refs({k: v for k, v in entry.items() if k != "step"})) if r not in inputs]
    return StepSpec(name, kind, {**sources, **resolved}, sources, settings, config, needs, where)


def build_config(cls: type, values: dict[str, Any], path: Path, lines, at: tuple, step: str) -> Any:
    """``cls`` (a frozen dataclass) from a recipe's settings: keys checked, flat keys routed into their
    group, values validated and converted by pydantic, then the config's own ``validate()``."""
    from pydantic import TypeAdapter, ValidationError

    routed = _route(cls, values, path, lines, at, step)
    try:
        config = TypeAdapter(cls).validate_python(routed)
    except ValidationError as e:
        first = e.errors()[0]
        loc = tuple(str(x) for x in first["loc"])
        key = ".".join(loc)
        line = lines.get((*at, *loc)) or lines.get((*at, loc[-1])) or lines.get(at)
        raise RecipeError(path, line, f"step {step!r}: {key}: {first['msg']} (got {first.get('input')!r})",
                          "see the step's settings in docs/guide.md") from None
    except Exception as e:  # a config's __post_init__ check (DistillConfig raises EdgecutError)
        raise RecipeError(path, lines.get(at), f"step {step!r}: {e}") from None
    if hasattr(config, "validate"):
        try:
            config.validate()
        except Exception as e:  # EdgecutError with the reason, which starts with the setting's name
            raise RecipeError(path, _line_of(lines, at, str(e).split(" ", 1)[0]), f"step {step!r}: {e}") from None
    return config


def _line_of(lines, at: tuple, key: str) -> int | None:
    """The line of setting ``key`` of the step at ``at`` (written flat, in its group, or by its alias), else the step's."""
    names = {key, *(alias for alias, name in ALIASES.items() if name == key)}
    for where, line in sorted(lines.items(), key=lambda kv: len(kv[0])):
        if where and where[-1] in names and where[:len(at)] == at:
            return line
    return lines.get(at)


def _route(cls: type, values: dict[str, Any], path: Path, lines, at: tuple, step: str) -> dict[str, Any]:
    """``values`` with each key at its place in ``cls``: top-level, in the one nested group that has it,
    or under its command-line alias; unknown keys refused with the nearest known names."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    groups = {n: _dataclass_type(f) for n, f in fields.items() if _dataclass_type(f) is not None}
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = ALIASES.get(key, key) if key not in fields else key
        if key in fields:
            group = groups.get(key)
            out[key] = _route(group, value, path, lines, (*at, key), step) if group and isinstance(value, dict) \
                else value
            continue
        holders = [g for g, t in groups.items() if name in {f.name for f in dataclasses.fields(t)}]
        if len(holders) == 1:
            out.setdefault(holders[0], {})
            if isinstance(out[holders[0]], dict):
                out[holders[0]][name] = value
                continue
        known = sorted({*fields, *(f"{g}.{f.name}" for g, t in groups.items() for f in dataclasses.fields(t))})
        close = difflib.get_close_matches(str(key), [*fields, *ALIASES, *(k.split(".")[-1] for k in known)], n=1)
        why = f"{key!r} is in several groups ({', '.join(holders)}): write it inside one" if len(holders) > 1 \
            else f"unknown key {key!r}"
        raise RecipeError(path, lines.get((*at, key)), f"step {step!r}: {why}",
                          f"did you mean {close[0]!r}?" if close and len(holders) <= 1 else
                          f"its settings: {', '.join(known)}")
    return out


def _dataclass_type(f: dataclasses.Field) -> type | None:
    """The dataclass a field holds (its default's type), for routing flat keys into groups."""
    default = f.default if f.default is not dataclasses.MISSING else None
    return type(default) if default is not None and dataclasses.is_dataclass(default) else None
