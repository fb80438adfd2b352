"""The character-level recurrent language model: embedding, stacked LSTM/GRU/RNN, linear head."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import ModelConfig  # the model's shape (there, without torch, for --help)

LN2 = math.log(2.0)  # the loss is in nats; divided by this, in bits
RNN_MODULES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}  # each kind's torch module (config.RNN_KINDS)

GATE_ROWS = {"lstm": 4, "gru": 3, "rnn": 1}  # blocks of `hidden` rows in each kind's weight matrices
# A recurrent state: (h, c) for an LSTM, h for a GRU or tanh RNN; each [layers, batch, hidden].
State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class CharRNN(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed)
        rnn_class = RNN_MODULES[config.kind]
        self.rnn = rnn_class(
            config.embed,
            config.hidden,
            num_layers=config.layers,
            dropout=config.dropout if config.layers > 1 else 0.0,
            batch_first=True,
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.vocab_size)
        self._init_forget_bias()

    def _init_forget_bias(self) -> None:
        # --forget-bias 1 starts LSTM forget gates open (Jozefowicz et al.; torch-rnn). Not the default:
        # in a few hundred steps it cost ~0.3 bpc against PyTorch's init (docs/performance.md, "Time to quality").
        if self.config.kind != "lstm" or self.config.forget_bias is None:
            return
        h = self.config.hidden
        with torch.no_grad():
            for layer in range(self.config.layers):
                getattr(self.rnn, f"bias_ih_l{layer}")[h : 2 * h].fill_(self.config.forget_bias)
                getattr(self.rnn, f"bias_hh_l{layer}")[h : 2 * h].zero_()

    def init_state(self, batch: int, device: torch.device | str = "cpu") -> State:
        shape = (self.config.layers, batch, self.config.hidden)
        h = torch.zeros(shape, device=device)
        if self.config.kind == "lstm":
            return (h, torch.zeros(shape, device=device))
        return h

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """tokens [batch, time] → logits [batch, time, vocab] and the state after the last step."""
        x = self.embedding(tokens)
        out, state = self.rnn(x, state)
        return self.head(self.dropout(out)), state

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def parameter_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """`CharRNN(config).state_dict()`'s shapes, name for name and in its order, computed instead of
    built: building even on the meta device costs a second the first time (its random initialisers
    import torch's compiler), and a checkpoint's claimed config may be any size."""
    rows = GATE_ROWS[config.kind] * config.hidden
    shapes = {"embedding.weight": (config.vocab_size, config.embed)}
    for k in range(config.layers):
        shapes[f"rnn.weight_ih_l{k}"] = (rows, config.embed if k == 0 else config.hidden)
        shapes[f"rnn.weight_hh_l{k}"] = (rows, config.hidden)
        shapes[f"rnn.bias_ih_l{k}"] = (rows,)
        shapes[f"rnn.bias_hh_l{k}"] = (rows,)
    shapes["head.weight"] = (config.vocab_size, config.hidden)
    shapes["head.bias"] = (config.vocab_size,)
    return shapes


def detach_state(state: State) -> State:
    """Cut the graph at a batch boundary (truncated BPTT) while keeping the values."""
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()
