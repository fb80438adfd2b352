"""What tests compute to check the library, which the library itself never needs."""

from __future__ import annotations

import base64
import zlib

import numpy as np
import torch

from charlstm.core.engine import StepEngine


def dequantise(block: dict, steps: int) -> np.ndarray:
    """The inverse of `explorer.quantise` (what the explorer page computes in JavaScript)."""
    q = np.frombuffer(zlib.decompress(base64.b64decode(block["q"])), dtype=np.uint8)
    q = q.reshape(steps, len(block["lo"])).astype(np.float64)
    lo, hi = np.asarray(block["lo"]), np.asarray(block["hi"])
    return lo + q * (hi - lo) / 255


@torch.no_grad()
def logits_from_trace(engine: StepEngine, trace: dict[str, torch.Tensor]) -> torch.Tensor:
    """Next-character logits [T, vocab] from a trace's top-layer hidden states, by the engine's head."""
    return torch.addmm(engine.head_b, trace["hidden"][-1].to(engine.dtype), engine.head_w_t).float()
