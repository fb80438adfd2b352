"""Sampling steps replayed from a CUDA graph: K characters per launch instead of ~30 launches each.

At batch 1 a sampling step on a GPU is a few dozen tiny kernels, and launching them from Python
costs more than running them (an H100 managed ~2.4k characters/s). `BlockSteps` records K
consecutive steps — the draw, the drawn token fed back, the engine step — once, into a CUDA graph
over static buffers (the logits, the state, K steps of Gumbel noise, the K drawn tokens), then
replays it: one launch and one copy to the host per K characters.

Same text as the eager loop: the body runs the very operations of `DrawRule.choose` and
`StepEngine.step` on the same shapes and dtypes, starting from the same logits and state, and
its noise buffer holds exactly the noise the eager loop gives those steps (`GumbelNoise.fill`).
The noise is drawn outside the graph, by the same generator calls, so no graph-safe RNG is
needed. With `capture=False` the same buffers and body run eagerly on any device: that is how the
CPU tests prove the block logic; only the capture itself needs a GPU.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch

from ..core.engine import StepEngine
from .draw import DrawRule, GumbelNoise

GRAPH_STEPS = 32  # characters per replay: ~1-2 ms of GPU work at batch 1, so streaming stays live
WARMUP_RUNS = 3  # eager runs of the body on the capture stream first, as the capture recipe asks
EAGER_ENV = "CHARLSTM_EAGER_SAMPLING"  # set (to anything but "" or "0") to keep CUDA sampling eager


def capture_unavailable(device: torch.device) -> str | None:
    """Why sampling on `device` can't be replayed from a CUDA graph (None when it can)."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device, not {device.type}"
    if os.environ.get(EAGER_ENV, "") not in ("", "0"):
        return f"{EAGER_ENV} is set"
    return None


class BlockSteps:
    """K sampling steps for a fixed batch and draw rule, over static buffers; captured or not.

    Use: `load` the logits and state to start from, fill `noise` (unless greedy), `launch`, then
    `collect` the K×batch tokens drawn. The logits and state after the K-th step stay in the
    buffers, so the next launch carries on. Buffers are allocated once and never replaced: the
    graph reads and writes their addresses.
    """

    def __init__(self, engine: StepEngine, batch: int, rule: DrawRule, steps: int = GRAPH_STEPS, capture: bool = True):
        device, vocab = engine.device, engine.vocab_size
        self.engine, self.batch, self.rule, self.steps = engine, batch, rule, steps
        self.key = (batch, rule, steps, capture)
        self.logits = torch.zeros(batch, vocab, dtype=torch.float32, device=device)
        self.state = engine.init_state(batch)
        self.noise = None if rule.greedy else torch.zeros(steps, batch, vocab, dtype=torch.float32, device=device)
        self.tokens = torch.zeros(steps, batch, dtype=torch.long, device=device)
        self.busy = False  # a generation is reading from these buffers
        self.graph = self._capture() if capture else None
        # Two host buffers, so one replay's tokens can be read while the next replay runs;
        # pinned (allocated after the capture, never during it) so the copy is asynchronous.
        pin = device.type == "cuda"
        self._host = [torch.empty(steps, batch, dtype=torch.long, pin_memory=pin) for _ in range(2)]
        self._turn = 0

    def load(self, logits: torch.Tensor, state: list) -> None:
        """Start from these logits [1 or batch, vocab] and this state (per layer, [1 or batch, hidden])."""
        self.logits.copy_(logits)  # a batch of 1 broadcasts to every sample, as `expand` does
        for static, value in zip(_flat(self.state), _flat(state), strict=True):
            static.copy_(value)

    def launch(self) -> tuple[torch.Tensor, torch.cuda.Event | None]:
        """Run the K steps (asynchronously on a GPU); `collect` the result."""
        if self.graph is None:
            self._body()
            host = self._host[self._turn]
            host.copy_(self.tokens)
            self._turn ^= 1
            return host, None
        with torch.cuda.device(self.engine.device):
            self.graph.replay()
            host = self._host[self._turn]
            host.copy_(self.tokens, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
        self._turn ^= 1
        return host, done

    @staticmethod
    def collect(launched: tuple[torch.Tensor, torch.cuda.Event | None]) -> list[list[int]]:
        """The tokens of a launch, [step][sample], once they are on the host (the one sync)."""
        host, done = launched
        if done is not None:
            done.synchronize()
        return host.tolist()

    def _body(self) -> None:
        """K steps from the static buffers back into them: what the graph records."""
        logits, state = self.logits, self.state
        for j in range(self.steps):
            # Drawn straight into the static row the engine then reads: no copy per step.
            tokens = self.rule.choose(logits, None if self.noise is None else self.noise[j], out=self.tokens[j])
            logits, state = self.engine.step(tokens, state)
        self.logits.copy_(logits)
        for static, value in zip(_flat(self.state), _flat(state), strict=True):
            static.copy_(value)

    def _capture(self) -> torch.cuda.CUDAGraph:
        # The documented recipe: warm up on a side stream (cuBLAS handles and workspaces, the
        # allocator), then capture on that same stream; replay later on the current stream.
        with torch.cuda.device(self.engine.device):
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(WARMUP_RUNS):
                    self._body()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=stream):
                self._body()
        return graph


def replays(blocks: BlockSteps, noise: GumbelNoise | None, length: int) -> Iterator[list[list[int]]]:
    """Each launch's drawn tokens as host lists [step][sample], the last cut at `length` steps.

    The next launch is queued before this one's tokens are waited for, so the GPU keeps working
    while the host streams characters; a launch past a stop is wasted, never wrong.
    """
    k = blocks.steps

    def launch(first: int):
        if noise is not None:  # only the steps that will be read; any rows after stay stale
            noise.fill(blocks.noise, first, min(k, length - first))
        return blocks.launch()

    pending = launch(0)
    for first in range(0, length, k):
        following = launch(first + k) if first + k < length else None
        yield blocks.collect(pending)[: length - first]
        pending = following


def _flat(state: list) -> list[torch.Tensor]:
    return [tensor for layer in state for tensor in layer]
