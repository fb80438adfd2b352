"""Neuron inspection: record every signal of every unit over a text, rank units by how closely they
follow a feature of the code (gate saturation, counted over the same trace, is in saturation.py).

Activations come from tracing.py (the fused layers, or lanes for a whole corpus) — checked equal to
the step engine sampling uses — so what is shown is what the trained model computes.

Numbering, everywhere a user sees it (terminal, --json, HTML): layers are 1-based, as the article's
explorer numbers them; neurons are 0-based, as the index of the unit in the layer's state vector.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.checkpoint import VAL_EXCERPT, open_model
from ..core.engine import BOUNDED, GATES, SIGNALS
from ..core.errors import CharlstmError, shown_path
from ..core.model import CharRNN
from ..core.userio import read_text_source, text_from_argv
from ..core.vocab import Vocab
from ..corpus.dataset import load_dataset
from .features import compute_feature, validate_feature
from .scales import value_range
from .tracing import At, LaneReport, chunk_length, encode_text, places, trace_joined


@dataclass
class Inspection:
    """A loaded model ready to be traced, with what the user needs to hear about it."""

    path: Path
    payload: dict
    model: CharRNN
    vocab: Vocab
    exact: bool = False  # --exact: kept for old scripts; every trace is float32 now

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

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
        return f"{shown_path(self.path)} ({c.kind.upper()}, {c.layers} layer{'s' * (c.layers != 1)} × {c.hidden} units)"

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
            raise CharlstmError(f"a {self.kind.upper()} has no {signal!r} signal; it has: {', '.join(self.signals)}")


def open_checkpoint(where: str | Path | None, exact: bool = False, device: str | torch.device = "cpu") -> Inspection:
    """The checkpoint's model on `device` (a --device name, auto included, or a torch device)."""
    opened = open_model(where, device)
    return Inspection(path=opened.path, payload=opened.payload, model=opened.model, vocab=opened.vocab, exact=exact)


SPLIT_NAMES = {"train": "training", "val": "validation"}


def dataset_at_hand(inspection: Inspection, data: str | Path | None = None) -> bool:
    """Whether the dataset the text would come from (--data, or the checkpoint's own) is on this machine."""
    where = data or (inspection.payload.get("dataset") or {}).get("path")
    return bool(where) and Path(where).is_dir()


def split_text(
    inspection: Inspection, chars: int, data: str | Path | None = None, split: str = "val"
) -> tuple[str, str]:
    """The first `chars` characters of a split of the checkpoint's dataset, and where they came from.

    Without the dataset, the validation excerpt a run carries stands in for the validation split."""
    if chars < 1:
        raise CharlstmError(f"--from-val needs a positive number of characters, got {chars}")
    if split not in SPLIT_NAMES:
        raise CharlstmError(f"--split is train or val, not {split!r}")
    named = SPLIT_NAMES[split]
    where = data or (inspection.payload.get("dataset") or {}).get("path")
    excerpt = Path(inspection.path).parent / VAL_EXCERPT
    if split == "val" and data is None and not dataset_at_hand(inspection) and excerpt.is_file():
        text = excerpt.read_text(encoding="utf-8")[:chars]
        return text, f"the first {len(text):,} validation characters ({excerpt})"
    if not where:
        raise CharlstmError("the checkpoint does not say which dataset it was trained on; pass --data or --text")
    if not Path(where).is_dir():
        raise CharlstmError(
            f"dataset {shown_path(where)} ({named} text for this checkpoint) is not here; "
            "pass --data DIR, --text or --text-file"
        )
    dataset = load_dataset(where)
    if dataset.vocab != inspection.vocab:
        raise CharlstmError(f"dataset {shown_path(where)} has a different vocabulary from the checkpoint")
    ids = np.asarray(dataset.tokens(split)[:chars])
    if len(ids) == 0:
        raise CharlstmError(f"dataset {shown_path(where)} has an empty {named} split; pass --text or --text-file")
    text = dataset.vocab.decode(ids.tolist())
    return text, f"the first {len(text):,} {named} characters of {where}"


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

    def add(self, at: At, chunk: dict[str, np.ndarray]) -> None:
        n_new = chunk_length(chunk)
        f = self.feature[places(at, n_new)]
        if len(f) != n_new:
            raise ValueError(f"{n_new} activations from {at} but {len(self.feature)} feature values")
        f_mean = float(f.mean(dtype=np.float64))
        # float32 after centring is accurate to ~1e-5 here and twice as fast as float64.
        f_centred = (f - f_mean).astype(np.float32)
        n_old, n = self.count, self.count + n_new
        weight = n_old * n_new / n  # how much the difference of the two means adds to the sums
        f_shift = f_mean - self.feature_mean
        ones_and_feature = torch.from_numpy(np.stack([np.ones(n_new, dtype=np.float32), f_centred]))  # [2, T]
        for signal, values in chunk.items():
            values = torch.from_numpy(np.asarray(values, dtype=np.float32))  # the same memory, on every thread
            # Sums over the chunk's characters as products ([T] @ [layers, T, hidden]: BLAS, 2–5×
            # faster than reductions across this axis). The values are centred on a float32 guess of
            # their mean and the residual sums correct it (the shifted-data form: no cancellation
            # however far the guess is off by rounding; a guess far off, such as the mean so far,
            # would leave Σx² much larger than the spread it measures, and float32 rounding with it).
            guess = torch.matmul(ones_and_feature[0], values) / n_new  # [layers, hidden]
            x = values - guess[:, None, :]
            sums = torch.matmul(ones_and_feature, x).double().numpy()  # [layers, 2, hidden]: Σx and Σ f·x
            residual, co = sums[:, 0], sums[:, 1]
            mean = guess.numpy() + residual / n_new
            m2 = np.maximum(x.square_().sum(dim=1).double().numpy() - residual * residual / n_new, 0.0)
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
            # Units with (numerically) no variance give noise or NaN; treat them as undefined. A spread
            # under 1e-6 of the unit's size is float32 rounding (of the trace, or of the sums).
            spread = np.sqrt(self.m2[signal] / max(self.count, 1))
            r[~(denom > 1e-12) | (spread <= 1e-6 * np.abs(self.mean[signal]))] = np.nan
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

    def add(self, at: At, chunk: dict[str, np.ndarray]) -> None:
        positions = np.arange(at, at + chunk_length(chunk)) if isinstance(at, int) else at
        inside = np.flatnonzero((positions >= self.start) & (positions < self.end))
        for signal, values in chunk.items():
            if signal not in self.values:
                layers, _, hidden = values.shape
                self.values[signal] = np.zeros((layers, self.end - self.start, hidden), dtype=np.float32)
            if len(inside):
                self.values[signal][:, positions[inside] - self.start] = values[:, inside]
            if signal not in GATES and signal not in BOUNDED:
                self.largest[signal] = np.maximum(self.largest.get(signal, 0), _largest_finite(values))

    def of(self, unit: RankedUnit) -> tuple[np.ndarray, float]:
        """The unit's values over the window and the value drawn at full colour."""
        values = self.values[unit.signal][unit.layer - 1, :, unit.neuron]
        if unit.signal in self.largest:
            return values, float(self.largest[unit.signal][unit.layer - 1, unit.neuron]) or 1.0
        return values, value_range(unit.signal)[1]


