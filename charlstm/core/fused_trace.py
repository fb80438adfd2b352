"""Every signal of a trace from the fused recurrent layers, without a Python step per character.

Each layer runs as a one-layer ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (oneDNN on a CPU, cuDNN on a
GPU) over the whole chunk, with the state carried in; its outputs h_t are the hidden signal and the
next layer's input. The gates are then recomputed for all positions at once from the same weights:
one matrix product per layer on [x_t, h_{t-1}] (two for a GRU, whose reset gate scales W_hh h
alone), and an LSTM's cell from its gates, c_t = f_t c_{t-1} + i_t g_t, by `cell_scan`.

The values equal the step engine's to float32 rounding, not bit for bit: the fused kernels and the
batched products sum in other orders than `StepEngine.step`'s per-step products.
Works on [T] (one text) and on [T, B] (B streams side by side, each with its own state). From
MANY_STREAMS streams on, an LSTM layer is stepped by hand instead (`_lstm_steps`): one product per
step over all streams, every gate kept as it is computed.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from .backend import fast_float32_products
from .cells import gru_pointwise
from .model import RNN_MODULES


def fused_layers(engine) -> list[nn.Module]:
    """One-layer fused modules holding the engine's float32 weights, on its device."""
    layers = []
    for w in engine.weights:
        module = RNN_MODULES[engine.kind](w.w_ih_t.shape[0], engine.hidden, num_layers=1)
        with torch.no_grad():
            module.weight_ih_l0.copy_(w.w_ih_t.t())
            module.weight_hh_l0.copy_(w.w_hh_t.t())
            module.bias_ih_l0.copy_(w.b_ih)
            module.bias_hh_l0.copy_(w.b_hh)
        module = module.to(engine.device).eval()
        module.requires_grad_(False)
        if engine.device.type == "cuda":
            module.flatten_parameters()  # cuDNN wants one contiguous weight buffer
        layers.append(module)
    return layers


