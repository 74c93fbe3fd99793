"""One trainer for 1 or N processes: torchrun sets the environment, DDP does the rest.

``gloo`` on CPU, ``nccl`` on GPU (bound to this process's GPU with ``device_id``). More
processes on a node than it has GPUs share them round-robin over ``gloo`` (NCCL takes one
process per GPU): slower, but it runs (a DDP check on a one-GPU machine).
``emoflow train --processes N`` re-launches itself under ``torch.distributed.run`` so users need
not type torchrun's options.

Two deliberate timeouts. The collectives every rank takes part in (gradients, epoch sums) fail
after ``EMOFLOW_DDP_TIMEOUT_S`` (default 1800 s; NCCL's own default is 10 minutes). The waits
on work rank 0 does alone (validation each epoch, the checkpoint, and at the end the kept model
and its MLflow upload) go through a ``gloo`` side group with ``EMOFLOW_DDP_WAIT_S`` (default
7200 s): the other ranks wait there on the CPU, outside NCCL's watchdog.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

TIMEOUT_ENV, WAIT_ENV = "EMOFLOW_DDP_TIMEOUT_S", "EMOFLOW_DDP_WAIT_S"
_wait_group: Any = None  # the gloo side group for waits on rank 0 (see the module doc)


def _seconds(env: str, default: float) -> timedelta:
    return timedelta(seconds=float(os.environ.get(env, "") or default))


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
    gpus = torch.cuda.device_count() if cuda else 0
    device = torch.device(f"cuda:{local % gpus}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        global _wait_group
        shared = cuda and int(os.environ.get("LOCAL_WORLD_SIZE", "1")) > gpus
        backend = "nccl" if cuda and not shared else "gloo"
        if shared and rank == 0:
            log.warning("train: more processes per node than its %d GPU(s): they share them, "
                        "over gloo (NCCL takes one process per GPU)", gpus)  # fmt: skip
        dist.init_process_group(backend, timeout=_seconds(TIMEOUT_ENV, 1800),
                                device_id=device if backend == "nccl" else None)  # fmt: skip
        _wait_group = dist.new_group(backend="gloo", timeout=_seconds(WAIT_ENV, 7200))
    return Dist(rank, world, local, device)


def wait_for_all() -> None:
    """A barrier of every process, when there are several, on the side group: rank 0 may
    arrive long after the others (it saved, validated or uploaded alone)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier(group=_wait_group)


def shutdown() -> None:
    global _wait_group
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _wait_group = None


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
    dist.broadcast_object_list(box, src=0, group=_wait_group)  # the others wait on the CPU
    return box[0]


def torchrun_argv(processes: int, argv: list[str]) -> list[str]:
    """The command that runs ``emoflow <argv>`` on ``processes`` local processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={processes}", "-m", "emoflow.cli", *argv]  # fmt: skip
