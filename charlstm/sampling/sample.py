"""Sampling: prime the model, then draw characters one at a time and stream them out.

`Sampler.generate` is the one entry point: from the settings it chooses the loop (`Sampler.plan`)
— beam search (beam.py) with --beam, a CUDA graph's replayed steps where they can run, else eager
steps — runs it, and records which ran and why in `last_path`.

The prime goes through the model's fused forward (O(prime) work, in chunks); after that every
character costs one `StepEngine.step` for the whole batch of samples: the state carries and the
prefix is never re-run. Draws use the Gumbel-max trick with noise taken from a seeded generator
in blocks (draw.py): argmax(logits / T + Gumbel) is an exact sample from softmax(logits / T), costs
three small tensor operations, and makes the same seed give the same text on the same device.
On a CUDA GPU the steps are replayed from a CUDA graph, K characters per launch (graphed.py), with
the same text as the eager loop; --clamp, --ablate and --watch keep the eager loop.

What is generated reaches the terminal through sample_command.py (the stream writer and the
`charlstm sample` runner).
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.backend import sampling_device
from ..core.checkpoint import OpenedModel, open_model
from ..core.config import MAX_SEED, WEIGHT_PRECISIONS
from ..core.engine import StepEngine, packed_weights_available
from ..core.errors import CharlstmError
from ..core.model import CharRNN
from ..core.units import Intervention, UnitSpec, check_unit, resolve
from ..core.userio import read_text_source
from ..core.vocab import Vocab
from .beam import beam_search
from .constrained import DEFAULT_MAX_TRIES, ValidStats, constrained_steps, primed_lexer, valid_steps
from .draw import DrawRule, GumbelNoise
from .graphed import GRAPH_STEPS, BlockSteps, capture_unavailable, replays
from .lexers import LEXED_LANGUAGES
from .syntax import check_language

PRIME_CHUNK = 4096  # prime characters per fused forward
DEFAULT_TEMPERATURE = 0.8
# Bounds that keep a typo from taking all memory: every sample and beam holds a state and its text.
MAX_SAMPLES = 4096
MAX_BEAM = 1024
MAX_TRIES = 1000
# How `generate` runs its steps: auto = replayed from a CUDA graph on a CUDA device when the
# settings allow, else eagerly; eager; blocks = the graph's block logic without capture (any
# device: tests); capture = the CUDA graph or an error.
GRAPH_MODES = ("auto", "eager", "blocks", "capture")
KEPT_GRAPHS = 4  # captured graphs a sampler keeps (batch and draw settings differ), oldest dropped first


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
    constrain: bool = False  # --constrain: mask the characters that would make the code lexically impossible
    valid: bool = False  # --valid: emit only top-level units that parse (implies constrain)
    max_tries: int = DEFAULT_MAX_TRIES  # --valid: draws of one unit before it is dropped

    @property
    def draw_temperature(self) -> float:
        return DEFAULT_TEMPERATURE if self.temperature is None else self.temperature

    @property
    def draw_rule(self) -> DrawRule:
        return DrawRule(self.draw_temperature, self.greedy, self.top_k, self.top_p)

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
        if self.constrain or self.valid:
            self._validate_constraint()

    def _validate_constraint(self) -> None:
        option = "--valid" if self.valid else "--constrain"
        if self.beam is not None:
            raise CharlstmError(f"{option} draws at random under a lexer: drop --beam")
        if self.watch is not None:
            raise CharlstmError(f"--watch colours plain drawing: drop {option}")
        if self.valid and self.stop is not None:
            raise CharlstmError("--valid ends samples at whole units: drop --stop")
        if not 1 <= self.max_tries <= MAX_TRIES:
            raise CharlstmError(f"--max-tries must be between 1 and {MAX_TRIES}, got {self.max_tries}")

    def _validate_beam(self) -> None:
        if self.beam < 1:
            raise CharlstmError(f"--beam must be at least 1, got {self.beam}")
        if self.beam > MAX_BEAM:
            raise CharlstmError(f"--beam must be at most {MAX_BEAM}, got {self.beam}")
        drawing = {
            "--temperature": self.temperature,
            "--top-k": self.top_k,
            "--top-p": self.top_p,
            "--greedy": self.greedy or None,
            "--seed": self.seed,
        }
        given = [name for name, value in drawing.items() if value is not None]
        if given:
            raise CharlstmError(f"--beam searches instead of drawing at random: drop {', '.join(given)}")
        if self.num_samples != 1:
            raise CharlstmError("--beam finds one best continuation: drop --num-samples")


@dataclass(frozen=True)
class Plan:
    """What `Sampler.generate` runs for some settings, checked against the model."""

    path: str  # "beam", "graphed" (a CUDA graph), "blocks" (its logic uncaptured) or "eager"
    reason: str | None  # why not a CUDA graph (None where one runs, or on "blocks")
    interventions: tuple[Intervention, ...]  # --clamp and --ablate, resolved against the model
    watch: tuple[int, int, int, str] | None  # --watch: (layer index, state index, neuron, signal)

    @property
    def note(self) -> str:
        """How the steps run, in a few words (said on a CUDA device, where there is a choice)."""
        if self.path == "graphed":
            return f"steps replayed from a CUDA graph, {GRAPH_STEPS} characters per launch"
        return f"eager steps: {self.reason}"


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

    At batch 1 every step reads all weights once, so their bytes set the speed: int8 is fastest,
    then fp16 (bench/sample_speed.py measures them). Against fp32 the next-character
    distributions of the shipped model differ by a KL divergence of 0.002 bits per character with
    int8 and under 0.00001 with fp16 (bpc +0.002 and +0.0000 over 4,000 validation characters).
    """
    if precision not in WEIGHT_PRECISIONS:
        raise CharlstmError(f"unknown precision {precision!r}; choose one of {', '.join(WEIGHT_PRECISIONS)}")
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


