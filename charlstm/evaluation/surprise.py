"""Surprise: how many bits each character of a text costs the model, and what it expected instead.

`charlstm eval --per-char` scores a file as one stream (a document separator first, the state
carried through the whole file, so every character has all of the file before it as context) and
gives, for each character, its bits (−log2 of the probability the model gave it) and the model's
five most likely characters at that point. Where the model is surprised — a typo, an unusual
name, code unlike its corpus — the bits are high. The total is the sum of the characters' bits,
so the file's bits per character is their mean. (Plain `charlstm eval` cuts texts longer than
4,096 characters into lanes scored side by side, each starting afresh; on such a file its figure is
a little higher than this one.)

The scores come a block of characters at a time (`score_blocks`) and each consumer keeps only what
it needs: the totals, the most surprising characters, the page (at most MAX_PAGE_BYTES of it), while
the coloured text and the JSON go out as they come. Memory does not grow with the text beyond the
text itself and its ids.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterator
from contextlib import nullcontext

import numpy as np
import torch

from ..core.errors import CharlstmError
from ..core.model import LN2
from ..core.userio import MAX_PAGE_BYTES
from ..core.vocab import NEWLINE_MARK

SEQ_LEN = 256  # characters per forward pass; the state carries, so this sets speed, not the score
BLOCK = 32 * SEQ_LEN  # characters handed to the consumers at a time
TOP = 5  # predictions kept per character
MAX_BITS = 10.0  # bits drawn at full colour (a probability of 1/1024)
SURPRISED = (255, 255, 255), (203, 24, 29)  # white (no surprise) to red (ColorBrewer Reds)


@torch.no_grad()
def score_blocks(
    model, tokens, *, device="cpu", autocast=nullcontext, top: int = TOP, block: int = BLOCK
) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Score tokens[1:] given what precedes each, a block at a time: yields (start, bits [n]
    (float64), the `top` most likely next tokens [n, top] and their probabilities [n, top]
    (float32)) for the characters start .. start + n. `block` is a multiple of SEQ_LEN, so the
    forward passes are the same whatever the block."""
    steps = len(tokens) - 1
    if steps < 1:
        raise CharlstmError("nothing to score: the text needs at least one character")
    model.eval()
    state = None
    for first in range(0, steps, block):
        last = min(first + block, steps)
        bits = np.empty(last - first, dtype=np.float64)
        top_ids = top_probs = None
        for start in range(first, last, SEQ_LEN):
            end = min(start + SEQ_LEN, last)
            x = torch.as_tensor(np.asarray(tokens[start:end], dtype=np.int64), device=device)[None]
            y = torch.as_tensor(np.asarray(tokens[start + 1 : end + 1], dtype=np.int64), device=device)
            with autocast():
                logits, state = model(x, state)
            log_probs = torch.log_softmax(logits[0].float(), dim=-1)
            bits[start - first : end - first] = (
                -log_probs.gather(1, y[:, None])[:, 0].cpu().double() / LN2
            ).numpy()  # MPS has no float64
            values, ids = log_probs.topk(min(top, log_probs.shape[-1]), dim=-1)
            if top_ids is None:
                top_ids = np.empty((last - first, ids.shape[1]), dtype=np.int64)
                top_probs = np.empty((last - first, ids.shape[1]), dtype=np.float32)
            top_ids[start - first : end - first] = ids.cpu().numpy()
            top_probs[start - first : end - first] = values.exp().cpu().numpy()
        yield first, bits, top_ids, top_probs


def per_char_bits(model, tokens: np.ndarray, *, device="cpu", autocast=nullcontext, top: int = TOP):
    """Every character's scores at once (`score_blocks` joined): for short texts and tests."""
    parts = list(score_blocks(model, tokens, device=device, autocast=autocast, top=top))
    return tuple(np.concatenate([p[k] for p in parts]) for k in (1, 2, 3))


class Totals:
    """The file's bits, summed as the blocks come."""

    def __init__(self):
        self.bits, self.chars = 0.0, 0

    def add(self, start: int, bits: np.ndarray, top_ids, top_probs) -> None:
        self.bits += float(bits.sum())
        self.chars += len(bits)

    @property
    def bpc(self) -> float:
        return self.bits / max(self.chars, 1)


