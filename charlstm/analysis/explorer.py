"""A self-contained HTML explorer of one model over one text, in the spirit of the LSTM explorer web
app that accompanied the source article.

The page holds every signal of every unit over the text, quantised to 8 bits per value
(per unit: its minimum and maximum over the text, then 256 levels between them), deflated and
base64-encoded, one block per (signal, layer); the browser inflates a block with its built-in
DecompressionStream only when it is shown. No network, no CDN: the page's script and style are
inlined from `charlstm/assets/`.
"""

from __future__ import annotations

import base64
import json
import math
import zlib
from importlib import resources
from pathlib import Path

import numpy as np

from ..core.engine import BOUNDED, GATES
from ..core.errors import CharlstmError
from ..core.userio import MAX_PAGE_BYTES, write_output
from .features import FEATURES
from .neurons import Inspection, top_units_by_feature
from .tracing import activations

# A page weighs at most MAX_PAGE_BYTES (16 MB). Its bulk is the quantised values, one byte each
# (deflated, which gains little on 8-bit activations, then base64: 4/3 of a byte), so a page holds
# MAX_PAGE_BYTES / (4/3 · values per character) characters: 2,512 of a 3×256 LSTM, 1,258 of a
# 3×512 one. The default text is DEFAULT_CHARS or as many as fit; a longer text shows its start.
DEFAULT_CHARS = 2000
# Bytes per character besides the values: its bits and top 5 (≤ 88 as JSON), an ablation delta
# (≤ 8) and the character itself (≤ 6, escaped), with room to spare.
OTHER_BYTES_PER_CHAR = 128
FIXED_BYTES = 96_000  # the script, the style, the top units per feature and the model's description


def values_per_char(inspection: Inspection) -> int:
    return inspection.layers * inspection.hidden * len(inspection.signals)


def page_bytes_per_char(inspection: Inspection) -> int:
    """The most one character adds to a page: its values as deflated (which may add 0.1%) base64,
    and the rest."""
    return math.ceil(values_per_char(inspection) * 4 / 3 * 1.001) + OTHER_BYTES_PER_CHAR


