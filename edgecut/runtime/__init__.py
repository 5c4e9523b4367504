"""Runners: one way to execute a model on every backend (the contract: :mod:`edgecut.runtime.base`;
which Runner runs which format: :mod:`edgecut.formats`). Benchmarks, accuracy, parity checks and
``edgecut remove`` go through Runners only."""

from edgecut.runtime.base import AtSize, Runner, backend_for, checked_batch, spec_at
from edgecut.runtime.load import load

__all__ = ["load", "Runner", "AtSize", "backend_for", "checked_batch", "spec_at"]
