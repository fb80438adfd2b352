"""Neuron inspection: record every signal of every unit over a text, rank units by how closely they
follow a feature of the code, and measure gate saturation.

Activations come from the step engine's `trace` — the same cell math sampling uses, checked equal to
the fused modules training uses — so what is shown is what the trained model computes.

Numbering, everywhere a user sees it (terminal, --json, HTML): layers are 1-based, as the article's
explorer numbers them; neurons are 0-based, as the index of the unit in the layer's state vector.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from charlstm.checkpoint import load_checkpoint, model_from_checkpoint, resolve_checkpoint
from charlstm.dataset import load_dataset
from charlstm.engine import SIGNALS, StepEngine, half_weight_kernels_available
from charlstm.errors import CharlstmError
from charlstm.features import compute_feature, validate_feature
from charlstm.model import CharRNN
from charlstm.render import GATES
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


def activations(
    model: CharRNN, vocab: Vocab, text: str, threads: int | None = 1, exact: bool = False
) -> dict[str, np.ndarray]:
    """Every signal of every unit at every character: signal → float32 array [layers, T, hidden].

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
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        trace = StepEngine(model, weights).trace(tokens)
    finally:
        torch.set_num_threads(previous)
    return {name: values.numpy() for name, values in trace.items()}


# ----- ranking units by a feature ----------------------------------------------------------------


