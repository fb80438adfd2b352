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

from charlstm.errors import CharlstmError


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


@torch.inference_mode()
def beam_search(
    sampler, prime: str, width: int, length: int, stop: str | None = None, clamps=None
) -> Iterator[str]:
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
        totals = torch.tensor([b.log_prob for b in live], dtype=torch.float64)[:, None] + log_probs.double()
        flat = totals.flatten()
        # topk's order among equal scores is not specified: sort by (score desc, index asc) instead.
        order = torch.argsort(-flat, stable=True)[:width]
        vocab = log_probs.shape[-1]
        parents, chars = (order // vocab).tolist(), (order % vocab).tolist()
        candidates = [Beam(live[p].tokens + [c], float(flat[i]), t + 1) for p, c, i in zip(parents, chars, order.tolist())]
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
