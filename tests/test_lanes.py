"""Corpus-scale traces in lanes: the layout, the hand-stepped batch path, and the lanes against the
sequential trace, on random models and on the shipped one."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from charlstm.analysis import neurons, tracing
from charlstm.core.engine import StepEngine
from charlstm.core.fused_trace import MANY_STREAMS
from charlstm.core.lanes import MAX_LANES, LaneLayout, LaneRetrace, LaneTrace
from charlstm.core.vocab import Vocab
from charlstm.ui.inspect_command import tracing_progress
from tests.test_engine import random_model

pytestmark = pytest.mark.usefixtures("one_thread")

# Float32 tolerance: the hand-stepped cell computes tanh as 2σ(2x) − 1 and sums its products in
# another order than the step engine (see test_fused_trace for the same bound).
TOL = dict(rtol=1e-4, atol=1e-4)
SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "pretrained-python"


@given(length=st.integers(1, 5000), warmup=st.integers(0, 300), most=st.integers(1, 70))
@settings(max_examples=200, deadline=None)
def test_every_character_is_kept_once_by_the_lane_that_read_it(length, warmup, most):
    layout = LaneLayout.for_text(length, warmup, most)
    assert 1 <= layout.lanes <= most
    tokens = torch.arange(length)
    lanes = layout.lane_tokens(tokens)
    seen = np.zeros(length, dtype=int)
    for begin in range(0, layout.steps, 37):  # blocks that do not line up with the warm-up
        end = min(layout.steps, begin + 37)
        positions, index = layout.kept(begin, end)
        seen[positions] += 1
        # the index picks, from the block flattened step-major, the very tokens at those positions
        assert torch.equal(lanes[begin:end].flatten()[torch.from_numpy(index)], tokens[positions])
    assert (seen == 1).all()


def test_a_short_text_is_one_lane_and_a_long_one_many():
    assert LaneLayout.for_text(10_000).lanes == 1
    assert LaneLayout.for_text(1_000_000).lanes == 60  # as many as keep four warm-ups' worth each
    layout = LaneLayout.for_text(5_000_000)
    assert layout.lanes == MAX_LANES == 128 and layout.warmup == 4096
    assert layout.share >= 4 * layout.warmup  # warming up costs at most a quarter more


def test_many_streams_stepped_by_hand_equal_each_traced_alone():
    engine = StepEngine(random_model("lstm", seed=8))
    streams = MANY_STREAMS + 2
    tokens = torch.randint(0, 19, (90, streams), generator=torch.Generator().manual_seed(4))
    start = engine.init_state(streams)
    start = [tuple(torch.randn_like(s) * 0.5 for s in layer) for layer in start]  # not from zero
    together = engine.trace(tokens, start)
    for b in (0, 3, streams - 1):
        alone = engine.trace(tokens[:, b], [tuple(s[b : b + 1] for s in layer) for layer in start], fused=False)
        for name, values in alone.items():
            torch.testing.assert_close(together[name][:, :, b], values, **TOL, msg=name)


def whole(lane_trace, length: int) -> dict[str, torch.Tensor]:
    """The lane trace's blocks put back in text order."""
    out = {}
    for positions, part in lane_trace:
        for name, values in part.items():
            out.setdefault(name, torch.full((values.shape[0], length, values.shape[2]), float("nan")))
            out[name][:, torch.from_numpy(positions)] = values
    return out


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_lanes_equal_the_sequential_trace_once_the_warm_up_has_faded(kind):
    # Weights with std 0.1 forget within a few dozen characters: a 64-character warm-up rebuilds the state.
    torch.manual_seed(1)
    model = random_model(kind, seed=2)
    with torch.no_grad():
        for p in model.rnn.parameters():
            p.normal_(0, 0.1)
    engine = StepEngine(model)
    tokens = torch.randint(0, 19, (3000,), generator=torch.Generator().manual_seed(5))
    layout = LaneLayout.for_text(3000, warmup=64, max_lanes=10)
    assert layout.lanes == 10
    traced = LaneTrace(engine, tokens, layout, block=50)
    lanes = whole(traced, 3000)
    sequential = engine.trace(tokens, fused=False)
    for name, values in sequential.items():
        torch.testing.assert_close(lanes[name], values, **TOL, msg=name)
    assert traced.boundaries.largest["hidden"] < 1e-4
    assert all(units == [] for units in traced.boundaries.units.values())


