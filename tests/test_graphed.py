"""The graphed sampling path's block logic, run without capture on the CPU: the same text as the
eager loop for the same seed, K steps per launch, stop texts, noise across block boundaries."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from charlstm.core.checkpoint import load_checkpoint, model_from_checkpoint
from charlstm.core.engine import StepEngine
from charlstm.core.errors import CharlstmError
from charlstm.core.units import WATCHABLE, parse_interventions, parse_unit
from charlstm.sampling import draw
from charlstm.sampling.draw import DrawRule, GumbelNoise
from charlstm.sampling.graphed import EAGER_ENV, GRAPH_STEPS, BlockSteps, capture_unavailable
from charlstm.sampling.sample import KEPT_GRAPHS, Sampler, SampleSettings
from conftest import make_checkpoint, make_lively_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def samplers(path, precision: str = "fp32") -> tuple[Sampler, Sampler]:
    """(eager, blocks) samplers over one model."""
    model, vocab = model_from_checkpoint(load_checkpoint(path))
    return Sampler(model, vocab, "cpu", precision, graphs="eager"), Sampler(
        model, vocab, "cpu", precision, graphs="blocks"
    )


def steps_of(sampler: Sampler, **settings) -> list[tuple[list[str], list[bool]]]:
    """Everything `generate` yields, copied (it yields the same `done` list every step)."""
    return [(list(chars), list(done)) for chars, done in sampler.generate(SampleSettings(**settings))]


CASES = [
    dict(seed=1, length=100),
    dict(seed=2, length=GRAPH_STEPS, temperature=1.4, num_samples=3),
    dict(seed=3, length=75, top_k=4, num_samples=5, prime="class "),
    dict(seed=4, length=90, top_p=0.7, temperature=1.2, num_samples=2),
    dict(seed=5, length=70, top_k=6, top_p=0.9, temperature=0.6, num_samples=4),
    dict(length=50, greedy=True, num_samples=2, prime="public "),
    dict(seed=6, length=5),  # shorter than one launch
]


@pytest.mark.parametrize("settings", CASES)
def test_blocks_give_the_eager_text_for_the_same_seed(lively_checkpoint, settings):
    eager, blocks = samplers(lively_checkpoint)
    expected = steps_of(eager, **settings)
    assert steps_of(blocks, **settings) == expected
    assert blocks.last_path == ("blocks", None) and eager.last_path[0] == "eager"
    assert len(expected) == settings["length"]
    if not settings.get("greedy"):
        assert steps_of(blocks, **{**settings, "seed": settings["seed"] + 100}) != expected


@pytest.mark.parametrize("kind", ["gru", "rnn"])
def test_blocks_match_eager_for_every_cell_kind(tmp_path, kind):
    eager, blocks = samplers(make_checkpoint(tmp_path / "m.pt", kind=kind, hidden=24))
    settings = dict(seed=9, length=70, temperature=1.5, num_samples=3)
    assert steps_of(blocks, **settings) == steps_of(eager, **settings)


def test_blocks_match_eager_with_the_fused_cell_that_cuda_steps_with(lively_checkpoint):
    eager, blocks = samplers(lively_checkpoint)
    for sampler in (eager, blocks):
        sampler.engine = StepEngine(sampler.model, torch.float32, fused_cell=True)
    settings = dict(seed=13, length=75, temperature=1.1, num_samples=3)
    assert steps_of(blocks, **settings) == steps_of(eager, **settings)
    assert blocks.last_path == ("blocks", None)


def test_blocks_match_eager_with_reduced_precision_weights(lively_checkpoint):
    eager, blocks = samplers(lively_checkpoint, precision="auto")  # int8 or fp16 where FBGEMM runs
    settings = dict(seed=11, length=80, top_k=10, num_samples=2)
    assert steps_of(blocks, **settings) == steps_of(eager, **settings)


def test_a_noise_block_that_ends_inside_a_launch(lively_checkpoint, monkeypatch):
    # Five steps of noise per generator call: launches of 32 steps read across block boundaries.
    eager, blocks = samplers(lively_checkpoint)
    monkeypatch.setattr(draw, "NOISE_ELEMENTS", 3 * eager.engine.vocab_size * 5)
    settings = dict(seed=12, length=83, num_samples=3, temperature=1.3)
    assert GumbelNoise(torch.Generator(), 3, eager.engine.vocab_size, torch.device("cpu")).block == 5
    assert steps_of(blocks, **settings) == steps_of(eager, **settings)


def test_a_stop_ends_each_sample_inside_a_block_and_the_rest_is_dropped(lively_checkpoint):
    eager, blocks = samplers(lively_checkpoint)
    base = dict(seed=13, length=300, num_samples=3, temperature=1.5)
    # A one-character stop every sample reaches, at different steps: found from an unstopped run.
    free = eager.sample_texts(SampleSettings(**base))
    firsts = {ch: [text.find(ch) for text in free] for ch in set(free[0])}
    stop, at = min(((ch, f) for ch, f in firsts.items() if min(f) >= 0), key=lambda item: max(item[1]))
    assert len(set(at)) == 3 and (max(at) + 1) % GRAPH_STEPS != 0  # ends inside a launch
    settings = dict(base, stop=stop)
    got = steps_of(blocks, **settings)
    assert got == steps_of(eager, **settings)
    assert len(got) == max(at) + 1 and all(got[-1][1])  # over once every sample has stopped
    texts = blocks.sample_texts(SampleSettings(**settings))
    assert texts == [text[: i + 1] for text, i in zip(free, at, strict=True)]  # each cut right after its stop


def test_one_launch_is_k_eager_steps_and_the_next_carries_on(lively_checkpoint):
    eager, _ = samplers(lively_checkpoint)
    engine, rule = eager.engine, DrawRule(1.3, top_k=7)
    batch, k = 2, 6
    torch.manual_seed(0)
    logits = torch.randn(1, engine.vocab_size)
    state = [tuple(torch.randn(1, engine.hidden) for _ in layer) for layer in engine.init_state(1)]
    noise = GumbelNoise(torch.Generator().manual_seed(5), batch, engine.vocab_size, torch.device("cpu"))
    blocks = BlockSteps(engine, batch, rule, steps=k, capture=False)
    blocks.load(logits, state)
    drawn = []
    for first in (0, k):
        noise.fill(blocks.noise, first, k)
        drawn += blocks.collect(blocks.launch())
    # By hand: the eager loop's draw and step, from the same start and noise.
    replay = GumbelNoise(torch.Generator().manual_seed(5), batch, engine.vocab_size, torch.device("cpu"))
    logits = logits.expand(batch, -1)
    state = [tuple(s.expand(batch, -1).contiguous() for s in layer) for layer in state]
    expected = []
    for t in range(2 * k):
        tokens = rule.choose(logits, replay.at(t))
        expected.append(tokens.tolist())
        logits, state = engine.step(tokens, state)
    assert drawn == expected
    assert torch.equal(blocks.logits, logits)
    assert all(
        torch.equal(a, b) for la, lb in zip(blocks.state, state, strict=True) for a, b in zip(la, lb, strict=True)
    )


def test_noise_fill_is_the_noise_at_each_step_and_reads_in_order():
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    cpu = torch.device("cpu")
    one = GumbelNoise(gen(), 50, 1000, cpu)  # 2^20 // 50000 = 20 steps per block
    assert one.block == 20
    expected = torch.stack([one.at(t).clone() for t in range(45)])
    other, out = GumbelNoise(gen(), 50, 1000, cpu), torch.empty(15, 50, 1000)
    got = []
    for first in (0, 15, 30):
        other.fill(out, first, 15)
        got.append(out.clone())
    assert torch.equal(torch.cat(got), expected)
    with pytest.raises(ValueError, match="out of order"):
        other.at(80)


def test_block_buffers_are_reused_and_two_live_generations_do_not_share_them(lively_checkpoint):
    eager, blocks = samplers(lively_checkpoint)
    settings = SampleSettings(seed=21, length=70, num_samples=2)
    first = blocks.sample_texts(settings)
    [kept] = blocks._blocks.values()
    assert blocks.sample_texts(settings) == first and list(blocks._blocks.values()) == [kept]
    # Interleaved: two generations at once, each must keep its own buffers.
    a, b = blocks.generate(settings), blocks.generate(SampleSettings(seed=22, length=70, num_samples=2))
    texts_a, texts_b = [""] * 2, [""] * 2
    for (ca, _), (cb, _) in zip(a, b, strict=True):
        texts_a = [t + c for t, c in zip(texts_a, ca, strict=True)]
        texts_b = [t + c for t, c in zip(texts_b, cb, strict=True)]
    assert texts_a == first == eager.sample_texts(settings)
    assert texts_b == eager.sample_texts(SampleSettings(seed=22, length=70, num_samples=2))
    blocks.sample_texts(SampleSettings(seed=1, length=40, top_k=3))  # another rule: new buffers
    assert [b.key[1] for b in blocks._blocks.values()] == [DrawRule(0.8), DrawRule(0.8, top_k=3)]
    assert next(iter(blocks._blocks.values())) is kept
    for k in range(2, 6):  # the oldest are dropped beyond KEPT_GRAPHS
        blocks.sample_texts(SampleSettings(seed=1, length=40, top_k=k + 1))
    assert len(blocks._blocks) == KEPT_GRAPHS and kept not in blocks._blocks.values()


def test_which_path_runs_and_why(lively_checkpoint, monkeypatch):
    model, vocab = model_from_checkpoint(load_checkpoint(lively_checkpoint))
    auto = Sampler(model, vocab, "cpu")
    path, reason = auto.sampling_path(SampleSettings())
    assert path == "eager" and "CUDA" in reason
    auto.sample_texts(SampleSettings(seed=1, length=10))
    assert auto.last_path == (path, reason)
    blocks = Sampler(model, vocab, "cpu", graphs="blocks")
    assert blocks.sampling_path(SampleSettings()) == ("blocks", None)
    for settings, expected, why in [
        (SampleSettings(watch=parse_unit("1:0", "--watch", WATCHABLE)), "eager", "--watch"),
        (SampleSettings(interventions=parse_interventions(["1:0=1"])), "eager", "--clamp"),
        (SampleSettings(beam=2), "beam", "--beam"),
    ]:
        path, reason = blocks.sampling_path(settings)
        assert path == expected and why in reason
    with pytest.raises(CharlstmError, match="CUDA graph"):
        Sampler(model, vocab, "cpu", graphs="capture").sampling_path(SampleSettings())
    with pytest.raises(CharlstmError, match="graph mode"):
        Sampler(model, vocab, "cpu", graphs="sometimes")
    assert capture_unavailable(torch.device("cpu")) is not None
    monkeypatch.setenv(EAGER_ENV, "1")
    assert EAGER_ENV in capture_unavailable(torch.device("cuda"))
    monkeypatch.setenv(EAGER_ENV, "0")
    assert capture_unavailable(torch.device("cuda")) is None


def test_watch_still_runs_eagerly_beside_the_blocks_mode(tmp_path):
    eager, blocks = samplers(make_lively_checkpoint(tmp_path / "w.pt"))
    settings = dict(seed=3, length=40, watch=parse_unit("2:5:cell", "--watch", WATCHABLE))
    got = list(blocks.generate(SampleSettings(**settings)))
    assert got == list(eager.generate(SampleSettings(**settings)))
    assert blocks.last_path[0] == "eager" and len(got[0]) == 3


def test_the_gpu_check_script_passes_uncaptured_on_a_cpu(tmp_path, monkeypatch):
    """bench/cuda_graph_check.py runs on a GPU only later: here its CPU form must pass, and fail on a
    difference."""
    path = Path(__file__).resolve().parent.parent / "bench" / "cuda_graph_check.py"
    spec = importlib.util.spec_from_file_location("cuda_graph_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    checkpoint = make_lively_checkpoint(tmp_path / "c.pt", hidden=16)
    monkeypatch.setattr(module, "timings", lambda *args: {})
    result = module.check(checkpoint, torch.device("cpu"))
    assert result["ok"] and result["mode"] == "blocks" and result["cases"] == len(module.CASES) + 2
    assert result["block"]["logits_bitwise_equal"] and not result["mismatches"]
    monkeypatch.setattr(module, "CASES", [dict(seed=1, length=40)])
    monkeypatch.setattr(Sampler, "sampling_path", lambda self, s: ("blocks", None))  # "auto" must say eager
    assert not module.check(checkpoint, torch.device("cpu"))["ok"]
