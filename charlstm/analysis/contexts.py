"""A unit's top contexts: the places in a corpus where it is most positive and most negative.

The corpus (the validation split by default) is traced in chunks with the state carried from one
chunk to the next, and only the watched unit's values are kept from each chunk, so memory stays
bounded whatever the corpus's length: one chunk's trace, a window of values, and the best
candidates so far. A context is a window of text ending a few characters after the peak (a
recurrent network has only read what comes before); windows of the K best are kept apart, so
that one long string does not fill the list with neighbouring characters.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ..core.backend import cpu_threads, torch_threads
from ..core.engine import StepEngine
from ..core.errors import CharlstmError
from .neurons import trace_weights

# Characters traced at a time: one chunk's signals take CHUNK × layers × hidden × signals × 4 bytes.
CHUNK = 2048
BEFORE, AFTER = 56, 8  # characters shown before and after the peak


def unit_values(
    engine: StepEngine, tokens: torch.Tensor, layer: int, neuron: int, signal: str, chunk: int = CHUNK
) -> Iterator[np.ndarray]:
    """One unit's `signal` at every token (0-based `layer`), chunk by chunk, the state carried across."""
    for _, part in engine.trace_chunks(tokens, chunk):
        yield part[signal][layer, :, neuron].cpu().numpy().copy()


def _pick(values: np.ndarray, positions: np.ndarray, k: int, gap: int) -> list[int]:
    """Indices of up to `k` largest `values` whose `positions` are more than `gap` apart (greedy)."""
    chosen: list[int] = []
    for i in np.argsort(-values, kind="stable"):
        if all(abs(int(positions[i]) - int(positions[j])) > gap for j in chosen):
            chosen.append(int(i))
            if len(chosen) == k:
                break
    return chosen


class _Best:
    """The best `k` contexts on one side (largest sign · value), windows kept apart."""

    def __init__(self, k: int, sign: float, gap: int):
        self.k, self.sign, self.gap = k, sign, gap
        self.items: list[tuple[float, int, int, np.ndarray]] = []  # (value, position, window start, values)

    def offer(self, values: np.ndarray, first: int, buf: np.ndarray, buf_start: int, total: int) -> None:
        positions = np.arange(first, first + len(values))
        for i in _pick(self.sign * values, positions, self.k, self.gap):
            p = int(positions[i])
            start, end = max(0, p - BEFORE), min(total, p + AFTER + 1)
            self.items.append((float(values[i]), p, start, buf[start - buf_start : end - buf_start].copy()))
        keep = _pick(
            np.array([self.sign * v for v, *_ in self.items]),
            np.array([p for _, p, *_ in self.items]),
            2 * self.k,
            self.gap,
        )
        self.items = [self.items[i] for i in keep]

    def best(self) -> list[tuple[float, int, int, np.ndarray]]:
        return self.items[: self.k]


def top_contexts(
    engine: StepEngine, tokens: torch.Tensor, layer: int, neuron: int, signal: str, k: int, chunk: int = CHUNK
) -> dict:
    """The `k` most positive and most negative contexts of a unit (0-based `layer`) over `tokens`.

    Returns {"positive": [...], "negative": [...], "largest": max |value|}, each item
    (value, position, window start, window values).
    """
    total = tokens.shape[0]
    gap = BEFORE + AFTER
    sides = (_Best(k, 1.0, gap), _Best(k, -1.0, gap))
    buf, buf_start, seen, ready, largest = np.zeros(0, dtype=np.float32), 0, 0, 0, 0.0
    for values in unit_values(engine, tokens, layer, neuron, signal, chunk):
        buf = np.concatenate([buf, values])
        seen += len(values)
        if len(values):
            largest = max(largest, float(np.nanmax(np.abs(values))))
        end = total if seen == total else seen - AFTER  # positions whose whole window is known
        if end > ready:
            candidates = buf[ready - buf_start : end - buf_start]
            for side in sides:
                side.offer(candidates, ready, buf, buf_start, total)
            ready = end
        keep_from = max(0, ready - BEFORE)  # what a later window may still need
        buf, buf_start = buf[keep_from - buf_start :], keep_from
    positive, negative = (side.best() for side in sides)
    return {"positive": positive, "negative": negative, "largest": largest}


def unit_top_contexts(inspection, text: str, layer: int, neuron: int, signal: str, k: int) -> dict:
    """`inspect-neuron -l L -n N --top-contexts K`: the result as plain data (layer 1-based)."""
    if k < 1:
        raise CharlstmError(f"--top-contexts must be at least 1, got {k}")
    engine = StepEngine(inspection.model, trace_weights(inspection.model, inspection.exact))
    tokens = torch.from_numpy(inspection.vocab.encode(text)).to(engine.device)
    with torch_threads(cpu_threads(engine.device, 1)):  # as `activations`: a trace is a chain of small products
        found = top_contexts(engine, tokens, layer - 1, neuron, signal, k)

    def item(entry) -> dict:
        value, position, start, values = entry
        line = text.count("\n", 0, position) + 1
        column = position - text.rfind("\n", 0, position)  # from 1, as editors count
        return {
            "position": position,
            "line": line,
            "column": column,
            "value": round(value, 6),
            "start": start,
            "text": text[start : start + len(values)],
            "values": [round(float(v), 5) for v in values],
        }

    return {
        "layer": layer,
        "neuron": neuron,
        "signal": signal,
        "chars": len(text),
        "largest": found["largest"],
        "positive": [item(e) for e in found["positive"]],
        "negative": [item(e) for e in found["negative"]],
    }
