"""The range each signal spans, which every colour scale starts from: a gate (a sigmoid) lives on
0..1, the hidden state and candidate (tanh) on −1..1, and the cell state, which is unbounded, on
±its largest magnitude in the values shown.

A fact of the cell math, kept apart from the terminal (render.py) so that the analysis (neurons.py)
and every view (terminal, SVG, HTML) agree on it without importing a display module.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..core.engine import BOUNDED, GATES


def value_range(signal: str, values: Sequence[float] = ()) -> tuple[float, float]:
    """The (low, high) ends of the colour scale for `signal` (the cell's depends on the values)."""
    if signal in GATES:
        return 0.0, 1.0
    if signal in BOUNDED:
        return -1.0, 1.0
    magnitudes = np.abs(np.asarray(values))  # an array, not a list of floats: texts can be long
    finite = magnitudes[np.isfinite(magnitudes)]
    scale = (float(finite.max()) if finite.size else 0.0) or 1.0
    return -scale, scale
