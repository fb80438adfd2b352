"""The step engine against the fused nn.LSTM / nn.GRU / nn.RNN modules the model trains with."""

import pytest
import torch

from charlstm.core.engine import SIGNALS, StepEngine, half_weight_kernels_available, packed_weights_available
from charlstm.core.model import CharRNN, ModelConfig
from helpers import logits_from_trace

pytestmark = pytest.mark.usefixtures("one_thread")


def random_model(kind: str, layers: int = 3, hidden: int = 24, vocab: int = 19, seed: int = 0) -> CharRNN:
    """Random weights and biases well away from the initialisation, so every gate matters."""
    torch.manual_seed(seed)
    model = CharRNN(ModelConfig(vocab_size=vocab, kind=kind, layers=layers, hidden=hidden, embed=7))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval()


def fused_state_as_engine_state(state, kind: str, layers: int) -> list:
    parts = state if kind == "lstm" else (state,)
    return [tuple(s[k] for s in parts) for k in range(layers)]


@pytest.mark.parametrize("kind,fused_cell", [("lstm", False), ("lstm", True), ("gru", None), ("rnn", None)])
def test_step_equals_fused_module_with_batch_and_carried_state(kind, fused_cell):
    model = random_model(kind)
    batch, steps = 4, 12
    tokens = torch.randint(0, 19, (batch, 2 * steps))
    with torch.no_grad():
        # Start from a non-zero state: the first half of the text, run through the fused module.
        _, start = model(tokens[:, :steps])
        reference, ref_state = model(tokens[:, steps:], start)
    engine = StepEngine(model, fused_cell=fused_cell)
    assert engine.fused_cell is bool(fused_cell)
    state = fused_state_as_engine_state(start, kind, model.config.layers)
    with torch.no_grad():
        outputs = []
        for t in range(steps, 2 * steps):
            logits, state = engine.step(tokens[:, t], state)
            outputs.append(logits)
    torch.testing.assert_close(torch.stack(outputs, dim=1), reference, rtol=1e-4, atol=1e-4)
    for got, want in zip(state, fused_state_as_engine_state(ref_state, kind, model.config.layers), strict=True):
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_trace_equals_fused_module(kind):
    model = random_model(kind, seed=1)
    tokens = torch.randint(0, 19, (30,))
    with torch.no_grad():
        reference, final = model(tokens[None])
        # Each layer's hidden sequence from the fused module: run the layers one at a time.
        x = model.embedding(tokens[None])
        layer_outputs = []
        for k in range(model.config.layers):
            single = type(model.rnn)(x.shape[-1], model.config.hidden, batch_first=True)
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(single, f"{name}_l0").copy_(getattr(model.rnn, f"{name}_l{k}"))
            x, _ = single(x)
            layer_outputs.append(x[0])
    engine = StepEngine(model)
    trace = engine.trace(tokens)
    assert set(trace) == set(SIGNALS[kind])
    assert trace["hidden"].shape == (3, 30, 24)
    torch.testing.assert_close(trace["hidden"], torch.stack(layer_outputs), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits_from_trace(engine, trace), reference[0], rtol=1e-4, atol=1e-4)
    if kind == "lstm":
        torch.testing.assert_close(trace["cell"][:, -1], final[1][:, 0], rtol=1e-4, atol=1e-4)
        # The gates the trace reports are the ones that made its states: c = f·c₋₁ + i·g, h = o·tanh(c).
        c, f, i, g, o = (trace[s] for s in ("cell", "forget", "input", "candidate", "output"))
        torch.testing.assert_close(c[:, 1:], f[:, 1:] * c[:, :-1] + i[:, 1:] * g[:, 1:], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(trace["hidden"], o * torch.tanh(c), rtol=1e-4, atol=1e-5)
    if kind == "gru":
        # h = (1 − z)·n + z·h₋₁ with the reported update gate z and candidate n.
        h, z, n = trace["hidden"], trace["update"], trace["candidate"]
        torch.testing.assert_close(h[:, 1:], (1 - z[:, 1:]) * n[:, 1:] + z[:, 1:] * h[:, :-1], rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not half_weight_kernels_available(), reason="this PyTorch build lacks FBGEMM fp16 kernels")
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_half_weight_step_and_trace_stay_close(kind):
    model = random_model(kind, hidden=32, seed=2)
    tokens = torch.randint(0, 19, (2, 20))
    with torch.no_grad():
        reference, _ = model(tokens)
    engine = StepEngine(model, torch.float16)
    assert engine.weight_dtype == torch.float16 and engine.dtype == torch.float32
    state = engine.init_state(2)
    outputs = []
    with torch.no_grad():
        for t in range(20):
            logits, state = engine.step(tokens[:, t], state)
            outputs.append(logits)
    outputs = torch.stack(outputs, dim=1)
    # fp16 weights: close, not equal (half precision keeps ~3 significant digits).
    torch.testing.assert_close(outputs, reference, rtol=0, atol=2e-2)
    assert (outputs.argmax(-1) == reference.argmax(-1)).float().mean() > 0.9
    step_trace = engine.trace(tokens[0], fused=False)  # the default, fused trace reads float32 weights
    torch.testing.assert_close(logits_from_trace(engine, step_trace), reference[0], rtol=0, atol=2e-2)
    exact = StepEngine(model).trace(tokens[0])
    for signal, values in step_trace.items():
        torch.testing.assert_close(values, exact[signal], rtol=0, atol=2e-3)


@pytest.mark.skipif(not packed_weights_available(torch.qint8), reason="this PyTorch build lacks FBGEMM int8 kernels")
def test_int8_weight_step_stays_close():
    model = random_model("lstm", hidden=32, seed=4)
    tokens = torch.randint(0, 19, (2, 20))
    with torch.no_grad():
        reference, _ = model(tokens)
    engine = StepEngine(model, torch.qint8)
    assert engine.weight_dtype == torch.qint8 and engine.dtype == torch.float32
    state, outputs = engine.init_state(2), []
    with torch.no_grad():
        for t in range(20):
            logits, state = engine.step(tokens[:, t], state)
            outputs.append(logits)
    outputs = torch.stack(outputs, dim=1)
    kl = (reference.softmax(-1) * (reference.log_softmax(-1) - outputs.log_softmax(-1))).sum(-1).mean()
    assert kl < 1e-2
    assert (outputs.argmax(-1) == reference.argmax(-1)).float().mean() > 0.8


def test_bfloat16_engine_runs_and_stays_close():
    model = random_model("lstm", layers=2, hidden=16, seed=3)
    tokens = torch.randint(0, 19, (1, 10))
    with torch.no_grad():
        reference, _ = model(tokens)
    engine = StepEngine(model, torch.bfloat16)
    state = engine.init_state(1)
    with torch.no_grad():
        outputs = []
        for t in range(10):
            logits, state = engine.step(tokens[:, t], state)
            outputs.append(logits)
    assert outputs[0].dtype == torch.float32
    torch.testing.assert_close(torch.stack(outputs, dim=1), reference, rtol=0, atol=0.15)


def test_the_fused_cell_is_cuda_only_by_default_and_lstm_only_on_request():
    # The CPU keeps its tuned step (one product over [x, h]); CUDA gets torch.lstm_cell, which it
    # runs as one fused pointwise kernel per layer.
    assert not StepEngine(random_model("lstm")).fused_cell
    assert not StepEngine(random_model("gru"), fused_cell=True).fused_cell


def test_a_layer_with_clamps_steps_unfused_and_equals_the_unfused_engine():
    # Clamping a cell needs the output gate, which torch.lstm_cell does not return.
    from charlstm.core.units import parse_interventions, resolve

    model = random_model("lstm")
    fused, plain = StepEngine(model, fused_cell=True), StepEngine(model)
    every_layer = [f"{k}:3:cell=0.5" for k in range(1, model.config.layers + 1)]
    units = resolve(parse_interventions(every_layer, []), "lstm", model.config.layers, model.config.hidden)
    tokens = torch.randint(0, 19, (3,))
    with torch.no_grad():
        a, state_a = fused.step(tokens, fused.init_state(3), fused.clamps(units))
        b, state_b = plain.step(tokens, plain.init_state(3), plain.clamps(units))
    assert torch.equal(a, b) and all(
        torch.equal(x, y) for la, lb in zip(state_a, state_b, strict=True) for x, y in zip(la, lb, strict=True)
    )
    assert all(float(c[0, 3]) == 0.5 for _, c in state_a)


def stepwise_lstm_trace(engine: StepEngine, tokens: torch.Tensor, clamps=None) -> tuple[torch.Tensor, torch.Tensor]:
    """h and c [layers, T, hidden] as `trace` first computed them: `lstm_pointwise` every step."""
    from charlstm.core.engine import Clamps, lstm_pointwise

    x_seq, hs, cs = engine.embedding[tokens], [], []
    for k, w in enumerate(engine.weights):
        h = c = torch.zeros(engine.hidden, dtype=engine.dtype)
        add, fix = engine._recurrent_adder(k), clamps.layers[k] if clamps is not None else None
        pre, rows = torch.addmm(w.b_sum, x_seq, w.w_ih_t), []
        for t in range(tokens.shape[0]):
            h, c, gates = lstm_pointwise(add(pre[t], h), c)
            if fix is not None:
                h, c = Clamps.lstm(fix, h, c, gates[3])
            rows.append((h, c))
        hs.append(torch.stack([r[0] for r in rows]).float())
        cs.append(torch.stack([r[1] for r in rows]).float())
        x_seq = hs[-1].to(engine.dtype)
    return torch.stack(hs), torch.stack(cs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("hidden", [16, 20])
def test_the_lstm_trace_loop_equals_lstm_pointwise_step_by_step(dtype, hidden):
    from charlstm.core.units import Intervention

    if dtype == torch.float16 and not half_weight_kernels_available():
        pytest.skip("no FBGEMM fp16 kernels in this build")
    engine = StepEngine(random_model("lstm", layers=2, hidden=hidden, seed=7), dtype)
    tokens = torch.randint(0, 19, (300,), generator=torch.Generator().manual_seed(1))
    for clamps in (None, engine.clamps([Intervention(1, 3, "cell", 2.5), Intervention(2, 0, "hidden", -0.5)])):
        trace = engine.trace(tokens, clamps=clamps, fused=False)  # the step loop, which clamps take
        h, c = stepwise_lstm_trace(engine, tokens, clamps)
        assert torch.equal(trace["hidden"], h) and torch.equal(trace["cell"], c)
