"""The article's four small studies (run by experiments.py): what each trains, and how the units
that solve it are found: the cell or gate whose values along an example follow the study's hidden
variable, and a coloured view of it.

Traces come from `StepEngine`; layers are numbered from 1 in what is returned, as in the article's
explorer and in `inspect-neuron`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from ..core.engine import StepEngine
from . import synthetic as syn
from .neurons import correlations


@dataclass(frozen=True)
class Study:
    name: str
    layers: int
    hidden: int
    steps: int  # optimisation steps, each on a fresh batch of random examples
    max_n: int = 10  # training examples have N (or length) in 1..max_n
    eval_max_n: int = 15  # judged for every N in 1..eval_max_n, past the training range
    prompts_per_n: int = 1  # random prompts judged per N (1 where the prompt is fixed by N)
    batch: int = 32
    lr: float = 0.01
    embed: int = 8
    # > 0: the longest training example grows from 2 to max_n over this fraction of the steps.
    # Copying long strings is learned far faster once short ones are (a curriculum).
    curriculum: float = 0.0
    article: str = ""  # what the article reports, for the side-by-side table


STUDIES = {
    "counter": Study(
        "counter",
        layers=1,
        hidden=10,
        steps=2000,
        eval_max_n=25,
        article="perfect for N ≤ 10; counts to 18, fails at 19; one cell-state unit counts",
    ),
    "selective-counter": Study(
        "selective-counter",
        layers=1,
        hidden=20,
        steps=3000,
        eval_max_n=15,
        prompts_per_n=20,
        article="counts the a's and ignores the X's; the counting unit's input gate is ≈ 0 on X",
    ),
    "state": Study(
        "state",
        layers=1,
        hidden=20,
        steps=1500,
        eval_max_n=20,
        article="recalls the first letter; one 'A neuron' and one 'B neuron' hold it through the x's",
    ),
    "copy": Study(
        "copy",
        layers=2,
        hidden=20,
        steps=4000,
        eval_max_n=12,
        prompts_per_n=30,
        batch=64,
        curriculum=0.5,
        article="copies the string; some units predict the next character rather than hold the current one",
    ),
}
NAMES = tuple(STUDIES)


# ----- finding the units ------------------------------------------------------------------------


def _corr(values: torch.Tensor, target) -> torch.Tensor:
    """Pearson r of each column of values [N, U] with target [N] (neurons.correlations); 0 where
    either is constant: a unit that never moves follows nothing."""
    r = correlations(values.detach().float().cpu().numpy(), np.asarray(target, dtype=np.float64))
    return torch.from_numpy(np.nan_to_num(r, nan=0.0))


def _trace(engine: StepEngine, vocab, text: str) -> dict[str, torch.Tensor]:
    """The trace on the CPU, whatever the engine's device: the finders read it value by value."""
    trace = engine.trace(torch.from_numpy(vocab.encode(text)).to(engine.device))
    return {signal: values.cpu() for signal, values in trace.items()}


def _view(text: str, trace: dict, signal: str, layer: int, unit: int, caption: str) -> dict:
    """A coloured sequence to show: the text the model read and one unit's values along it."""
    values = trace[signal][layer, :, unit].tolist()
    return {
        "caption": caption,
        "layer": layer + 1,
        "neuron": unit,
        "signal": signal,
        "text": text,
        "values": [round(v, 4) for v in values],
    }


def _count_neuron(engine: StepEngine, vocab, texts: list[str]) -> tuple[int, int, float, dict]:
    """The (layer, unit) whose cell state best follows #a seen − #b seen (the X's not counted)."""
    cells, counts = [], []
    traces = {}
    for text in texts:
        trace = traces[text] = _trace(engine, vocab, text)
        cells.append(trace["cell"].permute(1, 0, 2).reshape(len(text), -1))  # [T, layers·hidden]
        running = 0
        for ch in text:
            running += (ch == "a") - (ch == "b")
            counts.append(running)
    r = _corr(torch.cat(cells), counts)
    best = int(r.abs().argmax())
    return best // engine.hidden, best % engine.hidden, float(r[best]), traces


def _find_counter(study: Study, engine: StepEngine, vocab, seed: int) -> tuple[dict, list[dict]]:
    # The model reads START and the body; the END it predicts is never an input, so it is not traced.
    texts = [syn.START + syn.counter_example(random.Random(0), n=n) for n in range(1, study.max_n + 1)]
    layer, unit, r, traces = _count_neuron(engine, vocab, texts)
    shown = texts[min(7, len(texts)) - 1]
    found = {"counting_unit": {"layer": layer + 1, "neuron": unit, "signal": "cell", "r_with_count": round(r, 4)}}
    caption = f"counting unit: layer {layer + 1}, neuron {unit} (r = {r:+.3f})"
    views = [_view(shown, traces[shown], "cell", layer, unit, caption)]
    return found, views


def _find_selective(study: Study, engine: StepEngine, vocab, seed: int) -> tuple[dict, list[dict]]:
    rng = random.Random(seed + 2)
    texts = [syn.START + syn.selective_counter_example(rng, study.max_n) for _ in range(60)]
    layer, unit, r, traces = _count_neuron(engine, vocab, texts)
    on_x, on_a = [], []
    for text, trace in traces.items():
        gate = trace["input"][layer, :, unit]
        on_x += [float(gate[t]) for t, ch in enumerate(text) if ch == "X"]
        on_a += [float(gate[t]) for t, ch in enumerate(text) if ch == "a"]
    mean_x, mean_a = sum(on_x) / max(len(on_x), 1), sum(on_a) / max(len(on_a), 1)
    found = {
        "counting_unit": {"layer": layer + 1, "neuron": unit, "signal": "cell", "r_with_count": round(r, 4)},
        "input_gate_on_X": round(mean_x, 4),
        "input_gate_on_a": round(mean_a, 4),
    }
    shown = syn.START + "aaXaXXaaaXaY" + "b" * 6
    trace = _trace(engine, vocab, shown)
    caption = f"counting unit: layer {layer + 1}, neuron {unit} (r = {r:+.3f})"
    views = [
        _view(shown, trace, "cell", layer, unit, caption),
        _view(shown, trace, "input", layer, unit, f"its input gate: mean {mean_x:.3f} on X, {mean_a:.3f} on a"),
    ]
    return found, views


