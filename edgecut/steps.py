"""The step table: every stage's front function and config class, by name.

Every step has one shape, ``fn(*sources, out, config, *, resume=False, progress=True)``: it
reads its sources (artifacts, or a data folder), writes one artifact into ``out`` (``bench``:
records) and takes its options as one frozen dataclass. The CLI and the Python API call these
functions with these configs; a recipe runner reads the table to do the same from a file.
Each entry imports its stage only when loaded, so reading the table is cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StepKind:
    """One row of the step table."""

    name: str
    sources: tuple[str, ...]  # the positional parameters before ``out``: "model", "models", "data", "teachers"
    load: Callable[[], tuple[Callable[..., Any], type]]  # -> (front function, config class)
    writes: str = "artifact"  # what lands in ``out``: an artifact folder, or "records" (a .jsonl file)


def _train():
    from edgecut.training.run import TrainConfig, train

    return train, TrainConfig


def _prune():
    from edgecut.compress.prune import PruneConfig
    from edgecut.compress.prune_run import prune

    return prune, PruneConfig


def _distill():
    from edgecut.compress.distill import DistillConfig, distill

    return distill, DistillConfig


def _qat():
    from edgecut.compress.qat import QATConfig, qat

    return qat, QATConfig


def _export():
    from edgecut.exporters import ExportConfig, export

    return export, ExportConfig


def _bench():
    from edgecut.measure.run import BenchConfig, bench

    return bench, BenchConfig


STEPS: dict[str, StepKind] = {
    "train": StepKind("train", ("data",), _train),
    "prune": StepKind("prune", ("model",), _prune),
    "distill": StepKind("distill", ("teachers", "data"), _distill),
    "qat": StepKind("qat", ("model", "data"), _qat),
    "export": StepKind("export", ("model",), _export),
    "bench": StepKind("bench", ("models",), _bench, writes="records"),
}
