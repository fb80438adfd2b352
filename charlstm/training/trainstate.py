"""What a training checkpoint holds and how a resume reads it back: the Trainer's payload (weights,
optimizer and scaler, step, data position, schedule, validation record), every lane's hidden
state and the random number generators' states.

Together with the data position and the schedule they make resumption exact: on the CPU,
N steps + resume + N steps reproduce 2N steps bit for bit.
"""

from __future__ import annotations

import random
from dataclasses import asdict

import torch

from ..core.errors import CharlstmError
from .schedule import resumed_schedule


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


def trainer_payload(trainer, state) -> dict:
    """The checkpoint a Trainer saves: `state` is every lane's hidden state (gathered under torchrun)."""
    return {
        "model_config": trainer.model_config.to_dict(),
        "vocab": trainer.vocab.symbols,
        "model": trainer.raw_model.state_dict(),  # the unwrapped module: no DDP prefix
        "dataset": trainer.dataset.summary(),
        "step": trainer.step,
        "train_config": asdict(trainer.cfg),
        "init_from": trainer.init_source,
        "optimizer": trainer.optimizer.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        "data_position": trainer.batcher.position(),
        "hidden_state": hidden_for_checkpoint(state),
        "schedule": dict(trainer.schedule),
        "rng": rng_state(trainer.device),
        "best_val_bpc": trainer.best_val_bpc,
        "stale_validations": trainer.stale_validations,
        "val_bpc": trainer.last_val_bpc,
        "skipped_steps": trainer.skipped_steps,
        "precision": trainer.precision.name,
    }


def restore_trainer(trainer, payload: dict) -> None:
    """Put a checkpoint's state back into a freshly built Trainer (runfolder.py checks the keys first)."""
    trainer.raw_model.load_state_dict(payload["model"])
    trainer.optimizer.load_state_dict(payload["optimizer"])  # moves its state to the parameters' device
    if payload.get("scaler"):
        trainer.scaler.load_state_dict(payload["scaler"])
    trainer.step = int(payload["step"])
    trainer.batcher.seek(payload["data_position"])
    trainer.best_val_bpc = payload.get("best_val_bpc")
    trainer.stale_validations = int(payload.get("stale_validations", 0))
    trainer.last_val_bpc = payload.get("val_bpc")
    trainer._skipped.fill_(int(payload.get("skipped_steps", 0)))
    trainer.schedule = resumed_schedule(trainer.schedule, payload, trainer.cfg, trainer.step)
    hidden = payload.get("hidden_state")
    if hidden is not None:
        trainer.state = lanes_from_checkpoint(
            hidden, trainer.cfg.batch_size, trainer.world, trainer.rank, trainer.model_config.kind, trainer.device
        )
    restore_rng(payload.get("rng") or {}, trainer.device, trainer.world, trainer.cfg.seed + trainer.rank + trainer.step)
