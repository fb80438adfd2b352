"""Training defaults that fit the device and the corpus, each with the reason it was chosen.

The fixed defaults in config.py suit a small CPU. A GPU is latency-bound at 64 lanes: a step of
256 lanes takes about as long, so four times the lanes give four times the characters per second,
and a run of minutes then passes over a corpus many times, where dropout pays. So, for the options
the user did not give:

- batch: 256 lanes per GPU process, 64 elsewhere; fewer when the training split is too short for
  every lane to hold a few windows;
- learning rate: the fixed 3e-3 scaled with √(batch / 64) above 64 lanes, held at 4e-3 (the best
  measured at 256 lanes on an H100; larger rates and batches were not measured);
- dropout: from the passes over the training split that the budget implies and the model's size
  against the corpus (none within one pass or for a model small beside its corpus; up to 0.3).

The measurements behind these choices are in docs/train.md ("Defaults that fit the device and the
corpus"). Pure: it takes facts (device kind, corpus size, model size, budget) and returns values
and reasons, so it is tested without a device; train_setup gathers the facts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..core.config import TrainConfig

GPU_LANES_PER_PROCESS = 256  # the measured knee on an H100 for a 3×512 LSTM
MIN_WINDOWS_PER_LANE = 4  # a lane shorter than this many windows barely carries state across steps
MAX_LR = 4e-3  # the best measured at 256 lanes (H100, 3×512); higher rates were not measured, so held there
# Overfitting needs repeats and capacity: no dropout within one pass; beyond, the pressure is the
# passes × parameters per training character, and the first bound it does not exceed sets dropout.
# (H100, 3×512 on 8M characters: 5 passes, pressure ~3.4, overfitted without dropout; a 3×128 on
# the stdlib for 3 CPU minutes, pressure ~0.05, trained worse with dropout 0.2.)
DROPOUT_BY_PRESSURE = ((0.5, 0.0), (1.0, 0.1), (2.0, 0.2), (math.inf, 0.3))

# Speed estimates for turning --minutes into passes: rough on purpose, since dropout only moves at
# whole buckets of passes. Sources: docs/performance.md and docs/gpu.md (2-core Sapphire Rapids; H100).
CPU_FLOPS = {"fp32": 2.1e11, "bf16": 5.9e11}  # 6 × params × chars/s of a 3×512 LSTM on 2 cores
CPU_SECONDS_PER_LOGIT = 7e-9  # softmax and loss over the logits, bound by memory: a large vocabulary's cost
CPU_SECONDS_PER_CELL_STEP = 57e-6  # per character of a lane per layer, whatever the size: the recurrence
GPU_SECONDS_PER_CELL_STEP = 68e-6  # H100, 3×512: ~26 ms per step of 128 characters × 3 layers, batch ≤ 256
GPU_FLOPS = 8e13  # assumed arithmetic bound once latency no longer is (not measured)


@dataclass(frozen=True)
class Facts:
    """What the defaults depend on, gathered before the run is built."""

    device: str  # cuda | cpu | mps
    world: int  # training processes (torchrun)
    train_chars: int  # characters in the training split
    parameters: int  # of the model to be trained
    vocab: int  # symbols the model predicts among
    layers: int
    hidden: int
    reduced_precision: bool  # the CPU trains in bf16 (about 2.8× fp32)


@dataclass
class Chosen:
    values: dict  # option → value, only for options the user left out
    reasons: dict  # option → why, in words (printed in the run header, kept in config.json)

    def header(self) -> str | None:
        if not self.values:
            return None
        parts = [f"{_flag(k)} {_show(v)} ({self.reasons[k]})" for k, v in self.values.items()]
        return "chosen for this device and corpus: " + "; ".join(parts)


def choose_defaults(given: dict, facts: Facts) -> Chosen:
    """Batch, learning rate and dropout for the options not in `given` (a dict of options given)."""
    chosen = Chosen({}, {})
    seq_len = given.get("seq_len", TrainConfig.seq_len)
    batch = given.get("batch_size")
    if batch is None:
        batch, reason = _batch(facts, seq_len)
        if batch != TrainConfig.batch_size:
            chosen.values["batch_size"], chosen.reasons["batch_size"] = batch, reason
    if "lr" not in given and batch > TrainConfig.batch_size:
        scaled = TrainConfig.lr * math.sqrt(batch / TrainConfig.batch_size)
        chosen.values["lr"] = float(f"{min(MAX_LR, scaled):.3g}")
        capped = f", held at {MAX_LR:g} (the best measured at 256 lanes)" if scaled > MAX_LR else ""
        chosen.reasons["lr"] = f"{TrainConfig.lr:g} × √({batch}/{TrainConfig.batch_size}) for {batch} lanes{capped}"
    if "dropout" not in given:
        passes, how = implied_passes(given, facts, batch, seq_len)
        pressure = passes * facts.parameters / max(1, facts.train_chars)
        dropout = 0.0 if passes <= 1 else next(p for bound, p in DROPOUT_BY_PRESSURE if pressure <= bound)
        if dropout != TrainConfig.dropout:
            chosen.values["dropout"] = dropout
            chosen.reasons["dropout"] = (
                f"{how}, with {facts.parameters / max(1, facts.train_chars):.2g} parameters "
                f"per character: repeats a model this size can memorise"
            )
    return chosen


def _batch(facts: Facts, seq_len: int) -> tuple[int, str]:
    if facts.device == "cuda":
        batch = GPU_LANES_PER_PROCESS * facts.world
        reason = "a GPU is latency-bound at 64 lanes: 256 per GPU ran 4× the characters per second on an H100"
    else:
        batch, reason = TrainConfig.batch_size, "the default"
        if batch % facts.world:  # every process takes the same share of the lanes
            batch = max(facts.world, batch - batch % facts.world)
            reason = f"the default {TrainConfig.batch_size}, rounded to a multiple of the {facts.world} processes"
    # Largest lane count (a multiple of the process count) that leaves every lane a few windows.
    fits = facts.train_chars // (MIN_WINDOWS_PER_LANE * seq_len + 1)
    fits -= fits % facts.world
    if fits < batch and fits >= facts.world:
        return fits, (
            f"the training split ({facts.train_chars:,} characters) gives {batch} lanes fewer than "
            f"{MIN_WINDOWS_PER_LANE} windows of {seq_len} each"
        )
    # Too short for even that: the most lanes that hold one window each, where any do.
    fits = facts.train_chars // (seq_len + 1)
    fits -= fits % facts.world
    if fits < batch and fits >= facts.world:
        return fits, (
            f"the training split ({facts.train_chars:,} characters) holds no lane of {MIN_WINDOWS_PER_LANE} "
            f"windows of {seq_len}, only {fits} of one"
        )
    return batch, reason


def implied_passes(given: dict, facts: Facts, batch: int, seq_len: int) -> tuple[float, str]:
    """Passes over the training split the budget allows, and how that was worked out."""
    n = max(1, facts.train_chars)
    bounds = []
    if "steps" in given:
        bounds.append((given["steps"] * batch * seq_len / n, f"{given['steps']:,} steps of {batch} × {seq_len}"))
    if "epochs" in given:
        bounds.append((float(given["epochs"]), "--epochs"))
    if "minutes" in given:
        rate = estimated_chars_per_second(facts, batch, seq_len)
        bounds.append(
            (given["minutes"] * 60 * rate / n, f"{given['minutes']:g} min at an estimated {rate:,.0f} chars/s")
        )
    if not bounds:
        bounds.append((1.0, "no budget given, one pass"))
    passes, how = min(bounds, key=lambda b: b[0])
    return passes, f"~{passes:.1f} passes over {facts.train_chars:,} training characters: {how}"


def estimated_chars_per_second(facts: Facts, batch: int, seq_len: int) -> float:
    """Training speed from the measured anchors; within a factor of two or so, which is enough here."""
    chars = batch * seq_len
    flops = 6 * facts.parameters * chars
    if facts.device == "cuda":
        latency = seq_len * facts.layers * GPU_SECONDS_PER_CELL_STEP * max(1.0, facts.hidden / 512)
        return chars / max(latency, flops / GPU_FLOPS)
    per_step = (
        flops / CPU_FLOPS["bf16" if facts.reduced_precision else "fp32"]
        + chars * facts.vocab * CPU_SECONDS_PER_LOGIT
        + seq_len * facts.layers * CPU_SECONDS_PER_CELL_STEP
    )
    return chars / per_step


def _flag(option: str) -> str:
    return "--" + option.replace("_", "-")


def _show(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
