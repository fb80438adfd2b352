"""`charlstm sample`'s terminal side: the stream writer and the command runner.

`StreamWriter` renders what is generated: plain text when piped, syntax-highlighted lines on a
terminal. Generated text only ever goes through Pygments and plain writes, never through rich
markup, so `[...]` in code prints as itself. `stream_samples` feeds it a sampler's batch, one
sample after another; `run_sampling` is the command: checks, messages on stderr, --out.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import sys
from collections import deque
from pathlib import Path
from typing import TextIO

from ..core.backend import torch_threads
from ..core.config import check_threads
from ..core.errors import CharlstmError, shown_path
from ..core.userio import check_output, refuse_output_over_input, silence_stdout, write_output
from ..core.vocab import DOC_SEP, NEWLINE_MARK  # --watch: a newline's value shows on the mark
from ..sampling.constrained import CLOSE_ALLOWANCE
from ..sampling.sample import Plan, Sampler, SampleSettings

NEW_FILE_RULE = "── new file ──"  # how a generated document separator (a new file starting) is shown


class TextChunks:
    """Text that grows a piece at a time, kept as strings of up to CHUNK pieces each: a list of
    one-character strings costs 8 bytes a character, a string 1 to 4."""

    CHUNK = 1024

    def __init__(self, start: str = ""):
        self.chunks = [start] if start else []
        self._tail: list[str] = []

    def add(self, piece: str) -> None:
        self._tail.append(piece)
        if len(self._tail) >= self.CHUNK:
            self.chunks.append("".join(self._tail))
            self._tail.clear()

    def pieces(self) -> list[str]:
        return [*self.chunks, "".join(self._tail)]


class StreamWriter:
    """Writes generated text as it arrives.

    Plain mode (piped, redirected, --no-color): the characters themselves, flushed as they come;
    a generated document separator becomes a line `── new file ──`. Colour mode (a terminal):
    the current line appears plain character by character, and once its newline arrives it is
    redrawn highlighted by the corpus's Pygments lexer, which sees the previous lines as context.
    On a terminal, control characters other than tab and newline show as their Unicode pictures
    (␛ for escape), so generated text can never drive the terminal. With `keep_plain`, it also
    keeps all it wrote as plain text (`plain`, what --out saves); otherwise it keeps only the
    current line and the lexer's context.
    """

    CONTEXT_LINES = 30  # lines of the current file the lexer sees before the line it colours

    def __init__(
        self,
        out: TextIO,
        color: bool = False,
        language: str | None = None,
        width: int | None = None,
        terminal: bool | None = None,
        paint=None,
        keep_plain: bool = False,
    ):
        self.out = out
        self.color = color or paint is not None
        self.terminal = self.color or (_isatty(out) if terminal is None else terminal)
        self.lexer = self.formatter = None
        if color and language and paint is None:
            self.lexer, self.formatter = _pygments_for(language)
        self.paint = paint  # --watch: value ↦ the escape codes that colour a character by it
        self.width = width or shutil.get_terminal_size().columns
        # Everything written, as plain text (what --out saves): kept only when asked for, since a
        # long stream would otherwise grow without bound.
        self._plain = TextChunks() if keep_plain else None
        self._line = ""  # the current, unfinished line
        self._context: deque[str] = deque(maxlen=self.CONTEXT_LINES)

    def write(self, text: str, value: float | None = None) -> None:
        """Write `text`; with a painter (--watch) and a `value`, on the background it gives."""
        sgr = self.paint(value) if self.paint is not None and value is not None else None
        pieces = []
        for ch in text:
            if ch == DOC_SEP:
                pieces.append(self._end_line(force_newline=False))
                pieces.append(self._rule(NEW_FILE_RULE))
                self._context.clear()
            elif ch == "\n":
                if sgr:  # the newline's own value, on a mark
                    pieces.append(f"{sgr}{NEWLINE_MARK}\x1b[0m")
                pieces.append(self._end_line(force_newline=True))
            else:
                if self._plain is not None:
                    self._plain.add(ch)
                if self.terminal:
                    ch = terminal_safe(ch)
                self._line += ch
                pieces.append(f"{sgr}{ch}\x1b[0m" if sgr else ch)
        self.out.write("".join(pieces))
        self.out.flush()

    @property
    def plain(self) -> str:
        """Everything written so far, as plain text; needs `keep_plain`."""
        if self._plain is None:
            raise ValueError("this StreamWriter keeps no text (keep_plain=False)")
        return "".join(self._plain.pieces())

    def separator(self, label: str) -> None:
        """A line between samples: `──── sample 2/4 ────` (dim on a terminal)."""
        self.finish()
        self._context.clear()
        self.out.write(self._rule(f"──── {label} ────"))
        self.out.flush()

    def finish(self) -> None:
        """End the current line, if one is open, so what follows starts on its own line."""
        if self._line:
            self.out.write(self._end_line(force_newline=True))
            self.out.flush()

    def _rule(self, text: str) -> str:
        if self._plain is not None:
            self._plain.add(text + "\n")
        return f"\x1b[2m{text}\x1b[0m\n" if self.color else text + "\n"

    def _end_line(self, force_newline: bool) -> str:
        line, self._line = self._line, ""
        if not line and not force_newline:
            return ""
        if self._plain is not None:
            self._plain.add("\n")
        redraw = ""
        # Redraw only a line that fits the terminal: "\r" returns to the start of the last row only.
        if self.lexer is not None and line and len(line.expandtabs()) < self.width:
            redraw = "\r\x1b[2K" + self._highlight(line)
        self._context.append(line)
        return redraw + "\n"

    def _highlight(self, line: str) -> str:
        import pygments

        context = "".join(f"{prev}\n" for prev in self._context)
        start = len(context)
        tokens = []
        for index, kind, value in self.lexer.get_tokens_unprocessed(context + line + "\n"):
            end = index + len(value)
            if end <= start:
                continue
            value = value[max(0, start - index) : len(value) - max(0, end - (start + len(line)))]
            if value:
                tokens.append((kind, value))
        return pygments.format(tokens, self.formatter).rstrip("\n")


class UnitPainter:
    """--watch on a terminal: a character's background by the watched unit's value, red negative,
    blue positive, as `inspect-neuron` colours it (hidden state on −1..1; the unbounded cell state
    scaled by the largest |value| seen so far, at least 1)."""

    def __init__(self, signal: str):
        self.signal, self.scale = signal, 1.0

    def __call__(self, value: float) -> str:
        from .render import colour_of, ink_on

        if self.signal == "cell" and math.isfinite(value):
            self.scale = max(self.scale, abs(value))
        r, g, b = colour_of(value, self.signal, self.scale)
        ink = "30" if ink_on((r, g, b)) == "black" else "97"
        return f"\x1b[48;2;{r};{g};{b}m\x1b[{ink}m"


def _pygments_for(language: str):
    from pygments.formatters import TerminalFormatter
    from pygments.lexers import get_lexer_by_name
    from pygments.util import ClassNotFound

    try:
        lexer = get_lexer_by_name(language, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return None, None
    # The 16 named colours follow the terminal's own palette, so text stays readable on light and
    # dark backgrounds alike (plain text keeps the default colour).
    return lexer, TerminalFormatter()


def stream_samples(
    sampler: Sampler, settings: SampleSettings, writer: StreamWriter, keep_texts: bool = False, plan: Plan | None = None
) -> list[str] | None:
    """Generate as one batch (`Sampler.generate`: drawn, or one beam-searched sample) and print the
    samples one after another, the first as it is made.

    A sample whose turn has not come yet is kept; when its turn comes, what it has so far is
    printed at once and the rest streams. What has been printed is not kept: with `keep_texts`,
    returns every sample's text (prime included), else None.
    """
    n = settings.num_samples
    texts: list[list[str]] | None = [[settings.prime] for _ in range(n)] if keep_texts else None
    waiting: list[TextChunks | None] = [None] + [TextChunks(settings.prime) for _ in range(n - 1)]  # not yet shown
    current = 0

    def begin(index: int) -> None:
        if n > 1:
            writer.separator(f"sample {index + 1}/{n}")
        kept = [settings.prime] if index == 0 else waiting[index].pieces()
        waiting[index] = None
        for piece in kept:  # a piece at a time: the writer's work on a piece costs more than its text
            writer.write(piece)

    begin(0)
    if settings.watch is not None:  # one sample, each character with the watched unit's value
        for chars, _, value in sampler.generate(settings, plan):
            if texts is not None:
                texts[0].append(chars[0])
            writer.write(chars[0], value)
        writer.finish()
        return ["".join(texts[0])] if texts is not None else None
    for chars, done in sampler.generate(settings, plan):
        if texts is not None:
            for parts, ch in zip(texts, chars, strict=True):
                parts.append(ch)
        for index in range(current + 1, n):
            waiting[index].add(chars[index])
        writer.write(chars[current])
        while current < n - 1 and done[current]:  # move on past every sample that has stopped
            current += 1
            begin(current)
    # Generation is over: all samples are complete; show those not yet shown.
    while current < n - 1:
        current += 1
        begin(current)
    writer.finish()
    return ["".join(parts) for parts in texts] if texts is not None else None


# Characters a terminal would act on rather than show: C1 controls (some terminals read U+009B as
# an escape sequence), bidirectional overrides and isolates (U+202E reverses what follows) and the
# line and paragraph separators. On a terminal they show as "?", as inspect-neuron shows them.
INVISIBLE_ACTORS = frozenset(
    [
        *map(chr, range(0x80, 0xA0)),
        *"\u061c\u200e\u200f\u2028\u2029",
        *map(chr, range(0x202A, 0x202F)),
        *map(chr, range(0x2066, 0x206A)),
    ]
)


def terminal_safe(ch: str) -> str:
    """`ch` as a terminal shows it harmlessly: C0 controls but tab as their pictures (␛ for escape)."""
    if ch < " " and ch != "\t":
        return chr(0x2400 + ord(ch))
    if ch == "\x7f":
        return "\u2421"
    return "?" if ch in INVISIBLE_ACTORS else ch


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def is_color_terminal(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return _isatty(stream)


def stdout_text() -> TextIO:
    """stdout that never fails on a character its encoding lacks (generated text may have any)."""
    out = sys.stdout
    if hasattr(out, "reconfigure"):
        try:
            out.reconfigure(errors="replace")
        except (ValueError, OSError):
            pass
    return out


def run_sampling(
    checkpoint: str | None,
    settings: SampleSettings,
    *,
    out: Path | None = None,
    color: bool = True,
    device: str = "cpu",
    precision: str = "auto",
    threads: int | None = None,
    console=None,
) -> None:
    """`charlstm sample`: load, stream to stdout (highlighted on a terminal), then save `out`.

    Messages go to `console` (stderr). One thread by default: a step is too small to share.
    """
    from rich.console import Console

    check_threads(threads)
    if sys.stdout is None and out is None:  # started with stdout closed (`>&-`)
        raise CharlstmError("stdout is closed: nowhere to write the samples (save them with -o FILE)")
    if out is not None:
        check_output(out)  # a folder or an impossible path, refused before the generation, not after
    with torch_threads(threads or 1):
        _run_sampling(checkpoint, settings, out, color, device, precision, console or Console(stderr=True))


def _run_sampling(
    checkpoint: str | None, settings: SampleSettings, out: Path | None, color: bool, device: str, precision: str, err
) -> None:
    from rich.markup import escape

    sampler, opened = Sampler.from_checkpoint(checkpoint, device=device, precision=precision)
    path, payload, language = opened.path, opened.payload, opened.language
    refuse_output_over_input({"-o": out}, {"the checkpoint": path})  # before anything is generated
    unknown = sampler.vocab.unknown_chars(settings.prime)
    if unknown:
        err.print(
            f"[yellow]warning:[/yellow] the prime has characters the model does not know, read as unknown: "
            f"{escape(' '.join(repr(ch) for ch in unknown))}",
            highlight=False,
            soft_wrap=True,
        )
    if settings.stop is not None and sampler.vocab.unknown_chars(settings.stop):
        err.print(
            "[yellow]warning:[/yellow] the stop text has characters the model never generates",
            highlight=False,
            soft_wrap=True,
        )
    engine = sampler.engine
    err.print(
        f"[dim]{escape(shown_path(path))}: {engine.kind} {engine.layers}×{engine.hidden}, "
        f"step {payload.get('step', '?')}, "
        f"{str(engine.weight_dtype).removeprefix('torch.')} weights on {sampler.device}[/dim]",
        highlight=False,
        soft_wrap=True,
    )

    plan = sampler.plan(settings)  # the loop generate runs, the units resolved against the model
    if sampler.device.type == "cuda":  # on a CPU there is one loop and nothing to say
        err.print(f"[dim]{escape(plan.note)}[/dim]", highlight=False)

    stream = stdout_text() if sys.stdout is not None else io.StringIO()  # stdout closed: only -o gets them
    on_terminal = color and is_color_terminal(stream)
    for item in plan.interventions:
        err.print(f"[dim]holding unit {escape(item.describe())} at every step[/dim]", highlight=False)
    paint = None
    if plan.watch is not None:
        layer, _, neuron, signal = plan.watch
        if on_terminal:
            paint = UnitPainter(signal)
            err.print(
                f"[dim]colouring by layer {layer + 1}, neuron {neuron}, {signal}: red negative, blue positive"
                f"{' (scaled by the largest |value| so far)' if signal == 'cell' else ''}[/dim]",
                highlight=False,
            )
        else:
            why = "colour is off (--no-color, NO_COLOR or TERM=dumb)" if _isatty(stream) else "this output is not one"
            err.print(f"[dim]--watch colours a terminal only, and {why}: plain text[/dim]", highlight=False)
    highlight = on_terminal and paint is None
    writer = StreamWriter(stream, color=highlight, language=language, paint=paint, keep_plain=out is not None)
    try:
        stream_samples(sampler, settings, writer, plan=plan)
    except BrokenPipeError:
        silence_stdout()  # the reader went away (`| head`): stop quietly, as Unix tools do
        _save_out(out, writer, err, " (the text generated before the reader went away)")
        return
    except KeyboardInterrupt:
        _save_out(out, writer, err, " (the text generated before the interrupt)")
        raise
    if plan.path == "graphed" and sampler.last_path is not None and sampler.last_path[0] != "graphed":
        err.print(f"[yellow]warning:[/yellow] sampled eagerly: {escape(sampler.last_path[1])}", highlight=False)
    _report_constraint(settings, sampler.last_stats, err)
    _save_out(out, writer, err)


def _report_constraint(settings: SampleSettings, stats, err) -> None:
    """What --constrain and --valid did, on stderr."""
    from .eval_command import valid_summary

    if settings.valid:
        err.print(
            f"[dim]{valid_summary(stats.tries, stats.dropped, stats.lines_redrawn, stats.seconds)}[/dim]",
            highlight=False,
            soft_wrap=True,
        )
        if stats.unfinished:
            err.print(
                f"[yellow]warning:[/yellow] {stats.unfinished} sample(s) ran out of draws before reaching --length",
                highlight=False,
            )
    elif settings.constrain and stats.unclosed:
        err.print(
            f"[yellow]warning:[/yellow] {stats.unclosed} sample(s) ended with a string or bracket still open "
            f"(no close within {CLOSE_ALLOWANCE:,} characters past --length)",
            highlight=False,
        )


def _save_out(out: Path | None, writer: StreamWriter, err, note: str = "") -> None:
    """--out: what was generated, as plain text; after a stop that ended the stream early, so far."""
    from rich.markup import escape

    if out is not None:
        write_output(out, writer.plain.encode("utf-8"))
        err.print(f"[dim]wrote {escape(shown_path(out))}{note}[/dim]", highlight=False, soft_wrap=True)