def most_chars(inspection: Inspection, cap: int | None = None) -> int:
    """The longest text one page of at most `cap` bytes (MAX_PAGE_BYTES) holds for this model:
    the fixed part, each unit's range per signal (≤ 28 bytes), then the characters."""
    cap = MAX_PAGE_BYTES if cap is None else cap
    fixed = FIXED_BYTES + 28 * values_per_char(inspection)
    return max(0, (cap - fixed) // page_bytes_per_char(inspection))


def default_chars(inspection: Inspection) -> int:
    return max(1, min(DEFAULT_CHARS, most_chars(inspection)))


def quantise(values: np.ndarray) -> dict:
    """[T, H] float → per-unit lo/hi and uint8 levels, deflated and base64-encoded (time-major)."""
    lo = values.min(axis=0)
    hi = values.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    q = np.rint((values - lo) / span * 255).clip(0, 255).astype(np.uint8)
    return {
        "lo": [float(f"{v:.6g}") for v in lo],
        "hi": [float(f"{v:.6g}") for v in hi],
        "q": base64.b64encode(zlib.compress(q.tobytes(), 6)).decode("ascii"),
    }


def explorer_data(
    inspection: Inspection,
    text: str,
    source: str,
    acts: dict[str, np.ndarray],
    initial: dict,
    top: int = 8,
) -> dict:
    return {
        "title": f"charlstm explorer — {inspection.path}",
        "model": {
            "path": str(inspection.path),
            "kind": inspection.kind,
            "layers": inspection.layers,
            "hidden": inspection.hidden,
            "step": inspection.payload.get("step"),
        },
        "source": source,
        "text": text,
        "signals": list(inspection.signals),
        "gates": sorted(GATES),
        "bounded": sorted(BOUNDED),
        "acts": {s: [quantise(acts[s][k]) for k in range(inspection.layers)] for s in inspection.signals},
        "top": {
            name: [u.to_dict() for u in units]
            for name, units in top_units_by_feature(acts, text, inspection.language, FEATURES, top).items()
        },
        "initial": initial,
    }


def render_page(data: dict) -> str:
    assets = resources.files("charlstm") / "assets"
    page = (assets / "explorer.html").read_text(encoding="utf-8")
    # JSON inside <script>: "</script>" would end the element early, and "<!--<script>" would put the
    # parser in a state where even the page's own "</script>" does not: no "<" may appear. JSON
    # only has "<" inside strings, where \u003c reads back as the same character.
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    return (
        page.replace("/*STYLE*/", (assets / "explorer.css").read_text(encoding="utf-8"))
        .replace("/*SCRIPT*/", (assets / "explorer.js").read_text(encoding="utf-8"))
        .replace("{{TITLE}}", _html_escape(data["title"]))
        .replace("/*DATA*/", payload)
    )


def _html_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def surprise_data(inspection: Inspection, text: str, ablate: list[tuple[int, int]] | None = None) -> dict:
    """The page's surprise row: each character's bits and the model's top 5 (the text scored as a
    file, after a document separator); with `ablate` (1-based layer, neuron), also how many bits
    each character gains with those units ablated."""
    from ..core.backend import cpu_threads, torch_threads

    # One thread, as the trace: at a small model's sizes a second thread only waits (and on a busy
    # machine the batched steps of the ablation ran 20× slower with two).
    with torch_threads(cpu_threads(inspection.device, 1)):
        return _surprise_data(inspection, text, ablate)


def _surprise_data(inspection: Inspection, text: str, ablate: list[tuple[int, int]] | None) -> dict:
    import torch

    from ..core.units import ablation
    from ..evaluation.surprise import per_char_bits
    from .interventions import bits_with_interventions

    tokens = np.concatenate([[inspection.vocab.doc_sep], inspection.vocab.encode(text)])
    bits, top_ids, top_probs = per_char_bits(inspection.model, tokens, device=inspection.device)
    symbols = inspection.vocab.symbols
    out = {
        "bits": [round(float(b), 3) for b in bits],
        "top": [
            [[symbols[i], round(float(p), 3)] for i, p in zip(ids, probs, strict=True)]
            for ids, probs in zip(top_ids.tolist(), top_probs.tolist(), strict=True)
        ],
    }
    if ablate:
        from ..core.engine import StepEngine

        engine = StepEngine(inspection.model, torch.float32)
        group = [ablation(inspection.kind, layer, neuron) for layer, neuron in ablate]
        scored = bits_with_interventions(engine, torch.from_numpy(tokens), [[], group])
        out["ablation"] = {
            "units": [list(u) for u in ablate],
            "delta": [round(float(d), 3) for d in scored[1] - scored[0]],
            "bpc": float(scored[0].mean()),
            "bpc_ablated": float(scored[1].mean()),
        }
    return out


def write_explorer(
    out: str | Path,
    inspection: Inspection,
    text: str,
    source: str,
    layer: int | None = None,
    neuron: int | None = None,
    signal: str | None = None,
    ablate: list[tuple[int, int]] | None = None,
) -> dict:
    """Trace `text`, write the explorer page to `out` (see userio.write_output), return a summary.

    The page opens on `layer`/`neuron`/`signal` when given (1-based layer, 0-based neuron), else on
    the unit that best follows indentation. It holds the model's surprise at each character too,
    and with `ablate` the change each character's bits undergo with those units ablated.
    """
    if len(text) > most_chars(inspection):
        most = most_chars(inspection)
        raise CharlstmError(
            f"{len(text):,} characters are too many for one page with this model; "
            f"use at most {most:,} (--max-chars {most})"
        )
    acts = activations(inspection.model, inspection.vocab, text, exact=inspection.exact)
    data = explorer_data(inspection, text, source, acts, initial={})
    data["surprise"] = surprise_data(inspection, text, ablate)
    best = (data["top"].get("indent") or [{"layer": 1, "neuron": 0, "signal": "hidden"}])[0]
    data["initial"] = {
        "layer": layer or best["layer"],
        "neuron": neuron if neuron is not None else (best["neuron"] if layer is None else 0),
        "signal": signal or (best["signal"] if layer is None else "hidden"),  # every kind has a hidden state
    }
    page = render_page(data).encode("utf-8")
    if len(page) > MAX_PAGE_BYTES:  # most_chars bounds the worst case: never a page over the cap
        raise CharlstmError(
            f"the page would weigh {len(page):,} bytes, over its cap of {MAX_PAGE_BYTES:,}; use --max-chars"
        )
    write_output(out, page)
    return {
        "path": str(out),
        "bytes": len(page),
        "chars": len(text),
        "layers": inspection.layers,
        "hidden": inspection.hidden,
        "signals": data["signals"],
    }
