"""What a search remembers between runs: each candidate's row and digest, and how long training took.

``out/search.json`` is written after every candidate, so an interrupted search loses nothing
measured; a candidate whose digest (its chain, the model, the data, how it is measured) is unchanged
is reused, measured or failed, instead of being built and measured again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecut import io
from edgecut.errors import InputError


@dataclass
class Row:
    """One line of the search's table."""

    name: str
    base: str = ""
    label: str = "candidate"  # reference | baseline | candidate
    format: str = ""
    precision: str = ""
    method: str = ""
    size: int | None = None  # input side it ran at; None: its spec's
    status: str = "measured"  # measured | failed | dropped | not refined | not tried
    reason: str = ""
    iou: float = float("nan")  # on the search images
    cost: float = float("nan")  # on the target: ms (p50) or M instructions per inference
    unit: str = ""
    local_ms: float | None = None  # p50 on this machine
    threads: int | None = None  # the thread count of ``cost`` (the fastest of those tried)
    size_mb: float | None = None
    agreement: float | None = None  # the export's parity: mean mask IoU against its parent
    artifact: str = ""
    seconds: float = 0.0  # building and measuring it, this run or the one that did
    reused: bool = False
    holdout_iou: float | None = None

    @classmethod
    def of(cls, cand, label: str, **kw: Any) -> Row:
        return cls(name=cand.name, base=cand.base, label=label, format=cand.format, precision=cand.precision,
                   method=cand.method, size=cand.size, **kw)


class SearchState:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data: dict[str, Any] = io.read_json(path) if path.is_file() else {}
        except InputError:  # a damaged state file: the search starts over (the recipe steps stay cached)
            self.data = {}
        self.data.setdefault("candidates", {})
        self.data.setdefault("seconds_per_epoch", {})

    def reuse(self, name: str, digest: str) -> Row | None:
        entry = self.data["candidates"].get(name)
        if not entry or entry.get("digest") != digest:
            return None
        known = {f.name for f in dataclasses.fields(Row)}
        row = Row(**{k: v for k, v in entry["row"].items() if k in known})
        if row.status == "measured" and row.artifact and not (Path(row.artifact) / "edgecut.json").is_file():
            return None  # its artifact is gone: build it again
        if row.status not in ("measured", "failed"):
            return None
        row.reused = True
        return row

    def save(self, name: str, digest: str, row: Row) -> None:
        self.data["candidates"][name] = {"digest": digest, "row": dataclasses.asdict(row)}
        io.write_json(self.path, self.data)

    @staticmethod
    def _kind(entry: dict[str, Any]) -> str:
        return entry["step"] + (f":{entry['student']}" if entry["step"] == "distill" else "")

    def note_seconds(self, entry: dict[str, Any], seconds: float) -> None:
        epochs = max(1, int(entry.get("epochs") or 1))
        self.data["seconds_per_epoch"][self._kind(entry)] = seconds / epochs

    def estimate(self, entry: dict[str, Any]) -> float | None:
        """Seconds a training step of this kind took last time, scaled to its epochs; None: never ran."""
        per = self.data["seconds_per_epoch"].get(self._kind(entry))
        return None if per is None else per * max(1, int(entry.get("epochs") or 1))

    def chain_recipe(self, cand, model: Path, data: Path, out: Path, steps: Path, source: Path | None = None):
        """The recipe of ``cand``'s chain, written to ``out/recipes/NAME.yaml`` and loaded (run in ``steps``)."""
        from edgecut.recipe.schema import load_recipe

        path = out / "recipes" / f"{cand.name}.yaml"
        io.make_dirs(path.parent)
        io.write_text(path, recipe_text(cand, model, data, source=source))
        return load_recipe(path, run_dir=steps)


def recipe_text(cand, model: Path, data: Path, header: str = "", *, source: Path | None = None) -> str:
    """``cand``'s chain as a recipe: the model and data as inputs (and ``source``, the ONNX file ``model`` was
    converted from, where one was), every step it needs."""
    from edgecut.parsing import yaml_text

    inputs = {"model": str(Path(model).resolve()), "data": str(Path(data).resolve())}
    if source is not None:
        inputs["source"] = str(Path(source).resolve())
    doc = {"name": cand.name.replace("@", "-at-"),
           "description": f"{cand.name}: {cand.format} {cand.precision} ({cand.method}) from {cand.base}",
           "inputs": inputs,
           "steps": cand.steps}
    return header + yaml_text(doc, sort_keys=False, width=110)


@dataclass
class Splits:
    search: Path  # the images candidates are scored on
    holdout: Path  # the images the winner is checked on
    train: str | None  # calibration and training images (a split name), None: all
    counts: dict[str, int] = field(default_factory=dict)
