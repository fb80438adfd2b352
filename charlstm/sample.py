"""Sampling: prime the model, then draw characters one at a time and stream them out.

The prime goes through the model's fused forward (O(prime) work, in chunks); after that every
character costs one `StepEngine.step` for the whole batch of samples: the state carries and the
prefix is never re-run. Draws use the Gumbel-max trick with noise taken from a seeded generator
in blocks: argmax(logits / T + Gumbel) is an exact sample from softmax(logits / T), costs three
small tensor operations, and makes the same seed give the same text on the same device.

`StreamWriter` renders what is generated: plain text when piped, syntax-highlighted lines on a
terminal. Generated text only ever goes through Pygments and plain writes, never through rich
markup, so `[...]` in code prints as itself.
"""

from __future__ import annotations

import codecs
import io
import math
import os
import shutil
import sys
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch

from charlstm.beam import beam_search
from charlstm.checkpoint import load_checkpoint, model_from_checkpoint, resolve_checkpoint
from charlstm.engine import StepEngine, packed_weights_available
from charlstm.errors import CharlstmError
from charlstm.interventions import UnitSpec, check_unit, resolve
from charlstm.model import CharRNN
from charlstm.train import MAX_THREADS
from charlstm.userio import read_text_source, silence_stdout, write_output
from charlstm.vocab import DOC_SEP, Vocab

PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")
NEWLINE_MARK = "↵"  # --watch on a terminal: where a newline's value is shown
NEW_FILE_RULE = "── new file ──"  # how a generated document separator (a new file starting) is shown
PRIME_CHUNK = 4096  # prime characters per fused forward
DEFAULT_TEMPERATURE = 0.8
MAX_SEED = 2**64 - 1  # what torch.Generator.manual_seed takes
# Bounds that keep a typo from taking all memory: every sample and beam holds a state and its text.
MAX_SAMPLES = 4096
MAX_BEAM = 1024
NOISE_ELEMENTS = 1 << 20  # Gumbel noise drawn per call to the generator (4 MB), for up to 256 steps


@dataclass
class SampleSettings:
    length: int = 2000  # characters to generate per sample (the prime not counted)
    temperature: float | None = None  # < 1 sharpens the distribution, > 1 flattens it; None: 0.8
    greedy: bool = False  # always take the most likely character
    top_k: int | None = None  # draw only among the k most likely characters
    top_p: float | None = None  # draw only from the smallest set holding this much probability
    prime: str = ""  # text fed through the model first and printed as the start of every sample
    stop: str | None = None  # a sample ends once it has generated this text (which it keeps)
    num_samples: int = 1  # samples generated together as one batch
    seed: int | None = None  # same seed, same device → same text
    beam: int | None = None  # beam search of this width instead of drawing (deterministic, one sample)
    interventions: tuple[UnitSpec, ...] = ()  # --clamp / --ablate: units held at a value at every step
    watch: UnitSpec | None = None  # --watch: colour the sample by this unit as it is generated

    @property
    def draw_temperature(self) -> float:
        return DEFAULT_TEMPERATURE if self.temperature is None else self.temperature

    def validate(self) -> None:
        if self.length <= 0:
            raise CharlstmError(f"--length must be positive, got {self.length}")
        if self.num_samples < 1:
            raise CharlstmError(f"--num-samples must be at least 1, got {self.num_samples}")
        if self.num_samples > MAX_SAMPLES:
            raise CharlstmError(f"--num-samples must be at most {MAX_SAMPLES}, got {self.num_samples}")
        if self.beam is not None:
            self._validate_beam()
        if not self.greedy and not self.draw_temperature > 0:
            raise CharlstmError(f"--temperature must be > 0 (use --greedy for argmax), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise CharlstmError(f"--top-k must be at least 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise CharlstmError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.stop == "":
            raise CharlstmError("--stop must not be empty")
        if self.watch is not None and (self.beam is not None or self.num_samples != 1):
            raise CharlstmError("--watch colours one drawn sample: drop --beam and --num-samples")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise CharlstmError(f"--seed must be between 0 and {MAX_SEED}, got {self.seed}")

    def _validate_beam(self) -> None:
        if self.beam < 1:
            raise CharlstmError(f"--beam must be at least 1, got {self.beam}")
        if self.beam > MAX_BEAM:
            raise CharlstmError(f"--beam must be at most {MAX_BEAM}, got {self.beam}")
        drawing = {"--temperature": self.temperature, "--top-k": self.top_k, "--top-p": self.top_p,
                   "--greedy": self.greedy or None, "--seed": self.seed}  # fmt: skip
        given = [name for name, value in drawing.items() if value is not None]
        if given:
            raise CharlstmError(f"--beam searches instead of drawing at random: drop {', '.join(given)}")
        if self.num_samples != 1:
            raise CharlstmError("--beam finds one best continuation: drop --num-samples")


def unescape(text: str) -> str:
    """Backslash escapes as Python writes them (\\n, \\t, \\x1c), so a shell can pass a newline."""
    try:
        return codecs.decode(text.encode("latin-1", "backslashreplace"), "unicode_escape")
    except UnicodeDecodeError as exc:
        raise CharlstmError(f"bad backslash escape in {text!r}: {exc.reason}") from None


def read_prime_file(path: Path) -> str:
    return read_text_source(path, "prime file")


def engine_dtype(precision: str, device: torch.device) -> torch.dtype:
    """auto on a CPU: int8 weights (FBGEMM), else fp16 weights, else fp32; fp32 off the CPU.

    At batch 1 every step reads all weights once, so their bytes set the speed. Measured on a
    2-core CPU, 3×512: int8 1,215 chars/s, fp16 894, fp32 529. Against fp32 the next-character
    distributions of the shipped model differ by a KL divergence of 0.002 bits per character with
    int8 and under 0.00001 with fp16 (bpc +0.002 and +0.0000 over 4,000 validation characters).
    """
    if precision not in PRECISIONS:
        raise CharlstmError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type != "cpu":
            return torch.float32
        for dtype in (torch.qint8, torch.float16):
            if packed_weights_available(dtype):
                return dtype
        return torch.float32
    if precision == "int8" and device.type != "cpu":
        raise CharlstmError("--precision int8 runs on the CPU only")
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "int8": torch.qint8}[precision]


