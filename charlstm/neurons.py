"""Neuron inspection: record every signal of every unit over a text, rank units by how closely they
follow a feature of the code, and measure gate saturation.

Activations come from the step engine's `trace` — the same cell math sampling uses, checked equal to
the fused modules training uses — so what is shown is what the trained model computes.

Numbering, everywhere a user sees it (terminal, --json, HTML): layers are 1-based, as the article's
explorer numbers them; neurons are 0-based, as the index of the unit in the layer's state vector.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from charlstm import interventions
from charlstm.checkpoint import load_checkpoint, model_from_checkpoint, resolve_checkpoint
from charlstm.dataset import load_dataset
from charlstm.engine import SIGNALS, StepEngine, half_weight_kernels_available
from charlstm.errors import CharlstmError
from charlstm.features import compute_feature, validate_feature
from charlstm.model import CharRNN
from charlstm.render import BOUNDED, GATES, value_range
from charlstm.userio import read_text_source, text_from_argv, write_output
from charlstm.vocab import Vocab

# Karpathy, Johnson & Fei-Fei (2015): a gate is left-saturated below 0.1, right-saturated above 0.9.
LEFT_SATURATED, RIGHT_SATURATED = 0.1, 0.9


@dataclass
class Inspection:
    """A loaded model ready to be traced, with what the user needs to hear about it."""

    path: Path
    payload: dict
    model: CharRNN
    vocab: Vocab
    exact: bool = False  # trace with float32 weights (else float16 where the CPU kernels exist)

    @property
    def kind(self) -> str:
        return self.model.config.kind

    @property
    def layers(self) -> int:
        return self.model.config.layers

    @property
    def hidden(self) -> int:
        return self.model.config.hidden

    @property
    def signals(self) -> tuple[str, ...]:
        return SIGNALS[self.kind]

    @property
    def language(self) -> str | None:
        return (self.payload.get("dataset") or {}).get("language")

    def describe(self) -> str:
        c = self.model.config
        return f"{self.path} ({c.kind.upper()}, {c.layers} layers × {c.hidden} units)"

    def check_unit(self, layer: int, neuron: int) -> None:
        """`layer` is 1-based, `neuron` 0-based; raise a clear error naming the valid ranges."""
        if not 1 <= layer <= self.layers:
            raise CharlstmError(f"--layer {layer} is out of range: this model has layers 1..{self.layers} (1-based)")
        if not 0 <= neuron < self.hidden:
            raise CharlstmError(
                f"--neuron {neuron} is out of range: each layer has neurons 0..{self.hidden - 1} (0-based)"
            )

    def check_signal(self, signal: str) -> None:
        if signal not in self.signals:
            raise CharlstmError(
                f"a {self.kind.upper()} has no {signal!r} signal; it has: {', '.join(self.signals)}"
            )


def open_checkpoint(where: str | Path | None, exact: bool = False) -> Inspection:
    path = resolve_checkpoint(where)
    payload = load_checkpoint(path)
    model, vocab = model_from_checkpoint(payload)
    return Inspection(path=path, payload=payload, model=model, vocab=vocab, exact=exact)


# A run folder may carry the start of its validation split as text (the shipped model does), so
# inspection works where the dataset it was trained on is not.
VAL_EXCERPT = "val-excerpt.txt"


def validation_text(inspection: Inspection, chars: int, data: str | Path | None = None) -> tuple[str, str]:
    """The first `chars` characters of the checkpoint's validation split, and where they came from."""
    if chars < 1:
        raise CharlstmError(f"--from-val needs a positive number of characters, got {chars}")
    where = data or (inspection.payload.get("dataset") or {}).get("path")
    excerpt = Path(inspection.path).parent / VAL_EXCERPT
    if data is None and not (where and Path(where).is_dir()) and excerpt.is_file():
        text = excerpt.read_text(encoding="utf-8")[:chars]
        return text, f"the first {len(text):,} validation characters ({excerpt})"
    if not where:
        raise CharlstmError("the checkpoint does not say which dataset it was trained on; pass --data or --text")
    if not Path(where).is_dir():
        raise CharlstmError(
            f"dataset {where} (validation text for this checkpoint) is not here; "
            "pass --data DIR, --text or --text-file"
        )
    dataset = load_dataset(where)
    if dataset.vocab != inspection.vocab:
        raise CharlstmError(f"dataset {where} has a different vocabulary from the checkpoint")
    ids = np.asarray(dataset.tokens("val")[:chars])
    if len(ids) == 0:
        raise CharlstmError(f"dataset {where} has an empty validation split; pass --text or --text-file")
    text = dataset.vocab.decode(ids.tolist())
    return text, f"the first {len(text):,} validation characters of {where}"


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


