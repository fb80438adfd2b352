"""Interventions on units, and what ablating one does to the model's predictions.

A spec names a unit as `inspect-neuron` numbers it — layer from 1, neuron from 0:

- ``--clamp L:N[:cell|hidden]=VALUE`` holds the unit's cell (default for an LSTM) or hidden state at
  VALUE at every step. Clamping the cell also makes the unit output o · tanh(VALUE), as the LSTM's
  own update would.
- ``--ablate L:N`` zeroes the unit at every step: its cell (an LSTM: then its output is 0 too) or
  its hidden state (a GRU or RNN). Nothing it computes reaches the rest of the network.

`ablation_study` measures an ablation's effect: bits per character over a text with and without
it, overall and per class of character (leading indentation, inside strings, comments, bracket
characters, everything else), beside a control — the same ablation applied to random units of the
same layer(s), several times. All versions run side by side as one batch through the step engine
in float32 (teacher-forced, every character of the text predicted after a document separator, as
`charlstm eval --text-file` scores a file).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch

from charlstm.backend import cpu_threads, torch_threads
from charlstm.config import FLOAT32_MAX
from charlstm.errors import CharlstmError
from charlstm.features import CODE, CLOSE, COMMENT, OPEN, STRING, compute_feature, is_binary, syntax_labels
from charlstm.model import LN2
from charlstm.vocab import DOC_SEP

CONTROLS = 8  # random control ablations per study
MAX_CONTROLS = 100  # each is one more version of the model scoring the whole text
CLASSES = ("indentation", "string", "comment", "brackets", "other")


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
        raise CharlstmError(f"bad --clamp {text!r}: the value must be a finite float32 number (|value| ≤ {FLOAT32_MAX:.4g})")
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
            f"{spec.option} {spec.text}: layer {spec.layer} is out of range: this model has layers 1..{layers} (1-based)"
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


# ----- the characters an ablation is judged on ---------------------------------------------------


def leading_whitespace(text: str) -> np.ndarray:
    """True on the spaces and tabs that indent a line (before its first other character)."""
    out = np.zeros(len(text), dtype=bool)
    leading = True
    for t, ch in enumerate(text):
        if ch in ("\n", DOC_SEP):
            leading = True
        elif leading and ch in " \t":
            out[t] = True
        else:
            leading = False
    return out


def character_classes(text: str, language: str | None = None) -> np.ndarray:
    """Each character's class, an index into CLASSES: leading indentation first (whatever the
    lexer says, so a docstring's indentation is indentation), then inside a string, inside a
    comment, a bracket character in code, other."""
    labels = syntax_labels(text, language)
    classes = np.full(len(text), CLASSES.index("other"), dtype=np.int8)
    brackets = np.fromiter((ch in OPEN or ch in CLOSE for ch in text), dtype=bool, count=len(text))
    classes[brackets & (labels == CODE)] = CLASSES.index("brackets")
    classes[labels == COMMENT] = CLASSES.index("comment")
    classes[labels == STRING] = CLASSES.index("string")
    classes[leading_whitespace(text)] = CLASSES.index("indentation")
    return classes


def feature_characters(feature: str, text: str, language: str | None = None) -> np.ndarray | None:
    """The characters a feature is about, for judging a unit found by `--find FEATURE`: leading
    indentation for indent, bracket characters for brackets, where a binary feature (string,
    comment, regex) is on, the spaces of a run for spaces; None for column (every character has one)."""
    if feature == "indent":
        return leading_whitespace(text)
    if feature == "brackets":
        return character_classes(text, language) == CLASSES.index("brackets")
    if is_binary(feature) or feature == "spaces":
        return compute_feature(feature, text, language) > 0
    return None


# ----- running ablations side by side ------------------------------------------------------------


# Logits scored at once: a block of steps' top-layer states goes through the output layer and the
# log-softmax together (the same values, row for row, as one step at a time), at most this many.
SCORE_VALUES = 1 << 20


@torch.no_grad()
def bits_with_interventions(engine, tokens: torch.Tensor, conditions: list[list[Intervention]]) -> np.ndarray:
    """Bits of each next character [len(conditions), len(tokens) - 1], float64, one row per condition
    (an empty list: the model as it is). The conditions run as one batch through `engine.advance`;
    the output layer and the log-softmax run on a block of steps at a time."""
    rows = len(conditions)
    clamps = engine.clamps(conditions, per_stream=True)
    state = engine.init_state(rows)
    steps = tokens.shape[0] - 1
    # Scored in float64 where the steps run (no copy back per step), except on MPS, which has none.
    scored_on = torch.device("cpu") if engine.device.type == "mps" else engine.device
    tokens, targets = tokens.to(engine.device), tokens[1:].to(scored_on)
    out = torch.empty(rows, steps, dtype=torch.float64, device=scored_on)
    block = max(1, min(256, SCORE_VALUES // (rows * engine.vocab_size)))
    for start in range(0, steps, block):
        tops = []
        for t in range(start, min(start + block, steps)):
            top, state = engine.advance(tokens[t].expand(rows), state, clamps)
            tops.append(top)
        n = len(tops)
        logits = engine.head(torch.cat(tops))  # [n · rows, vocab], step-major
        log_probs = torch.log_softmax(logits.to(scored_on, torch.float64), dim=-1).view(n, rows, -1)
        picked = log_probs.gather(2, targets[start : start + n].view(n, 1, 1).expand(n, rows, 1))[..., 0]
        out[:, start : start + n] = (-picked / LN2).t()
    return out.cpu().numpy()


def random_units(hidden: int, count: int, exclude: set[int], rng: np.random.Generator) -> list[int]:
    pool = np.array(sorted(set(range(hidden)) - exclude))
    return sorted(int(n) for n in rng.choice(pool, size=min(count, len(pool)), replace=False))


def _mean(bits: np.ndarray, mask: np.ndarray | None = None) -> float | None:
    if mask is not None:
        bits = bits[..., mask]
    return float(bits.mean(axis=-1)) if bits.shape[-1] else None


def ablation_study(
    engine,
    vocab,
    text: str,
    targets: list[list[tuple[int, int]]],
    language: str | None = None,
    controls: int = CONTROLS,
    seed: int = 0,
    own: np.ndarray | None = None,
) -> dict:
    """The effect of ablating each group of `targets` (units as (1-based layer, neuron), ablated
    together), with the control: `controls` random groups with the same number of units in each
    layer, drawn (seeded) among the units of those layers that no target names.

    Effects are differences in bits per character (ablated − as is) over the whole text and over
    each class of character; `own` (a mask over the text) adds the effect on those characters and on
    the others. The control's effect is given as the mean over the random groups, and their largest.
    """
    if not text:
        raise CharlstmError("the text is empty; give some characters to score")
    tokens = torch.tensor([vocab.doc_sep, *vocab.encode(text).tolist()], dtype=torch.long)
    control_groups = _control_groups(targets, engine.hidden, controls, np.random.default_rng(seed))
    conditions = [[]] + [[ablation(engine.kind, *u) for u in g] for g in targets]
    for groups in control_groups.values():
        conditions += [[ablation(engine.kind, *u) for u in g] for g in groups]
    bits = bits_with_interventions(engine, tokens, conditions)

    masks = _masks(text, language, own)

    def effects(row_bits: np.ndarray) -> dict:
        base = bits[0]
        return {name: (None if _mean(base, m) is None else _mean(row_bits - base, m)) for name, m in masks.items()}

    shapes = list(control_groups)
    results = [
        {"units": [list(u) for u in group], "delta": effects(bits[i]), "control": shapes.index(_shape(group))}
        for i, group in enumerate(targets, start=1)
    ]
    row = 1 + len(targets)
    controls_out = []
    for shape, groups in control_groups.items():
        deltas = [effects(bits[row + j]) for j in range(len(groups))]
        row += len(groups)
        controls_out.append(_control_summary(shape, groups, deltas, masks))
    return {
        "chars": len(text),
        "counts": {name: int(len(text) if m is None else m.sum()) for name, m in masks.items()},
        "baseline_bpc": {name: _mean(bits[0], m) for name, m in masks.items()},
        "ablations": results,
        "controls": controls_out,
        "seed": seed,
    }


def _shape(group: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """A group's layer make-up: ((layer, units in it), ...), by layer."""
    return tuple(sorted({layer: sum(1 for lay, _ in group if lay == layer) for layer, _ in group}.items()))


