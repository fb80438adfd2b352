"""What ablating a unit does to the model's predictions.

The units themselves (`UnitSpec`, `Intervention`, parsing and checking them) are units.py's.

`ablation_study` measures an ablation's effect: bits per character over a text with and without
it, overall and per class of character (leading indentation, inside strings, comments, bracket
characters, everything else), beside a control — the same ablation applied to random units of the
same layer(s), several times. All versions run side by side as one batch through the step engine
in float32 (teacher-forced, every character of the text predicted after a document separator, as
`charlstm eval --text-file` scores a file).
"""

from __future__ import annotations

import numpy as np
import torch

from ..core.backend import cpu_threads, torch_threads
from ..core.errors import CharlstmError
from ..core.model import LN2
from ..core.units import Intervention, UnitSpec, ablation, resolve
from ..core.vocab import DOC_SEP
from .features import CLOSE, CODE, COMMENT, OPEN, STRING, compute_feature, is_binary, syntax_labels

CONTROLS = 8  # random control ablations per study
MAX_CONTROLS = 100  # each is one more version of the model scoring the whole text
CLASSES = ("indentation", "string", "comment", "brackets", "other")


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
    from ..core.engine import StepEngine

    return StepEngine(inspection.model, torch.float32)


def _one_thread(fn, engine, *args, **kwargs):
    # Batched steps of a small model: too small to share between threads, and a second thread
    # stalls whenever other work uses the cores (docs/troubleshooting.md, "Slow on a busy machine").
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
    report["by_unit"] = {t: a for t, a in zip(targets, report["ablations"], strict=True)}
    return report