def trace_chunks(
    model: CharRNN,
    vocab: Vocab,
    text: str,
    threads: int | None = 1,
    exact: bool = False,
    chunk: int | None = None,
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Trace `text` a chunk at a time: yields (start, signal → float32 array [layers, chunk, hidden]).

    The chunks are slices of one trace over the whole text (to float rounding).

    The trace is a long chain of matrix-vector products bound by reading the recurrent weights
    once per character and layer. On a CPU with FBGEMM they are read as float16 unless `exact`:
    1.3–1.6× faster, and gates and hidden states stay within ~4e-3 of the float32 ones (a
    colour step is 1/128). `exact` gives the training model's forward pass to float32 rounding.
    On a 2-core machine shared with other work one thread measured 7× faster than two, so it
    runs single-threaded unless `threads` says otherwise (None: torch's default).
    """
    tokens = encode_text(vocab, text)
    on_cpu = next(model.parameters()).device.type == "cpu"
    weights = torch.float16 if on_cpu and not exact and half_weight_kernels_available() else torch.float32
    engine = StepEngine(model, weights)
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        for start, part in engine.trace_chunks(tokens, chunk or chunk_chars(model)):
            yield start, {name: values.numpy() for name, values in part.items()}
    finally:
        torch.set_num_threads(previous)


def chunk_length(chunk: dict[str, np.ndarray]) -> int:
    return next(iter(chunk.values())).shape[1]


def trace_into(inspection: Inspection, text: str, keepers, progress=None) -> None:
    """Trace `text` once, handing each chunk to every keeper's `add(start, chunk)`.

    `progress(done, total)` hears after each chunk, in characters.
    """
    for start, chunk in trace_chunks(inspection.model, inspection.vocab, text, exact=inspection.exact):
        for keeper in keepers:
            keeper.add(start, chunk)
        if progress is not None:
            progress(start + chunk_length(chunk), len(text))


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

    def add(self, start: int, chunk: dict[str, np.ndarray]) -> None:
        for signal, values in self.values.items():
            part = chunk[signal][self.layer - 1, :, self.neuron]
            values[start : start + len(part)] = part


# ----- ranking units by a feature ----------------------------------------------------------------


class FeatureCorrelation:
    """Every unit's Pearson correlation with one feature, accumulated over chunks of the trace.

    Per signal it keeps each unit's mean, sum of squared deviations and co-moment with the feature
    (float64 [layers, hidden]), and merges chunks by Chan et al.'s pairwise update: raw sums of
    squares would cancel catastrophically for a gate that barely moves; this equals the two-pass
    formula to rounding. On a 0/1 feature the correlation is the point-biserial one.
    """

    def __init__(self, feature: np.ndarray):
        self.feature = feature
        self.count = 0
        self.feature_mean = 0.0
        self.feature_m2 = 0.0
        self.mean: dict[str, np.ndarray] = {}
        self.m2: dict[str, np.ndarray] = {}
        self.co: dict[str, np.ndarray] = {}

    def add(self, start: int, chunk: dict[str, np.ndarray]) -> None:
        n_new = chunk_length(chunk)
        f = self.feature[start : start + n_new]
        if len(f) != n_new:
            raise ValueError(f"activations up to {start + n_new} but {len(self.feature)} feature values")
        f_mean = float(f.mean(dtype=np.float64))
        # float32 after centring is accurate to ~1e-5 here and twice as fast as float64.
        f_centred = (f - f_mean).astype(np.float32)
        n_old, n = self.count, self.count + n_new
        weight = n_old * n_new / n  # how much the difference of the two means adds to the sums
        f_shift = f_mean - self.feature_mean
        for signal, values in chunk.items():
            mean = values.mean(axis=1, dtype=np.float64)  # [layers, hidden]
            x = values - mean[:, None, :].astype(np.float32)
            m2 = np.einsum("lth,lth->lh", x, x).astype(np.float64)
            co = np.einsum("t,lth->lh", f_centred, x).astype(np.float64)
            if signal not in self.mean:
                self.mean[signal], self.m2[signal], self.co[signal] = (np.zeros_like(mean) for _ in range(3))
            shift = mean - self.mean[signal]
            self.mean[signal] += shift * (n_new / n)
            self.m2[signal] += m2 + shift * shift * weight
            self.co[signal] += co + shift * f_shift * weight
        self.feature_m2 += float(f_centred @ f_centred) + f_shift * f_shift * weight
        self.feature_mean += f_shift * (n_new / n)
        self.count = n

    def scores(self) -> dict[str, np.ndarray]:
        """signal → correlation [layers, hidden]; NaN where the unit or the feature is constant."""
        out = {}
        for signal, co in self.co.items():
            denom = np.sqrt(self.feature_m2 * self.m2[signal])
            with np.errstate(invalid="ignore", divide="ignore"):
                r = co / denom
            # Units with (numerically) no variance give noise or NaN; treat them as undefined.
            r[~(denom > 1e-12)] = np.nan
            out[signal] = r
        return out


def correlations(values: np.ndarray, feature: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of `values` [T, N] with `feature` [T] (NaN where either
    is constant). On a 0/1 feature this is the point-biserial correlation."""
    stats = FeatureCorrelation(feature)
    stats.add(0, {"values": values[None]})
    return stats.scores()["values"][0]


@dataclass(frozen=True)
class RankedUnit:
    layer: int  # 1-based
    neuron: int  # 0-based
    signal: str
    score: float  # signed correlation

    def to_dict(self) -> dict:
        return {"layer": self.layer, "neuron": self.neuron, "signal": self.signal, "score": round(self.score, 6)}


def check_feature_varies(feature: np.ndarray) -> None:
    if len(feature) < 2 or not np.ptp(feature) > 0:
        raise CharlstmError(
            "the feature is constant over this text, so no neuron can follow it; use a longer or different text"
        )


def ranked(scores: dict[str, np.ndarray], top: int | None = None) -> list[RankedUnit]:
    """Every (layer, neuron, signal) with a defined score (signal → [layers, hidden]), by |score|."""
    keys, flat = [], []
    for signal, r in scores.items():
        layers, hidden = r.shape
        keys.extend((layer + 1, n, signal) for layer in range(layers) for n in range(hidden))
        flat.append(r.ravel())
    flat = np.concatenate(flat)
    valid = np.flatnonzero(~np.isnan(flat))
    order = valid[np.argsort(-np.abs(flat[valid]), kind="stable")]
    if top is not None:
        order = order[:top]
    return [RankedUnit(*keys[i], float(flat[i])) for i in order]


def rank_units(acts: dict[str, np.ndarray], feature: np.ndarray, top: int | None = None) -> list[RankedUnit]:
    """Every (layer, neuron, signal) ordered by |correlation| with `feature`, best first.

    Units whose activation is constant over the text (undefined correlation) are left out.
    """
    check_feature_varies(feature)
    if chunk_length(acts) != len(feature):
        raise ValueError(f"{chunk_length(acts)} activations but {len(feature)} feature values")
    stats = FeatureCorrelation(feature)
    stats.add(0, acts)
    return ranked(stats.scores(), top)


class WindowSnippets:
    """Every unit's signals over the characters [start, end) that the --find table shows, and the
    colour scale of the cell state (its largest |value| over the whole text)."""

    def __init__(self, window: tuple[int, int]):
        self.start, self.end = window
        self.values: dict[str, np.ndarray] = {}  # signal → [layers, end - start, hidden]
        self.largest: dict[str, np.ndarray] = {}  # signal → [layers, hidden], for unbounded signals

    def add(self, start: int, chunk: dict[str, np.ndarray]) -> None:
        lo, hi = max(self.start, start), min(self.end, start + chunk_length(chunk))
        for signal, values in chunk.items():
            if signal not in self.values:
                layers, _, hidden = values.shape
                self.values[signal] = np.zeros((layers, self.end - self.start, hidden), dtype=np.float32)
            if lo < hi:
                self.values[signal][:, lo - self.start : hi - self.start] = values[:, lo - start : hi - start]
            if signal not in GATES and signal not in BOUNDED:
                largest = np.where(np.isfinite(values), np.abs(values), 0).max(axis=1)
                self.largest[signal] = np.maximum(self.largest.get(signal, 0), largest)

    def of(self, unit: RankedUnit) -> tuple[np.ndarray, float]:
        """The unit's values over the window and the value drawn at full colour."""
        values = self.values[unit.signal][unit.layer - 1, :, unit.neuron]
        if unit.signal in self.largest:
            return values, float(self.largest[unit.signal][unit.layer - 1, unit.neuron]) or 1.0
        return values, value_range(unit.signal)[1]


@dataclass
class Found:
    """What --find shows: the ranked units, the feature, and each unit's snippet over `window`."""

    units: list[RankedUnit]
    feature: np.ndarray
    window: tuple[int, int]
    snippets: list[tuple[np.ndarray, float]]  # per unit: values over the window, colour scale


def find_units(
    inspection: Inspection, text: str, feature_name: str, top: int = 10, window_width: int = 64, progress=None
) -> Found:
    """Rank the model's units by `feature_name` over `text`, tracing it a chunk at a time."""
    validate_feature(feature_name)
    feature = compute_feature(feature_name, text, inspection.language)
    check_feature_varies(feature)  # before the slow part
    window = feature_window(feature, window_width)
    stats, snippets = FeatureCorrelation(feature), WindowSnippets(window)
    trace_into(inspection, text, (stats, snippets), progress)
    units = ranked(stats.scores(), top)
    return Found(units, feature, window, [snippets.of(unit) for unit in units])


def top_units_by_feature(
    acts: dict[str, np.ndarray], text: str, language: str | None, names, top: int = 10
) -> dict[str, list[RankedUnit]]:
    """The best `top` units for each feature that varies over `text` (for the HTML explorer)."""
    out = {}
    for name in names:
        feature = compute_feature(name, text, language)
        if np.ptp(feature) > 0:
            out[name] = rank_units(acts, feature, top)
    return out


def feature_window(feature: np.ndarray, width: int = 64) -> tuple[int, int]:
    """The `width`-character window over which `feature` varies most (a telling snippet)."""
    n = len(feature)
    if n <= width:
        return 0, n
    f = feature.astype(np.float64)
    s1 = np.concatenate([[0.0], np.cumsum(f)])
    s2 = np.concatenate([[0.0], np.cumsum(f * f)])
    sums, squares = s1[width:] - s1[:-width], s2[width:] - s2[:-width]
    variance = squares / width - (sums / width) ** 2
    start = int(np.argmax(variance))
    return start, start + width


# ----- gate saturation ---------------------------------------------------------------------------


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

    def add(self, start: int, chunk: dict[str, np.ndarray]) -> None:
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
            for layer, (left, right) in enumerate(zip(self.left[gate] / self.count, self.right[gate] / self.count)):
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


# ----- choosing the text -------------------------------------------------------------------------


def read_text_file(path: str | Path) -> str:
    return read_text_source(path, "text file")


def choose_text(
    inspection: Inspection,
    text: str | None = None,
    text_file: str | Path | None = None,
    from_val: int | None = None,
    data: str | Path | None = None,
    default_chars: int = 1000,
) -> tuple[str, str]:
    """The text to inspect and a short description of where it came from.

    At most one of `text`, `text_file`, `from_val`; none → the first `default_chars` characters of
    the validation split.
    """
    given = [name for name, v in (("--text", text), ("--text-file", text_file), ("--from-val", from_val)) if v is not None]
    if len(given) > 1:
        raise CharlstmError(f"give only one of {', '.join(given)}")
    if text is not None:
        chosen, source = text, "--text"
    elif text_file is not None:
        chosen, source = read_text_file(text_file), text_from_argv(str(text_file))  # shown in the page
    else:
        chars = default_chars if from_val is None else from_val
        chosen, source = validation_text(inspection, chars, data)
    encode_text(inspection.vocab, chosen)  # empty text and unknown characters fail here, clearly
    return chosen, source


def cut_text(text: str, source: str, most: int, why: str = "") -> tuple[str, str]:
    """The first `most` characters of `text`, and its description saying so."""
    if len(text) <= most:
        return text, source
    return text[:most], f"{source} (its first {most:,} of {len(text):,} characters{why})"


def tracing_progress(status):
    """A `trace_into` progress callback that updates a rich status line."""
    return lambda done, total: status.update(f"tracing {done:,} of {total:,} characters…")


INSPECT_STATES = ("hidden", "cell", "input", "forget", "output", "candidate", "reset", "update", "all")
# An SVG records every character's style: ~1.4 KB each while it is drawn, a ~5 MB picture at the limit.
SVG_MAX_CHARS = 20_000


def inspect_neuron(
    checkpoint: str | None,
    *,
    layer: int | None = None,
    neuron: int | None = None,
    state: str | None = None,
    text: str | None = None,
    text_file: str | None = None,
    from_val: int | None = None,
    data: str | None = None,
    find: str | None = None,
    top: int = 10,
    stats: bool = False,
    json_out: bool = False,
    html: str | None = None,
    svg: str | None = None,
    exact: bool = False,
    ablate: list[str] | None = None,
    causal: bool = False,
    controls: int = 8,
    seed: int = 0,
    top_contexts: int | None = None,
    max_chars: int | None = None,
    err,
) -> None:
    """`charlstm inspect-neuron`: one neuron coloured over a text, --find, --stats, --html, --ablate
    or --top-contexts.

    Tables and messages go to `err` (stderr); coloured text and --json to stdout; with `svg` the
    coloured view is also saved as an SVG picture (for a README, a paper, an issue).
    """
    import json

    from rich.console import Console
    from rich.markup import escape

    from charlstm import render
    from charlstm.features import is_binary

    modes = [name for name, on in (("--find", find is not None), ("--stats", stats), ("--html", html is not None),
                                   ("--ablate", bool(ablate) and html is None), ("--top-contexts", top_contexts is not None)) if on]  # fmt: skip
    if len(modes) > 1:
        raise CharlstmError(f"choose one of {', '.join(modes)} at a time")
    if json_out and not (find or stats or ablate or top_contexts is not None):
        raise CharlstmError("--json goes with --find, --stats, --ablate or --top-contexts")
    if causal and find is None:
        raise CharlstmError("--causal adds the ablation effect to --find FEATURE's ranking; give --find")
    if ablate and html is None and (layer is not None or neuron is not None):
        raise CharlstmError("--ablate names its units itself (L:N); drop --layer and --neuron")
    if top_contexts is not None and (layer is None or neuron is None):
        raise CharlstmError("--top-contexts needs the unit: --layer and --neuron")
    if (ablate or causal) and controls < 1:
        raise CharlstmError(f"--controls must be at least 1, got {controls}")
    if (ablate or causal) and controls > interventions.MAX_CONTROLS:
        raise CharlstmError(f"--controls must be at most {interventions.MAX_CONTROLS}, got {controls}")
    if (ablate or causal) and seed < 0:
        raise CharlstmError(f"--seed must be 0 or more, got {seed}")
    if ablate:
        specs = [interventions.parse_unit(a, "--ablate") for a in ablate]
    if svg is not None and modes:
        raise CharlstmError(f"--svg saves the view of one neuron; it does not go with {modes[0]}")
    if state is not None and state not in INSPECT_STATES:
        raise CharlstmError(f"unknown --state {state!r}; choose one of {', '.join(INSPECT_STATES)}")
    if find is not None:
        validate_feature(find)  # before the slow part
        if top < 1:
            raise CharlstmError(f"--top must be at least 1, got {top}")
    if max_chars is not None and max_chars < 1:
        raise CharlstmError(f"--max-chars must be at least 1, got {max_chars}")

    inspection = open_checkpoint(checkpoint, exact=exact)
    if layer is not None or neuron is not None:
        if layer is None or neuron is None:
            raise CharlstmError("give both --layer and --neuron")
        inspection.check_unit(layer, neuron)
    if state not in (None, "all"):
        inspection.check_signal(state)
    if ablate:
        interventions.resolve(specs, inspection.kind, inspection.layers, inspection.hidden)
    if not modes and (layer is None or neuron is None):
        raise CharlstmError("give --layer and --neuron (or --find FEATURE, --stats, --html OUT.html)")
    if html is not None:
        from charlstm.explorer import default_chars as html_chars

        default_chars = html_chars(inspection)
    elif top_contexts is not None:
        default_chars = 1 << 62  # the whole validation split (or the excerpt a run carries)
    else:
        default_chars = 5000 if (find or stats or ablate) else 1000
    chosen, source = choose_text(inspection, text, text_file, from_val, data, default_chars)
    if max_chars is not None:
        chosen, source = cut_text(chosen, source, max_chars)
    if svg is not None and len(chosen) > SVG_MAX_CHARS:
        raise CharlstmError(
            f"--svg draws at most {SVG_MAX_CHARS:,} characters and this text has {len(chosen):,}; "
            f"add --max-chars {SVG_MAX_CHARS}"
        )

    if ablate and html is None:
        with err.status(f"scoring {len(chosen):,} characters, {1 + 1 + controls} ways…"):
            report = interventions.ablate_units(inspection, chosen, specs, controls, seed)
        if json_out:
            print(json.dumps({"source": source, **report}))
            return
        units = ", ".join(f"{la}:{n}" for la, n in report["units"])
        err.print(interventions.ablation_table(report, f"Ablating {units} over {escape(source)}"))
        return

    if top_contexts is not None:
        from charlstm.contexts import contexts_view, unit_top_contexts

        with err.status(f"tracing {len(chosen):,} characters…"):
            result = unit_top_contexts(inspection, chosen, layer, neuron, state or "hidden", top_contexts)
        if json_out:
            print(json.dumps({"source": source, **result}))
            return
        out = Console(highlight=False)
        for view in contexts_view(result, escape(source), out.width):
            out.print(view)
        return

    if html is not None:
        from charlstm.explorer import MAX_VALUES, most_chars, write_explorer

        most = most_chars(inspection)
        if len(chosen) > most:  # the page shows the start of a long text, and says so
            err.print(
                f"note: one page holds {most:,} characters with this model ({MAX_VALUES:,} values); it shows the "
                f"first {most:,} of {len(chosen):,} (--max-chars picks fewer)",
                highlight=False,
            )
            chosen, source = cut_text(chosen, source, most, ": the most one page holds")

        with err.status(f"tracing {len(chosen):,} characters…"):
            if ablate and layer is None:  # open the page on the (first) ablated unit
                layer, neuron = specs[0].layer, specs[0].neuron
            summary = write_explorer(
                html, inspection, chosen, source, layer=layer, neuron=neuron, signal=None if state == "all" else state,
                ablate=[(s.layer, s.neuron) for s in specs] if ablate else None,
            )
        err.print(
            f"wrote {escape(html)} ({summary['bytes'] / 1e6:.1f} MB: {summary['chars']:,} characters, "
            f"{summary['layers']} layers × {summary['hidden']} neurons × {len(summary['signals'])} signals)",
            highlight=False,
        )
        return

    if find is not None:
        width = max(24, err.width - 45)  # the snippet's width: the rest of the table's row fits
        if causal:  # two more columns: Δ all, and Δ on the feature's own characters
            width = max(10, width - 10 - 3 - max(7, len(interventions.own_header(find))))
        with err.status(f"tracing {len(chosen):,} characters…") as status:
            found = find_units(inspection, chosen, find, top, width, tracing_progress(status))
        units = found.units
        effects = None
        if causal:
            targets = len({(u.layer, u.neuron) for u in units})
            with err.status(f"ablating {targets} units and {controls} controls per layer…"):
                effects = interventions.causal_effects(inspection, chosen, find, units, controls, seed)
        if json_out:
            ranked_units = [u.to_dict() for u in units]
            if effects is not None:
                for entry, u in zip(ranked_units, units):
                    entry["ablation"] = effects["by_unit"][(u.layer, u.neuron)]["delta"]
                effects = {k: v for k, v in effects.items() if k not in ("by_unit", "ablations")}
            print(json.dumps({"feature": find, "chars": len(chosen), "neurons": ranked_units, "causal": effects}))
            return
        measure = "point-biserial r" if is_binary(find) else "Pearson r"
        title = f"Units following {find!r} ({measure} over {source})"
        extra = interventions.causal_columns(effects, units) if effects is not None else []
        table = render.find_table(find, units, found.snippets, found.feature, chosen, found.window, title, extra)
        if effects is not None:
            table.caption = interventions.causal_caption(effects)
        err.print(table)
        if units:
            best = units[0]
            err.print(
                f"see one: charlstm inspect-neuron {escape(str(inspection.path))} --layer {best.layer} "
                f"--neuron {best.neuron} --state {best.signal}",
                highlight=False,
            )
        return

    if stats:
        counts = GateSaturation(inspection.kind)  # an RNN has no gates: say so before tracing
        with err.status(f"tracing {len(chosen):,} characters…") as status:
            trace_into(inspection, chosen, [counts], tracing_progress(status))
        rows = counts.rows()
        if json_out:
            print(json.dumps({"chars": len(chosen), "gates": rows}))
            return
        err.print(render.stats_table(rows, f"Gate saturation ({source}; {escape(inspection.describe())})"))
        return

    signals = inspection.signals if state == "all" else (state or "hidden",)
    unit = UnitSignals(layer, neuron, signals, len(chosen))
    with err.status(f"tracing {len(chosen):,} characters…") as status:
        trace_into(inspection, chosen, [unit], tracing_progress(status))
    out = Console(highlight=False, record=svg is not None)
    err.print(
        f"layer {layer} of {inspection.layers}, neuron {neuron} (0-based) — {escape(inspection.describe())}; {escape(source)}",
        highlight=False,
    )
    for signal in signals:
        values = unit.values[signal]
        scale = render.value_range(signal, values)[1]
        if state == "all":
            out.rule(f"{signal}", align="left")
        render.print_coloured(out, chosen, values, signal, scale)
        out.print(render.legend(signal, scale if signal == "cell" else None))
    if svg is not None:
        title = f"layer {layer}, neuron {neuron}: {state or 'hidden'}"
        picture = out.export_svg(title=title).encode("utf-8")
        write_output(svg, picture)
        err.print(f"wrote {escape(svg)}", highlight=False)
