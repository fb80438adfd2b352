"""Drawing code that is lexically possible (--constrain) and emitting only units that parse (--valid).

--constrain: before each draw, every sample's lexer (lexers.py) says which characters would make
its text lexically impossible, and their logits get −inf (an additive row, the same on a GPU);
a mask that forbids nothing leaves the draw, and so the text, as it was. Past --length, a sample
goes on until its units close (outside strings, brackets and open blocks), at most CLOSE_ALLOWANCE
characters more.

--valid: on top of that, each top-level unit is parsed when it ends (syntax.py). A unit that
parses is emitted; one that does not is rolled back — the engine state, the logits, the lexer and
the text restored to the unit's start — and drawn again with fresh noise, up to `max_tries` times,
after which it is dropped (not shown, the state going on from it) and the next unit begins.
Inside a unit, each line (Python) or statement (brace languages) is checked as it ends: when the
unit so far can no longer parse, only that line or statement is drawn again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from .lexers import LexicalMask, lexer_for
from .syntax import brace_prefix_error, check_language, parse_error, python_prefix_error

CLOSE_ALLOWANCE = 2000  # characters a sample may run past --length to close its units
DRAWS_PER_CHARACTER = 20  # --valid: draws allowed per character asked for before a sample gives up
DEFAULT_MAX_TRIES = 8  # --valid: draws of one unit before it is dropped
MAX_LINE = 1500  # --valid: characters of one line or statement (a docstring, a comment) before it is drawn again


def primed_lexer(language: str | None, prime: str):
    """The language's lexer after reading the prime (None when the language has no lexer)."""
    lexer = lexer_for(language)
    if lexer is None:
        return None
    for ch in prime:
        lexer.feed(ch)
    if hasattr(lexer, "open_members"):
        lexer.open_members()
    return lexer


@dataclass
class ValidStats:
    """What --valid did, for the report on stderr."""

    tries: list[int] = field(default_factory=list)  # draws per accepted unit (1: the first parsed)
    dropped: int = 0  # units given up after max_tries
    unfinished: int = 0  # samples that ran out of draws before reaching their length
    unclosed: int = 0  # --constrain: samples stopped before their units closed
    lines_redrawn: int = 0  # --valid, Python: logical lines drawn again because their unit could no longer parse
    seconds: float = 0.0


def constrained_steps(
    engine, rule, symbols, lexer, logits, state, clamps, noise, progress, length: int, stats: ValidStats
) -> Iterator[tuple]:
    """--constrain's loop: like the eager loop, with the lexical mask added before each draw."""
    batch = logits.shape[0]
    lexers = [lexer.clone() for _ in range(batch)]
    mask, done = LexicalMask(symbols, lexer, logits.device), progress.done
    t = 0
    while True:
        # In place: the engine returns fresh logits each step, and nothing else reads these.
        tokens = rule.choose(logits.add_(mask.rows_for(lexers)), None if noise is None else noise.at(t))
        chars = progress.advance(tokens.tolist())
        for lx, ch in zip(lexers, chars, strict=True):
            if ch:
                lx.feed(ch)
        t += 1
        if t >= length:
            for b, lx in enumerate(lexers):
                if not done[b] and (lx.at_rest or t >= length + CLOSE_ALLOWANCE):
                    done[b] = True
                    stats.unclosed += not lx.at_rest
        yield chars, done
        if all(done):
            return
        logits, state = engine.step(tokens, state, clamps)


@dataclass
class _Snapshot:
    """One sample's row at a point it may return to: the state and logits before drawing there."""

    position: int  # characters read, prime included
    state: list
    logits: torch.Tensor
    lexer: object


def take_snapshot(row: int, position: int, state, logits, lexer) -> _Snapshot:
    rows = [tuple(s[row].clone() for s in layer) for layer in state]
    return _Snapshot(position, rows, logits[row].clone(), lexer.clone())


