"""The fused trace (nn modules + batched gate products) against the step engine's trace."""

import pytest
import torch

from charlstm.core import backend
from charlstm.core.engine import SIGNALS, StepEngine, half_weight_kernels_available
from charlstm.core.fused_trace import MANY_STREAMS, cell_scan, trace_buffers
from charlstm.core.units import Intervention
from tests.test_engine import random_model

pytestmark = pytest.mark.usefixtures("one_thread")

# Float32 tolerance, not bit equality: the fused kernels and the batched products block their sums
# differently from the step's per-character products (and an EPYC's MKL differs from a Xeon's).
# These random weights (std 0.3) amplify a last-bit difference through three layers to ~1e-5 in the
# RNN; 1e-4 is the bound test_engine puts on the step against the same fused modules.
TOL = dict(rtol=1e-4, atol=1e-4)


def step_and_fused(engine, tokens, state=None):
    return engine.trace(tokens, state, fused=False), engine.trace(tokens, state)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_fused_trace_equals_the_step_trace(kind):
    engine = StepEngine(random_model(kind, seed=3))
    tokens = torch.randint(0, 19, (700,), generator=torch.Generator().manual_seed(0))
    step, fused = step_and_fused(engine, tokens)
    assert set(fused) == set(SIGNALS[kind])
    for name, values in step.items():
        assert fused[name].shape == values.shape == (3, 700, 24) and fused[name].dtype == torch.float32
        torch.testing.assert_close(fused[name], values, **TOL, msg=name)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_fused_trace_starts_from_a_given_state_and_chunks_carry_it(kind):
    engine = StepEngine(random_model(kind, seed=5))
    tokens = torch.randint(0, 19, (333,), generator=torch.Generator().manual_seed(2))
    state = engine.state_after(engine.trace(tokens[:50], fused=False))
    step, fused = step_and_fused(engine, tokens[50:], state)
    for name, values in step.items():
        torch.testing.assert_close(fused[name], values, **TOL, msg=name)
    chunked = [part for _, part in engine.trace_chunks(tokens, 64)]
    whole = engine.trace(tokens, fused=False)
    for name, values in whole.items():
        torch.testing.assert_close(torch.cat([p[name] for p in chunked], dim=1), values, **TOL, msg=name)


def test_blocks_traced_into_the_same_buffers_equal_one_trace():
    """A long trace in blocks writes each into the same buffers (`trace_buffers`): what a block
    returns is a view of them, and carrying its last state into the next block, which overwrites
    them, changes nothing (the last block is shorter than the buffers)."""
    engine = StepEngine(random_model("lstm", seed=9))
    tokens = torch.randint(0, 19, (60, MANY_STREAMS), generator=torch.Generator().manual_seed(9))
    buffers = trace_buffers(engine, 25, MANY_STREAMS)
    state, blocks = engine.init_state(MANY_STREAMS), []
    for begin in range(0, 60, 25):
        part = engine.trace(tokens[begin : begin + 25], state, into=buffers)
        assert all(part[name].data_ptr() == buffers[0][name].data_ptr() for name in part)
        blocks.append({name: values.clone() for name, values in part.items()})
        state = engine.state_after(part)
    for name, values in engine.trace(tokens, engine.init_state(MANY_STREAMS)).items():
        torch.testing.assert_close(torch.cat([b[name] for b in blocks], dim=1), values, **TOL, msg=name)
    # Only the hand-stepped LSTM of many streams writes into buffers; the fused modules make their own.
    assert trace_buffers(engine, 25, MANY_STREAMS - 1) is None
    assert trace_buffers(StepEngine(random_model("gru", seed=9)), 25, MANY_STREAMS) is None


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_streams_side_by_side_equal_each_traced_alone(kind):
    engine = StepEngine(random_model(kind, seed=6))
    tokens = torch.randint(0, 19, (120, 4), generator=torch.Generator().manual_seed(3))
    together = engine.trace(tokens, engine.init_state(4))
    for b in range(4):
        alone = engine.trace(tokens[:, b], fused=False)
        for name, values in alone.items():
            torch.testing.assert_close(together[name][:, :, b], values, **TOL, msg=name)


