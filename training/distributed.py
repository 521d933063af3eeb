"""Training on several processes: ``torchrun --nproc-per-node N -m training.train ...``.

torchrun sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; with ``WORLD_SIZE`` > 1 the run joins a process group
(gloo on the CPU, NCCL on CUDA with one GPU per process, ``cuda:LOCAL_RANK``) and wraps the model in
DistributedDataParallel. Without torchrun (or with one process) nothing here is used.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

# Rank 0 alone decodes the dev set while the others wait at a barrier: allow a slow evaluation.
TIMEOUT = timedelta(minutes=60)
_DDP_PARAMS = inspect.signature(DistributedDataParallel.__init__).parameters


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> DistributedDataParallel:
        # the only buffer (the sinusoidal table) is a constant: no broadcast before every forward
        # (torch >= 2.13 names the switch forward_sync_buffers; broadcast_buffers before)
        name = "forward_sync_buffers" if "forward_sync_buffers" in _DDP_PARAMS else "broadcast_buffers"
        ids = [self.device.index] if self.device.type == "cuda" else None
        options: dict[str, Any] = {"device_ids": ids, name: False}
        return DistributedDataParallel(model, **options)

    def barrier(self) -> None:
        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.local_rank])
        else:
            dist.barrier()

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """The sum over all processes (every process gets it)."""
        total = value.detach().clone().to(self.device)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    def any(self, flag: bool) -> bool:
        """True on every process when any process says so (e.g. its clock passed the deadline)."""
        t = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def launched_world_size() -> int:
    """How many processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env(device: torch.device) -> DistContext | None:
    """Join the process group torchrun describes; None for a single process (nothing changes then).

    ``device`` is the resolved ``--device``: CPU means gloo; CUDA means NCCL on ``cuda:LOCAL_RANK`` (whatever
    index ``--device`` named: pick the GPUs with ``CUDA_VISIBLE_DEVICES``).
    """
    world = launched_world_size()
    if world <= 1:
        return None
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"process LOCAL_RANK={local_rank} needs cuda:{local_rank} but this machine shows "
                f"{torch.cuda.device_count()} GPU(s): start at most that many processes per node"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=TIMEOUT)
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=device)
