"""The recurrent step math, computed from a trained model's layer weights.

One implementation serves both sampling (one character at a time, state carried, O(1) work per
character) and neuron inspection (every gate of every unit recorded over a text). Both are tested
equal to the fused ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` modules the model trains with.

PyTorch's weight layouts: LSTM rows are the gates (i, f, g, o); GRU rows are (r, z, n).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .cells import gru_pointwise, lstm_pointwise
from .fused_trace import fused_trace
from .model import CharRNN

# The signals each kind of cell exposes per unit, in display order.
SIGNALS = {
    "lstm": ("hidden", "cell", "input", "forget", "output", "candidate"),
    "gru": ("reset", "update", "candidate", "hidden"),
    "rnn": ("hidden",),
}
# Signals that are gates (sigmoid outputs on 0..1); everything else is signed.
GATES = frozenset({"input", "forget", "output", "reset", "update"})
# Signed signals bounded by tanh on −1..1; the cell state is unbounded.
BOUNDED = frozenset({"hidden", "candidate"})


@dataclass
class LayerWeights:
    w_ih_t: torch.Tensor  # [in, G·H], transposed once so each step is a plain matmul
    w_hh_t: torch.Tensor  # [H, G·H]
    b_ih: torch.Tensor
    b_hh: torch.Tensor
    w_cat_t: torch.Tensor  # [in + H, G·H]: [x, h] @ w_cat_t is both products in one call (LSTM/RNN)
    b_sum: torch.Tensor


class Clamps:
    """Interventions compiled for one engine: after a layer's update, chosen units of its state are
    overwritten, at every step.

    `layers[k]` is None for a layer without interventions, else (cell_mask, cell_values, hidden_mask,
    hidden_values), each None or broadcastable against the layer's state ([hidden], or
    [batch, hidden] for a different intervention per stream). Clamping the cell also sets the unit's
    hidden output to o · tanh(clamped cell), as the LSTM's own update would; ablating a unit is
    clamping its cell (an LSTM) or its hidden state (a GRU or RNN) to zero, so it outputs zero.
    Built by `StepEngine.clamps`; the step and the trace call `lstm` / `hidden` only for a layer
    that has some, so none given costs nothing.
    """

    def __init__(self, layers: list):
        self.layers = layers

    @staticmethod
    def lstm(fix: tuple, h: torch.Tensor, c: torch.Tensor, o: torch.Tensor):
        cell_mask, cell_values, hidden_mask, hidden_values = fix
        if cell_mask is not None:
            c = torch.where(cell_mask, cell_values, c)
            h = o * torch.tanh(c)  # the same operations as the update: other units keep their bits
        if hidden_mask is not None:
            h = torch.where(hidden_mask, hidden_values, h)
        return h, c

    @staticmethod
    def hidden(fix: tuple, h: torch.Tensor) -> torch.Tensor:
        return torch.where(fix[2], fix[3], h)


def _store(out: dict, layer: int, names: tuple[str, ...], rows: list[tuple]) -> None:
    """Stack per-step tensors once per layer (cheaper than one copy per step and signal)."""
    # No rows (a trace of no steps): nothing to store, where strict=True would raise.
    for name, column in zip(names, zip(*rows, strict=True), strict=False):
        out[name][layer] = torch.stack(column).float()


def _pack_half(weight: torch.Tensor, bias: torch.Tensor):
    packed = torch.fbgemm_pack_gemm_matrix_fp16(weight.float().contiguous())
    bias = bias.float()
    return lambda x: torch.fbgemm_linear_fp16_weight(x, packed, bias)


def _pack_int8(weight: torch.Tensor, bias: torch.Tensor):
    # One scale per output row keeps every row precise; the input is quantized on the fly, per
    # call and per tensor, with FBGEMM's reduced range that avoids overflow.
    weight = weight.float().contiguous()
    scales = (weight.abs().amax(dim=1).clamp_min(1e-12) / 127).double()
    zeros = torch.zeros(weight.shape[0], dtype=torch.long)
    quantized = torch.quantize_per_channel(weight, scales, zeros, axis=0, dtype=torch.qint8)
    packed = torch.ops.quantized.linear_prepack(quantized, bias.float())
    return lambda x: torch.ops.quantized.linear_dynamic(x, packed, True)


# The reduced-precision weight kernels of the CPU step: FBGEMM's packed fp16 and dynamic int8.
_PACKERS = {torch.float16: _pack_half, torch.qint8: _pack_int8}


@functools.cache
def packed_weights_available(dtype: torch.dtype = torch.float16) -> bool:
    """Whether this PyTorch build runs `dtype` weights through FBGEMM (x86 CPU builds do)."""
    try:
        with warnings.catch_warnings():  # these ops warn (once per process) that they are deprecated
            warnings.simplefilter("ignore")
            _PACKERS[dtype](torch.ones(2, 2), torch.zeros(2))(torch.ones(1, 2))
        return True
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


def half_weight_kernels_available() -> bool:
    return packed_weights_available(torch.float16)


def _projection(weight_t: torch.Tensor, bias: torch.Tensor, packed: torch.dtype | None):
    """x ↦ x @ weight_t + bias, as one kernel call; optionally from packed fp16 or int8 weights."""
    if packed is not None:
        return _PACKERS[packed](weight_t.t(), bias)
    return lambda x: torch.addmm(bias, x, weight_t)


class StepEngine:
    """Runs a trained CharRNN one character at a time from its own copies of the weights.

    `dtype` is the weights' type. float32 is exact. On a CPU, float16 keeps the matrices that
    `step` multiplies in half precision through FBGEMM's packed fp16 kernels while activations,
    state and `trace` stay float32: sampling at batch 1 reads every weight once per character,
    so halving the bytes roughly quadruples the speed here (the fp16 copy also fits the cache).
    torch.qint8 halves the bytes again (int8 weights with one scale per row, inputs quantized
    per call) at a small cost in accuracy (a KL of ~0.002 bits per character on trained models).
    Where those kernels are missing, or off the CPU for int8, it falls back to float32. bfloat16
    (and float16 on a GPU) casts everything.

    `fused_cell` (default: an LSTM on CUDA in fp32 or fp16) makes `step` call `torch.lstm_cell`,
    which CUDA runs as two matrix products and one fused pointwise kernel per layer instead of
    about nine kernels: at batch 1 a GPU step costs per kernel, not per FLOP. Its rounding differs
    from the unfused math in the last bits. A layer with clamps, and `trace`, stay unfused.
    """

    def __init__(self, model: CharRNN, dtype: torch.dtype = torch.float32, fused_cell: bool | None = None):
        cfg = model.config
        self.kind, self.layers, self.hidden = cfg.kind, cfg.layers, cfg.hidden
        self.vocab_size = cfg.vocab_size
        device = next(model.parameters()).device
        packed = dtype if dtype in _PACKERS and device.type == "cpu" else None
        if (packed is not None and not packed_weights_available(packed)) or (dtype == torch.qint8 and packed is None):
            packed, dtype = None, torch.float32
        self.weight_dtype = dtype  # what `step` multiplies with
        self.dtype = torch.float32 if packed is not None else dtype  # activations and state
        dtype = self.dtype
        self.signals = SIGNALS[cfg.kind]
        p = {k: v.detach() for k, v in model.named_parameters()}
        self.device = p["embedding.weight"].device
        self.embedding = p["embedding.weight"].to(dtype)
        self.head_w_t = p["head.weight"].t().contiguous().to(dtype)
        self.head_b = p["head.bias"].to(dtype)
        self.weights: list[LayerWeights] = []
        for k in range(cfg.layers):
            w_ih, w_hh = p[f"rnn.weight_ih_l{k}"], p[f"rnn.weight_hh_l{k}"]
            b_ih, b_hh = p[f"rnn.bias_ih_l{k}"], p[f"rnn.bias_hh_l{k}"]
            self.weights.append(
                LayerWeights(
                    w_ih_t=w_ih.t().contiguous().to(dtype),
                    w_hh_t=w_hh.t().contiguous().to(dtype),
                    b_ih=b_ih.to(dtype),
                    b_hh=b_hh.to(dtype),
                    w_cat_t=torch.cat([w_ih, w_hh], dim=1).t().contiguous().to(dtype),
                    b_sum=(b_ih + b_hh).to(dtype),
                )
            )
        # The step's matrix products as ready-made callables: LSTM and RNN multiply [x, h] once
        # against the stacked weights; a GRU needs W_hh h apart, since its reset gate scales it.
        self._step_projections = []
        for w in self.weights:
            if self.kind == "gru":
                proj = (_projection(w.w_ih_t, w.b_ih, packed), _projection(w.w_hh_t, w.b_hh, packed))
            else:
                proj = (_projection(w.w_cat_t, w.b_sum, packed),)
            self._step_projections.append(proj)
        self._head = _projection(self.head_w_t, self.head_b, packed)
        if fused_cell is None:
            fused_cell = self.device.type == "cuda" and dtype in (torch.float32, torch.float16)
        self.fused_cell = fused_cell and cfg.kind == "lstm" and packed is None
        self._fused_layers = None  # `trace`'s one-layer nn modules, made on first use
        self._stepped_weights = None  # and its weights for many streams stepped by hand (`fused_trace`)

    def clamps(self, interventions, per_stream: bool = False) -> Clamps | None:
        """Compile interventions for `step` and `trace`; None when there are none.

        Each intervention has `layer` (1-based), `neuron` (0-based), `signal` ("cell" for an LSTM,
        or "hidden") and `value`. With `per_stream`, `interventions` holds one such list per stream
        of the batch (an empty one leaves that stream alone), for `step` only.
        """
        groups = list(interventions) if per_stream else [list(interventions)]
        if not any(groups):
            return None
        for item in (i for group in groups for i in group):
            if not (1 <= item.layer <= self.layers and 0 <= item.neuron < self.hidden):
                raise ValueError(f"no unit {item.layer}:{item.neuron} in a {self.layers}×{self.hidden} model")
        layers: list = [None] * self.layers
        for k in range(self.layers):
            parts = []
            for signal in ("cell", "hidden"):
                mask = torch.zeros(len(groups), self.hidden, dtype=torch.bool)
                values = torch.zeros(len(groups), self.hidden, dtype=torch.float32)
                for row, group in enumerate(groups):
                    for item in group:
                        if item.layer - 1 == k and item.signal == signal:
                            mask[row, item.neuron], values[row, item.neuron] = True, item.value
                if not mask.any():
                    parts += [None, None]
                    continue
                if signal == "cell" and self.kind != "lstm":
                    raise ValueError(f"a {self.kind.upper()} has no cell state to clamp")
                if not per_stream:
                    mask, values = mask[0], values[0]
                parts += [mask.to(self.device), values.to(self.device, self.dtype)]
            if any(p is not None for p in parts):
                layers[k] = tuple(parts)
        return Clamps(layers)

    # ----- sampling: one step for a batch of streams -------------------------------------------

    def init_state(self, batch: int = 1) -> list[tuple[torch.Tensor, ...]]:
        """Per layer: (h, c) for an LSTM, (h,) otherwise; zeros, as in training."""
        z = lambda: torch.zeros(batch, self.hidden, dtype=self.dtype, device=self.device)  # noqa: E731
        return [(z(), z()) if self.kind == "lstm" else (z(),) for _ in range(self.layers)]

    def step(self, tokens: torch.Tensor, state: list, clamps: Clamps | None = None) -> tuple[torch.Tensor, list]:
        """tokens [batch] → logits [batch, vocab] (float32) and the next state.

        `clamps` (from `clamps()`) overwrites units of each layer's state right after its update.
        """
        x, new_state = self.advance(tokens, state, clamps)
        return self._head(x).float(), new_state

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Top-layer hidden states [N, hidden] → logits [N, vocab] (float32), as `step` computes them."""
        return self._head(x).float()

    def advance(self, tokens: torch.Tensor, state: list, clamps: Clamps | None = None) -> tuple[torch.Tensor, list]:
        """`step` without the output layer: tokens [batch] → the top layer's hidden state [batch,
        hidden] and the next state. Scoring many steps can then run `head` on a block of them at once."""
        x = self.embedding[tokens]
        new_state = []
        for k, (proj, s) in enumerate(zip(self._step_projections, state, strict=True)):
            fix = clamps.layers[k] if clamps is not None else None
            if self.fused_cell and fix is None:
                w = self.weights[k]  # the transposed copies, transposed back: views, no copies
                h, c = torch.lstm_cell(x, s, w.w_ih_t.t(), w.w_hh_t.t(), w.b_ih, w.b_hh)
                new_state.append((h, c))
            elif self.kind == "lstm":
                h, c, gates = lstm_pointwise(proj[0](torch.cat([x, s[0]], dim=1)), s[1])
                if fix is not None:
                    h, c = Clamps.lstm(fix, h, c, gates[3])
                new_state.append((h, c))
            elif self.kind == "gru":
                h, _ = gru_pointwise(proj[0](x), proj[1](s[0]), s[0])
                if fix is not None:
                    h = Clamps.hidden(fix, h)
                new_state.append((h,))
            else:
                h = torch.tanh(proj[0](torch.cat([x, s[0]], dim=1)))
                if fix is not None:
                    h = Clamps.hidden(fix, h)
                new_state.append((h,))
            x = h
        return x, new_state

    # ----- inspection: every signal of every unit over a text ----------------------------------

    @torch.no_grad()
    def trace(
        self,
        tokens: torch.Tensor,
        state: list | None = None,
        clamps: Clamps | None = None,
        fused: bool | None = None,
        into=None,
    ) -> dict[str, torch.Tensor]:
        """Teacher-force one sequence of token ids [T]; return each signal as [layers, T, hidden].

        Without clamps, and with float32 state (`fused` None: whenever it can), the layers run as
        fused nn modules and the gates come from batched products (`fused_trace`): the same values
        to float32 rounding, with float32 weights even where `step` uses float16 ones. Otherwise
        (`fused=False`, or clamps) it steps as follows. Only the recurrence itself runs step by step:
        the input projections of a whole layer are one matrix product before the loop, each step
        adds W_hh h in place and keeps h (and c), and the gates are recomputed for all steps at once
        afterwards from the same pre-activations, through the same pointwise math as `step`. With float16 weights the
        recurrent product uses them too (half the bytes read per character). `clamps`, as in
        `step`, overwrites units after each update; the trace records the overwritten values, and
        the gates it reports are the ones computed from them. `into`: buffers the fused trace of
        many streams writes into (`fused_trace.trace_buffers`).
        """
        state = state or self.init_state(1)
        if fused is None:
            fused = clamps is None and self.dtype == torch.float32
        if fused:
            return fused_trace(self, tokens, state, into)
        steps = tokens.shape[0]
        # On the engine's device: the next layer reads this one's hidden states from here.
        out = {
            s: torch.empty(self.layers, steps, self.hidden, dtype=torch.float32, device=self.device)
            for s in self.signals
        }
        x_seq = self.embedding[tokens]  # [T, in]
        for k, (w, s) in enumerate(zip(self.weights, state, strict=True)):
            h = s[0][0]
            add_recurrent = self._recurrent_adder(k)
            fix = clamps.layers[k] if clamps is not None else None
            if self.kind == "lstm":
                c0 = s[1][0]
                pre = torch.addmm(w.b_sum, x_seq, w.w_ih_t)  # row t gains W_hh h_{t-1} in the loop
                out["hidden"][k], out["cell"][k] = self._lstm_recurrence(k, pre, h, c0, fix)
                c_before = torch.cat([c0[None].float(), out["cell"][k][:-1]]).to(pre.dtype)
                _, _, (i, f, g, o) = lstm_pointwise(pre, c_before)
                for name, gate in (("input", i), ("forget", f), ("output", o), ("candidate", g)):
                    out[name][k] = gate.float()
            elif self.kind == "gru":
                x_proj = torch.addmm(w.b_ih, x_seq, w.w_ih_t)
                h_proj = w.b_hh.expand_as(x_proj).clone()  # row t gains W_hh h_{t-1} in the loop
                rows = []
                for t in range(steps):
                    gh = add_recurrent(h_proj[t], h)
                    h, _ = gru_pointwise(x_proj[t], gh, h)
                    if fix is not None:
                        h = Clamps.hidden(fix, h)
                    rows.append((h,))
                _store(out, k, ("hidden",), rows)
                h_before = torch.cat([s[0][0][None].float(), out["hidden"][k][:-1]]).to(x_proj.dtype)
                _, (r, z, n) = gru_pointwise(x_proj, h_proj, h_before)
                for name, gate in (("reset", r), ("update", z), ("candidate", n)):
                    out[name][k] = gate.float()
            else:
                pre = torch.addmm(w.b_sum, x_seq, w.w_ih_t)
                rows = []
                for t in range(steps):
                    h = torch.tanh(add_recurrent(pre[t], h))
                    if fix is not None:
                        h = Clamps.hidden(fix, h)
                    rows.append((h,))
                _store(out, k, ("hidden",), rows)
            x_seq = out["hidden"][k].to(self.dtype)
        return out

    def state_after(self, trace: dict[str, torch.Tensor]) -> list[tuple[torch.Tensor, ...]]:
        """The recurrent state after a trace's last character, as `init_state` lays it out: [1, H]
        after a trace of one sequence ([layers, T, H]), [B, H] after B side by side ([layers, T, B, H]).

        Exact: the trace keeps h (and c) as float32 copies of the engine's own values.
        """
        last = lambda name, k: trace[name][k, -1].reshape(-1, self.hidden).to(self.device, self.dtype)  # noqa: E731
        if self.kind == "lstm":
            return [(last("hidden", k), last("cell", k)) for k in range(self.layers)]
        return [(last("hidden", k),) for k in range(self.layers)]

    def trace_chunks(
        self, tokens: torch.Tensor, chunk: int, clamps: Clamps | None = None, fused: bool | None = None
    ) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
        """`trace` over a long sequence, `chunk` steps at a time: yields (start, trace of that chunk).

        The state carries from one chunk to the next, so the chunks are slices of the whole trace
        (to float rounding: the per-chunk matrix products may sum in another order), while only
        one chunk's signals exist at a time.
        """
        state = self.init_state(1)
        for start in range(0, tokens.shape[0], chunk):
            part = self.trace(tokens[start : start + chunk], state, clamps, fused)
            yield start, part
            state = self.state_after(part)

    def _lstm_recurrence(self, layer: int, pre: torch.Tensor, h: torch.Tensor, c: torch.Tensor, fix):
        """The step-by-step part of `trace` for an LSTM layer: each row of `pre` [T, 4H] gains
        W_hh h_{t-1} in place; returns h and c [T, H] as float32.

        `lstm_pointwise`'s operations on the same shapes, so the same values, with fewer tensor
        operations per step (what a small model's trace is bound by): the gates' sigmoid goes into
        one buffer whose views are made once, the candidate's input is a view of `pre` made once,
        and with packed fp16 weights the rows and the state stay [1, ·], the kernel's own shape."""
        hidden = self.hidden
        if self.weight_dtype == torch.float16 and self.dtype == torch.float32:  # packed fp16 on a CPU
            w = self.weights[layer]
            product = _projection(w.w_hh_t, torch.zeros_like(w.b_hh), torch.float16)
            rows, h, c = pre[:, None], h[None], c[None]
            add = lambda row, h: row.add_(product(h))  # noqa: E731
        else:
            w_hh = self.weights[layer].w_hh_t.t()  # [G·H, H], a transposed view: gemv reads it as it is stored
            rows = pre
            add = lambda row, h: row.addmv_(w_hh, h)  # noqa: E731
        candidate_in = rows[..., 2 * hidden : 3 * hidden]
        gates = torch.empty_like(rows[0])
        i, f, _, o = gates.chunk(4, dim=-1)  # views of `gates`, refilled every step
        hs, cs = [], []
        for t in range(pre.shape[0]):
            torch.sigmoid(add(rows[t], h), out=gates)
            c = torch.addcmul(f * c, i, torch.tanh(candidate_in[t]))
            h = o * torch.tanh(c)
            if fix is not None:
                h, c = Clamps.lstm(fix, h, c, o)
            hs.append(h)
            cs.append(c)
        steps = pre.shape[0]
        return torch.stack(hs).view(steps, hidden).float(), torch.stack(cs).view(steps, hidden).float()

    def _recurrent_adder(self, layer: int):
        """(row, h) ↦ row += W_hh h, in place, for `trace`: BLAS's gemv, or the packed fp16 kernel."""
        w = self.weights[layer]
        if self.weight_dtype == torch.float16 and self.dtype == torch.float32:  # packed fp16 on a CPU
            product = _projection(w.w_hh_t, torch.zeros_like(w.b_hh), torch.float16)
            return lambda row, h: row.add_(product(h[None])[0])
        w_hh = w.w_hh_t.t()  # [G·H, H], a transposed view: gemv reads it as it is stored
        return lambda row, h: row.addmv_(w_hh, h)
