"""Processes under torchrun: their layout, the process group, and the few collectives training uses.

Under `torchrun --nproc-per-node N` (WORLD_SIZE > 1) every rank runs the same loop; these helpers
are where ranks meet. Each takes `world` and, when it is 1, returns its input without touching
torch.distributed, so a plain run never needs a process group.
"""

from __future__ import annotations

import gc
import os

import torch
import torch.distributed as dist
from torch import nn


def distributed_layout() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) for a plain run."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))


def start_process_group(device: torch.device, world: int) -> None:
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def end_process_group(world: int, finished: bool) -> None:
    if world > 1 and dist.is_initialized():
        if finished:
            # Every rank reaches the end before any tears the group down: a rank that destroyed
            # it while another was still in its last collective could abort the other at exit.
            # (Not after an error: a rank that died would leave the others waiting here.)
            dist.barrier()
        # The DDP wrapper's reducer holds the group too. Collected after the group is destroyed, it
        # would free it holding the GIL, while gloo's worker thread waits for the GIL to free its
        # last tensors: a deadlock at exit (seen once in ~10 two-process runs). Collected first,
        # the group is freed here, by destroy_process_group, which releases the GIL to do it.
        gc.collect()
        dist.destroy_process_group()


def wrap_model(model: nn.Module, device: torch.device, world: int) -> nn.Module:
    """DistributedDataParallel, which averages the gradients, when there are several ranks."""
    if world == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def agree(flag: bool, world: int, device: torch.device) -> bool:
    """True on every rank when it is true on any: ranks that must stop at the same step agree here."""
    if world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def rank_0s(value: int, world: int, device: torch.device) -> int:
    """Rank 0's `value` on every rank."""
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return int(t.item())


def average(t: torch.Tensor, world: int) -> torch.Tensor:
    """The mean of `t` over the ranks, in place."""
    if world > 1:
        dist.all_reduce(t)
        t /= world
    return t


def gather_lanes(state, world: int):
    """Concatenate every rank's lanes of the hidden state along the batch dimension."""
    if state is None or world == 1:
        return state
    tensors = state if isinstance(state, tuple) else (state,)
    gathered = []
    for t in tensors:
        parts = [torch.empty_like(t, dtype=torch.float32) for _ in range(world)]
        dist.all_gather(parts, t.float().contiguous())  # fp32: every backend gathers it, bf16 round-trips exactly
        gathered.append(torch.cat(parts, dim=1).to(t.dtype))
    return tuple(gathered) if isinstance(state, tuple) else gathered[0]
