"""Feeding a model exported for one batch size: any batch split into calls it accepts."""

from __future__ import annotations

import numpy as np


def in_batches_of(run, x, fixed: int | None, cat=np.concatenate):
    """``run(x)`` for a model that takes batches of exactly ``fixed`` images (None: any): ``x`` split
    into calls of that size, the last one padded by repeating its last image, the outputs joined and
    cut back to ``len(x)``. Works on numpy arrays and torch tensors (``cat=torch.cat``)."""
    n = x.shape[0]
    if fixed is None or n == fixed:
        return run(x)
    outs = []
    for start in range(0, n, fixed):
        chunk = x[start:start + fixed]
        if chunk.shape[0] < fixed:
            chunk = cat([chunk] + [chunk[-1:]] * (fixed - chunk.shape[0]))
        outs.append(run(chunk))
    if isinstance(outs[0], (tuple, list)):
        return type(outs[0])(cat([o[j] for o in outs])[:n] for j in range(len(outs[0])))
    if isinstance(outs[0], dict):
        return {k: cat([o[k] for o in outs])[:n] for k in outs[0]}
    return cat(outs)[:n]
