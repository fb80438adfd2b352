"""Tracing a text through a model: a chunk at a time (the state carried from chunk to chunk), or,
for a whole corpus reduced to statistics, in lanes side by side (`core.lanes`). Each mode of
inspect-neuron hands the chunks to keepers that keep only what it needs (`trace_into`), so memory
does not grow with the text.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from ..core.backend import available_cores, cpu_threads, torch_threads
from ..core.engine import SIGNALS, StepEngine
from ..core.errors import CharlstmError
from ..core.lanes import SEEDED_PASSES, Boundaries, LaneLayout, LaneTrace
from ..core.model import CharRNN
from ..core.vocab import Vocab


def encode_text(vocab: Vocab, text: str) -> torch.Tensor:
    if not text:
        raise CharlstmError("the text is empty; give some characters to inspect")
    unknown = vocab.unknown_chars(text)
    if unknown:
        shown = ", ".join(repr(ch) for ch in unknown[:10]) + (" …" if len(unknown) > 10 else "")
        raise CharlstmError(f"the text has {len(unknown)} character(s) the model's vocabulary lacks: {shown}")
    return torch.from_numpy(vocab.encode(text))


# ----- tracing a text, a chunk at a time --------------------------------------------------------

# The trace runs over a chunk of characters at a time, the recurrent state carried across, and each
# mode keeps from each chunk only what it needs: a whole-text trace of a 3×256 LSTM holds 18 KB per
# character (and as much again while its gates are recomputed): ~90 GB for 5 MB of text.
CHUNK_VALUES = 4_000_000  # float32 values in one chunk's trace: 16 MB
CHUNK_CHARS = (64, 4096)  # bounds on a chunk's length in characters


def chunk_chars(model: CharRNN) -> int:
    """Characters per chunk of the trace: about CHUNK_VALUES values, whatever the model's size."""
    cfg = model.config
    per_char = cfg.layers * cfg.hidden * len(SIGNALS[cfg.kind])
    low, high = CHUNK_CHARS
    return max(low, min(high, CHUNK_VALUES // per_char))


def trace_weights(model: CharRNN, exact: bool = False) -> torch.dtype:
    """The weights' type for a trace: float32. The trace without interventions runs the fused
    layers (`fused_trace`) in float32: exact, and on the shipped 3×256 model faster than the
    float16 step trace it replaced (slower on a 3×512 one: bench/trace_speed.py). So `exact`
    (float32 before) no longer changes anything."""
    return torch.float32


# A block of a trace in lanes holds about this many float32 values (16 MB): lanes × steps × values per
# char. Small enough that the keepers read it from cache: 64 MB blocks made --find ~30% slower.
LANE_BLOCK_VALUES = 4_000_000

# Where a chunk of a trace lies in the text: its first character's place (a contiguous chunk), or
# each character's place (a block of a trace in lanes: every lane's next steps, step-major).
At = int | np.ndarray


def places(at: At, length: int) -> np.ndarray | slice:
    """What indexes a chunk's characters in an array over the whole text."""
    return slice(at, at + length) if isinstance(at, int) else at


def trace_chunks(
    model: CharRNN,
    vocab: Vocab,
    text: str,
    threads: int | None = 1,
    exact: bool = False,
    chunk: int | None = None,
    fused: bool | None = None,
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Trace `text` a chunk at a time: yields (start, signal → float32 array [layers, chunk, hidden]).

    The chunks are slices of one trace over the whole text (to float rounding).

    Each layer runs fused over a chunk (`StepEngine.trace`, `fused_trace`) with float32 weights:
    the training model's forward pass to float32 rounding (`exact` is kept for callers; both are
    exact now). The recurrence is still a chain of matrix-vector products, one per character and
    layer. Each product is too small to share between threads, and a second thread stalls whenever other
    work uses the cores, so it runs single-threaded unless `threads` says otherwise (None: torch's
    default). bench/inspect_speed.py measures both choices (--compare-threads for the second).
    Off the CPU the trace runs on the model's device and `threads` is ignored; each chunk comes
    back to the CPU as numpy.
    """
    engine = StepEngine(model, trace_weights(model, exact))
    tokens = encode_text(vocab, text).to(engine.device)
    with torch_threads(cpu_threads(engine.device, threads)):
        for start, part in engine.trace_chunks(tokens, chunk or chunk_chars(model), fused=fused):
            yield start, {name: values.cpu().numpy() for name, values in part.items()}


def lane_chunks(model: CharRNN, vocab: Vocab, text: str, seeds: list | None = None) -> LaneTrace:
    """A corpus-scale trace of `text` in lanes (`core.lanes`): iterate for (positions, signal →
    float32 tensor [layers, n, hidden] on the model's device) blocks in no particular order;
    afterwards its `boundaries` say how closely the lanes joined. Each step is one product over
    all lanes, big enough to share between threads: run it on every core (`trace_into` does).
    `seeds`: an earlier pass's `final` states, for a seeded pass (`LaneTrace`)."""
    engine = StepEngine(model, torch.float32)
    tokens = encode_text(vocab, text)
    layout = LaneLayout.for_text(len(tokens))
    per_char = model.config.layers * model.config.hidden * len(SIGNALS[model.config.kind])
    return LaneTrace(engine, tokens, layout, max(1, LANE_BLOCK_VALUES // (per_char * layout.lanes)), seeds)


def chunk_length(chunk: dict[str, np.ndarray]) -> int:
    return next(iter(chunk.values())).shape[1]


@dataclass(frozen=True)
class LaneReport:
    """How a text was traced in lanes, and how closely they joined: for --json and the table's caption."""

    layout: LaneLayout
    boundaries: Boundaries
    passes: int = 1  # the first, and the seeded passes after it
    final: list | None = field(default=None, repr=False, compare=False)  # the lanes' last states

    def to_dict(self) -> dict:
        return {
            "lanes": self.layout.lanes,
            "warmup": self.layout.warmup,
            "passes": self.passes,
            "boundaries": self.boundaries.to_dict(),
        }

    def offset(self, layer: int, neuron: int, signal: str) -> bool:
        """Whether the lanes' values of this unit's `signal` may be offset from a trace in one piece
        (a hidden state, anywhere, or this cell did not join after a warm-up)."""
        units = self.boundaries.units
        return bool(units["hidden"]) or (signal == "cell" and (layer, neuron) in units.get("cell", []))

    def describe(self) -> str:
        b = self.boundaries
        joined = ", ".join(f"{name} ≤ {value:.1e}" for name, value in b.largest.items())
        over = ", ".join(f"{len(units)} {name}" for name, units in b.units.items() if units)
        how = (
            f"{self.passes} passes, each lane after the first going on from its neighbour's last state"
            if self.passes > 1
            else f"each after a {self.layout.warmup:,}-character warm-up"
        )
        return f"traced in {self.layout.lanes} lanes, {how}; where they join, their states differ by {joined}" + (
            f" (units over {b.tolerance:g}: {over})" if over else ""
        )


def trace_into(
    inspection, text: str, keepers, progress=None, lanes: bool = False, after: LaneReport | None = None
) -> LaneReport | None:
    """Trace `text` once, handing each chunk to every keeper's `add(at, chunk)` (see `At`).

    `lanes`: trace in lanes (`lane_chunks`), for modes that reduce the whole text to statistics;
    returns how closely the lanes joined (None when the text was traced in one piece); `after`: the
    report of a pass before, to go on from its lanes' last states (a seeded pass).
    `progress(done, total)` hears after each chunk, in characters.
    """
    if lanes and LaneLayout.for_text(len(text)).lanes > 1:
        seeds, passes = (after.final, after.passes + 1) if after is not None else (None, 1)
        traced = lane_chunks(inspection.model, inspection.vocab, text, seeds)
        with torch_threads(cpu_threads(inspection.device, available_cores())):
            chunks = ((at, {name: v.cpu().numpy() for name, v in chunk.items()}) for at, chunk in traced)
            _hand_out(chunks, keepers, progress, len(text))
        return LaneReport(traced.layout, traced.boundaries, passes, traced.final)
    _hand_out(
        trace_chunks(inspection.model, inspection.vocab, text, exact=inspection.exact), keepers, progress, len(text)
    )
    return None


def trace_joined(inspection, text: str, make_keepers, progress=None) -> tuple[list, LaneReport | None]:
    """`trace_into` in lanes for keepers that `make_keepers()` makes fresh; where a hidden state did
    not join (so every unit's values may be offset), again in seeded passes, up to SEEDED_PASSES,
    each with fresh keepers. Returns the last keepers and how their pass joined."""
    keepers = make_keepers()
    report = trace_into(inspection, text, keepers, progress, lanes=True)
    while report is not None and report.boundaries.units["hidden"] and report.passes <= SEEDED_PASSES:
        keepers = make_keepers()
        report = trace_into(inspection, text, keepers, progress, lanes=True, after=report)
    return keepers, report


def _hand_out(chunks, keepers, progress, total: int) -> None:
    done = 0
    for at, chunk in chunks:
        for keeper in keepers:
            keeper.add(at, chunk)
        done += chunk_length(chunk)
        if progress is not None:
            progress(done, total)


def activations(
    model: CharRNN, vocab: Vocab, text: str, threads: int | None = 1, exact: bool = False
) -> dict[str, np.ndarray]:
    """Every signal of every unit at every character: signal → float32 array [layers, T, hidden].

    18 KB per character on a 3×256 LSTM: for texts the size of an HTML explorer page (which caps
    its own) and for tests; the command's other modes keep less from `trace_chunks`.
    """
    acts: dict[str, np.ndarray] = {}
    for start, chunk in trace_chunks(model, vocab, text, threads=threads, exact=exact):
        for name, values in chunk.items():
            if name not in acts:
                acts[name] = np.empty((values.shape[0], len(text), values.shape[2]), dtype=np.float32)
            acts[name][:, start : start + values.shape[1]] = values
    return acts


class UnitSignals:
    """One unit's signals at every character: all that colouring one neuron needs (4 bytes per
    character and signal)."""

    def __init__(self, layer: int, neuron: int, signals, length: int):
        self.layer, self.neuron = layer, neuron  # 1-based, 0-based
        self.values = {signal: np.empty(length, dtype=np.float32) for signal in signals}

    def add(self, at: At, chunk: dict[str, np.ndarray]) -> None:
        for signal, values in self.values.items():
            part = chunk[signal][self.layer - 1, :, self.neuron]
            values[places(at, len(part))] = part
