"""The pointwise part of one recurrent step, shared by the step engine and the fused trace.

PyTorch's weight layouts: LSTM rows are the gates (i, f, g, o); GRU rows are (r, z, n).
"""

from __future__ import annotations

import torch


def lstm_pointwise(pre: torch.Tensor, c: torch.Tensor):
    """pre = W_ih x + b_ih + W_hh h + b_hh, shape [..., 4H] → (h, c, (i, f, g, o))."""
    # One sigmoid over all four gates and one tanh over g: at batch 1 the step is bound by the
    # number of tensor operations, not their size (the wasted sigmoid of g costs nothing).
    hidden = pre.shape[-1] // 4
    i, f, _, o = torch.sigmoid(pre).chunk(4, dim=-1)
    g = torch.tanh(pre[..., 2 * hidden : 3 * hidden])
    c = torch.addcmul(f * c, i, g)
    return o * torch.tanh(c), c, (i, f, g, o)


def gru_pointwise(gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor):
    """gi = W_ih x + b_ih, gh = W_hh h + b_hh, shape [..., 3H] → (h, (r, z, n))."""
    i_r, i_z, i_n = gi.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)  # the reset gate scales the recurrent part only
    return (1 - z) * n + z * h, (r, z, n)
