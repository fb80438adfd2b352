"""A long text traced in lanes: contiguous shares of it run side by side, a batch per step.

A trace of one text is a chain of matrix-vector products, one per character and layer, and runs at
the speed of reading the weights. Cut into L lanes, each step is one matrix product over L streams,
which runs near the CPU's (or GPU's) arithmetic peak: what training does. Each lane but the first
starts `warmup` characters before its share, from a zero state, and its values over the warm-up
are dropped; the first lane starts at the text's start, as the sequential trace does.

What a warm-up cannot rebuild: a unit whose cell integrates over the whole text (a forget gate at
~1, a cell in the hundreds and its tanh saturated) carries a value that depends on where the text
began, and a lane gets a different one. So the trace measures, at every lane boundary, how far the
lane's state after its warm-up is from its neighbour's state at the same character (which the
neighbour reached by reading everything before it), and reports the largest difference per state
signal (`LaneTrace.boundaries`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .fused_trace import trace_buffers

# Characters a lane reads before its share. Measured on the shipped 3×256 model over 250,000
# characters of Python against the sequential trace: after 256 the hidden states still differed by
# up to 0.52, after 1,024 by up to 0.065 (5% of characters over 1e-3), after 4,096 by at most
# 2.5e-4 on every signal but a few integrating cells (docs/inspect.md, "Lanes").
WARMUP = 4096
# Lanes traced side by side. Measured on two Zen 4 EPYC cores, the shipped 3×256 model: 80k (64
# lanes), 95k (128), 104k (256) characters a second; over 5 MB each lane past the first adds a
# warm-up (5%, 10%, 21% more to trace), so 128 gave the most text a second.
MAX_LANES = 128
SHARES_PER_WARMUP = 4  # a lane keeps at least 4 warm-ups' worth: warming up costs at most 1/4 more
# Lane j joins lane j−1 where its state at its first kept character is within this of lane j−1's
# last state, unit by unit.
JOIN_TOLERANCE = 1e-3
# Seeded passes (`LaneTrace`'s seeds) a mode may run after the first where the lanes did not join,
# before it gives up on them (one joined the shipped model's whole training split).
SEEDED_PASSES = 2


@dataclass(frozen=True)
class LaneLayout:
    """Where each lane reads: lane 0 reads [0, steps) and keeps all of it; lane j ≥ 1 reads
    [j·share, j·share + steps) and keeps what follows its first `warmup` steps."""

    length: int  # characters in the text
    lanes: int
    warmup: int
    share: int  # characters kept by each lane after the first (which keeps share + warmup)

    @classmethod
    def for_text(cls, length: int, warmup: int = WARMUP, max_lanes: int = MAX_LANES) -> LaneLayout:
        """As many lanes as keep a warm-up a quarter of a share or less (one for a short text)."""
        lanes = max(1, min(max_lanes, (length - warmup) // (SHARES_PER_WARMUP * warmup))) if warmup else 1
        if lanes == 1:
            return cls(length, 1, 0, length)
        return cls(length, lanes, warmup, -(-(length - warmup) // lanes))

    @property
    def steps(self) -> int:
        return self.share + self.warmup

    def first(self, lane: int) -> int:
        """The first character lane `lane` reads."""
        return lane * self.share

    def first_kept(self, lane: int) -> int:
        """The first character lane `lane` keeps: after its warm-up (lane 0 has none to drop)."""
        return self.first(lane) + self.warmup if lane else 0

    def lane_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [length] → [steps, lanes]; the last lane's steps past the text's end read token 0."""
        out = tokens.new_zeros((self.steps, self.lanes))
        for lane in range(self.lanes):
            part = tokens[self.first(lane) : self.first(lane) + self.steps]
            out[: len(part), lane] = part
        return out

    def kept(self, begin: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """For steps [begin, end): (positions, index) of the values kept, in text order within each
        lane: `index` picks them from the block's values flattened step-major ([steps·lanes]), and
        `positions` are their characters' places in the text."""
        steps = np.arange(begin, end)[:, None]
        lanes = np.arange(self.lanes)[None, :]
        positions = steps + lanes * self.share
        keep = ((steps >= self.warmup) | (lanes == 0)) & (positions < self.length)
        return positions[keep], np.flatnonzero(keep.ravel())


@dataclass
class Boundaries:
    """At each lane boundary: the largest |difference| between the lane's state after its warm-up
    and its neighbour's at the same character, per state signal, and the units (1-based layer,
    neuron) that differ by more than `tolerance` at some boundary: those whose values in the lanes
    are not the sequential trace's (a memory longer than the warm-up; for a cell, most often an
    integrator whose tanh is saturated, which its hidden state never shows)."""

    largest: dict[str, float]
    units: dict[str, list[tuple[int, int]]]
    tolerance: float = JOIN_TOLERANCE

    def to_dict(self) -> dict:
        return {
            "largest": self.largest,
            "tolerance": self.tolerance,
            "units_over_tolerance": {name: [list(u) for u in units] for name, units in self.units.items()},
        }


class LaneTrace:
    """Iterate for (positions, signal → [layers, n, hidden]) blocks of `block` steps over all lanes;
    afterwards `boundaries` says how closely the lanes joined (None with one lane), and `final` holds
    every lane's last state.

    `seeds`: the `final` of an earlier pass over the same layout. Then each lane j ≥ 1 sets its
    warm-up's state aside and goes on from lane j−1's earlier final state, which is its first kept
    character's state as lane j−1 reached it by reading everything before. Where a lane's state
    had not yet joined its neighbour's after a warm-up, a seeded pass carries the neighbour's
    across: it joins wherever each lane's earlier final state equals its final state now
    (`boundaries` compares them), so every lane started from the sequential trace's state."""

    def __init__(self, engine, tokens: torch.Tensor, layout: LaneLayout, block: int, seeds: list | None = None):
        self.engine, self.tokens, self.layout, self.block = engine, tokens, layout, block
        self.seeds = seeds
        self.boundaries: Boundaries | None = None
        self.starts: list | None = None  # every lane's state at its first kept character
        self.final: list | None = None

    def __iter__(self) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
        """Each block's values live in buffers the next block overwrites: copy what you keep."""
        engine, layout = self.engine, self.layout
        lanes = layout.lane_tokens(self.tokens).to(engine.device)
        state = engine.init_state(layout.lanes)
        buffers = trace_buffers(engine, self.block, layout.lanes)
        after_warmup = None
        # Blocks end at the warm-up's end, so the state there is at hand for the boundary check.
        cuts = sorted({*range(0, layout.steps, self.block), layout.warmup} - {layout.steps}) + [layout.steps]
        for begin, end in zip(cuts[:-1], cuts[1:], strict=True):
            part = engine.trace(lanes[begin:end], state, into=buffers)
            state = engine.state_after(part)
            positions, index = layout.kept(begin, end)
            flat = {name: values.flatten(1, 2) for name, values in part.items()}
            if len(index) < (end - begin) * layout.lanes:  # a warm-up, or the text's end: pick what is kept
                index_t = torch.from_numpy(index).to(engine.device)
                flat = {name: values.index_select(1, index_t) for name, values in flat.items()}
            yield positions, flat
            if end == layout.warmup:
                if self.seeds is not None:
                    state = _carried(state, self.seeds)
                after_warmup = _copied(state)  # the buffers it may lie in are written again
        self.starts, self.final = after_warmup, _copied(state)
        if layout.lanes > 1:
            self.boundaries = joins(engine, after_warmup, self.final)


class LaneRetrace:
    """Some lanes of a layout traced again over the characters they keep, each from a start state
    given per lane (for lane j, lane j−1's last state: its first kept character's state as lane j−1
    reached it). Iterate for (positions, signal → [layers, n, hidden]) blocks as `LaneTrace`'s;
    afterwards `final` holds the retraced lanes' last states. Lane 0 never needs it: it reads from
    the text's start."""

    def __init__(self, engine, tokens: torch.Tensor, layout: LaneLayout, lanes: list[int], starts: list, block: int):
        self.engine, self.tokens, self.layout, self.lanes, self.starts = engine, tokens, layout, lanes, starts
        self.block = block
        self.firsts = [layout.first_kept(lane) for lane in lanes]  # where each lane's share begins
        self.chars = sum(min(layout.share, layout.length - first) for first in self.firsts)  # what it yields
        self.final: list | None = None

    def __iter__(self) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
        engine, layout = self.engine, self.layout
        firsts = np.array(self.firsts)
        tokens = self.tokens.new_zeros((layout.share, len(self.lanes)))
        for b, first in enumerate(self.firsts):
            part = self.tokens[first : first + layout.share]
            tokens[: len(part), b] = part
        tokens = tokens.to(engine.device)
        state = self.starts
        buffers = trace_buffers(engine, self.block, len(self.lanes))
        for begin in range(0, layout.share, self.block):
            end = min(layout.share, begin + self.block)
            part = engine.trace(tokens[begin:end], state, into=buffers)
            state = engine.state_after(part)
            positions = (np.arange(begin, end)[:, None] + firsts[None, :]).ravel()  # step-major, as the values
            flat = {name: values.flatten(1, 2) for name, values in part.items()}
            if positions[-1] >= layout.length:  # the last lane runs past the text's end
                index = np.flatnonzero(positions < layout.length)
                index_t = torch.from_numpy(index).to(engine.device)
                positions, flat = positions[index], {n: v.index_select(1, index_t) for n, v in flat.items()}
            yield positions, flat
        self.final = _copied(state)


def lane_rows(state: list, lanes: list[int]) -> list:
    """Lanes `lanes` of a state laid out per layer as tuples of [lanes, hidden]."""
    index = torch.tensor(lanes, device=state[0][0].device)
    return [tuple(s.index_select(0, index) for s in layer) for layer in state]


def set_lane_rows(state: list, lanes: list[int], rows: list) -> None:
    """Lanes `lanes` of `state` become `rows` (as `lane_rows` returns them), in place."""
    for layer, new in zip(state, rows, strict=True):
        for s, row in zip(layer, new, strict=True):
            s[lanes] = row


def offset_lanes(
    starts: list, final: list, cell: tuple[int, int] | None = None, tolerance: float = JOIN_TOLERANCE
) -> list[int]:
    """Lanes j ≥ 1 whose state at their first kept character is not lane j−1's last state: a hidden
    state (any unit's) differs by more than `tolerance`, or, with `cell` (a 0-based layer, neuron),
    that unit's cell does."""
    offset = (_gaps(starts, final, 0) > tolerance).any(dim=2).any(dim=0)
    if cell is not None:
        layer, neuron = cell
        offset |= _gaps(starts, final, 1)[layer, :, neuron] > tolerance
    return (offset.nonzero().flatten() + 1).tolist()


def _gaps(starts: list, final: list, i: int) -> torch.Tensor:
    """|lane j's start − lane j−1's last state| of state `i` (0 hidden, 1 cell) for j ≥ 1: the same
    character reached two ways. [layers, lanes − 1, hidden]."""
    return torch.stack([(s[i][1:] - f[i][:-1]).abs().float() for s, f in zip(starts, final, strict=True)])


def _copied(state: list) -> list:
    return [tuple(s.clone() for s in layer) for layer in state]


def _carried(state: list, seeds: list) -> list:
    """Lane 0's state as it is; lane j ≥ 1's is lane j−1's in `seeds` (per layer, tensors [lanes, hidden])."""
    return [
        tuple(torch.cat([own[:1], seed[:-1]]) for own, seed in zip(layer, seeded, strict=True))
        for layer, seeded in zip(state, seeds, strict=True)
    ]


def joins(engine, after_warmup: list, final: list, tolerance: float = JOIN_TOLERANCE) -> Boundaries:
    """Lane j's state at its first kept character (after its warm-up, or as a seed gave it) against
    lane j−1's final state: the same character."""
    names = ("hidden", "cell") if engine.kind == "lstm" else ("hidden",)
    largest, units = {}, {}
    for i, name in enumerate(names):
        diff = _gaps(after_warmup, final, i).amax(dim=1)  # [layers, hidden]: each unit's largest over the boundaries
        largest[name] = float(diff.max())
        units[name] = [(layer + 1, neuron) for layer, neuron in (diff > tolerance).nonzero().tolist()]
    return Boundaries(largest, units, tolerance)
