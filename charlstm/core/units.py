"""Units as the user names them, and what holding one at a value means: the core's part of
--clamp, --ablate and --watch (sampling needs it; the analysis that studies ablations lives in
interventions.py). Nothing here imports torch.

A spec names a unit as `inspect-neuron` numbers it — layer from 1, neuron from 0:

- ``--clamp L:N[:cell|hidden]=VALUE`` holds the unit's cell (default for an LSTM) or hidden state at
  VALUE at every step. Clamping the cell also makes the unit output o · tanh(VALUE), as the LSTM's
  own update would.
- ``--ablate L:N`` zeroes the unit at every step: its cell (an LSTM: then its output is 0 too) or
  its hidden state (a GRU or RNN). Nothing it computes reaches the rest of the network.
- ``--watch L:N[:hidden|cell]`` reads a unit's value after every character.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .config import FLOAT32_MAX
from .errors import CharlstmError


@dataclass(frozen=True)
class Intervention:
    """One unit held at a value at every step: the form `StepEngine.clamps` compiles."""

    layer: int  # 1-based
    neuron: int  # 0-based
    signal: str  # "cell" (LSTM) or "hidden"
    value: float

    def describe(self) -> str:
        return f"{self.layer}:{self.neuron}:{self.signal}={self.value:g}"


@dataclass(frozen=True)
class UnitSpec:
    """A unit as the user named it, before the model is known (`signal` None: its default)."""

    option: str  # the option it came from, for messages: --clamp, --ablate, --watch
    text: str  # what the user wrote
    layer: int
    neuron: int
    signal: str | None = None
    value: float | None = None  # --clamp only


_UNIT = r"\s*(\d+)\s*:\s*(\d+)\s*(?::\s*([A-Za-z]+)\s*)?"
_CLAMP = re.compile(rf"^{_UNIT}=\s*(\S+)\s*$")
_PLAIN = re.compile(rf"^{_UNIT}$")


def parse_clamp(text: str) -> UnitSpec:
    """`L:N[:cell|hidden]=VALUE` → a spec (checked against a model by `resolve`)."""
    m = _CLAMP.match(text)
    if not m:
        raise CharlstmError(f"bad --clamp {text!r}: expected LAYER:NEURON[:cell|hidden]=VALUE, e.g. 1:101:cell=4")
    layer, neuron, signal, raw = m.groups()
    try:
        value = float(raw)
    except ValueError:
        raise CharlstmError(f"bad --clamp {text!r}: {raw!r} is not a number") from None
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:  # the state is float32: 1e39 would be inf
        raise CharlstmError(
            f"bad --clamp {text!r}: the value must be a finite float32 number (|value| ≤ {FLOAT32_MAX:.4g})"
        )
    if signal is not None and signal not in ("cell", "hidden"):
        raise CharlstmError(f"bad --clamp {text!r}: the state to clamp is cell or hidden, not {signal!r}")
    return UnitSpec("--clamp", text, int(layer), int(neuron), signal, value)


def parse_unit(text: str, option: str = "--ablate", signals: tuple[str, ...] = ()) -> UnitSpec:
    """`L:N`, or `L:N:SIGNAL` where `signals` lists the signals allowed (--watch)."""
    m = _PLAIN.match(text)
    form = "LAYER:NEURON" + ("[:SIGNAL]" if signals else "")
    if not m or (m.group(3) is not None and not signals):
        raise CharlstmError(f"bad {option} {text!r}: expected {form}, e.g. 1:101 (layers from 1, neurons from 0)")
    layer, neuron, signal = m.groups()
    if signal is not None and signal not in signals:
        raise CharlstmError(f"bad {option} {text!r}: the signal is one of {', '.join(signals)}, not {signal!r}")
    return UnitSpec(option, text, int(layer), int(neuron), signal)


def parse_interventions(clamp: list[str] | None = None, ablate: list[str] | None = None) -> tuple[UnitSpec, ...]:
    """--clamp and --ablate as the user gave them, parsed (checked against the model later)."""
    return (*(parse_clamp(c) for c in clamp or ()), *(parse_unit(a, "--ablate") for a in ablate or ()))


WATCHABLE = ("hidden", "cell")


def check_unit(spec: UnitSpec, kind: str, layers: int, hidden: int) -> None:
    if not 1 <= spec.layer <= layers:
        raise CharlstmError(
            f"{spec.option} {spec.text}: layer {spec.layer} is out of range: "
            f"this model has layers 1..{layers} (1-based)"
        )
    if not 0 <= spec.neuron < hidden:
        raise CharlstmError(
            f"{spec.option} {spec.text}: neuron {spec.neuron} is out of range: "
            f"each layer has neurons 0..{hidden - 1} (0-based)"
        )
    if spec.signal == "cell" and kind != "lstm":
        raise CharlstmError(f"{spec.option} {spec.text}: a {kind.upper()} has no cell state; use hidden")


def resolve(specs: list[UnitSpec], kind: str, layers: int, hidden: int) -> list[Intervention]:
    """Check clamp and ablate specs against a model and turn them into interventions.

    A unit may be clamped in its cell and its hidden state at once, but not given twice for the
    same state, nor clamped and ablated together.
    """
    out: list[Intervention] = []
    seen: dict[tuple[int, int, str], UnitSpec] = {}
    for spec in specs:
        check_unit(spec, kind, layers, hidden)
        if spec.value is None:  # an ablation
            signal, value = ("cell" if kind == "lstm" else "hidden"), 0.0
            states = ("cell", "hidden")
        else:
            signal, value = spec.signal or ("cell" if kind == "lstm" else "hidden"), spec.value
            states = (signal,)
        for state in states:
            earlier = seen.get((spec.layer, spec.neuron, state))
            if earlier is not None:
                raise CharlstmError(
                    f"{spec.option} {spec.text} and {earlier.option} {earlier.text} both set unit "
                    f"{spec.layer}:{spec.neuron}; give each unit once"
                )
            seen[(spec.layer, spec.neuron, state)] = spec
        out.append(Intervention(spec.layer, spec.neuron, signal, value))
    return out


def ablation(kind: str, layer: int, neuron: int) -> Intervention:
    """The intervention that ablates one unit (1-based layer)."""
    return Intervention(layer, neuron, "cell" if kind == "lstm" else "hidden", 0.0)
