"""Distributed training under ``torchrun``: joining the process group, ranks, barriers, and who writes.

Started by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the training loop trains with
DistributedDataParallel: gloo on CPU, nccl on CUDA (one GPU per process, ``LOCAL_RANK``). Only
rank 0 writes checkpoints and artifacts; the others wait for it (:func:`on_main_process`).
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist

from edgecut.errors import EdgecutError

def world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless started by torchrun with WORLD_SIZE > 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join the process group torchrun described in the environment (once); (rank, world size)."""
    rank, size = world()
    if size > 1 and not dist.is_initialized():
        if not dist.is_available():
            raise EdgecutError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(dist.destroy_process_group)
        rank, size = world()
    return rank, size


def barrier() -> None:
    """Wait for every rank (nothing to wait for in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def on_main_process(write: Callable[[], Any], read: Callable[[], Any]) -> Any:
    """Run ``write`` on rank 0 only; the other ranks wait for it, then ``read`` what it wrote."""
    if world()[1] == 1:
        return write()
    result = write() if world()[0] == 0 else None
    barrier()
    return result if world()[0] == 0 else read()


def any_rank(flag: bool, device: torch.device) -> bool:
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def average_gradients(params: Sequence[torch.Tensor], world_size: int) -> None:
    """All-reduce the gradients of parameters that DDP does not own (the extra modules)."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad.div_(world_size)