def correlations(values: np.ndarray, feature: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of `values` [T, N] with `feature` [T] (NaN where either
    is constant). On a 0/1 feature this is the point-biserial correlation."""
    # float32 after centring is accurate to ~1e-5 here and twice as fast as float64.
    f = (feature.astype(np.float64) - feature.mean(dtype=np.float64)).astype(np.float32)
    x = values - values.mean(axis=0, dtype=np.float64).astype(np.float32)
    cov = (f @ x).astype(np.float64)
    denom = np.sqrt(float(f @ f) * np.einsum("tn,tn->n", x, x).astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / denom
    # Columns with (numerically) no variance give noise or NaN; treat them as undefined.
    r[~(denom > 1e-12)] = np.nan
    return r


@dataclass(frozen=True)
class RankedUnit:
    layer: int  # 1-based
    neuron: int  # 0-based
    signal: str
    score: float  # signed correlation

    def to_dict(self) -> dict:
        return {"layer": self.layer, "neuron": self.neuron, "signal": self.signal, "score": round(self.score, 6)}


def rank_units(acts: dict[str, np.ndarray], feature: np.ndarray, top: int | None = None) -> list[RankedUnit]:
    """Every (layer, neuron, signal) ordered by |correlation| with `feature`, best first.

    Units whose activation is constant over the text (undefined correlation) are left out.
    """
    if len(feature) < 2 or not np.ptp(feature) > 0:
        raise CharlstmError(
            "the feature is constant over this text, so no neuron can follow it; use a longer or different text"
        )
    scores, keys = [], []
    for signal, values in acts.items():
        layers, steps, hidden = values.shape
        if steps != len(feature):
            raise ValueError(f"{steps} activations but {len(feature)} feature values")
        for layer in range(layers):
            r = correlations(values[layer], feature)
            scores.append(r)
            keys.extend((layer + 1, n, signal) for n in range(hidden))
    flat = np.concatenate(scores)
    valid = np.flatnonzero(~np.isnan(flat))
    order = valid[np.argsort(-np.abs(flat[valid]), kind="stable")]
    if top is not None:
        order = order[:top]
    return [RankedUnit(*keys[i], float(flat[i])) for i in order]


def find_units(
    inspection: Inspection, text: str, feature_name: str, top: int = 10
) -> tuple[list[RankedUnit], dict[str, np.ndarray], np.ndarray]:
    """Rank the model's units by `feature_name` over `text`; also return activations and feature."""
    validate_feature(feature_name)
    acts = activations(inspection.model, inspection.vocab, text, exact=inspection.exact)
    feature = compute_feature(feature_name, text, inspection.language)
    return rank_units(acts, feature, top), acts, feature


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


def saturation(acts: dict[str, np.ndarray], kind: str) -> list[dict]:
    """Per layer and gate: mean fraction of time units are left- (< 0.1) and right-saturated (> 0.9),
    and how many units spend most of the time (> 50 %) in each state."""
    gates = [s for s in SIGNALS[kind] if s in GATES]
    if not gates:
        raise CharlstmError(f"a {kind.upper()} has no gates to measure; --stats needs an LSTM or GRU")
    rows = []
    for gate in gates:
        values = acts[gate]
        for layer in range(values.shape[0]):
            left = (values[layer] < LEFT_SATURATED).mean(axis=0)  # per unit, fraction of time
            right = (values[layer] > RIGHT_SATURATED).mean(axis=0)
            rows.append(
                {
                    "layer": layer + 1,
                    "gate": gate,
                    "left_saturated": float(left.mean()),
                    "right_saturated": float(right.mean()),
                    "units_mostly_left": int((left > 0.5).sum()),
                    "units_mostly_right": int((right > 0.5).sum()),
                    "units": int(values.shape[2]),
                }
            )
    rows.sort(key=lambda r: (r["layer"], gates.index(r["gate"])))
    return rows


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


INSPECT_STATES = ("hidden", "cell", "input", "forget", "output", "candidate", "reset", "update", "all")


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
    err,
) -> None:
    """`charlstm inspect-neuron`: one neuron coloured over a text, --find, --stats or --html.

    Tables and messages go to `err` (stderr); coloured text and --json to stdout; with `svg` the
    coloured view is also saved as an SVG picture (for a README, a paper, an issue).
    """
    import json

    from rich.console import Console
    from rich.markup import escape

    from charlstm import render
    from charlstm.features import is_binary

    modes = [name for name, on in (("--find", find is not None), ("--stats", stats), ("--html", html is not None)) if on]
    if len(modes) > 1:
        raise CharlstmError(f"choose one of {', '.join(modes)} at a time")
    if json_out and not (find or stats):
        raise CharlstmError("--json goes with --find or --stats")
    if svg is not None and modes:
        raise CharlstmError(f"--svg saves the view of one neuron; it does not go with {modes[0]}")
    if state is not None and state not in INSPECT_STATES:
        raise CharlstmError(f"unknown --state {state!r}; choose one of {', '.join(INSPECT_STATES)}")
    if find is not None:
        validate_feature(find)  # before the slow part
        if top < 1:
            raise CharlstmError(f"--top must be at least 1, got {top}")

    inspection = open_checkpoint(checkpoint, exact=exact)
    if layer is not None or neuron is not None:
        if layer is None or neuron is None:
            raise CharlstmError("give both --layer and --neuron")
        inspection.check_unit(layer, neuron)
    if state not in (None, "all"):
        inspection.check_signal(state)
    if not modes and (layer is None or neuron is None):
        raise CharlstmError("give --layer and --neuron (or --find FEATURE, --stats, --html OUT.html)")
    if html is not None:
        from charlstm.explorer import default_chars as html_chars

        default_chars = html_chars(inspection)
    else:
        default_chars = 5000 if (find or stats) else 1000
    chosen, source = choose_text(inspection, text, text_file, from_val, data, default_chars)

    if html is not None:
        from charlstm.explorer import write_explorer

        with err.status(f"tracing {len(chosen):,} characters…"):
            summary = write_explorer(
                html, inspection, chosen, source, layer=layer, neuron=neuron, signal=None if state == "all" else state
            )
        err.print(
            f"wrote {escape(html)} ({summary['bytes'] / 1e6:.1f} MB: {summary['chars']:,} characters, "
            f"{summary['layers']} layers × {summary['hidden']} neurons × {len(summary['signals'])} signals)",
            highlight=False,
        )
        return

    if find is not None:
        with err.status(f"tracing {len(chosen):,} characters…"):
            units, acts, feature = find_units(inspection, chosen, find, top)
        if json_out:
            print(json.dumps({"feature": find, "chars": len(chosen), "neurons": [u.to_dict() for u in units]}))
            return
        measure = "point-biserial r" if is_binary(find) else "Pearson r"
        title = f"Units following {find!r} ({measure} over {source})"
        window = feature_window(feature, width=max(24, err.width - 45))  # the rest of the row fits
        err.print(render.find_table(find, units, acts, feature, chosen, window, title))
        if units:
            best = units[0]
            err.print(
                f"see one: charlstm inspect-neuron {escape(str(inspection.path))} --layer {best.layer} "
                f"--neuron {best.neuron} --state {best.signal}",
                highlight=False,
            )
        return

    if stats:
        with err.status(f"tracing {len(chosen):,} characters…"):
            acts = activations(inspection.model, inspection.vocab, chosen, exact=inspection.exact)
            rows = saturation(acts, inspection.kind)
        if json_out:
            print(json.dumps({"chars": len(chosen), "gates": rows}))
            return
        err.print(render.stats_table(rows, f"Gate saturation ({source}; {escape(inspection.describe())})"))
        return

    acts = activations(inspection.model, inspection.vocab, chosen, exact=inspection.exact)
    out = Console(highlight=False, record=svg is not None)
    err.print(
        f"layer {layer} of {inspection.layers}, neuron {neuron} (0-based) — {escape(inspection.describe())}; {escape(source)}",
        highlight=False,
    )
    for signal in inspection.signals if state == "all" else (state or "hidden",):
        values = acts[signal][layer - 1, :, neuron]
        scale = render.value_range(signal, values)[1]
        if state == "all":
            out.rule(f"{signal}", align="left")
        out.print(render.colour_text(chosen, values, signal, scale=scale), end="" if chosen.endswith("\n") else "\n")
        out.print(render.legend(signal, scale if signal == "cell" else None))
    if svg is not None:
        title = f"layer {layer}, neuron {neuron}: {state or 'hidden'}"
        picture = out.export_svg(title=title).encode("utf-8")
        write_output(svg, picture)
        err.print(f"wrote {escape(svg)}", highlight=False)
