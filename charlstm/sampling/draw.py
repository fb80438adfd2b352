"""Drawing the next character: the Gumbel-max rule and the noise it consumes, step by step.

argmax(logits / T + Gumbel) is an exact sample from softmax(logits / T). The noise comes from a
seeded generator in blocks of steps; because the eager loop and the graphed one (graphed.py) take
it through the same `GumbelNoise` and apply the same `DrawRule`, the same seed gives them the same
text on the same device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NOISE_ELEMENTS = 1 << 20  # Gumbel noise drawn per call to the generator (4 MB), for up to 256 steps
MAX_NOISE_STEPS = 256
SHIFT_BELOW_TEMPERATURE = 1e-20  # logits of up to 1e18 divide by any larger temperature without overflow


@dataclass(frozen=True)
class DrawRule:
    """How a step turns logits into characters; hashable, so a captured graph can be keyed by it."""

    temperature: float
    greedy: bool = False
    top_k: int | None = None
    top_p: float | None = None

    def choose(
        self, logits: torch.Tensor, gumbel: torch.Tensor | None, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """logits [batch, vocab] and noise of the same shape (None when greedy) → tokens [batch].

        No host synchronisation and no data-dependent shapes, so a CUDA graph can capture it.
        `out` (long, [batch]) receives the tokens in place: a graph's static buffer, one copy fewer.
        """
        if self.greedy:
            return torch.argmax(logits, dim=-1, out=out)
        if self.temperature >= SHIFT_BELOW_TEMPERATURE:
            scores = logits / self.temperature
        else:
            # Shifted so the best character scores 0: a tiny temperature cannot overflow to +inf,
            # where argmax would take the first overflowing character instead of the most likely
            # one. Only here: the shift is two more kernels per step on a GPU.
            scores = (logits - logits.amax(dim=-1, keepdim=True)) / self.temperature
        if self.top_k is not None and self.top_k < scores.shape[-1]:
            kth = scores.topk(self.top_k, dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if self.top_p is not None and self.top_p < 1:
            ordered, order = scores.sort(dim=-1, descending=True)
            probs = ordered.softmax(dim=-1)
            # Drop a character when the more likely ones already hold top_p (the first always stays).
            drop = (probs.cumsum(dim=-1) - probs) >= self.top_p
            drop[..., 0] = False  # a top_p below float32's range compares as 0, which would drop it too
            scores = scores.scatter(-1, order, ordered.masked_fill(drop, float("-inf")))
        return torch.argmax(scores + gumbel, dim=-1, out=out)


def noise_block_steps(batch: int, vocab: int) -> int:
    """Steps of noise drawn per call to the generator: up to 4 MB of it, at most 256 steps."""
    return max(1, min(MAX_NOISE_STEPS, NOISE_ELEMENTS // (batch * vocab)))


class GumbelNoise:
    """Gumbel noise for steps 0, 1, 2, … of one run, read in order.

    The generator is called once per block of `block` steps with shape [block, batch, vocab]:
    the call sizes, and so the noise each step gets, depend only on the seed, batch and
    vocabulary, never on how many steps a reader takes at a time.
    """

    def __init__(self, generator: torch.Generator, batch: int, vocab: int, device: torch.device):
        self.generator, self.device = generator, device
        self.shape = (noise_block_steps(batch, vocab), batch, vocab)
        self.block = self.shape[0]
        self._start = -self.block  # first step of the block held
        self._noise: torch.Tensor | None = None

    def at(self, step: int) -> torch.Tensor:
        """The noise [batch, vocab] of `step` (steps are read in order; a block is drawn once)."""
        start = step - step % self.block
        if start != self._start:
            if start != self._start + self.block:
                raise ValueError(f"noise read out of order: step {step} after block {self._start}")
            self._noise = _gumbel(self.shape, self.generator, self.device)
            self._start = start
        return self._noise[step - start]

    def fill(self, out: torch.Tensor, first: int, count: int) -> None:
        """Copy the noise of steps first … first + count − 1 into out[0:count] (a static buffer)."""
        done = 0
        while done < count:
            step = first + done
            offset = step % self.block
            n = min(count - done, self.block - offset)
            self.at(step)  # draws the block when it is new
            out[done : done + n].copy_(self._noise[offset : offset + n])
            done += n


def _gumbel(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, device=device).clamp_(1e-12, 1 - 1e-7)
    return -torch.log(-torch.log(u))