class _UnitKeeper:
    """One sample under --valid: the text of the unit being written and where to roll it back to."""

    def __init__(self, prime: str, lexer, start: _Snapshot):
        self.prime_end = len(prime)
        self.lexer = lexer.clone()
        self.unit_start = getattr(lexer, "unit_start", 0)  # a brace prime may open a class body mid-text
        self.unit_start = min(self.unit_start, self.prime_end)
        self.buffer = list(prime[self.unit_start :])  # the unit's text so far
        self.start = start  # where a rejected unit goes back to
        self.line = start  # Python: the latest start of a line at column 0, a unit's possible start
        self.tries = 1  # draws of the current unit
        self.line_tries = 1  # draws of the current logical line (Python)
        self.emitted = 0

    def feed(self, ch: str) -> None:
        self.buffer.append(ch)
        self.lexer.feed(ch)

    def generated(self, end: int) -> str:
        """The unit's text from its start (or the prime's end) to `end`: what emitting it shows."""
        first = max(self.unit_start, self.prime_end)
        return "".join(self.buffer[first - self.unit_start : end - self.unit_start])

    def advance(self, end: int, snapshot: _Snapshot) -> None:
        """The unit before `end` is settled; the next begins there."""
        del self.buffer[: end - self.unit_start]
        self.unit_start, self.start, self.tries = end, snapshot, 1
        if snapshot.position == end:  # Python: the unit's first line starts there
            self.line, self.line_tries = snapshot, 1

    def roll_back(self) -> _Snapshot:
        snap = self.start
        del self.buffer[snap.position - self.unit_start :]
        self.lexer = snap.lexer.clone()
        self.line, self.line_tries = snap, 1
        self.tries += 1
        return snap


def valid_steps(
    engine,
    rule,
    symbols,
    language: str,
    prime: str,
    lexer,
    logits,
    state,
    clamps,
    noise,
    length: int,
    max_tries: int,
    stats: ValidStats,
    first_step: int = 0,
) -> Iterator[tuple]:
    """--valid's loop. Yields (pieces, done) per draw: each sample's newly accepted text ("" mostly)."""
    check_language(language)
    began = time.perf_counter()
    batch = logits.shape[0]
    mask = LexicalMask(symbols, lexer, logits.device, one_file=True)
    start = [take_snapshot(b, len(prime), state, logits, lexer) for b in range(batch)]
    keepers = [_UnitKeeper(prime, lexer, start[b]) for b in range(batch)]
    done, budget = [False] * batch, DRAWS_PER_CHARACTER * length + CLOSE_ALLOWANCE
    for t in range(first_step, first_step + budget):
        tokens = rule.choose(logits + mask.rows_for([k.lexer for k in keepers]), None if noise is None else noise.at(t))
        for b, i in enumerate(tokens.tolist()):
            if not done[b]:
                keepers[b].feed(symbols[i])
        logits, state = engine.step(tokens, state, clamps)
        pieces = [""] * batch
        for b, keeper in enumerate(keepers):
            if not done[b]:
                pieces[b] = _settle(b, keeper, language, state, logits, length, max_tries, stats, done)
        stats.seconds = time.perf_counter() - began
        yield pieces, done
        if all(done):
            return
    stats.unfinished += done.count(False)
    for b in range(batch):
        done[b] = True
    yield [""] * batch, done