def _largest_finite(values: np.ndarray) -> np.ndarray:
    """Each unit's largest finite |value| over the characters (axis 1) of [layers, T, hidden]."""
    # torch's amax and amin across this axis: 2–8× numpy's reductions (its aminmax: 10× slower)
    values_t = torch.from_numpy(values)
    largest = torch.maximum(values_t.amax(dim=1), values_t.amin(dim=1).neg_()).numpy()
    if np.isfinite(largest).all():
        return largest
    return np.where(np.isfinite(values), np.abs(values), 0).max(axis=1)  # an overflow: leave it out


@dataclass
class Found:
    """What --find shows: the ranked units, the feature, and each unit's snippet over `window`."""

    units: list[RankedUnit]
    feature: np.ndarray
    window: tuple[int, int]
    snippets: list[tuple[np.ndarray, float]]  # per unit: values over the window, colour scale
    lanes: LaneReport | None = None  # how a long text was traced in lanes (None: in one piece)


def find_units(
    inspection: Inspection, text: str, feature_name: str, top: int = 10, window_width: int = 64, progress=None
) -> Found:
    """Rank the model's units by `feature_name` over `text`, tracing it a chunk at a time."""
    validate_feature(feature_name)
    feature = compute_feature(feature_name, text, inspection.language)
    check_feature_varies(feature)  # before the slow part
    window = feature_window(feature, window_width)
    (stats, snippets), lanes = trace_joined(
        inspection, text, lambda: (FeatureCorrelation(feature), WindowSnippets(window)), progress
    )
    units = ranked(stats.scores(), top)
    return Found(units, feature, window, [snippets.of(unit) for unit in units], lanes)


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
    split: str = "val",
) -> tuple[str, str]:
    """The text to inspect and a short description of where it came from.

    At most one of `text`, `text_file`, `from_val`; none → the first `default_chars` characters of
    the dataset's `split`.
    """
    given = [
        name for name, v in (("--text", text), ("--text-file", text_file), ("--from-val", from_val)) if v is not None
    ]
    if len(given) > 1:
        raise CharlstmError(f"give only one of {', '.join(given)}")
    if data is not None and (text is not None or text_file is not None):
        raise CharlstmError(f"--data picks the dataset to read; it does not go with {given[0]}")
    if text is not None:
        chosen, source = text, "--text"
    elif text_file is not None:
        chosen, source = read_text_file(text_file), shown_path(text_from_argv(str(text_file)))  # shown in the page
    else:
        chars = default_chars if from_val is None else from_val
        chosen, source = split_text(inspection, chars, data, split)
    encode_text(inspection.vocab, chosen)  # empty text and unknown characters fail here, clearly
    return chosen, source


def cut_text(text: str, source: str, most: int, why: str = "") -> tuple[str, str]:
    """The first `most` characters of `text`, and its description saying so."""
    if len(text) <= most:
        return text, source
    return text[:most], f"{source} (its first {most:,} of {len(text):,} characters{why})"
