"""Dynamic evaluation (Graves 2013; Krause et al. 2018): the model adapts to the text as it reads it.

The text is read once, in order, in segments. Each segment is scored first — with the weights as
they stand, so no character is ever predicted by a model that has seen it — and then the model
takes one SGD step on that segment's loss before reading the next. Recurring names, indentation
habits and idioms of one file or project are learned on the fly. The checkpoint is never changed:
the adaptation happens on a copy.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import CharlstmError
from ..core.model import LN2, detach_state

DYNAMIC_SEQ_LEN = 100  # characters per segment: one SGD step each
DYNAMIC_LR = 0.3  # plain SGD on a segment's mean loss, clipped; best of 0.005–1.0 on the shipped model
DYNAMIC_GRAD_CLIP = 1.0
# Past this a segment's characters had probabilities under 2^-64 each: weights an update blew up
# (NaN on one CPU, a finite 1e30 bits on another), not a score.
DIVERGED_BITS_PER_CHAR = 64.0


def dynamic_bits_per_char(
    model: torch.nn.Module,
    tokens,
    *,
    device: torch.device | str = "cpu",
    autocast=None,
    remap: np.ndarray | None = None,
    seq_len: int = DYNAMIC_SEQ_LEN,
    lr: float = DYNAMIC_LR,
) -> dict:
    """Bits per character of `tokens` (every token after the first) under dynamic evaluation."""
    if not (math.isfinite(lr) and lr > 0):
        raise CharlstmError(f"--dynamic-lr must be a positive number, got {lr}")
    n_pred = len(tokens) - 1
    if n_pred < 1:
        raise CharlstmError("nothing to score: the text needs at least two characters")
    adapted = copy.deepcopy(model).to(device)
    adapted.eval()  # no dropout: the same network that static evaluation scores
    optimizer = torch.optim.SGD(adapted.parameters(), lr=lr)
    state = None
    total = 0.0
    for start in range(0, n_pred, seq_len):
        chunk = np.asarray(tokens[start : min(start + seq_len, n_pred) + 1], dtype=np.int64)
        if remap is not None:
            chunk = remap[chunk]
        x = torch.from_numpy(chunk[:-1])[None].to(device)
        y = torch.from_numpy(chunk[1:]).to(device)
        with autocast() if autocast is not None else torch.enable_grad():
            logits, next_state = adapted(x, state)
        loss = F.cross_entropy(logits[0].float(), y, reduction="sum")
        total += float(loss.detach())  # scored before the model learns from it
        segment_bits = float(loss.detach()) / len(y) / LN2
        if not math.isfinite(total) or segment_bits > DIVERGED_BITS_PER_CHAR:
            raise CharlstmError(
                f"dynamic evaluation diverged at --dynamic-lr {lr:g} (a segment after {start:,} "
                f"characters scored {segment_bits:.3g} bits per character); try a lower rate "
                f"(default {DYNAMIC_LR:g})"
            )
        optimizer.zero_grad(set_to_none=True)
        (loss / len(y)).backward()
        torch.nn.utils.clip_grad_norm_(adapted.parameters(), DYNAMIC_GRAD_CLIP)
        optimizer.step()
        state = detach_state(next_state)
    return {"bpc": total / n_pred / LN2, "loss": total / n_pred, "chars": n_pred, "lr": lr, "seq_len": seq_len}
