"""Surprise: how many bits each character of a text costs the model, and what it expected instead.

`charlstm eval --per-char` scores a file as one stream (a document separator first, the state
carried through the whole file, so every character has all of the file before it as context) and
keeps, for each character, its bits (−log2 of the probability the model gave it) and the model's
five most likely characters at that point. Where the model is surprised — a typo, an unusual
name, code unlike its corpus — the bits are high. The total is the sum of the characters' bits,
so the file's bits per character is their mean. (Plain `charlstm eval` cuts texts longer than
4,096 characters into lanes scored side by side, each starting afresh; on such a file its figure is
a little higher than this one.)
"""

from __future__ import annotations

import html
import math
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from ..core.errors import CharlstmError
from ..core.model import LN2
from ..core.vocab import NEWLINE_MARK

SEQ_LEN = 256  # characters per forward pass; the state carries, so this sets speed, not the score
TOP = 5  # predictions kept per character
MAX_BITS = 10.0  # bits drawn at full colour (a probability of 1/1024)
SURPRISED = (255, 255, 255), (203, 24, 29)  # white (no surprise) to red (ColorBrewer Reds)


@torch.no_grad()
def per_char_bits(model, tokens: np.ndarray, *, device="cpu", autocast=nullcontext, top: int = TOP):
    """Score tokens[1:] given what precedes each: bits [T] (float64), the `top` most likely next
    tokens [T, top] and their probabilities [T, top] (float32)."""
    steps = len(tokens) - 1
    if steps < 1:
        raise CharlstmError("nothing to score: the text needs at least one character")
    model.eval()
    bits = np.empty(steps, dtype=np.float64)
    top_ids = np.empty((steps, top), dtype=np.int64)
    top_probs = np.empty((steps, top), dtype=np.float32)
    state = None
    for start in range(0, steps, SEQ_LEN):
        end = min(start + SEQ_LEN, steps)
        x = torch.as_tensor(np.asarray(tokens[start:end], dtype=np.int64), device=device)[None]
        y = torch.as_tensor(np.asarray(tokens[start + 1 : end + 1], dtype=np.int64), device=device)
        with autocast():
            logits, state = model(x, state)
        log_probs = torch.log_softmax(logits[0].float(), dim=-1)
        bits[start:end] = (-log_probs.gather(1, y[:, None])[:, 0].cpu().double() / LN2).numpy()  # MPS has no float64
        values, ids = log_probs.topk(min(top, log_probs.shape[-1]), dim=-1)
        top_ids[start:end, : ids.shape[1]] = ids.cpu().numpy()
        top_probs[start:end, : ids.shape[1]] = values.exp().cpu().numpy()
    return bits, top_ids, top_probs


def surprise(
    checkpoint: str | Path | None, text_file: str | Path, device: str = "auto", precision: str | None = None
) -> dict:
    """`charlstm eval --per-char --text-file F`: every character of F with its bits and the model's
    top predictions, plus the totals. `precision` None: the one the run trained with, as eval."""
    from .evaluate import load_for_scoring
    from ..core.userio import read_text_source

    opened, prec = load_for_scoring(checkpoint, device, precision)
    path, payload, model, vocab, dev = opened.path, opened.payload, opened.model, opened.vocab, opened.device
    text = read_text_source(text_file)
    tokens = np.concatenate([[vocab.doc_sep], vocab.encode(text)])
    start = time.perf_counter()
    bits, top_ids, top_probs = per_char_bits(model, tokens, device=dev, autocast=prec.autocast)
    seconds = time.perf_counter() - start
    symbols = vocab.symbols
    return {
        "source": str(text_file),
        "checkpoint": str(path),
        "step": payload.get("step"),
        "precision": prec.name,
        "device": str(dev),
        "chars": len(text),
        "bits": float(bits.sum()),
        "bpc": float(bits.mean()),
        "unknown_chars": vocab.unknown_chars(text),
        "seconds": round(seconds, 3),
        "text": text,
        "characters": [
            {
                "char": ch,
                "bits": round(float(b), 4),
                "top": [[symbols[i], round(float(p), 4)] for i, p in zip(ids, probs)],
            }
            for ch, b, ids, probs in zip(text, bits, top_ids.tolist(), top_probs.tolist())
        ],
    }


def colour_of_bits(bits: float) -> tuple[int, int, int]:
    t = min(max(bits, 0.0) / MAX_BITS, 1.0) if math.isfinite(bits) else 1.0
    (r0, g0, b0), (r1, g1, b1) = SURPRISED
    return round(r0 + (r1 - r0) * t), round(g0 + (g1 - g0) * t), round(b0 + (b1 - b0) * t)


def most_surprising(result: dict, count: int = 10) -> list[dict]:
    """The `count` characters that cost the most bits, with their line and column."""
    text = result["text"]
    bits = np.array([c["bits"] for c in result["characters"]])
    out = []
    for t in np.argsort(-bits, kind="stable")[:count].tolist():
        line = text.count("\n", 0, t) + 1
        column = t - text.rfind("\n", 0, t)  # from 1, as editors count
        out.append({"position": t, "line": line, "column": column, **result["characters"][t]})
    return out


def surprise_html(result: dict) -> str:
    """A self-contained page: the text coloured by surprise; hovering a character shows its bits
    and the model's five guesses."""
    spans = []
    for entry in result["characters"]:
        ch = entry["char"]
        guesses = ", ".join(f"{shown_char(sym)} {p:.0%}" for sym, p in entry["top"])
        tip = f"{entry['bits']:.2f} bits for {shown_char(ch)}; expected: {guesses}"
        shown = NEWLINE_MARK + "\n" if ch == "\n" else html.escape(ch if ch.isprintable() or ch == "\t" else "?")
        r, g, b = colour_of_bits(entry["bits"])
        spans.append(f'<span style="background:rgb({r},{g},{b})" title="{html.escape(tip, quote=True)}">{shown}</span>')
    title = html.escape(f"surprise: {result['source']} — {result['bpc']:.3f} bits per character ({result['checkpoint']})")
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>" + title + "</title><style>"
        "body{font:14px/1.45 ui-monospace,Menlo,Consolas,monospace;margin:2em}"
        "pre{white-space:pre-wrap;tab-size:4}h1{font-size:15px}"
        "</style></head><body><h1>" + title + "</h1>"
        f"<p>White: expected; red: {MAX_BITS:g} bits or more (the model gave the character under 1/1024). "
        "Hover a character for its bits and the model's five guesses.</p><pre>" + "".join(spans) + "</pre></body></html>"
    )


def shown_char(ch: str) -> str:
    return {"\n": NEWLINE_MARK, " ": "␣", "\t": "→", "\x1c": "␜"}.get(ch, ch if ch.isprintable() else repr(ch))
