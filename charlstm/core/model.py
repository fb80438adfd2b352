"""The character-level recurrent language model: embedding, stacked LSTM/GRU/RNN, linear head."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .errors import CharlstmError

RNN_KINDS = ("lstm", "gru", "rnn")
MAX_LAYERS = 100  # far past any use; building a stack costs time per layer even before any weight exists

# A recurrent state: (h, c) for an LSTM, h for a GRU or tanh RNN; each [layers, batch, hidden].
State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


@dataclass
class ModelConfig:
    vocab_size: int
    kind: str = "lstm"  # lstm | gru | rnn (tanh)
    layers: int = 3  # stacked recurrent layers
    hidden: int = 512  # units per layer
    embed: int = 64  # character embedding width
    dropout: float = 0.0  # between recurrent layers and before the head, training only
    forget_bias: float | None = None  # LSTM forget gates' bias at init; None: PyTorch's uniform init

    def __post_init__(self) -> None:
        if self.kind not in RNN_KINDS:
            raise CharlstmError(f"unknown model kind {self.kind!r}; choose one of {', '.join(RNN_KINDS)}")
        for name in ("vocab_size", "layers", "hidden", "embed"):
            if getattr(self, name) < 1:
                raise CharlstmError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.layers > MAX_LAYERS:
            raise CharlstmError(f"--layers must be at most {MAX_LAYERS}, got {self.layers}")
        if not 0.0 <= self.dropout < 1.0:
            raise CharlstmError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.forget_bias is not None and not math.isfinite(self.forget_bias):
            raise CharlstmError(f"--forget-bias must be a finite number, got {self.forget_bias}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


class CharRNN(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed)
        rnn_class = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[config.kind]
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


def detach_state(state: State) -> State:
    """Cut the graph at a batch boundary (truncated BPTT) while keeping the values."""
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()
