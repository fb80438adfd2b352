"""Gate saturation: how long each gate of each unit spends nearly shut (< 0.1) or wide open (> 0.9),
counted over the chunks of a trace (`inspect-neuron --stats`)."""

from __future__ import annotations

import numpy as np

from ..core.engine import GATES, SIGNALS
from ..core.errors import CharlstmError
from .tracing import chunk_length

# Karpathy, Johnson & Fei-Fei (2015): a gate is left-saturated below 0.1, right-saturated above 0.9.
LEFT_SATURATED, RIGHT_SATURATED = 0.1, 0.9


class GateSaturation:
    """Per layer, gate and unit: how many characters it spends left- (< 0.1) and right-saturated
    (> 0.9), counted over chunks of the trace."""

    def __init__(self, kind: str):
        self.gates = [s for s in SIGNALS[kind] if s in GATES]
        if not self.gates:
            raise CharlstmError(f"a {kind.upper()} has no gates to measure; --stats needs an LSTM or GRU")
        self.count = 0
        self.left: dict[str, np.ndarray] = {}  # gate → [layers, hidden] characters
        self.right: dict[str, np.ndarray] = {}

    def add(self, at, chunk: dict[str, np.ndarray]) -> None:  # where the chunk lies does not matter
        for gate in self.gates:
            values = chunk[gate]
            self.left[gate] = self.left.get(gate, 0) + (values < LEFT_SATURATED).sum(axis=1)
            self.right[gate] = self.right.get(gate, 0) + (values > RIGHT_SATURATED).sum(axis=1)
        self.count += chunk_length(chunk)

    def rows(self) -> list[dict]:
        """Per layer and gate: mean fraction of time units are left- and right-saturated, and how
        many units spend most of the time (> 50 %) in each state."""
        rows = []
        for gate in self.gates:
            for layer, (left, right) in enumerate(
                zip(self.left[gate] / self.count, self.right[gate] / self.count, strict=True)
            ):
                rows.append(
                    {
                        "layer": layer + 1,
                        "gate": gate,
                        "left_saturated": float(left.mean()),
                        "right_saturated": float(right.mean()),
                        "units_mostly_left": int((left > 0.5).sum()),
                        "units_mostly_right": int((right > 0.5).sum()),
                        "units": len(left),
                    }
                )
        rows.sort(key=lambda r: (r["layer"], self.gates.index(r["gate"])))
        return rows


def saturation(acts: dict[str, np.ndarray], kind: str) -> list[dict]:
    """Gate saturation (see `GateSaturation.rows`) over whole-text activations."""
    counts = GateSaturation(kind)
    counts.add(0, acts)
    return counts.rows()