def _control_groups(targets, hidden: int, controls: int, rng) -> dict[tuple, list[list[tuple[int, int]]]]:
    """One control design per distinct layer make-up of the targets, in the targets' order: `controls`
    random groups of that make-up, drawn among the units no target names."""
    named: dict[int, set[int]] = {}
    for group in targets:
        for layer, neuron in group:
            named.setdefault(layer, set()).add(neuron)
    shapes = list(dict.fromkeys(_shape(group) for group in targets))
    for layer, count in (part for shape in shapes for part in shape):
        free = hidden - len(named[layer])
        if free < count:  # a smaller control group would not be ablated "like the units"
            raise CharlstmError(
                f"no control for layer {layer}: it needs {count} random unit(s) that are not measured, and only "
                f"{free} of its {hidden} are left; ablate or rank fewer of its units"
            )
    return {
        shape: [
            [(layer, n) for layer, count in shape for n in random_units(hidden, count, named.get(layer, set()), rng)]
            for _ in range(controls)
        ]
        for shape in shapes
    }


def _masks(text: str, language: str | None, own: np.ndarray | None) -> dict[str, np.ndarray | None]:
    """The characters each effect is measured over: all (None), each class, and `own` and the others."""
    classes = character_classes(text, language)
    masks: dict[str, np.ndarray | None] = {"all": None}
    masks.update({name: classes == k for k, name in enumerate(CLASSES)})
    if own is not None:
        masks["own"], masks["others"] = own, ~own
    return masks