def integrating_model(vocab: int = 19):
    """One layer whose unit 0's cell forgets nothing and adds ~1 a character."""
    model = random_model("lstm", layers=1, hidden=6, vocab=vocab, seed=3)
    with torch.no_grad():
        for p in model.rnn.parameters():
            p.normal_(0, 0.1)
        hidden = 6
        model.rnn.bias_ih_l0[0] = 20.0  # input gate open
        model.rnn.bias_ih_l0[hidden] = 20.0  # forget gate at 1
        model.rnn.bias_ih_l0[2 * hidden] = 20.0  # candidate at +1
    return model.eval()


def test_boundaries_name_the_units_a_warm_up_cannot_rebuild():
    engine = StepEngine(integrating_model())
    tokens = torch.randint(0, 19, (2000,), generator=torch.Generator().manual_seed(6))
    traced = LaneTrace(engine, tokens, LaneLayout.for_text(2000, warmup=50, max_lanes=8), block=64)
    lanes = whole(traced, 2000)
    assert traced.boundaries.units["cell"] == [(1, 0)]
    assert traced.boundaries.largest["cell"] > 100  # it counted from the text's start, the lane from its warm-up
    sequential = engine.trace(tokens, fused=False)
    torch.testing.assert_close(lanes["hidden"], sequential["hidden"], **TOL)  # its tanh is saturated: h agrees
    torch.testing.assert_close(lanes["cell"][:, :, 1:], sequential["cell"][:, :, 1:], **TOL)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_lanes_traced_again_from_the_sequential_states_equal_the_sequential_trace(kind):
    """`LaneRetrace` reads only a lane's kept share, from the state it is given: given the sequential
    trace's state there, its values and last state are the sequential trace's (the last lane's share
    runs past the text's end, and those steps are dropped)."""
    engine = StepEngine(random_model(kind, seed=4))
    tokens = torch.randint(0, 19, (1003,), generator=torch.Generator().manual_seed(4))
    layout = LaneLayout.for_text(1003, warmup=30, max_lanes=5)
    last = layout.lanes - 1
    assert layout.first(last) + layout.steps > 1003
    sequential = engine.trace(tokens, fused=False)
    firsts = [layout.first(lane) + layout.warmup for lane in (1, last)]
    before = [engine.state_after(engine.trace(tokens[:first], fused=False)) for first in firsts]
    starts = [tuple(torch.cat(parts) for parts in zip(*layers, strict=True)) for layers in zip(*before, strict=True)]
    retrace = LaneRetrace(engine, tokens, layout, [1, last], starts, block=17)
    values = whole(retrace, 1003)
    kept = torch.zeros(1003, dtype=torch.bool)
    kept[firsts[0] : firsts[0] + layout.share] = kept[firsts[1] :] = True
    for name, expected in sequential.items():
        assert torch.isnan(values[name][:, ~kept]).all()
        torch.testing.assert_close(values[name][:, kept], expected[:, kept], **TOL, msg=name)
    after_lane_1 = engine.state_after(engine.trace(tokens[: firsts[0] + layout.share], fused=False))
    for layer, expected in zip(retrace.final, after_lane_1, strict=True):
        for state, state_seq in zip(layer, expected, strict=True):  # h (and an LSTM's c)
            torch.testing.assert_close(state[:1], state_seq, **TOL)


def short_memory_engine() -> StepEngine:
    model = random_model("lstm", seed=2)  # weights of std 0.3: a state takes dozens of characters to fade
    return StepEngine(model)


def test_a_seeded_pass_joins_lanes_a_short_warm_up_left_apart():
    engine = short_memory_engine()
    tokens = torch.randint(0, 19, (3000,), generator=torch.Generator().manual_seed(5))
    layout = LaneLayout.for_text(3000, warmup=2, max_lanes=10)
    first = LaneTrace(engine, tokens, layout, block=50)
    whole(first, 3000)
    assert first.boundaries.largest["hidden"] > 1e-3  # two characters rebuild no state
    again = LaneTrace(engine, tokens, layout, block=50, seeds=first.final)
    lanes = whole(again, 3000)
    assert again.boundaries.largest["hidden"] < 1e-4
    assert all(units == [] for units in again.boundaries.units.values())
    for name, values in engine.trace(tokens, fused=False).items():
        torch.testing.assert_close(lanes[name], values, **TOL, msg=name)


