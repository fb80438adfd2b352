"""A unit's top contexts: the places in a corpus where it is most positive and most negative.

The corpus (the training split by default, `inspect_command`) is traced in lanes side by side
(`core.lanes`), or in chunks with the state carried from one chunk to the next, and only the
watched unit's values are kept from each block, so memory stays bounded whatever the corpus's
length: one block's trace, a window of values per lane, and the best candidates so far. A context
is a window of text ending a few characters after the peak (a recurrent network has only read what
comes before); windows of the K best are kept apart, so that one long string does not fill the
list with neighbouring characters.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np
import torch

from ..core.backend import available_cores, cpu_threads, torch_threads
from ..core.engine import StepEngine
from ..core.errors import CharlstmError
from ..core.lanes import SEEDED_PASSES, LaneLayout, LaneTrace
from .tracing import LaneReport, trace_weights

# Characters traced at a time: one chunk's signals take CHUNK × layers × hidden × signals × 4 bytes.
CHUNK = 2048
BEFORE, AFTER = 56, 8  # characters shown before and after the peak


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

    def offer(self, values: np.ndarray, first: int, buf: np.ndarray, buf_start: int, limit: int) -> None:
        """Candidates `values` from position `first`; their windows come from `buf` (values from
        `buf_start`), cut at `limit` (where the stream's known values end)."""
        positions = np.arange(first, first + len(values))
        for i in _pick(self.sign * values, positions, self.k, self.gap):
            p = int(positions[i])
            start, end = max(buf_start, p - BEFORE), min(limit, p + AFTER + 1)
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


class _Stream:
    """A contiguous run of the text (the whole of it, or one lane's share) whose values arrive in
    order. Each position is offered once the AFTER values that follow it are known; only what a
    later window may still need is kept."""

    def __init__(self, origin: int):
        self.buf, self.buf_start = np.zeros(0, dtype=np.float32), origin
        self.seen = self.ready = origin  # values known up to `seen`, offered up to `ready`

    def feed(self, values: np.ndarray, sides) -> None:
        self.buf = np.concatenate([self.buf, values])
        self.seen += len(values)
        self._offer(self.seen - AFTER, sides)

    def finish(self, sides) -> None:
        self._offer(self.seen, sides)

    def _offer(self, end: int, sides) -> None:
        if end > self.ready:
            candidates = self.buf[self.ready - self.buf_start : end - self.buf_start]
            for side in sides:
                side.offer(candidates, self.ready, self.buf, self.buf_start, self.seen)
            self.ready = end
        keep_from = max(self.buf_start, self.ready - BEFORE)
        self.buf, self.buf_start = self.buf[keep_from - self.buf_start :], keep_from


def _runs(positions: np.ndarray, values: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """A lane trace's block (positions in no order) as contiguous runs: (first position, values)."""
    order = np.argsort(positions, kind="stable")
    positions, values = positions[order], values[order]
    cuts = np.flatnonzero(np.diff(positions) != 1) + 1
    for lo, hi in zip([0, *cuts], [*cuts, len(positions)], strict=True):
        yield int(positions[lo]), values[lo:hi]


def top_contexts(
    engine: StepEngine,
    tokens: torch.Tensor,
    layer: int,
    neuron: int,
    signal: str,
    k: int,
    chunk: int = CHUNK,
    lanes: LaneLayout | None = None,
    progress=None,
    seeds: list | None = None,
) -> dict:
    """The `k` most positive and most negative contexts of a unit (0-based `layer`) over `tokens`,
    traced a `chunk` at a time, or in `lanes` (each lane a stream of its own: a window does not
    reach across a lane's edge), from an earlier pass's final states where `seeds` are given
    (`LaneTrace`).

    Returns {"positive": [...], "negative": [...], "largest": max |value|, "boundaries": how
    closely the lanes joined, or None, "final": the lanes' last states, or None}, each item (value,
    position, window start, window values). `progress(done, total)` hears after each block, in
    characters.
    """
    sides = (_Best(k, 1.0, BEFORE + AFTER), _Best(k, -1.0, BEFORE + AFTER))
    streams: dict[int, _Stream] = {}  # by the position each expects next
    largest, done = 0.0, 0
    if lanes is not None and lanes.lanes > 1:
        block = max(1, CHUNK // lanes.lanes)
        traced = LaneTrace(engine, tokens, lanes, block, seeds)
        blocks = ((positions, part[signal][layer, :, neuron].cpu().numpy()) for positions, part in traced)
    else:
        traced = None
        blocks = (
            (start, part[signal][layer, :, neuron].cpu().numpy()) for start, part in engine.trace_chunks(tokens, chunk)
        )
    for at, values in blocks:
        if len(values):
            largest = max(largest, float(np.nanmax(np.abs(values))))
        for first, run in [(at, values)] if isinstance(at, int) else _runs(at, values):
            stream = streams.pop(first, None) or _Stream(first)
            stream.feed(run, sides)
            streams[stream.seen] = stream
        done += len(values)
        if progress is not None:
            progress(done, tokens.shape[0])
    for stream in streams.values():
        stream.finish(sides)
    boundaries, final = (traced.boundaries, traced.final) if traced is not None else (None, None)
    positive, negative = (side.best() for side in sides)
    return {"positive": positive, "negative": negative, "largest": largest, "boundaries": boundaries, "final": final}


def unit_top_contexts(inspection, text: str, layer: int, neuron: int, signal: str, k: int, progress=None) -> dict:
    """`inspect-neuron -l L -n N --top-contexts K`: the result as plain data (layer 1-based).

    A long text is traced in lanes. Where the lanes did not join for this unit's signal (a hidden
    state anywhere, or this unit's own cell, differed after a warm-up: `core.lanes`), it is traced
    in lanes again, each lane going on from its neighbour's last state (`LaneTrace`'s seeds), up
    to SEEDED_PASSES times; if they still do not join, in one piece. So the values shown are always
    the sequential trace's."""
    if k < 1:
        raise CharlstmError(f"--top-contexts must be at least 1, got {k}")
    engine = StepEngine(inspection.model, trace_weights(inspection.model, inspection.exact))
    tokens = torch.from_numpy(inspection.vocab.encode(text)).to(engine.device)
    layout = LaneLayout.for_text(len(tokens))
    lanes = None
    if layout.lanes > 1:
        run = functools.partial(
            top_contexts, engine, tokens, layer - 1, neuron, signal, k, lanes=layout, progress=progress
        )
        with torch_threads(cpu_threads(engine.device, available_cores())):  # products over all lanes: every core
            found = run()
            report = LaneReport(layout, found["boundaries"])
            while report.offset(layer, neuron, signal) and report.passes <= SEEDED_PASSES:
                found = run(seeds=found["final"])
                report = LaneReport(layout, found["boundaries"], report.passes + 1)
        lanes = {**report.to_dict(), "retraced": report.offset(layer, neuron, signal)}
    if layout.lanes == 1 or lanes["retraced"]:
        with torch_threads(cpu_threads(engine.device, 1)):  # as `activations`: a trace is a chain of small products
            found = top_contexts(engine, tokens, layer - 1, neuron, signal, k, progress=progress)

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
        "lanes": lanes,
        "positive": [item(e) for e in found["positive"]],
        "negative": [item(e) for e in found["negative"]],
    }
