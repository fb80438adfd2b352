"""Sampling: prime the model, then draw characters one at a time and stream them out.

The prime goes through the model's fused forward (O(prime) work, in chunks); after that every
character costs one `StepEngine.step` for the whole batch of samples: the state carries and the
prefix is never re-run. Draws use the Gumbel-max trick with noise taken from a seeded generator
in blocks: argmax(logits / T + Gumbel) is an exact sample from softmax(logits / T), costs three
small tensor operations, and makes the same seed give the same text on the same device.

What is generated reaches the terminal through sample_command.py (the stream writer and the
`charlstm sample` runner).
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from charlstm.backend import sampling_device
from charlstm.checkpoint import load_checkpoint, model_from_checkpoint, resolve_checkpoint
from charlstm.config import WEIGHT_PRECISIONS
from charlstm.engine import StepEngine, packed_weights_available
from charlstm.errors import CharlstmError
from charlstm.interventions import UnitSpec, check_unit, resolve
from charlstm.model import CharRNN
from charlstm.userio import read_text_source
from charlstm.vocab import Vocab

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

    def __init__(self, model: CharRNN, vocab: Vocab, device: str | torch.device = "cpu", precision: str = "fp32"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.vocab = vocab
        self.engine = StepEngine(self.model, engine_dtype(precision, self.device))

    @classmethod
    def from_checkpoint(cls, where: str | Path | None, device: str = "cpu", precision: str = "auto"):
        """Returns (sampler, payload); `where` is a checkpoint file, a run folder, or None."""
        device = sampling_device(device)  # check before the (slow) load
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
