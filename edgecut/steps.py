"""The step table: every stage's front function and config class, by name.

Every step has one shape, ``fn(*sources, out, config, *, resume=False, progress=True)``: it
reads its sources (artifacts, or a data folder), writes one thing into ``out`` (an artifact, a
data set, records or a report) and takes its options as one frozen dataclass. The CLI and the
Python API call these functions with these configs; the recipe runner reads the table to do the
same from a file. A config class is loaded without torch (recipes are checked in a fraction of
a second); a function is imported only when its step runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgecut._optional import load


@dataclass(frozen=True)
class StepKind:
    """One row of the step table."""

    name: str
    sources: tuple[str, ...]  # the positional parameters before ``out``: "model", "models", "data", ...
    fn: str  # "module:function": the front function, imported when the step runs
    config_ref: str  # "module:Class": its config (light: no torch, so recipes are checked in a fraction of a second)
    writes: str = "artifact"  # what lands in ``out``: an "artifact" folder, "data" (a data set folder),
    # "records" (a .jsonl file) or a "report" folder (report.md, .csv, .html, pareto.png)
    labels: str | None = None  # keyword that takes the display names of the (first, listed) sources
    needs: Callable[[Any], tuple[str, ...]] = lambda config: ()  # optional import names (and "env:NAME")
    # the step needs besides what its sources' formats need; checked before a recipe runs any step

    def function(self) -> Callable[..., Any]:
        return load(self.fn)

    def config(self) -> type:
        return load(self.config_ref)

    def load(self) -> tuple[Callable[..., Any], type]:
        return self.function(), self.config()


def _prune_needs(config) -> tuple[str, ...]:
    return ("torch_pruning",)


def _qat_needs(config) -> tuple[str, ...]:
    return ("nncf", "onnx")


def _export_needs(config) -> tuple[str, ...]:
    from edgecut.formats import EXPORT_FORMATS

    fmt = EXPORT_FORMATS.get(config.format)  # an unknown format is refused when the recipe is read
    if fmt is None:
        return ()
    return fmt.needs(config.precision) + ((f"env:{fmt.converter_env}",) if fmt.converter_env else ())


STEPS: dict[str, StepKind] = {
    "synth": StepKind("synth", (), "edgecut.data.synth:synth", "edgecut.data.config:SynthConfig", writes="data"),
    "composite": StepKind("composite", ("data",), "edgecut.data.composite:composite",
                          "edgecut.data.config:CompositeConfig", writes="data"),
    "import": StepKind("import", ("model",), "edgecut.intake.importer:import_model",
                       "edgecut.intake.config:ImportConfig"),
    "convert": StepKind("convert", ("model",), "edgecut.compress.to_torch:convert",
                        "edgecut.compress.config:ConvertConfig"),
    "train": StepKind("train", ("data",), "edgecut.training.train:train", "edgecut.training.config:TrainConfig"),
    "baseline": StepKind("baseline", (), "edgecut.classical:baseline", "edgecut.classical:BaselineConfig"),
    "prune": StepKind("prune", ("model",), "edgecut.compress.prune:prune", "edgecut.compress.config:PruneConfig",
                      needs=_prune_needs),
    "distill": StepKind("distill", ("teachers", "data"), "edgecut.compress.distill:distill",
                        "edgecut.compress.config:DistillConfig"),
    "qat": StepKind("qat", ("model", "data"), "edgecut.compress.qat:qat", "edgecut.compress.config:QATConfig",
                    needs=_qat_needs),
    "export": StepKind("export", ("model",), "edgecut.exporters.export:export",
                       "edgecut.exporters.config:ExportConfig", needs=_export_needs),
    "bench": StepKind("bench", ("models",), "edgecut.measure.bench:bench", "edgecut.measure.config:BenchConfig",
                      writes="records", labels="names"),
    "compare": StepKind("compare", ("records",), "edgecut.report.compare:compare",
                        "edgecut.report.config:CompareConfig", writes="report"),
}