def _find_state(study: Study, engine: StepEngine, vocab, seed: int) -> tuple[dict, list[dict]]:
    """Units whose cell state separates A-started from B-started sequences over the x's."""
    values, labels = [], []
    for first in "AB":
        for n in range(1, study.max_n + 1):
            text = syn.START + syn.state_example(random.Random(0), n=n, first=first)[:-1]  # up to Y
            trace = _trace(engine, vocab, text)
            cells = trace["cell"].permute(1, 0, 2).reshape(len(text), -1)
            for t, ch in enumerate(text):
                if ch == "x":
                    values.append(cells[t])
                    labels.append(1.0 if first == "A" else 0.0)
    r = _corr(torch.stack(values), labels)
    a_best, b_best = int(r.argmax()), int(r.argmin())
    found = {}
    views = []
    for name, idx in (("A_neuron", a_best), ("B_neuron", b_best)):
        layer, unit = idx // engine.hidden, idx % engine.hidden
        # r with "started with A": positive for the A neuron, negative for the B neuron.
        found[name] = {"layer": layer + 1, "neuron": unit, "signal": "cell", "r_with_A": round(float(r[idx]), 4)}
        pair = []
        for first in "AB":
            text = syn.START + first + "x" * 7 + "Y"
            pair.append(
                _view(
                    text,
                    _trace(engine, vocab, text),
                    "cell",
                    layer,
                    unit,
                    f"{name.replace('_', ' ')} (layer {layer + 1}, neuron {unit}; r with A = "
                    f"{float(r[idx]):+.3f}) reading a sequence that starts with {first}",
                )
            )
        # One colour scale for both sequences, so A and B can be compared by eye.
        scale = max(abs(v) for view in pair for v in view["values"]) or 1.0
        views += [{**view, "scale": scale} for view in pair]
    return found, views


def _find_copy(study: Study, engine: StepEngine, vocab, seed: int, top: int = 2) -> tuple[dict, list[dict]]:
    """Units whose hidden state in the copy phase follows the NEXT character better than the current.

    At each copy-phase position where the model reads one of a/b/c and must write one, score each
    unit by its best |r| with "next char is c" and with "current char is c" over c in {a, b, c}.
    """
    rng = random.Random(seed + 3)
    hidden, nexts, currents = [], [], []
    for _ in range(200):
        body = syn.copy_example(rng, study.max_n)
        text = syn.START + body
        trace = _trace(engine, vocab, text)
        h = trace["hidden"].permute(1, 0, 2).reshape(len(text), -1)
        target = body + syn.END
        sep = text.index("X")
        for t in range(sep + 1, len(text)):
            # text[t] is read at step t; target[t] (= text[t + 1], or END) is what must come next.
            if text[t] in syn.COPY_ALPHABET and target[t] in syn.COPY_ALPHABET:
                hidden.append(h[t])
                currents.append(text[t])
                nexts.append(target[t])
    if not hidden:
        return {"next_char_units": []}, []
    values = torch.stack(hidden)
    r_next = torch.stack([_corr(values, [c == ch for c in nexts]) for ch in syn.COPY_ALPHABET])
    r_cur = torch.stack([_corr(values, [c == ch for c in currents]) for ch in syn.COPY_ALPHABET])
    best_next, char_next = r_next.abs().max(0)
    best_cur, _ = r_cur.abs().max(0)
    margin = best_next - best_cur
    units = []
    views = []
    shown = syn.START + "abcbaacXabcbaac"
    trace = _trace(engine, vocab, shown)
    # The best few of each layer: the top layer feeds the output head, so its units predicting the
    # next character is expected; the same in layer 1 is the article's more interesting finding.
    per_layer = margin.reshape(engine.layers, engine.hidden)
    chosen = [
        k * engine.hidden + int(u) for k in range(engine.layers) for u in per_layer[k].argsort(descending=True)[:top]
    ]
    for idx in chosen:
        layer, unit = idx // engine.hidden, idx % engine.hidden
        ch = syn.COPY_ALPHABET[int(char_next[idx])]
        entry = {
            "layer": layer + 1,
            "neuron": unit,
            "signal": "hidden",
            "next_char": ch,
            "r_next": round(float(r_next[int(char_next[idx]), idx]), 4),
            "best_abs_r_next": round(float(best_next[idx]), 4),
            "best_abs_r_current": round(float(best_cur[idx]), 4),
        }
        units.append(entry)
        views.append(
            _view(
                shown,
                trace,
                "hidden",
                layer,
                unit,
                f"layer {layer + 1}, neuron {unit}: next char is {ch!r} (|r| {best_next[idx]:.3f}) "
                f"vs current char (|r| {best_cur[idx]:.3f})",
            )
        )
    return {
        "next_char_units": units,
        # Per layer: how many units follow the next character more closely than the current one.
        "units_next_over_current": [int((per_layer[k] > 0).sum()) for k in range(engine.layers)],
        "units_per_layer": engine.hidden,
    }, views


FINDERS = {
    "counter": _find_counter,
    "selective-counter": _find_selective,
    "state": _find_state,
    "copy": _find_copy,
}