class MostSurprising:
    """The `count` characters that cost the most bits (the earlier first among equals)."""

    def __init__(self, count: int = 10):
        self.count = count
        self.position = np.empty(0, dtype=np.int64)
        self.bits = np.empty(0, dtype=np.float64)
        self.top_ids: np.ndarray | None = None
        self.top_probs: np.ndarray | None = None

    def add(self, start: int, bits: np.ndarray, top_ids: np.ndarray, top_probs: np.ndarray) -> None:
        keep = np.argsort(-bits, kind="stable")[: self.count]
        position = np.concatenate([self.position, start + keep])
        all_bits = np.concatenate([self.bits, bits[keep]])
        ids = top_ids[keep] if self.top_ids is None else np.concatenate([self.top_ids, top_ids[keep]])
        probs = top_probs[keep] if self.top_probs is None else np.concatenate([self.top_probs, top_probs[keep]])
        order = np.lexsort((position, -all_bits))[: self.count]
        self.position, self.bits, self.top_ids, self.top_probs = (
            position[order],
            all_bits[order],
            ids[order],
            probs[order],
        )

    def entries(self, text: str, symbols) -> list[dict]:
        """Each with its position, line and column (from 1, as editors count), bits and the top guesses."""
        out = []
        for k, t in enumerate(self.position.tolist()):
            line = text.count("\n", 0, t) + 1
            column = t - text.rfind("\n", 0, t)
            out.append(
                {
                    "position": t,
                    "line": line,
                    "column": column,
                    "char": text[t],
                    "bits": round(float(self.bits[k]), 4),
                    "top": guesses(symbols, self.top_ids[k], self.top_probs[k]),
                }
            )
        return out


def guesses(symbols, ids, probs, digits: int = 4) -> list[list]:
    """The model's top guesses at one character: [[symbol, probability], ...]."""
    return [[symbols[i], round(p, digits)] for i, p in zip(ids.tolist(), probs.tolist(), strict=True)]


class SurprisePage:
    """The HTML page of `eval --per-char --html`: the text coloured by surprise, each character's
    bits and the model's guesses on hovering. It holds the characters from the start of the text
    while they fit in `cap` bytes, and says so on the page when the text is longer."""

    def __init__(self, text: str, symbols, source: str, checkpoint: str, cap: int | None = None):
        cap = MAX_PAGE_BYTES if cap is None else cap
        self.text, self.symbols, self.source, self.checkpoint, self.cap = text, symbols, source, checkpoint, cap
        self.spans: list[str] = []
        self.budget = cap - len(self._frame(99.0, len(text), 0).encode("utf-8")) - 64  # the bpc's digits, the counts
        self.full = self.budget <= 0

    @property
    def shown(self) -> int:
        return len(self.spans)

    def add(self, start: int, bits: np.ndarray, top_ids: np.ndarray, top_probs: np.ndarray) -> None:
        if self.full:
            return
        for k, b in enumerate(bits.tolist()):
            if not self.add_char(self.text[start + k], b, guesses(self.symbols, top_ids[k], top_probs[k], 2)):
                return

    def add_char(self, ch: str, bits: float, top: list) -> bool:
        """Add one character's span if it fits; False (and no more) once the page is full."""
        shown_guesses = ", ".join(f"{shown_char(sym)} {p:.0%}" for sym, p in top)
        tip = f"{bits:.2f} bits for {shown_char(ch)}; expected: {shown_guesses}"
        shown = "↵\n" if ch == "\n" else html.escape(ch if ch.isprintable() or ch == "\t" else "?")
        r, g, b = colour_of_bits(bits)
        span = f'<span style="background:rgb({r},{g},{b})" title="{html.escape(tip, quote=True)}">{shown}</span>'
        size = len(span.encode("utf-8", "surrogatepass"))
        if size > self.budget:
            self.full = True
            return False
        self.budget -= size
        self.spans.append(span)
        return True

    def render(self, bpc: float) -> str:
        head, tail = self._frame(bpc, len(self.text), self.shown).split("\0")
        return head + "".join(self.spans) + tail

    def _frame(self, bpc: float, chars: int, shown: int) -> str:
        """The page around its spans (at "\\0")."""
        title = html.escape(f"surprise: {self.source} — {bpc:.3f} bits per character ({self.checkpoint})")
        note = ""
        if shown < chars:
            note = (
                f"<p><b>This page shows the first {shown:,} of {chars:,} characters</b>: a page holds at most "
                f"{self.cap / 1e6:g} MB. The bits per character above are over all {chars:,}; "
                "<code>--json</code> gives every character.</p>"
            )
        return (
            "<!doctype html><html><head><meta charset=utf-8><title>" + title + "</title><style>"
            "body{font:14px/1.45 ui-monospace,Menlo,Consolas,monospace;margin:2em}"
            "pre{white-space:pre-wrap;tab-size:4}h1{font-size:15px}"
            "</style></head><body><h1>"
            + title
            + "</h1>"
            + note
            + f"<p>White: expected; red: {MAX_BITS:g} bits or more (the model gave the character under 1/1024). "
            "Hover a character for its bits and the model's five guesses.</p><pre>\0</pre></body></html>"
        )


def colour_of_bits(bits: float) -> tuple[int, int, int]:
    t = min(max(bits, 0.0) / MAX_BITS, 1.0) if math.isfinite(bits) else 1.0
    (r0, g0, b0), (r1, g1, b1) = SURPRISED
    return round(r0 + (r1 - r0) * t), round(g0 + (g1 - g0) * t), round(b0 + (b1 - b0) * t)


def shown_char(ch: str) -> str:
    return {"\n": NEWLINE_MARK, " ": "␣", "\t": "→", "\x1c": "␜"}.get(ch, ch if ch.isprintable() else repr(ch))