def cell_scan(f: torch.Tensor, u: torch.Tensor, c0: torch.Tensor) -> torch.Tensor:
    """c_t = f_t c_{t-1} + u_t over the first axis of f, u [T, ...], from c0 [...]; returns c [T, ...].

    A step per character would cost a few tensor operations each (the Python loop the fused layer
    saved), so the sequence is cut into ~sqrt(T) blocks of ~sqrt(T) steps: every block runs its
    recurrence from zero at once (with F, the running product of its forget gates), then the
    block-start states are carried block to block, and c = local + F · start. About 3·sqrt(T)
    small operations instead of 3·T; rounding differs from the sequential sum (a reassociation).
    """
    steps = f.shape[0]
    span = max(1, math.isqrt(steps))
    blocks = -(-steps // span)
    pad = blocks * span - steps
    if pad:  # a forget gate of 1 and no input leave the state as it was
        f = torch.cat([f, f.new_ones((pad, *f.shape[1:]))])
        u = torch.cat([u, u.new_zeros((pad, *u.shape[1:]))])
    f = f.view(blocks, span, *f.shape[1:]).transpose(0, 1)  # [span, blocks, ...]
    u = u.view(blocks, span, *u.shape[1:]).transpose(0, 1)
    local, prod = torch.empty_like(u), torch.empty_like(f)
    local[0], prod[0] = u[0], f[0]
    for j in range(1, span):
        torch.addcmul(u[j], f[j], local[j - 1], out=local[j])
        torch.mul(prod[j - 1], f[j], out=prod[j])
    starts = [c0]
    for b in range(blocks - 1):
        starts.append(torch.addcmul(local[-1, b], prod[-1, b], starts[-1]))
    c = torch.addcmul(local, prod, torch.stack(starts))
    return c.transpose(0, 1).reshape(blocks * span, *c.shape[2:])[:steps]


def _run(module: nn.Module, x: torch.Tensor, state: tuple) -> torch.Tensor:
    """The module over x [T, B, in] from state (h [B, H] (, c [B, H])): outputs h [T, B, H]."""
    hx = tuple(s[None].contiguous() for s in state)
    out, _ = module(x.contiguous(), hx if len(hx) == 2 else hx[0])
    return out


# From this many streams on, one product per step [B, H] × [H, 4H] runs near the arithmetic peak, and
# stepping the cell by hand yields every gate as it goes: half the work of the fused layer followed
# by the gates recomputed (measured on two EPYC cores, a 256-unit layer: 121k against 35k chars/s at
# 64 streams; with one stream the fused layer is twice as fast as the hand-stepped one).
MANY_STREAMS = 8


class SteppedLayer(NamedTuple):
    """An LSTM layer's weights for stepping by hand, the candidate's quarter doubled (tanh(x) =
    2σ(2x) − 1, and a CPU's sigmoid runs 3–4× faster than its tanh, so one sigmoid serves all four
    gates). The first layer's input projection of each character is a row of `table`
    (embedding · W_ih + b, one per vocabulary entry): a gather instead of a product per block."""

    w_ih_t: torch.Tensor
    w_hh_t: torch.Tensor
    bias: torch.Tensor
    table: torch.Tensor | None  # [vocab, 4·hidden], the first layer only


def stepped_weights(engine) -> list[SteppedLayer]:
    """Each of the engine's LSTM layers as a `SteppedLayer`, float32, on the engine's device."""
    out = []
    for k, w in enumerate(engine.weights):
        hidden = w.w_hh_t.shape[0]
        scale = torch.ones(4 * hidden, device=w.b_sum.device)
        scale[2 * hidden : 3 * hidden] = 2
        w_ih_t, bias = w.w_ih_t.float() * scale, w.b_sum.float() * scale
        table = torch.addmm(bias, engine.embedding.float(), w_ih_t) if k == 0 else None
        out.append(SteppedLayer(w_ih_t, w.w_hh_t.float() * scale, bias, table))
    return out


def stepped_outputs(engine, steps: int, streams: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The signals of an LSTM stepped by hand, [layers, T, B, hidden] each, and the one
    [layers, T, B, 4·hidden] buffer the four gates are views of: each step's product and sigmoid
    fill it in place (no copy of a gate, no second buffer). The hidden state and cell have their own."""
    hidden = engine.hidden
    shape = (engine.layers, steps, streams, hidden)
    out = {name: torch.empty(shape, dtype=torch.float32, device=engine.device) for name in ("hidden", "cell")}
    gates = torch.empty((*shape[:3], 4 * hidden), dtype=torch.float32, device=engine.device)
    for q, name in enumerate(("input", "forget", "candidate", "output")):
        out[name] = gates[..., q * hidden : (q + 1) * hidden]
    return out, gates


def trace_buffers(engine, steps: int, streams: int) -> tuple[dict[str, torch.Tensor], torch.Tensor] | None:
    """Buffers for `fused_trace(..., into=)` over up to `steps` steps of `streams` streams, or None
    where that trace does not step by hand (a GRU or an RNN, or fewer than MANY_STREAMS streams).

    A long trace in blocks writes every block into the same buffers: fresh ones per block cost a
    page fault per 4 KB (~1.5 million over 600,000 characters in lanes, ~19% of the trace time)."""
    if engine.kind != "lstm" or streams < MANY_STREAMS:
        return None
    return stepped_outputs(engine, steps, streams)


def _lstm_steps(layer: SteppedLayer, x, state, out: dict, k: int, gates: torch.Tensor) -> torch.Tensor:
    """An LSTM layer stepped by hand over x [T, B, in] (B ≥ MANY_STREAMS), or the tokens [T, B] for
    the first layer, filling out[·][k] and `gates` [T, B, 4·hidden], which out's gates view."""
    steps, batch = x.shape[:2]
    hidden = layer.w_hh_t.shape[0]
    i, f, g, o = (out[name][k] for name in ("input", "forget", "candidate", "output"))
    flat = gates.view(steps * batch, 4 * hidden)  # the input projections, which gain W_hh h below
    if layer.table is not None:
        torch.index_select(layer.table, 0, x.flatten(), out=flat)
    else:
        torch.addmm(layer.bias, x.flatten(0, 1), layer.w_ih_t, out=flat)
    h_out, c_out = out["hidden"][k], out["cell"][k]
    h, c = state
    squashed = torch.empty_like(c)
    # tanh(x) = 2σ(2x) − 1 throughout. The candidate stays σ(2x) in the loop, where
    # c = f·c + i·(2σ − 1) = f·c − i + 2·i·σ, and becomes tanh for the whole block after it.
    for t in range(steps):
        gates[t].addmm_(h, layer.w_hh_t).sigmoid_()
        c = torch.mul(f[t], c, out=c_out[t]).sub_(i[t]).addcmul_(i[t], g[t], value=2)
        torch.mul(c, 2, out=squashed).sigmoid_()
        h = torch.addcmul(o[t].neg(), o[t], squashed, value=2, out=h_out[t])  # o · tanh(c) = o · (2σ(2c) − 1)
    g.mul_(2).sub_(1)
    return h_out


def _lstm_layer(module, w, x, state, out: dict, k: int) -> torch.Tensor:
    h = _run(module, x, state)
    h_before = torch.cat([state[0][None], h[:-1]])
    # The one product per layer: [x_t, h_{t-1}] against both weight matrices, as the step does.
    pre = torch.addmm(w.b_sum, torch.cat([x, h_before], dim=-1).flatten(0, 1), w.w_cat_t).view(*h.shape[:2], -1)
    hidden = h.shape[-1]
    i, f, _, o = torch.sigmoid(pre).chunk(4, dim=-1)
    g = torch.tanh(pre[..., 2 * hidden : 3 * hidden])
    out["cell"][k] = cell_scan(f, i * g, state[1])
    for name, value in (("hidden", h), ("input", i), ("forget", f), ("output", o), ("candidate", g)):
        out[name][k] = value
    return h


def _gru_layer(module, w, x, state, out: dict, k: int) -> torch.Tensor:
    h = _run(module, x, state)
    h_before = torch.cat([state[0][None], h[:-1]])
    gi = torch.addmm(w.b_ih, x.flatten(0, 1), w.w_ih_t)
    gh = torch.addmm(w.b_hh, h_before.flatten(0, 1), w.w_hh_t)
    _, (r, z, n) = gru_pointwise(gi, gh, h_before.flatten(0, 1))
    for name, value in (("hidden", h), ("reset", r), ("update", z), ("candidate", n)):
        out[name][k] = value.view(h.shape)
    return h


def fused_trace(engine, tokens: torch.Tensor, state: list, into=None) -> dict[str, torch.Tensor]:
    """`StepEngine.trace` without interventions: tokens [T] or [T, B], `state` as `init_state(B)`
    lays it out; each signal comes back as float32 [layers, T, hidden] (or [layers, T, B, hidden]).
    `into`: `trace_buffers` for at least T steps of these B streams, which the signals returned are
    views of (the next call overwrites them), or None for new ones."""
    single = tokens.dim() == 1
    tokens = tokens[:, None] if single else tokens
    if engine._fused_layers is None:
        engine._fused_layers = fused_layers(engine)
    # Every product here is batched (over positions, or over streams): where the CPU's bf16
    # instructions keep float32's accuracy, they run in bf16 pieces (`fast_float32_products`).
    with fast_float32_products(engine.device):
        if engine.kind == "lstm" and tokens.shape[1] >= MANY_STREAMS:
            out = _stepped_trace(engine, tokens, state, into)
        else:
            out = _fused_layers_trace(engine, tokens, state)
    return {name: values[:, :, 0] for name, values in out.items()} if single else out


def _fused_layers_trace(engine, tokens: torch.Tensor, state: list) -> dict[str, torch.Tensor]:
    """Each layer as a fused module over tokens [T, B], its gates recomputed after it."""
    shape = (engine.layers, *tokens.shape, engine.hidden)
    out = {s: torch.empty(shape, dtype=torch.float32, device=engine.device) for s in engine.signals}
    x = engine.embedding[tokens]  # [T, B, in]
    for k, (module, w, s) in enumerate(zip(engine._fused_layers, engine.weights, state, strict=True)):
        if engine.kind == "lstm":
            x = _lstm_layer(module, w, x, s, out, k)
        elif engine.kind == "gru":
            x = _gru_layer(module, w, x, s, out, k)
        else:
            out["hidden"][k] = x = _run(module, x, s)
    return out


def _stepped_trace(engine, tokens: torch.Tensor, state: list, into) -> dict[str, torch.Tensor]:
    """An LSTM over tokens [T, B ≥ MANY_STREAMS], every layer stepped by hand (`_lstm_steps`)."""
    if engine._stepped_weights is None:
        engine._stepped_weights = stepped_weights(engine)
    steps = tokens.shape[0]
    if into is None:
        out, gates = stepped_outputs(engine, *tokens.shape)
    else:
        values, buffer = into
        out, gates = {name: v[:, :steps] for name, v in values.items()}, buffer[:, :steps]
    x = tokens  # the first layer's input projections are rows of its table
    for k, (layer, s) in enumerate(zip(engine._stepped_weights, state, strict=True)):
        x = _lstm_steps(layer, x, s, out, k, gates[k])
    return out
