"""One trainer for 1 or N processes: torchrun sets the environment, DDP does the rest.

``gloo`` on CPU, ``nccl`` on GPU. ``emoflow train --processes N`` re-launches itself under
``torch.distributed.run`` so users need not type torchrun's options.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed() -> Dist:
    """Join the process group torchrun prepared (or run alone)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(rank, world, local, device)


def wait_for_all() -> None:
    """A barrier of every process, when there are several."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(values: list[float], d: Dist) -> list[float]:
    """Element-wise sum over all processes (for epoch loss and accuracy)."""
    if d.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_object(obj: object, d: Dist) -> object:
    """Rank 0's value on every rank (validation runs on rank 0 only)."""
    if d.world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def torchrun_argv(processes: int, argv: list[str]) -> list[str]:
    """The command that runs ``emoflow <argv>`` on ``processes`` local processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={processes}", "-m", "emoflow.cli", *argv]  # fmt: skip
