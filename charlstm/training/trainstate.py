"""What a training checkpoint holds besides weights, optimizer and schedule, and how a resume
reads it back: every lane's hidden state and the random number generators' states.

Together with the data position and the schedule they make resumption exact: on the CPU,
N steps + resume + N steps reproduce 2N steps bit for bit.
"""

from __future__ import annotations

import random

import torch

from ..core.errors import CharlstmError


def hidden_for_checkpoint(state) -> list[torch.Tensor] | None:
    """The lanes' hidden state as a list of CPU tensors (None when there is none yet)."""
    if state is None:
        return None
    # fp32 whatever the autocast dtype: bf16/fp16 values round-trip exactly, and the
    # checkpoint resumes under any precision.
    return [t.detach().float().cpu().clone() for t in (state if isinstance(state, tuple) else (state,))]


def lanes_from_checkpoint(hidden: list, batch_size: int, world: int, rank: int, kind: str, device: torch.device):
    """This process's lanes of a saved hidden state, on `device`, as the model takes them."""
    state = [t.to(device) for t in hidden]
    per_rank = batch_size // world
    if state[0].shape[1] != batch_size:
        raise CharlstmError("the checkpoint's hidden state does not match --batch-size")
    # This process's lanes; cuDNN needs a contiguous hidden state.
    state = [t[:, rank * per_rank : (rank + 1) * per_rank].contiguous() for t in state]
    return tuple(state) if kind == "lstm" else state[0]


def rng_state(device: torch.device) -> dict:
    rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def restore_rng(rng: dict, device: torch.device, world: int, distributed_seed: int) -> None:
    """Put the saved generators back (one process); under torchrun each rank reseeds with
    `distributed_seed` instead (seed + rank + step), as a fresh distributed run does."""
    if world == 1:
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if rng.get("cuda") and device.type == "cuda":
            torch.cuda.set_rng_state_all(rng["cuda"])
        if "python" in rng:
            random.setstate(_as_tuple(rng["python"]))
    else:
        torch.manual_seed(distributed_seed)


def _as_tuple(value):
    """Python's RNG state is nested tuples; make sure it is one again after loading."""
    if isinstance(value, list):
        return tuple(_as_tuple(v) for v in value)
    if isinstance(value, tuple):
        return tuple(_as_tuple(v) for v in value)
    return value
