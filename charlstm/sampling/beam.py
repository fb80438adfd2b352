"""Beam search over characters: the most likely continuation, not a random one.

K beams advance together as one batch through the step engine. Each step every beam proposes
every character; the K best extensions by total log-probability survive (ties go to the lower
beam, then character index: deterministic). A beam that generates the stop text is finished and
leaves the batch; the search ends when K beams have finished or the length is reached. The winner
is the candidate with the best log-probability per character (length-normalised), among the
finished beams when any finished (with a stop text, the user asked for text that ends with it),
else among the live ones.

Streaming: a character is *settled* once every candidate that could still win shares it — the
longest common prefix of the live and finished beams. Settled text is yielded as soon as it is
known and dropped from every beam, so a beam carries only its unsettled characters and extending
it costs the lag, not the length; the rest of the winner comes at the end. On code the beams
usually agree within a few characters, so the text streams with a short lag.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from ..core.errors import CharlstmError


@dataclass
class Beam:
    tokens: list[int] = field(default_factory=list)  # generated characters not yet settled (streamed)
    log_prob: float = 0.0
    length: int = 0  # characters generated, settled ones included

    @property
    def score(self) -> float:
        """Mean log-probability per generated character."""
        return self.log_prob / max(1, self.length)


def _common_prefix_length(sequences: list[list[int]], start: int) -> int:
    """How far, from `start`, every sequence agrees (all share the first `start` already)."""
    n = start
    shortest = min(len(s) for s in sequences)
    while n < shortest and all(s[n] == sequences[0][n] for s in sequences):
        n += 1
    return n


def best_extensions(log_probs: torch.Tensor, beam_log_probs: list[float], width: int) -> tuple[list, list, list]:
    """The `width` best (beam, character) extensions by total log-probability, ties to the lower
    beam then the lower character: (parents, characters, totals).

    Only a beam's own `width` best characters can be among them, so each beam is cut to those first
    (topk), and only beams × width candidates are summed in float64 and sorted: a sort over beams ×
    vocabulary took 7 GB and a minute per step for --beam 1024 on 120k symbols."""
    beams, vocab = log_probs.shape
    k = min(width, vocab)
    values, chars = log_probs.topk(k, dim=-1)
    if bool(((log_probs >= values[:, -1:]).sum(dim=-1) > k).any()):
        # Ties straddle a beam's cut: which of them topk keeps is unspecified, so order those rows fully.
        chars = torch.argsort(-log_probs, dim=-1, stable=True)[:, :k]
        values = log_probs.gather(-1, chars)
    values, chars = values.cpu(), chars.cpu()  # beams × width: small, and sorted where the beams live
    totals = (torch.tensor(beam_log_probs, dtype=torch.float64)[:, None] + values.double()).flatten()
    flat_index = (torch.arange(beams)[:, None] * vocab + chars).flatten()
    by_index = torch.argsort(flat_index)  # then a stable sort by score keeps index order among equal scores
    order = by_index[torch.argsort(-totals[by_index], stable=True)][:width]
    picked = flat_index[order]
    return (picked // vocab).tolist(), (picked % vocab).tolist(), totals[order].tolist()


@torch.inference_mode()
def beam_search(sampler, prime: str, width: int, length: int, stop: str | None = None, clamps=None) -> Iterator[str]:
    """Yield the best continuation of `prime` in settled pieces (see the module docstring).

    `clamps` (interventions compiled by the engine) hold units at their values at every step."""
    if width < 1:
        raise CharlstmError(f"--beam must be at least 1, got {width}")
    engine, symbols = sampler.engine, sampler.vocab.symbols
    tokens, _ = sampler.prime_tokens(prime)
    logits, state = sampler.primed(tokens, clamps)  # as sampling primes

    live = [Beam()]
    finished: list[Beam] = []
    settled_tail: list[int] = []  # the last settled characters, where a stop text may begin
    stop_ids = [sampler.vocab.index.get(ch, -1) for ch in stop] if stop else None
    for t in range(length):
        log_probs = torch.log_softmax(logits.float(), dim=-1)  # [beams, vocab]
        parents, chars, scores = best_extensions(log_probs, [b.log_prob for b in live], width)
        candidates = [
            Beam(live[p].tokens + [c], score, t + 1) for p, c, score in zip(parents, chars, scores, strict=True)
        ]
        keep = []
        for k, beam in enumerate(candidates):
            if stop_ids is not None and (settled_tail + beam.tokens)[-len(stop_ids) :] == stop_ids:
                finished.append(beam)
            else:
                keep.append(k)
        live = [candidates[k] for k in keep]
        contenders = live + finished
        ahead = _common_prefix_length([b.tokens for b in contenders], 0)
        if ahead > 0:
            piece = contenders[0].tokens[:ahead]
            yield "".join(symbols[i] for i in piece)
            for beam in contenders:
                beam.tokens = beam.tokens[ahead:]
            if stop_ids is not None:
                settled_tail = (settled_tail + piece)[-len(stop_ids) :]
        if not live or len(finished) >= width or t + 1 == length:
            break
        index = torch.tensor([parents[k] for k in keep], dtype=torch.long, device=sampler.device)
        state = [tuple(s.index_select(0, index) for s in layer) for layer in state]
        next_tokens = torch.tensor([chars[k] for k in keep], dtype=torch.long, device=sampler.device)
        logits, state = engine.step(next_tokens, state, clamps)
    best = max(finished or live, key=lambda b: b.score)
    if best.tokens:
        yield "".join(symbols[i] for i in best.tokens)