def _control_summary(shape, groups, deltas: list[dict], masks) -> dict:
    """A control design's groups, and the mean and the largest of their effects per mask."""
    summary = {}
    for name in masks:
        values = [d[name] for d in deltas if d[name] is not None]
        summary[name] = (float(np.mean(values)), float(np.max(values))) if values else (None, None)
    return {
        "layers": {str(layer): count for layer, count in shape},
        "groups": [[list(u) for u in g] for g in groups],
        "delta_mean": {name: v[0] for name, v in summary.items()},
        "delta_max": {name: v[1] for name, v in summary.items()},
    }


# ----- the commands: inspect-neuron --ablate, and --find FEATURE --causal ------------------------


def _scoring_engine(inspection):
    """float32 weights: effects of a few thousandths of a bit must not drown in rounding."""
    from charlstm.engine import StepEngine

    return StepEngine(inspection.model, torch.float32)


def _one_thread(fn, engine, *args, **kwargs):
    # Batched steps of a small model: too small to share between threads, and a second thread
    # stalls whenever other work uses the cores (README, "Slow on a busy machine").
    with torch_threads(cpu_threads(engine.device, 1)):
        return fn(engine, *args, **kwargs)


def ablate_units(inspection, text: str, specs: list[UnitSpec], controls: int = CONTROLS, seed: int = 0) -> dict:
    """`inspect-neuron --ablate L:N ...`: the units ablated together, against `controls` random
    groups of as many units in the same layers."""
    if controls < 1:
        raise CharlstmError(f"--controls must be at least 1, got {controls}")
    c = inspection.model.config
    resolve(specs, c.kind, c.layers, c.hidden)  # range checks, and no unit twice
    group = [(s.layer, s.neuron) for s in specs]
    engine = _scoring_engine(inspection)
    report = _one_thread(ablation_study, engine, inspection.vocab, text, [group], inspection.language, controls, seed)
    report["units"] = [list(u) for u in group]
    return report


def causal_effects(inspection, text: str, feature: str, units, controls: int = CONTROLS, seed: int = 0) -> dict:
    """`--find FEATURE --causal`: each ranked unit ablated alone (a unit's signals share one
    ablation), judged on all characters and on the feature's own ones, beside random units of the
    same layer. Returns the study, plus `by_unit`: (layer, neuron) → its effects."""
    if controls < 1:
        raise CharlstmError(f"--controls must be at least 1, got {controls}")
    targets = list(dict.fromkeys((u.layer, u.neuron) for u in units))
    own = feature_characters(feature, text, inspection.language)
    if own is not None and not own.any():
        own = None
    engine = _scoring_engine(inspection)
    report = _one_thread(
        ablation_study, engine, inspection.vocab, text, [[t] for t in targets], inspection.language, controls, seed, own
    )
    report["feature"] = feature
    report["by_unit"] = {t: a for t, a in zip(targets, report["ablations"])}
    return report
