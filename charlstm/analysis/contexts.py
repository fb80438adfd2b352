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

from collections.abc import Iterator

import numpy as np
import torch

from ..core.backend import available_cores, cpu_threads, torch_threads
from ..core.engine import StepEngine
from ..core.errors import CharlstmError
from ..core.lanes import (
    SEEDED_PASSES,
    LaneLayout,
    LaneRetrace,
    LaneTrace,
    joins,
    lane_rows,
    offset_lanes,
    set_lane_rows,
)
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

    @staticmethod
    def merged(sides: list[_Best], k: int) -> list[tuple[float, int, int, np.ndarray]]:
        """The best `k` over several streams' sides (of one sign), windows kept apart."""
        items = [item for side in sides for item in side.items]
        if not items:
            return []
        sign, gap = sides[0].sign, sides[0].gap
        keep = _pick(np.array([sign * v for v, *_ in items]), np.array([p for _, p, *_ in items]), k, gap)
        return [items[i] for i in keep]


class _Stream:
    """A contiguous run of the text (the whole of it, or one lane's share) whose values arrive in
    order. Each position is offered once the AFTER values that follow it are known; only what a
    later window may still need is kept."""

    def __init__(self, origin: int):
        self.origin = origin
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


class _Contexts:
    """The best contexts of each stream (the whole text, or one lane's share, by where it starts)
    and its largest |value|. Kept apart per stream, so that a lane traced again replaces what its
    first trace found (`forget`); `best` merges them."""

    def __init__(self, k: int):
        self.k = k
        self.open: dict[int, _Stream] = {}  # by the position each expects next
        self.found: dict[int, tuple[_Best, _Best, float]] = {}  # by the stream's first position

    def add(self, at, values: np.ndarray) -> None:
        for first, run in [(at, values)] if isinstance(at, int) else _runs(at, values):
            stream = self.open.pop(first, None) or _Stream(first)
            positive, negative, largest = self.found.get(stream.origin) or (
                _Best(self.k, 1.0, BEFORE + AFTER),
                _Best(self.k, -1.0, BEFORE + AFTER),
                0.0,
            )
            stream.feed(run, (positive, negative))
            if len(run):
                largest = max(largest, float(np.nanmax(np.abs(run))))
            self.found[stream.origin] = (positive, negative, largest)
            self.open[stream.seen] = stream

    def finish(self) -> None:
        for stream in self.open.values():
            positive, negative, _ = self.found[stream.origin]
            stream.finish((positive, negative))
        self.open.clear()

    def forget(self, origins) -> None:
        for origin in origins:
            self.found.pop(origin, None)

    def best(self) -> dict:
        found = list(self.found.values())
        positive, negative = (_Best.merged([f[side] for f in found], self.k) for side in (0, 1))
        return {"positive": positive, "negative": negative, "largest": max((f[2] for f in found), default=0.0)}


def _collect(found: _Contexts, blocks, unit: tuple[int, int, str], progress, total: int) -> None:
    """Hand one unit's values (0-based layer, neuron, signal) from each traced block to `found`."""
    layer, neuron, signal = unit
    done = 0
    for at, part in blocks:
        values = part[signal][layer, :, neuron].cpu().numpy()
        found.add(at, values)
        done += len(values)
        if progress is not None:
            progress(done, total)
    found.finish()


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
) -> dict:
    """The `k` most positive and most negative contexts of a unit (0-based `layer`) over `tokens`,
    traced a `chunk` at a time, or in `lanes` (each lane a stream of its own: a window does not
    reach across a lane's edge).

    In lanes, a lane whose state where its share begins is not its neighbour's last state (a hidden
    state, or this unit's own cell, more than 1e-3 apart: `core.lanes`) is traced again over its
    share alone, from that last state (`LaneRetrace`), and replaces what it found. A lane traced
    again changes its own last state, so its right neighbour may need the same in turn: up to
    SEEDED_PASSES such rounds, each over the lanes then still apart.

    Returns {"positive": [...], "negative": [...], "largest": max |value|, "boundaries": how closely
    the lanes joined, or None, "rounds": how many times lanes were traced again, "traced_again":
    those lanes, "joined": whether every lane joined (True in one piece)}, each item (value,
    position, window start, window values). `progress(done, total)` hears after each block, in
    characters (a round again from 0).
    """
    found, unit, total = _Contexts(k), (layer, neuron, signal), tokens.shape[0]
    if lanes is None or lanes.lanes == 1:
        _collect(found, engine.trace_chunks(tokens, chunk), unit, progress, total)
        return {**found.best(), "boundaries": None, "rounds": 0, "traced_again": [], "joined": True}
    traced = LaneTrace(engine, tokens, lanes, max(1, CHUNK // lanes.lanes))
    _collect(found, traced, unit, progress, total)
    starts, final = traced.starts, traced.final
    cell = (layer, neuron) if signal == "cell" else None
    again, rounds, apart = [], 0, offset_lanes(starts, final, cell)
    while apart and rounds < SEEDED_PASSES:
        rounds += 1
        seeds = lane_rows(final, [j - 1 for j in apart])
        retrace = LaneRetrace(engine, tokens, lanes, apart, seeds, max(1, CHUNK // len(apart)))
        found.forget(retrace.firsts)
        _collect(found, retrace, unit, progress, retrace.chars)
        set_lane_rows(starts, apart, retrace.starts)
        set_lane_rows(final, apart, retrace.final)
        again = sorted({*again, *apart})
        apart = offset_lanes(starts, final, cell)
    return {
        **found.best(),
        "boundaries": joins(engine, starts, final),
        "rounds": rounds,
        "traced_again": again,
        "joined": not apart,
    }


def unit_top_contexts(inspection, text: str, layer: int, neuron: int, signal: str, k: int, progress=None) -> dict:
    """`inspect-neuron -l L -n N --top-contexts K`: the result as plain data (layer 1-based).

    A long text is traced in lanes; lanes that did not join for this unit's signal are traced again
    from their neighbours' last states (`top_contexts`), and if some still do not join, the text is
    traced in one piece. So the values shown are always the sequential trace's."""
    if k < 1:
        raise CharlstmError(f"--top-contexts must be at least 1, got {k}")
    engine = StepEngine(inspection.model, trace_weights(inspection.model, inspection.exact))
    tokens = torch.from_numpy(inspection.vocab.encode(text)).to(engine.device)
    layout = LaneLayout.for_text(len(tokens))
    lanes = None
    if layout.lanes > 1:
        with torch_threads(cpu_threads(engine.device, available_cores())):  # products over all lanes: every core
            found = top_contexts(engine, tokens, layer - 1, neuron, signal, k, lanes=layout, progress=progress)
        lanes = {
            **LaneReport(layout, found["boundaries"], 1 + found["rounds"]).to_dict(),
            "traced_again": found["traced_again"],
            "retraced": not found["joined"],
        }
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