def _settle(
    b: int,
    keeper: _UnitKeeper,
    language: str,
    state,
    logits,
    length: int,
    max_tries: int,
    stats: ValidStats,
    done: list[bool],
) -> str:
    """After a sample's draw: judge a unit that ended (emit it or roll it back) and, in Python, the
    logical line that ended (roll it back when no continuation could make the unit parse).
    Returns the text emitted."""
    lexer = keeper.lexer
    end, kind = lexer.boundary, getattr(lexer, "unit_kind", None)
    if end is None and lexer.at_rest:  # the unit closes here: the last one, once the length is reached
        pending = lexer.position - max(keeper.unit_start, keeper.prime_end)
        if pending > 0 and keeper.emitted + pending >= length:
            end, kind = lexer.position, ("member" if getattr(lexer, "base", 0) else "type")
    piece = ""
    if end is not None and end > keeper.unit_start:
        unit = "".join(keeper.buffer[: end - keeper.unit_start])
        judged = end > keeper.prime_end and kind != "closer"
        error = parse_error(unit, language, kind == "member") if judged else None
        if error is not None and keeper.tries < max_tries:
            restore_snapshot(b, keeper.roll_back(), state, logits)
            return ""
        if error is None:
            piece = keeper.generated(end)
            keeper.emitted += len(piece)
            if judged:
                stats.tries.append(keeper.tries)
        else:
            stats.dropped += 1
        keeper.advance(end, _resume_point(b, keeper, end, state, logits))
        if keeper.emitted >= length and end > keeper.prime_end:
            done[b] = True
            return piece
    if not _redrew_line(b, keeper, language, state, logits, max_tries, stats):
        lexer = keeper.lexer
        if _statement_starts(lexer):
            keeper.line, keeper.line_tries = take_snapshot(b, lexer.position, state, logits, lexer), 1
    return piece


def _statement_starts(lexer) -> bool:
    """A line (Python) or statement (brace languages) may begin here: a point to roll back to."""
    if lexer.language == "python":
        return lexer.line_start and lexer.column == 0 and lexer.mode == "code" and not lexer.brackets
    return lexer.statement_ended


def _prefix_error(keeper: _UnitKeeper, language: str) -> str | None:
    """After a line (Python) or statement (brace languages) ends: can the unit so far still parse?"""
    lexer = keeper.lexer
    if language == "python":
        return python_prefix_error("".join(keeper.buffer), lexer) if lexer.line_ended else None
    return brace_prefix_error("".join(keeper.buffer), lexer, language) if lexer.statement_ended else None


def _redrew_line(b: int, keeper: _UnitKeeper, language: str, state, logits, max_tries: int, stats: ValidStats) -> bool:
    """A line (Python) or a statement inside a unit's braces just ended: if no continuation can make
    its unit parse, roll it back to be drawn again (up to max_tries; then it stays, and the unit's
    own check decides)."""
    lexer = keeper.lexer
    if lexer.position <= keeper.prime_end:
        return False
    too_long = lexer.position - keeper.line.position > MAX_LINE
    if not too_long and _prefix_error(keeper, language) is None:
        return False
    if keeper.line_tries >= max_tries:
        if not too_long:
            return False  # it stays: the unit's own check decides
        restore_snapshot(b, keeper.roll_back(), state, logits)  # a line that never ends: the whole unit again
        return True
    stats.lines_redrawn += 1
    snap = keeper.line
    del keeper.buffer[snap.position - keeper.unit_start :]
    keeper.lexer, keeper.line_tries = snap.lexer.clone(), keeper.line_tries + 1
    restore_snapshot(b, snap, state, logits)
    return True


def _resume_point(b: int, keeper: _UnitKeeper, end: int, state, logits) -> _Snapshot:
    """The snapshot a unit starting at `end` rolls back to."""
    lexer = keeper.lexer
    if end == lexer.position:
        return take_snapshot(b, end, state, logits, lexer)
    if end <= keeper.prime_end:
        return keeper.start  # the unit begins in the prime: it can only be drawn again from the prime's end
    assert keeper.line.position == end, "a Python unit starts at a line whose start was kept"
    return keeper.line


def restore_snapshot(b: int, snap: _Snapshot, state, logits) -> None:
    for layer, saved in zip(state, snap.state, strict=True):
        for tensor, row in zip(layer, saved, strict=True):
            tensor[b].copy_(row)
    logits[b].copy_(snap.logits)