def pick_device(name: str) -> torch.device:
    if name == "auto":  # a CUDA GPU when there is one: even launch-bound, it outpaces a CPU at batch 1
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CharlstmError(f"unknown device {name!r}; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CharlstmError("--device cuda asked for, but this PyTorch build sees no CUDA GPU")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise CharlstmError("--device mps asked for, but MPS is not available here")
    return device


class Sampler:
    """A trained model, its vocabulary and a step engine on one device, ready to generate."""

    def __init__(self, model: CharRNN, vocab: Vocab, device: str | torch.device = "cpu", precision: str = "fp32"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.vocab = vocab
        self.engine = StepEngine(self.model, engine_dtype(precision, self.device))

    @classmethod
    def from_checkpoint(cls, where: str | Path | None, device: str = "cpu", precision: str = "auto"):
        """Returns (sampler, payload); `where` is a checkpoint file, a run folder, or None."""
        device = pick_device(device)  # check before the (slow) load
        payload = load_checkpoint(resolve_checkpoint(where))
        model, vocab = model_from_checkpoint(payload)
        return cls(model, vocab, device, precision), payload

    def prime_tokens(self, prime: str) -> tuple[torch.Tensor, list[str]]:
        """Token ids that start a sample: the document separator (a file begins), then the prime.

        Also returns the prime's characters the vocabulary lacks (they become UNK).
        """
        ids = [self.vocab.doc_sep, *self.vocab.encode(prime).tolist()]
        return torch.tensor(ids, dtype=torch.long, device=self.device), self.vocab.unknown_chars(prime)

    def clamps(self, settings: SampleSettings):
        """The settings' --clamp/--ablate compiled for the engine (None when there are none)."""
        e = self.engine
        return e.clamps(resolve(list(settings.interventions), e.kind, e.layers, e.hidden))

    def watched_unit(self, settings: SampleSettings) -> tuple[int, int, int, str] | None:
        """--watch as (layer index, index in the layer's state tuple, neuron, signal)."""
        spec = settings.watch
        if spec is None:
            return None
        e = self.engine
        check_unit(spec, e.kind, e.layers, e.hidden)
        signal = spec.signal or "hidden"
        return spec.layer - 1, ("hidden", "cell").index(signal), spec.neuron, signal

    def primed(self, tokens: torch.Tensor, clamps=None) -> tuple[torch.Tensor, list]:
        """Run the prime's tokens: the last logits [1, vocab] (float32) and the state, batch 1.

        Without interventions, fused forwards over it (in chunks, so a long prime file needs little
        memory); with some, the engine's steps, so that the clamps hold from the first character.
        """
        engine = self.engine
        if clamps is not None:
            state = engine.init_state(1)
            for token in tokens.split(1):
                logits, state = engine.step(token, state, clamps)
            return logits, state
        state = None
        for chunk in tokens.split(PRIME_CHUNK):
            logits, state = self.model(chunk[None], state)
        layer_states = state if isinstance(state, tuple) else (state,)
        state = [tuple(s[k].to(engine.dtype).contiguous() for s in layer_states) for k in range(engine.layers)]
        return logits[0, -1:].float(), state

    @torch.inference_mode()
    def generate(self, settings: SampleSettings) -> Iterator[tuple]:
        """Yield, once per step, every sample's new character ("" after it stopped) and which are done;
        with `settings.watch`, also the watched unit's value after reading the new character."""
        settings.validate()
        batch, engine = settings.num_samples, self.engine
        tokens, _ = self.prime_tokens(settings.prime)
        clamps = self.clamps(settings)
        watch = self.watched_unit(settings)

        # The prime's final state and logits fan out to the batch.
        logits, state = self.primed(tokens, clamps)
        logits = logits.expand(batch, -1)
        state = [tuple(s.expand(batch, -1).contiguous() for s in layer) for layer in state]

        generator = torch.Generator(device=self.device)
        generator.manual_seed(settings.seed if settings.seed is not None else torch.seed())
        symbols, stop = self.vocab.symbols, settings.stop
        tails = [""] * batch  # the last len(stop) characters of each sample, to spot the stop text
        done = [False] * batch
        noise, block = None, max(1, min(256, NOISE_ELEMENTS // (batch * engine.vocab_size)))
        for t in range(settings.length):
            if not settings.greedy and t % block == 0:
                noise = _gumbel((block, batch, engine.vocab_size), generator, self.device)
            next_tokens = self._choose(logits, settings, None if settings.greedy else noise[t % block])
            chars = [symbols[i] for i in next_tokens.tolist()]
            for b, ch in enumerate(chars):
                if done[b]:
                    chars[b] = ""
                elif stop is not None:
                    tails[b] = (tails[b] + ch)[-len(stop) :]
                    done[b] = tails[b] == stop
            if watch is not None:  # the unit's value once the new character is read (one more step at the end)
                logits, state = engine.step(next_tokens, state, clamps)
                yield chars, done, float(state[watch[0]][watch[1]][0, watch[2]])
                if all(done):
                    return
                continue
            yield chars, done
            if all(done):
                return
            if t + 1 < settings.length:
                logits, state = engine.step(next_tokens, state, clamps)

    @staticmethod
    def _choose(logits: torch.Tensor, s: SampleSettings, gumbel: torch.Tensor | None) -> torch.Tensor:
        if gumbel is None:
            return logits.argmax(dim=-1)
        scores = logits / s.draw_temperature
        if s.top_k is not None and s.top_k < scores.shape[-1]:
            kth = scores.topk(s.top_k, dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if s.top_p is not None and s.top_p < 1:
            ordered, order = scores.sort(dim=-1, descending=True)
            probs = ordered.softmax(dim=-1)
            # Drop a character when the more likely ones already hold top_p (the first always stays).
            drop = (probs.cumsum(dim=-1) - probs) >= s.top_p
            scores = scores.scatter(-1, order, ordered.masked_fill(drop, float("-inf")))
        return (scores + gumbel).argmax(dim=-1)

    def sample_texts(self, settings: SampleSettings) -> list[str]:
        """Every sample's full text (prime included), without streaming."""
        texts = [[settings.prime] for _ in range(settings.num_samples)]
        for chars, *_ in self.generate(settings):
            for parts, ch in zip(texts, chars):
                parts.append(ch)
        return ["".join(parts) for parts in texts]


def _gumbel(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, device=device).clamp_(1e-12, 1 - 1e-7)
    return -torch.log(-torch.log(u))


# ----- output -----------------------------------------------------------------------------------


class StreamWriter:
    """Writes generated text as it arrives.

    Plain mode (piped, redirected, --no-color): the characters themselves, flushed as they come;
    a generated document separator becomes a line `── new file ──`. Colour mode (a terminal):
    the current line appears plain character by character, and once its newline arrives it is
    redrawn highlighted by the corpus's Pygments lexer, which sees the previous lines as context.
    On a terminal, control characters other than tab and newline show as their Unicode pictures
    (␛ for escape), so generated text can never drive the terminal.
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
    ):
        self.out = out
        self.color = color or paint is not None
        self.terminal = self.color or (_isatty(out) if terminal is None else terminal)
        self.lexer = self.formatter = None
        if color and language and paint is None:
            self.lexer, self.formatter = _pygments_for(language)
        self.paint = paint  # --watch: value ↦ the escape codes that colour a character by it
        self.width = width or shutil.get_terminal_size().columns
        self.plain: list[str] = []  # everything written, as plain text (what --out saves)
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
                self.plain.append(ch)
                if self.terminal and (ch < " " and ch != "\t" or ch == "\x7f"):
                    ch = chr(0x2400 + ord(ch)) if ch < " " else "\u2421"
                self._line += ch
                pieces.append(f"{sgr}{ch}\x1b[0m" if sgr else ch)
        self.out.write("".join(pieces))
        self.out.flush()

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
        self.plain.append(text + "\n")
        return f"\x1b[2m{text}\x1b[0m\n" if self.color else text + "\n"

    def _end_line(self, force_newline: bool) -> str:
        line, self._line = self._line, ""
        if not line and not force_newline:
            return ""
        self.plain.append("\n")
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
        from charlstm.render import _ink, colour_of

        if self.signal == "cell" and math.isfinite(value):
            self.scale = max(self.scale, abs(value))
        r, g, b = colour_of(value, self.signal, self.scale)
        ink = "30" if _ink((r, g, b)) == "black" else "97"
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


def stream_samples(sampler: Sampler, settings: SampleSettings, writer: StreamWriter) -> list[str]:
    """Generate as one batch and print the samples one after another, the first as it is made.

    A sample whose turn has not come yet is kept; when its turn comes, what it has so far is
    printed at once and the rest streams. Returns every sample's text (prime included).
    """
    if settings.beam is not None:
        settings.validate()
        writer.write(settings.prime)
        pieces = [settings.prime]
        clamps = sampler.clamps(settings)
        for piece in beam_search(sampler, settings.prime, settings.beam, settings.length, settings.stop, clamps):
            writer.write(piece)
            pieces.append(piece)
        writer.finish()
        return ["".join(pieces)]
    n = settings.num_samples
    texts: list[list[str]] = [[settings.prime] for _ in range(n)]
    current = 0

    def begin(index: int) -> None:
        if n > 1:
            writer.separator(f"sample {index + 1}/{n}")
        writer.write("".join(texts[index]))

    begin(0)
    if settings.watch is not None:  # one sample, each character with the watched unit's value
        for chars, _, value in sampler.generate(settings):
            texts[0].append(chars[0])
            writer.write(chars[0], value)
        writer.finish()
        return ["".join(texts[0])]
    for chars, done in sampler.generate(settings):
        for parts, ch in zip(texts, chars):
            parts.append(ch)
        writer.write(chars[current])
        while current < n - 1 and done[current]:  # move on past every sample that has stopped
            current += 1
            begin(current)
    # Generation is over: all samples are complete; show those not yet shown.
    while current < n - 1:
        current += 1
        begin(current)
    writer.finish()
    return ["".join(parts) for parts in texts]


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

    if threads is not None and threads < 1:
        raise CharlstmError(f"--threads must be at least 1, got {threads}")
    if threads is not None and threads > MAX_THREADS:
        raise CharlstmError(f"--threads must be at most {MAX_THREADS}, got {threads}")
    if sys.stdout is None and out is None:  # started with stdout closed (`>&-`)
        raise CharlstmError("stdout is closed: nowhere to write the samples (save them with -o FILE)")
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads or 1)
    try:
        _run_sampling(checkpoint, settings, out, color, device, precision, console or Console(stderr=True))
    finally:
        torch.set_num_threads(threads_before)


def _run_sampling(
    checkpoint: str | None, settings: SampleSettings, out: Path | None, color: bool, device: str, precision: str, err
) -> None:
    from rich.markup import escape

    path = resolve_checkpoint(checkpoint)
    sampler, payload = Sampler.from_checkpoint(path, device=device, precision=precision)
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
        f"[dim]{escape(str(path))}: {engine.kind} {engine.layers}×{engine.hidden}, step {payload.get('step', '?')}, "
        f"{str(engine.weight_dtype).removeprefix('torch.')} weights on {sampler.device}[/dim]",
        highlight=False,
        soft_wrap=True,
    )

    stream = stdout_text() if sys.stdout is not None else io.StringIO()  # stdout closed: only -o gets them
    language = (payload.get("dataset") or {}).get("language")
    on_terminal = color and is_color_terminal(stream)
    for item in resolve(list(settings.interventions), engine.kind, engine.layers, engine.hidden):
        err.print(f"[dim]holding unit {escape(item.describe())} at every step[/dim]", highlight=False)
    paint = None
    watch = sampler.watched_unit(settings)
    if watch is not None:
        layer, _, neuron, signal = watch
        if on_terminal:
            paint = UnitPainter(signal)
            err.print(
                f"[dim]colouring by layer {layer + 1}, neuron {neuron}, {signal}: red negative, blue positive"
                f"{' (scaled by the largest |value| so far)' if signal == 'cell' else ''}[/dim]",
                highlight=False,
            )
        else:
            err.print("[dim]--watch colours a terminal only; this output is plain text[/dim]", highlight=False)
    writer = StreamWriter(stream, color=on_terminal and paint is None, language=language, paint=paint)
    try:
        stream_samples(sampler, settings, writer)
    except BrokenPipeError:
        silence_stdout()  # the reader went away (`| head`): stop quietly, as Unix tools do
        return
    if out is not None:
        write_output(out, "".join(writer.plain).encode("utf-8"))
        err.print(f"[dim]wrote {escape(str(out))}[/dim]", highlight=False, soft_wrap=True)
