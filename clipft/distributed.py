"""Running under ``torchrun``: the process group, this process's rank, and the few collective
operations clipft needs. In a single process every function here is a no-op, so the same
commands run unchanged with and without torchrun.

torchrun sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; clipft joins the process group with
NCCL when it runs on GPUs and gloo on CPUs, and each process takes the GPU of its local rank.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 alone writes files and prints results."""
        return self.rank == 0


def init_distributed(device: str) -> tuple[World, str]:
    """Join the process group when launched by torchrun; returns the world and this process's
    device (``cuda`` becomes ``cuda:<local rank>``)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return World(), device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        device = f"cuda:{local_rank}"
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), local_rank), device


_alone = False  # set by alone(): this rank works on its own, the others have finished


@contextlib.contextmanager
def alone():
    """Work that one rank does by itself after the others are done (rank 0 labelling a trained
    run's test split): inside, this process is a world of one and nothing waits for the others."""
    global _alone
    before, _alone = _alone, True
    try:
        yield
    finally:
        _alone = before


def _grouped() -> bool:
    return dist.is_initialized() and not _alone


def current_world() -> World:
    if not _grouped():
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def barrier() -> None:
    if _grouped():
        dist.barrier()


def all_gather_objects(obj) -> list:
    """Every rank's ``obj``, in rank order."""
    if not _grouped():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s ``obj`` on every rank."""
    if not _grouped():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All ranks' ``x`` concatenated in rank order, differentiable (as OpenCLIP's
    ``gather_features(gather_with_grad=True)``): the gradient of each rank's loss flows back
    to the rank that computed each row."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return x
    return torch.cat(dist_fn.all_gather(x), dim=0)