class Sampler:
    """A trained model, its vocabulary and a step engine on one device, ready to generate."""

    def __init__(
        self,
        model: CharRNN,
        vocab: Vocab,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        graphs: str = "auto",
        fused_cell: bool | None = None,  # StepEngine's: None fuses the LSTM cell on CUDA
    ):
        if graphs not in GRAPH_MODES:
            raise CharlstmError(f"unknown graph mode {graphs!r}; choose one of {', '.join(GRAPH_MODES)}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.vocab = vocab
        self.engine = StepEngine(self.model, engine_dtype(precision, self.device), fused_cell)
        self.graphs = graphs
        self.language: str | None = None  # the corpus's language, which --constrain and --valid follow
        self.last_stats = ValidStats()  # what the latest --constrain or --valid generation did
        self.last_path: tuple[str, str | None] | None = None  # what the latest `generate` ran, and why
        self._blocks: dict[tuple, BlockSteps] = {}  # block buffers (and graphs) by batch and rule, newest last

    @classmethod
    def from_checkpoint(
        cls, where: str | Path | None, device: str = "cpu", precision: str = "auto"
    ) -> tuple[Sampler, OpenedModel]:
        """Returns (sampler, the opened checkpoint: its path and payload); `where` is a checkpoint
        file, a run folder, or None (see `open_model`). Auto picks a CUDA GPU, else the CPU."""
        opened = open_model(where, sampling_device(device))
        sampler = cls(opened.model, opened.vocab, opened.device, precision)
        sampler.language = opened.language
        return sampler, opened

    def prime_tokens(self, prime: str) -> tuple[torch.Tensor, list[str]]:
        """Token ids that start a sample: the document separator (a file begins), then the prime.

        Also returns the prime's characters the vocabulary lacks (they become UNK).
        """
        ids = [self.vocab.doc_sep, *self.vocab.encode(prime).tolist()]
        return torch.tensor(ids, dtype=torch.long, device=self.device), self.vocab.unknown_chars(prime)

    def plan(self, settings: SampleSettings) -> Plan:
        """Check the settings, alone and against this model, and choose the loop `generate` runs."""
        settings.validate()
        path, reason = self.sampling_path(settings)
        e = self.engine
        interventions = tuple(resolve(list(settings.interventions), e.kind, e.layers, e.hidden))
        watch = None
        if settings.watch is not None:
            spec = settings.watch
            check_unit(spec, e.kind, e.layers, e.hidden)
            signal = spec.signal or "hidden"
            watch = spec.layer - 1, ("hidden", "cell").index(signal), spec.neuron, signal
        return Plan(path, reason, interventions, watch)

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

    def sampling_path(self, settings: SampleSettings) -> tuple[str, str | None]:
        """Which loop `generate` runs: ("graphed", None), ("blocks", None), or ("eager", the reason)."""
        if self.graphs == "eager":
            return "eager", "eager steps asked for"
        if settings.beam is not None:
            return "beam", "--beam searches instead of drawing"
        if settings.interventions:
            return "eager", "--clamp and --ablate hold units inside the eager step"
        if settings.watch is not None:
            return "eager", "--watch reads a unit after every character"
        if settings.constrain or settings.valid:
            return "eager", "--constrain and --valid follow a lexer on the host after every character"
        if self.graphs == "blocks":
            return "blocks", None
        reason = capture_unavailable(self.device)
        if self.graphs == "capture" and self.device.type != "cuda":
            raise CharlstmError(f"a CUDA graph was asked for, but {reason}")
        if reason is not None and self.graphs == "auto":
            return "eager", reason
        return "graphed", None

    @torch.inference_mode()
    def generate(self, settings: SampleSettings, plan: Plan | None = None) -> Iterator[tuple]:
        """Yield, once per step, every sample's new character ("" after it stopped) and which are done;
        with `settings.watch`, also the watched unit's value after reading the new character. With
        --beam, the one sample's text comes in pieces (each settled once every beam agrees on it)
        and is never marked done. `plan`: `self.plan(settings)`, when the caller has it already.
        `last_path` says which loop ran, and why."""
        plan = self.plan(settings) if plan is None else plan
        clamps = self.engine.clamps(plan.interventions)
        if plan.path == "beam":
            self.last_path = (plan.path, plan.reason)
            done = [False]
            for piece in beam_search(self, settings.prime, settings.beam, settings.length, settings.stop, clamps):
                yield [piece], done
            return
        lexer = self._lexer(settings)
        path, reason, watch = plan.path, plan.reason, plan.watch
        batch, engine = settings.num_samples, self.engine
        tokens, _ = self.prime_tokens(settings.prime)

        logits, state = self.primed(tokens, clamps)
        generator = torch.Generator(device=self.device)
        generator.manual_seed(settings.seed if settings.seed is not None else torch.seed())
        noise = None if settings.greedy else GumbelNoise(generator, batch, engine.vocab_size, self.device)
        progress = _Progress(self.vocab.symbols, batch, settings.stop)
        blocks = None
        if path != "eager":
            blocks, reason = self._claim_blocks(batch, settings.draw_rule, capture=path == "graphed")
            path = path if blocks is not None else "eager"
        self.last_path = (path, reason)
        if blocks is None:
            # The prime's final state and logits fan out to the batch.
            logits = logits.expand(batch, -1)
            state = [tuple(s.expand(batch, -1).contiguous() for s in layer) for layer in state]
            if lexer is not None:
                yield from self._constrained(settings, lexer, logits.contiguous(), state, clamps, noise, progress)
                return
            yield from self._eager(settings, logits, state, clamps, watch, noise, progress)
            return
        try:
            blocks.load(logits, state)  # copies fan the prime's state out to the batch
            for rows in replays(blocks, noise, settings.length):
                for ids in rows:
                    yield progress.advance(ids), progress.done
                    if all(progress.done):
                        return
        finally:
            blocks.busy = False

    def _lexer(self, settings: SampleSettings):
        """The lexer --constrain and --valid follow, after reading the prime (None without them)."""
        if not (settings.constrain or settings.valid):
            return None
        if settings.valid:
            check_language(self.language)  # a parser too, not only a lexer
        lexer = primed_lexer(self.language, settings.prime)
        if lexer is None:
            known = ", ".join(LEXED_LANGUAGES)
            raise CharlstmError(
                f"--constrain follows the lexer of {known}; this model's language is {self.language or 'unknown'}"
            )
        return lexer

    def _constrained(self, settings: SampleSettings, lexer, logits, state, clamps, noise, progress) -> Iterator[tuple]:
        stats = self.last_stats = ValidStats()
        symbols, rule = self.vocab.symbols, settings.draw_rule
        if settings.valid:
            yield from valid_steps(
                self.engine,
                rule,
                symbols,
                self.language,
                settings.prime,
                lexer,
                logits,
                state,
                clamps,
                noise,
                settings.length,
                settings.max_tries,
                stats,
            )
        else:
            yield from constrained_steps(
                self.engine, rule, symbols, lexer, logits, state, clamps, noise, progress, settings.length, stats
            )

    def _eager(self, settings: SampleSettings, logits, state, clamps, watch, noise, progress) -> Iterator[tuple]:
        """One engine step per character, each launched from Python: any settings, any device."""
        engine, rule, done = self.engine, settings.draw_rule, progress.done
        for t in range(settings.length):
            next_tokens = rule.choose(logits, None if noise is None else noise.at(t))
            chars = progress.advance(next_tokens.tolist())
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

    def _claim_blocks(self, batch: int, rule: DrawRule, capture: bool) -> tuple[BlockSteps | None, str | None]:
        """Block buffers (and their graph) for this batch and rule, reused from an earlier call when
        free; (None, why) when the capture failed and `graphs` is auto."""
        key = (batch, rule, GRAPH_STEPS, capture)
        blocks = self._blocks.get(key)
        if blocks is None or blocks.busy:
            try:
                blocks = BlockSteps(self.engine, batch, rule, GRAPH_STEPS, capture)
            except RuntimeError as exc:  # a kernel the capture refuses: the eager loop still works
                if self.graphs != "auto":
                    raise
                return None, f"CUDA graph capture failed: {exc}"
            if key not in self._blocks or not self._blocks[key].busy:
                self._blocks.pop(key, None)
                self._blocks[key] = blocks
                while len(self._blocks) > KEPT_GRAPHS:
                    del self._blocks[next(iter(self._blocks))]
        blocks.busy = True
        return blocks, None

    def sample_texts(self, settings: SampleSettings) -> list[str]:
        """Every sample's full text (prime included), without streaming."""
        texts = [[settings.prime] for _ in range(settings.num_samples)]
        for chars, *_ in self.generate(settings):
            for parts, ch in zip(texts, chars, strict=True):
                parts.append(ch)
        return ["".join(parts) for parts in texts]


class _Progress:
    """Each sample's characters as they are drawn, and whether it has generated the stop text."""

    def __init__(self, symbols: list[str], batch: int, stop: str | None):
        self.symbols, self.stop = symbols, stop
        self.tails = [""] * batch  # the last len(stop) characters of each sample, to spot the stop text
        self.done = [False] * batch

    def advance(self, ids: list[int]) -> list[str]:
        """One step's token ids → its characters ("" for a sample that had already stopped)."""
        chars = [self.symbols[i] for i in ids]
        stop = self.stop
        for b, ch in enumerate(chars):
            if self.done[b]:
                chars[b] = ""
            elif stop is not None:
                self.tails[b] = (self.tails[b] + ch)[-len(stop) :]
                self.done[b] = self.tails[b] == stop
        return chars
