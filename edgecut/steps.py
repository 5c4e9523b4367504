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


@dataclass(frozen=True)
class StepKind:
    """One row of the step table."""

    name: str
    sources: tuple[str, ...]  # the positional parameters before ``out``: "model", "models", "data", ...
    function: Callable[[], Callable[..., Any]]  # imports and returns the front function
    config: Callable[[], type]  # imports and returns the config class (light: no torch)
    writes: str = "artifact"  # what lands in ``out``: an "artifact" folder, "data" (a data set folder),
    # "records" (a .jsonl file) or a "report" folder (report.md, .csv, .html, pareto.png)
    labels: str | None = None  # keyword that takes the display names of the (first, listed) sources
    needs: Callable[[Any], tuple[str, ...]] = lambda config: ()  # optional import names (and "env:NAME")
    # the step needs besides what its sources' formats need; checked before a recipe runs any step

    def load(self) -> tuple[Callable[..., Any], type]:
        return self.function(), self.config()


def _synth_fn():
    from edgecut.data.synth import synth

    return synth


def _synth_config():
    from edgecut.data.synth import SynthConfig

    return SynthConfig


def _composite_fn():
    from edgecut.data.composite import composite

    return composite


def _composite_config():
    from edgecut.data.composite import CompositeConfig

    return CompositeConfig


def _convert_fn():
    from edgecut.compress.to_torch import convert

    return convert


def _convert_config():
    from edgecut.compress.to_torch import ConvertConfig

    return ConvertConfig


def _import_fn():
    from edgecut.intake.importer import import_model

    return import_model


def _import_config():
    from edgecut.intake.config import ImportConfig

    return ImportConfig


def _baseline_fn():
    from edgecut.classical import baseline

    return baseline


def _baseline_config():
    from edgecut.classical import BaselineConfig

    return BaselineConfig


def _train_fn():
    from edgecut.training.run import train

    return train


def _train_config():
    from edgecut.training.config import TrainConfig

    return TrainConfig


def _prune_fn():
    from edgecut.compress.prune_run import prune

    return prune


def _prune_config():
    from edgecut.compress.configs import PruneConfig

    return PruneConfig


def _distill_fn():
    from edgecut.compress.distill import distill

    return distill


def _distill_config():
    from edgecut.compress.configs import DistillConfig

    return DistillConfig


def _qat_fn():
    from edgecut.compress.qat import qat

    return qat


def _qat_config():
    from edgecut.compress.configs import QATConfig

    return QATConfig


def _export_fn():
    from edgecut.exporters import export

    return export


def _export_config():
    from edgecut.exporters.options import ExportConfig

    return ExportConfig


def _bench_fn():
    from edgecut.measure.run import bench

    return bench


def _bench_config():
    from edgecut.measure.run import BenchConfig

    return BenchConfig


def _compare_fn():
    from edgecut.report import compare

    return compare


def _compare_config():
    from edgecut.report import CompareConfig

    return CompareConfig


def _prune_needs(config) -> tuple[str, ...]:
    return ("torch_pruning",)


def _qat_needs(config) -> tuple[str, ...]:
    return ("nncf", "onnx")


def _export_needs(config) -> tuple[str, ...]:
    from edgecut.exporters.formats import FORMATS

    fmt = FORMATS.get(config.format)  # an unknown format is refused when the recipe is read
    if fmt is None:
        return ()
    return fmt.needs(config.precision) + ((f"env:{fmt.converter_env}",) if fmt.converter_env else ())


STEPS: dict[str, StepKind] = {
    "synth": StepKind("synth", (), _synth_fn, _synth_config, writes="data"),
    "composite": StepKind("composite", ("data",), _composite_fn, _composite_config, writes="data"),
    "import": StepKind("import", ("model",), _import_fn, _import_config),
    "convert": StepKind("convert", ("model",), _convert_fn, _convert_config),
    "train": StepKind("train", ("data",), _train_fn, _train_config),
    "baseline": StepKind("baseline", (), _baseline_fn, _baseline_config),
    "prune": StepKind("prune", ("model",), _prune_fn, _prune_config, needs=_prune_needs),
    "distill": StepKind("distill", ("teachers", "data"), _distill_fn, _distill_config),
    "qat": StepKind("qat", ("model", "data"), _qat_fn, _qat_config, needs=_qat_needs),
    "export": StepKind("export", ("model",), _export_fn, _export_config, needs=_export_needs),
    "bench": StepKind("bench", ("models",), _bench_fn, _bench_config, writes="records", labels="names"),
    "compare": StepKind("compare", ("records",), _compare_fn, _compare_config, writes="report"),
}