def test_each_seeded_pass_carries_an_integrator_one_lane_further():
    """A cell that forgets nothing joins one more lane per pass: after as many passes as lanes, all."""
    engine = StepEngine(integrating_model())
    tokens = torch.randint(0, 19, (2000,), generator=torch.Generator().manual_seed(6))
    layout = LaneLayout.for_text(2000, warmup=50, max_lanes=4)
    sequential = engine.trace(tokens, fused=False)["cell"][0, :, 0]
    seeds = None
    for passes in range(1, layout.lanes + 1):
        traced = LaneTrace(engine, tokens, layout, block=64, seeds=seeds)
        cell = whole(traced, 2000)["cell"][0, :, 0]
        exact_until = layout.first(passes) + layout.warmup if passes < layout.lanes else 2000
        torch.testing.assert_close(cell[:exact_until], sequential[:exact_until], **TOL)
        assert (traced.boundaries.units["cell"] == [(1, 0)]) == (passes < layout.lanes)
        if passes < layout.lanes:
            assert (cell[exact_until:] - sequential[exact_until:]).abs().min() > 10  # still counting from a warm-up
        seeds = traced.final


def test_find_in_lanes_ranks_the_shipped_models_units_as_the_sequential_trace_does():
    inspection = neurons.open_checkpoint(SHIPPED)
    text = (SHIPPED / "val-excerpt.txt").read_text(encoding="utf-8")
    text = (text * (45_000 // len(text) + 1))[:45_000]
    found = neurons.find_units(inspection, text, "indent", top=10)
    assert found.lanes is not None and found.lanes.layout.lanes == 2
    stats = neurons.FeatureCorrelation(found.feature)
    assert tracing.trace_into(inspection, text, [stats]) is None  # one piece
    sequential = neurons.ranked(stats.scores(), 10)
    # The same units in the same order, and scores well within the third decimal (measured: 2.5e-7 apart).
    # Not round(·, 3) on both: two kernels' last bits could straddle a rounding boundary on another CPU.
    assert [(u.layer, u.neuron, u.signal) for u in found.units] == [(u.layer, u.neuron, u.signal) for u in sequential]
    assert max(abs(a.score - b.score) for a, b in zip(found.units, sequential, strict=True)) < 1e-4
    assert found.lanes.boundaries.largest["hidden"] < 1e-3


def test_find_and_stats_trace_again_where_a_hidden_state_did_not_join(monkeypatch):
    vocab = Vocab.from_counts({c: 1 for c in "abcdefghij\n"})
    inspection = neurons.Inspection(Path("short"), {}, random_model("lstm", vocab=len(vocab), seed=2), vocab)
    text = "".join(np.random.default_rng(3).choice(list("abcdefghij\n"), size=3000))
    feature = np.random.default_rng(4).normal(size=3000)
    layout_for = LaneLayout.for_text
    monkeypatch.setattr(LaneLayout, "for_text", lambda n: layout_for(n, warmup=2, max_lanes=10))
    made = []

    def fresh():
        made.append(neurons.FeatureCorrelation(feature))
        return (made[-1],)

    (stats,), report = tracing.trace_joined(inspection, text, fresh)
    assert len(made) == report.passes == 2  # two characters of warm-up join no hidden state; a seeded pass does
    assert report.boundaries.units["hidden"] == [] and report.to_dict()["passes"] == 2
    assert "2 passes" in report.describe()
    one_piece = neurons.FeatureCorrelation(feature)
    assert tracing.trace_into(inspection, text, [one_piece]) is None
    for signal, r in one_piece.scores().items():
        np.testing.assert_allclose(stats.scores()[signal], r, atol=1e-5, err_msg=signal)


def test_the_status_line_names_a_seeded_pass_and_times_it_afresh(monkeypatch):
    class Status:
        def update(self, line):
            self.line = line

    clock = iter([0.0, 10.0, 20.0, 25.0, 26.0])  # its start, a reading per update, two at a new pass
    monkeypatch.setattr("charlstm.ui.inspect_command.time.monotonic", lambda: next(clock))
    status = Status()
    update = tracing_progress(status)
    update(100_000, 200_000)
    assert status.line.startswith("tracing 100,000 of 200,000 characters (10,000 a second, about 10 s left)")
    update(200_000, 200_000)
    update(50_000, 200_000)  # a seeded pass starts over, timed from here
    assert "characters again (pass 2: the lanes had not joined)" in status.line
    assert status.line.endswith("(50,000 a second)…")  # 50,000 in its first second; too soon to say how long