@pytest.mark.skipif(not half_weight_kernels_available(), reason="this PyTorch build lacks FBGEMM fp16 kernels")
def test_a_float16_weight_engine_traces_with_float32_weights():
    model = random_model("lstm", seed=8)
    tokens = torch.randint(0, 19, (200,), generator=torch.Generator().manual_seed(4))
    exact = StepEngine(model).trace(tokens, fused=False)
    for name, values in StepEngine(model, torch.float16).trace(tokens).items():
        torch.testing.assert_close(values, exact[name], **TOL, msg=name)


def test_clamps_keep_the_step_path():
    engine = StepEngine(random_model("lstm", seed=9))
    tokens = torch.randint(0, 19, (80,), generator=torch.Generator().manual_seed(5))
    clamps = engine.clamps([Intervention(2, 3, "cell", 1.5)])
    assert torch.equal(
        engine.trace(tokens, clamps=clamps)["cell"], engine.trace(tokens, clamps=clamps, fused=False)["cell"]
    )
    assert (engine.trace(tokens, clamps=clamps)["cell"][1, :, 3] == 1.5).all()


def test_a_bfloat16_engine_keeps_the_step_path(monkeypatch):
    engine = StepEngine(random_model("lstm", seed=10), torch.bfloat16)
    monkeypatch.setattr("charlstm.core.engine.fused_trace", lambda *a: pytest.fail("fused a bf16 trace"))
    assert engine.trace(torch.tensor([1, 2, 3]))["hidden"].dtype == torch.float32


@pytest.mark.parametrize("steps", [1, 2, 7, 64, 100, 1001])
def test_cell_scan_equals_the_sequential_recurrence(steps):
    g = torch.Generator().manual_seed(steps)
    f, u = (
        torch.rand(steps, 2, 5, generator=g, dtype=torch.float64),
        torch.randn(steps, 2, 5, generator=g, dtype=torch.float64),
    )
    f[steps // 2] = 0  # a closed forget gate: the scan must not divide by a product of gates
    c0 = torch.randn(2, 5, generator=g, dtype=torch.float64)
    expected, c = [], c0
    for t in range(steps):
        c = f[t] * c + u[t]
        expected.append(c)
    torch.testing.assert_close(cell_scan(f, u, c0), torch.stack(expected), rtol=1e-12, atol=1e-12)


def test_the_float32_bound_accepts_float32_products_and_refuses_bf16_factors():
    generator = torch.Generator().manual_seed(1)
    a, b = torch.randn(16, 256, generator=generator), torch.randn(256, 64, generator=generator)
    with backend.float32_products("highest"):
        assert backend.within_float32_bound(a, b, a @ b)
    rounded = a.bfloat16().float() @ b.bfloat16().float()  # what a bf16 matrix unit sums, exactly
    assert not backend.within_float32_bound(a, b, rounded)
    assert not backend.within_float32_bound(a, b, (a.bfloat16() @ b.bfloat16()).float())


def test_split_products_change_no_signal_beyond_float32_rounding(monkeypatch):
    """Many streams stepped by hand, with the products as this CPU's probe decides (split into bf16
    pieces where it keeps float32's accuracy) and with plain float32 products."""
    engine = StepEngine(random_model("lstm", seed=6))
    tokens = torch.randint(0, 19, (120, 12), generator=torch.Generator().manual_seed(5))
    chosen = engine.trace(tokens, engine.init_state(12))
    monkeypatch.setattr(backend, "cpu_splits_float32_products", lambda: False)
    plain = StepEngine(random_model("lstm", seed=6))
    reference = plain.trace(tokens, plain.init_state(12))
    for name, values in reference.items():
        torch.testing.assert_close(chosen[name], values, **TOL, msg=name)
    before = torch.get_float32_matmul_precision()
    with pytest.raises(RuntimeError), backend.float32_products("medium"):
        raise RuntimeError  # the precision comes back even when the block fails
    assert torch.get_float32_matmul_precision() == before
