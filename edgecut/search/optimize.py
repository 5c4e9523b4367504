"""``optimize``: the fastest artifact for a target within an accuracy budget, searched cheapest first.

Each candidate is a chain of recipe steps, measured by ``bench``. First the model itself (its IoU, less
``max_iou_drop``, is the bar every candidate is held to), beside the classical baselines; then, for each base model
(the model, its pruned versions, the distilled students), cheapest first: the target's formats at FP32, then, for
a base not dominated, FP16, INT8 (dropped unless faster than the same format's FP32/FP16; refined by accuracy
control and QAT when worth it but outside the budget) and smaller input sides. No candidate starts once the budget
is spent. Steps, records and results live in ``out`` (a second run reuses every earlier candidate). The winner is
the fastest candidate within the budget, checked on held-out images (:mod:`edgecut.search.result` writes it).

The search order and its rules in full: docs/design-decisions.md#optimize
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgecut import io
from edgecut.errors import EdgecutError
from edgecut.search.candidates import Builder, Candidate
from edgecut.search.config import OptimizeConfig
from edgecut.search.measure import Measurer, prepare_splits
from edgecut.search.state import Row, SearchState

TRAINING_KINDS = ("prune", "distill", "qat")


@dataclass
class OptimizeResult:
    winner: Row | None
    reference: Row
    rows: list[Row] = field(default_factory=list)
    out: Path | None = None
    paragraph: str = ""


class Search:
    def __init__(self, model: Path, data: Path, out: Path, config: OptimizeConfig, *, progress: bool,
                 say: Callable[[str], None], steps: Path | None = None) -> None:
        from edgecut.artifact import load_artifact

        self.model, self.data, self.out, self.config, self.progress, self.say = model, data, out, config, progress, say
        self.art = load_artifact(model)
        self.steps = Path(steps) if steps is not None else out / "steps"  # the recipe runner's cache of models
        self.source: Path | None = None  # an ONNX model's own folder: what is pruned and taught from
        if self.art.manifest.format == "onnx":  # its exports and QAT need its layers: converted, and checked
            from edgecut.compress.config import ConvertConfig
            from edgecut.compress.to_torch import convert

            say(f"{model} is ONNX: its layers as torch, checked against ONNX Runtime ({self.steps / 'model-torch'})")
            self.source, self.model = model, self.steps / "model-torch"
            self.art = convert(self.art, self.model, ConvertConfig(data=str(data)), resume=True, progress=progress)
        elif self.art.manifest.format != "torch":
            raise EdgecutError(f"{model} is a {self.art.manifest.format} artifact; optimize starts from a torch or "
                               f"ONNX model (edgecut train, or edgecut import of your file)")
        self.splits = prepare_splits(data, self.steps / "splits", config)  # beside the steps that read them
        self.measurer = Measurer(out, data, config, self.splits, progress=progress, say=say)
        self.side = int(self.art.spec.input_size[0])
        self.builder = Builder(config, self.side, str(self.splits.search), self.splits.train,
                               teacher="@source" if self.source is not None else "@model")
        self.state = SearchState(out / "search.json")
        self.started = time.monotonic()
        self.rows: dict[str, Row] = {}
        self.candidates: dict[str, Candidate] = {}
        self.floor = 0.0

    # ------------------------------------------------------------------ budget

    def left_s(self) -> float:
        return self.config.budget_minutes * 60 - (time.monotonic() - self.started)

    def _fits(self, cand: Candidate) -> str | None:
        """Why ``cand`` is not started now (None: it is)."""
        left = self.left_s()
        if left <= 0:
            return "budget spent"
        for name, entry in cand.steps.items():
            if entry["step"] in TRAINING_KINDS and not (self.steps / name / "edgecut.json").is_file():
                guess = self.state.estimate(entry)
                if guess is not None and guess > left:
                    return f"its {entry['step']} step would take about {guess:.0f} s; {left:.0f} s of the budget left"
        return None

    # ------------------------------------------------------------------ one candidate

    def consider(self, cand: Candidate, *, label: str = "candidate") -> Row:
        """Measure ``cand`` (or reuse an earlier run's result); its row."""
        if cand.name in self.rows:
            return self.rows[cand.name]
        self.candidates[cand.name] = cand
        digest = cand.digest(self.art.sha256, str(self.data), self.measurer.settings())
        row = self.state.reuse(cand.name, digest)
        if row is not None:
            self.say(f"{cand.name}: reused ({row.status} in an earlier run{self._brief(row)})")
        else:
            why = self._fits(cand) if label == "candidate" else None  # the reference and baselines always run
            if why is not None:
                row = Row.of(cand, label, status="not tried", reason=why)
                self.say(f"{cand.name}: not tried ({why})")
                self.rows[cand.name] = row
                return row
            row = self._build_and_measure(cand, label, digest)
        self.rows[cand.name] = row
        return row

    def _build_and_measure(self, cand: Candidate, label: str, digest: str) -> Row:
        from edgecut.recipe.runner import run_recipe
        from edgecut.training.loop import TrainingInterrupted

        self.say(f"{cand.name}: building ({', '.join(cand.steps) or 'the model itself'})")
        started = time.monotonic()
        try:
            if cand.steps:
                recipe = self.state.chain_recipe(cand, self.model, self.data, self.out, self.steps, self.source)
                for run in run_recipe(recipe, self.steps, progress=self.progress, say=lambda s: self.say("  " + s)):
                    if run.status != "cached" and run.kind in TRAINING_KINDS:
                        self.state.note_seconds(cand.steps[run.name], run.seconds)
            path = self.model if not cand.steps else self.steps / cand.artifact_step
            row = self.measurer.measure(cand, path, label)
        except TrainingInterrupted:  # Ctrl-C in a training step stops the search; the step resumes next time
            raise KeyboardInterrupt from None
        except EdgecutError as e:
            reason = str(e).strip().splitlines()[0]
            row = Row.of(cand, label, status="failed", reason=reason)
            self.say(f"{cand.name}: failed ({reason})")
        row.seconds = round(time.monotonic() - started, 1)
        if row.status == "measured":
            self.say(f"{cand.name}: {self._brief(row).lstrip(', ')}")
        self.state.save(cand.name, digest, row)
        return row

    def _brief(self, row: Row) -> str:
        if row.status != "measured":
            return f": {row.reason}" if row.reason else ""
        return f", val IoU {row.iou:.4f}, {row.cost:.4g} {row.unit}"

    # ------------------------------------------------------------------ the search

    def run(self) -> OptimizeResult:
        reference = self.consider(Candidate("model", "model", "torch", "fp32", "fp32"), label="reference")
        if reference.status != "measured":
            raise EdgecutError(f"{self.model}: the model itself could not be measured ({reference.reason})")
        self.floor = reference.iou - self.config.max_iou_drop
        self.say(f"budget: val IoU at least {self.floor:.4f} (the model's {reference.iou:.4f} less "
                 f"{self.config.max_iou_drop:g}), {self.config.budget_minutes:g} minutes")
        for method in ("otsu", "grabcut"):
            self.consider(Candidate(method, method, "classical", "fp32", "fp32",
                                    {method: {"step": "baseline", "method": method, "size": self.side}}),
                          label="baseline")
        bases = ["model", *(f"pruned-{r:g}" for r in sorted(self.config.prune_ratios)),
                 *(f"student-{s}" for s in self.config.students)]
        for base in bases:
            self._base(base)
        return self._result(reference)

    def _base(self, base: str) -> None:
        anchors: dict[str, Row] = {}
        for fmt in self.measurer.formats:
            anchors[fmt] = self.consider(self.builder.export(base, fmt, "fp32"))
            if base != "model" and not (self.steps / base / "edgecut.json").is_file():
                self.say(f"{base}: not made ({anchors[fmt].reason}); its candidates are skipped")
                return
        measured = {f: a for f, a in anchors.items() if a.status == "measured"}
        if not measured:
            return
        if all(a.iou < self.floor for a in measured.values()):
            return self._not_refined(base, "its FP32 is outside the budget (lower precisions do not raise IoU)")
        beaters = [self._dominated(a) for a in measured.values()]
        if all(beaters):
            return self._not_refined(base, f"its FP32 is slower and no more accurate than {beaters[0].name}")
        tried: dict[str, list[Row]] = {f: [a] for f, a in measured.items()}
        for method in self.measurer.methods():  # the profile's preference order, FP32 done
            for fmt in measured:
                if method in self.measurer.methods(fmt):
                    tried[fmt].append(self.consider(self.builder.export(base, fmt, method)))
        for fmt, rows in tried.items():
            self._gate_and_refine(base, fmt, rows)
        self._sizes(base)

    def _not_refined(self, base: str, why: str) -> None:
        self.say(f"{base}: not refined ({why})")
        self.rows[f"{base}.*"] = Row(name=f"{base}.*", base=base, status="not refined", reason=why)

    def _gate_and_refine(self, base: str, fmt: str, rows: list[Row]) -> None:
        """The "is it worth it" gate on ``fmt``'s INT8 of ``base``; accuracy control and QAT for one outside the budget."""
        from edgecut.formats import FORMATS

        floats = [r for r in rows if r.status == "measured" and r.precision != "int8"]
        for row in rows:
            if row.status != "measured" or row.precision != "int8" or not floats:
                continue
            best = min(floats, key=lambda f: f.cost)
            if row.cost >= best.cost:
                row.status = "dropped"
                row.reason = f"INT8 not faster than {best.precision.upper()} ({row.cost:.4g} vs {best.cost:.4g} {row.unit})"
                self.say(f"{row.name}: dropped ({row.reason})")
            elif row.iou < self.floor and max(f.iou for f in floats) >= self.floor and not self._dominated(row):
                if FORMATS[fmt].accuracy_control:
                    self.consider(self.builder.export(base, fmt, "ac"))
                self.consider(self.builder.qat(base, fmt))

    def _sizes(self, base: str) -> None:
        from edgecut.formats import FORMATS

        sizes = self.config.sizes if self.config.sizes is not None else (self._smaller(),)
        kept = [r for r in self.rows.values() if r.label == "candidate" and r.base == base and r.status == "measured"
                and r.size is None
                and r.method in ("fp32", "fp16", "ptq") and FORMATS[r.format].fixed_size is None]
        if not kept or not self.art.spec.dynamic_size:
            return
        best = min(kept, key=lambda r: (r.iou < self.floor, r.cost))
        if self._dominated(best):
            return
        for s in sizes:
            if s and s != self.side:
                self.consider(self.builder.export(base, best.format, best.method, size=s, dynamic=True))

    def _smaller(self) -> int | None:
        d = self.art.spec.size_divisor
        side = (self.side * 3 // 4) // d * d
        return side if side >= max(d, 8) else None

    def _dominated(self, row: Row) -> Row | None:
        """A measured candidate of another base, same format, method and size, as fast and as accurate."""
        for r in self.rows.values():
            if (r.status == "measured" and r.label == "candidate" and r.base != row.base and r.format == row.format
                    and r.method == row.method and r.size == row.size and r.cost <= row.cost and r.iou >= row.iou):
                return r
        return None

    def _result(self, reference: Row) -> OptimizeResult:
        from edgecut.search.result import choose, write_result

        winner = choose(self, reference)
        result = OptimizeResult(winner, reference, list(self.rows.values()), self.out)
        write_result(self, result)
        return result


@io.writes_out
def optimize(model: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike,
             config: OptimizeConfig = OptimizeConfig(), *, resume: bool = False, progress: bool = True,
             say: Callable[[str], None] = print, steps: str | os.PathLike | None = None) -> OptimizeResult:
    """Search for the fastest artifact for ``config.target`` within ``config.max_iou_drop`` of ``model``'s
    val IoU; the chosen artifact goes to ``out/model`` with ``out/recipe.yaml`` that rebuilds it. ``steps``:
    where the models and exports are made and cached (default ``out/steps``); searches of one model for
    several targets can share it, so what one trained the next finds cached."""
    del resume  # a search always continues from what out already holds
    out = io.make_dirs(Path(out).resolve())
    data = Path(data).resolve()  # absolute: the steps' keys and the candidates' digests do not depend on the cwd
    model = Path(model).resolve()
    steps = Path(steps).resolve() if steps is not None else None
    if not (data / "images").is_dir():
        raise EdgecutError(f"{data}: a data set folder has images/ and masks/ (and splits/train.txt, val.txt)")
    search = Search(Path(model), data, out, config, progress=progress, say=say, steps=steps)
    try:
        return search.run()
    except KeyboardInterrupt:
        raise EdgecutError(f"interrupted; every candidate finished so far is kept in {out / 'search.json'} and every "
                           "model made in its steps folder: run the same command again to go on") from None
