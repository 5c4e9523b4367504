"""The Runner contract every backend keeps (which backend runs which format: :mod:`edgecut.formats`).

A Runner is a callable: ``runner(batch)`` takes a float32 N x 3 x H x W numpy batch, already
normalised as its ModelSpec says, and returns the one-channel output (N x 1 x H x W) as numpy.
It also says what it runs on (``backend``, ``device``) and how to feed it (``spec``).
"""

from __future__ import annotations

import contextlib
import os
from typing import Protocol

import numpy as np

from edgecut.artifact import Artifact, ModelSpec
from edgecut.errors import EdgecutError, ModelError
from edgecut.formats import FORMATS


class Runner(Protocol):
    backend: str
    device: str
    spec: ModelSpec

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


def backend_for(art: Artifact, backend: str | None = None) -> str:
    """The backend that runs ``art``: its format's, if ``backend`` (when given) is that one."""
    fmt = art.manifest.format
    row = FORMATS.get(fmt)
    if row is not None and row.not_run_here:
        raise EdgecutError(f"{art.path} is a {fmt} model, which edgecut cannot run here: {row.not_run_here}")
    if row is None or row.backend is None:
        raise ModelError(f"{art.path}: no runner for format {fmt!r} (runners exist for "
                         f"{', '.join(n for n, f in FORMATS.items() if f.backend)})")
    if backend is not None and backend != row.backend:
        raise EdgecutError(f"{art.path}: a {fmt} artifact runs on {row.backend}, not {backend}; export it "
                           f"first (edgecut export {art.path} --format ...) or drop --backend")
    return row.backend


def checked_batch(batch: np.ndarray, path: os.PathLike | str, spec: ModelSpec,
                  fixed_hw: tuple[int | None, int | None] = (None, None)) -> np.ndarray:
    """``batch`` as contiguous float32 N x 3 x H x W that the exported model at ``path`` accepts:
    its fixed input size if it has one, else multiples of the spec's size divisor."""
    x = np.ascontiguousarray(batch, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ModelError(f"expected a N x 3 x H x W batch, got shape {x.shape}")
    h, w = x.shape[2:]
    if fixed_hw != (None, None) and (h, w) != fixed_hw:
        raise ModelError(f"{path} was exported for {fixed_hw[0]}x{fixed_hw[1]} inputs only, "
                         f"got {h}x{w} (export with --dynamic for other sizes)")
    d = spec.size_divisor
    if h % d or w % d:
        raise ModelError(f"{path}: input {h}x{w} is not a multiple of {d} (spec.size_divisor)")
    return x


def fixed_size_agrees(path: os.PathLike | str, spec: ModelSpec, fixed_hw: tuple[int | None, int | None]) -> None:
    """Refuse a spec whose input size is not the one a fixed-size model file takes: the spec (in
    edgecut.json, which no sha256 covers, or in the file's metadata) sizes every batch made for it."""
    if None not in fixed_hw and tuple(spec.input_size) != tuple(fixed_hw):
        from edgecut.errors import InputError

        raise InputError(path, f"its spec.input_size is {spec.input_size[0]}x{spec.input_size[1]} but the model takes "
                         f"{fixed_hw[0]}x{fixed_hw[1]} inputs only", "restore edgecut.json, or export the model again")


def spec_at(art: Artifact, size: tuple[int, int] | None) -> ModelSpec:
    """``art``'s spec at another input size (H, W), if the model accepts it; its own for None."""
    spec = art.spec
    if size is None or tuple(size) == tuple(spec.input_size):
        return spec
    if not spec.dynamic_size:
        raise EdgecutError(f"{art.path} was exported for {spec.input_size[0]}x{spec.input_size[1]} only; run it "
                           "at that size (drop --size) or export with --dynamic")
    d = spec.size_divisor
    if size[0] % d or size[1] % d:
        raise EdgecutError(f"--size {size[0]}x{size[1]}: {art.path} takes multiples of {d}")
    return spec.with_size(size)


class AtSize:
    """A Runner seen through another ModelSpec (the same model at another input size)."""

    def __init__(self, runner: Runner, spec: ModelSpec) -> None:
        self._runner, self.spec = runner, spec
        self.backend, self.device = runner.backend, runner.device

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._runner(batch)


@contextlib.contextmanager
def native_stderr_quiet():
    """File descriptor 2 pointed at /dev/null for the block (native libraries write there directly)."""
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
