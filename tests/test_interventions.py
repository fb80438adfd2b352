"""Interventions: clamping and ablating units in the step engine, while sampling, and their measured effect."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from charlstm.analysis.interventions import (
    CLASSES,
    ablation_study,
    bits_with_interventions,
    character_classes,
    leading_whitespace,
)
from charlstm.cli import app
from charlstm.core.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from charlstm.core.engine import StepEngine
from charlstm.core.errors import CharlstmError
from charlstm.core.model import CharRNN, ModelConfig
from charlstm.core.units import Intervention, ablation, parse_clamp, parse_interventions, parse_unit, resolve
from charlstm.core.vocab import Vocab
from charlstm.evaluation.evaluate import bits_per_char
from charlstm.sampling.sample import Sampler, SampleSettings
from charlstm.ui.sample_command import StreamWriter, stream_samples
from conftest import JAVA_SNIPPET, PYTHON_SNIPPET, make_checkpoint, make_lively_checkpoint
from helpers import logits_from_trace

runner = CliRunner()
VOCAB = Vocab.from_counts({ch: 1 for ch in JAVA_SNIPPET + PYTHON_SNIPPET})


pytestmark = pytest.mark.usefixtures("one_thread")


def random_model(kind: str = "lstm", layers: int = 2, hidden: int = 16, seed: int = 0) -> CharRNN:
    """Weights well away from the initialisation, so every gate matters (float32)."""
    torch.manual_seed(seed)
    model = CharRNN(ModelConfig(vocab_size=len(VOCAB), kind=kind, layers=layers, hidden=hidden, embed=8))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.4)
    return model.eval()


def silence(model: CharRNN, layer: int, neuron: int) -> None:
    """Cut every connection out of a unit (0-based layer): nothing it holds can reach the output."""
    cfg = model.config
    with torch.no_grad():
        getattr(model.rnn, f"weight_hh_l{layer}")[:, neuron] = 0
        if layer + 1 < cfg.layers:
            getattr(model.rnn, f"weight_ih_l{layer + 1}")[:, neuron] = 0
        else:
            model.head.weight[:, neuron] = 0


def tokens_of(text: str) -> torch.Tensor:
    return torch.tensor([VOCAB.doc_sep, *VOCAB.encode(text).tolist()])


# ----- the engine ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_no_intervention_is_the_engine_as_it_was(kind):
    model = random_model(kind)
    engine = StepEngine(model)
    assert engine.clamps([]) is None and engine.clamps([[], []], per_stream=True) is None
    tokens = tokens_of(PYTHON_SNIPPET[:60])
    plain = engine.trace(tokens, fused=False)  # the path clamps take, so bits can be compared
    clamped = engine.trace(tokens, clamps=engine.clamps([Intervention(2, 3, "hidden", 0.5)]))
    # Layer 1 is untouched, bit for bit; in layer 2 the other units agree until the clamped unit's
    # value has gone round the recurrence once.
    for signal in plain:
        assert torch.equal(plain[signal][0], clamped[signal][0])
    others = [n for n in range(16) if n != 3]
    assert torch.equal(plain["hidden"][1, 0, others], clamped["hidden"][1, 0, others])
    assert not torch.equal(plain["hidden"][1, 1:, others], clamped["hidden"][1, 1:, others])

    # A batch whose first stream has no intervention: that stream is exactly the plain step's.
    state = engine.init_state(2)
    per_stream = engine.clamps([[], [ablation(kind, 1, 5)]], per_stream=True)
    for t in tokens[:20].tolist():
        pair = torch.tensor([t, t])
        plain_logits, plain_state = engine.step(pair, state)
        logits, state = engine.step(pair, state, per_stream)
        assert torch.equal(logits[0], plain_logits[0])
        state = [
            tuple(torch.stack([p[0], s[1]]) for p, s in zip(pl, st, strict=True))
            for pl, st in zip(plain_state, state, strict=True)
        ]
    assert not torch.equal(logits[1], plain_logits[1])


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_a_clamp_holds_its_value_in_the_trace_and_the_step(kind):
    model = random_model(kind, layers=3)
    engine = StepEngine(model)
    items = [Intervention(2, 7, "hidden", -0.6)]
    if kind == "lstm":
        items.append(Intervention(1, 4, "cell", 3.0))
    clamps = engine.clamps(items)
    tokens = tokens_of(JAVA_SNIPPET[:50])
    trace = engine.trace(tokens, clamps=clamps)
    assert torch.all(trace["hidden"][1, :, 7] == torch.tensor(-0.6))
    if kind == "lstm":
        assert torch.all(trace["cell"][0, :, 4] == 3.0)
        # The clamped cell is what the unit outputs through its output gate, and what its gates saw.
        torch.testing.assert_close(trace["hidden"][0, :, 4], trace["output"][0, :, 4] * torch.tanh(torch.tensor(3.0)))
        c, f, i, g = (trace[s][0, :, 5] for s in ("cell", "forget", "input", "candidate"))
        torch.testing.assert_close(c[1:], f[1:] * c[:-1] + i[1:] * g[1:], rtol=1e-4, atol=1e-5)
    # The step gives the same states one character at a time.
    state = engine.init_state(1)
    for t, token in enumerate(tokens.tolist()):
        logits, state = engine.step(torch.tensor([token]), state, clamps)
        assert state[1][0][0, 7] == torch.tensor(-0.6)
        torch.testing.assert_close(state[2][0][0], trace["hidden"][2, t], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits[0], logits_from_trace(engine, trace)[-1], rtol=1e-5, atol=1e-5)


def test_ablating_an_lstm_unit_zeroes_its_cell_and_output():
    model = random_model("lstm")
    engine = StepEngine(model)
    trace = engine.trace(tokens_of("return x;\n"), clamps=engine.clamps([ablation("lstm", 2, 9)]))
    assert torch.all(trace["cell"][1, :, 9] == 0) and torch.all(trace["hidden"][1, :, 9] == 0)


# ----- parsing ------------------------------------------------------------------------------------


def test_specs_parse_and_resolve_with_the_inspect_numbering():
    spaced = parse_clamp(" 2 : 17 = 3.5 ")
    assert (spaced.layer, spaced.neuron, spaced.signal, spaced.value) == (2, 17, None, 3.5)
    spec = parse_clamp("2:17:hidden=-0.25")
    assert (spec.layer, spec.neuron, spec.signal, spec.value) == (2, 17, "hidden", -0.25)
    specs = parse_interventions(["1:0=2", "2:1:hidden=0.5"], ["3:4"])
    assert resolve(list(specs), "lstm", 3, 8) == [
        Intervention(1, 0, "cell", 2.0),
        Intervention(2, 1, "hidden", 0.5),
        Intervention(3, 4, "cell", 0.0),
    ]
    assert resolve([parse_unit("1:2")], "gru", 1, 4) == [Intervention(1, 2, "hidden", 0.0)]
    # A unit's cell and its hidden state may both be clamped.
    assert len(resolve(list(parse_interventions(["1:0:cell=1", "1:0:hidden=0"])), "lstm", 1, 4)) == 2


@pytest.mark.parametrize(
    "spec, kind, message",
    [
        ("2:x=1", "lstm", "bad --clamp '2:x=1': expected LAYER:NEURON[:cell|hidden]=VALUE"),
        ("2:1", "lstm", "bad --clamp '2:1': expected LAYER:NEURON"),
        ("2:1=abc", "lstm", "'abc' is not a number"),
        ("2:1=nan", "lstm", "the value must be a finite float32 number"),
        ("2:1:forget=1", "lstm", "the state to clamp is cell or hidden, not 'forget'"),
        ("0:1=1", "lstm", "--clamp 0:1=1: layer 0 is out of range: this model has layers 1..2 (1-based)"),
        ("3:1=1", "lstm", "layer 3 is out of range"),
        ("1:16=1", "lstm", "neuron 16 is out of range: each layer has neurons 0..15 (0-based)"),
        ("1:-1=1", "lstm", "bad --clamp"),
        ("1:1:cell=1", "gru", "a GRU has no cell state; use hidden"),
    ],
)
def test_bad_clamp_specs_are_clear_errors(spec, kind, message):
    with pytest.raises(CharlstmError, match=re.escape(message)):
        resolve([parse_clamp(spec)], kind, 2, 16)


def test_bad_ablate_specs_and_units_given_twice():
    for text in ("1", "1:2:3", "a:b", "1:2=0", ""):
        with pytest.raises(CharlstmError, match="bad --ablate"):
            parse_unit(text, "--ablate")
    with pytest.raises(CharlstmError, match="both set unit 1:2; give each unit once"):
        resolve(list(parse_interventions(["1:2=1"], ["1:2"])), "lstm", 2, 4)
    with pytest.raises(CharlstmError, match="both set unit"):
        resolve(list(parse_interventions(["1:2=1", "1:2:cell=3"])), "lstm", 2, 4)


# ----- sampling -----------------------------------------------------------------------------------


@pytest.fixture
def lively(tmp_path) -> Path:
    return make_lively_checkpoint(tmp_path / "lively" / "best.pt")


def fp32_sampler(path: Path) -> Sampler:
    model, vocab = model_from_checkpoint(load_checkpoint(path))
    return Sampler(model, vocab, "cpu", "fp32")


def test_seeded_samples_differ_only_through_the_intervention(lively):
    sampler = fp32_sampler(lively)
    base = dict(length=150, prime="class ", temperature=1.0, seed=5, num_samples=2)
    # A unit cut off from everything (no outgoing weights): holding it changes nothing, since the
    # draws are the same noise.
    silence(sampler.model, 1, 6)
    sampler = Sampler(sampler.model, sampler.vocab, "cpu", "fp32")
    silenced = sampler.sample_texts(SampleSettings(**base))
    assert (
        sampler.sample_texts(SampleSettings(**base, interventions=parse_interventions(["2:6:hidden=0.9"]))) == silenced
    )
    assert sampler.sample_texts(SampleSettings(**base, interventions=parse_interventions(None, ["2:6"]))) == silenced
    # A unit that matters: the text changes.
    steered = sampler.sample_texts(SampleSettings(**base, interventions=parse_interventions(["1:3=4"])))
    assert steered != silenced and all(s.startswith("class ") for s in steered)


def test_clamps_hold_through_the_prime_and_beam_search(lively):
    sampler = fp32_sampler(lively)
    settings = SampleSettings(length=30, prime="if (x) {\n", greedy=True, interventions=parse_interventions(["1:3=4"]))
    clamps = sampler.engine.clamps(sampler.plan(settings).interventions)
    _, state = sampler.primed(sampler.prime_tokens(settings.prime)[0], clamps)
    assert state[0][1][0, 3] == 4.0
    # Greedy with the clamp equals the argmax path of the clamped engine, re-run from the start.
    [text] = sampler.sample_texts(settings)
    engine, tokens = sampler.engine, sampler.prime_tokens(settings.prime)[0].tolist()
    for _ in range(30):
        st = engine.init_state(1)
        for tok in tokens:
            out, st = engine.step(torch.tensor([tok]), st, clamps)
        tokens.append(int(out[0].argmax()))
    assert text == settings.prime + sampler.vocab.decode(tokens[-30:])
    beam = SampleSettings(length=30, prime="if (x) {\n", beam=1, interventions=settings.interventions)
    assert sampler.sample_texts(beam) == [text]  # width 1 is greedy
    assert sampler.last_path[0] == "beam"


class _Sink:
    def __init__(self):
        self.parts = []

    def write(self, s):
        self.parts.append(s)

    def flush(self):
        pass

    def isatty(self):
        return False


def test_watch_reports_the_units_value_after_each_character(lively):
    sampler = fp32_sampler(lively)
    settings = SampleSettings(
        length=40, prime="x = ", seed=2, temperature=1.0, watch=parse_unit("2:5:cell", "--watch", ("hidden", "cell"))
    )
    steps = list(sampler.generate(settings))
    text = "".join(chars[0] for chars, _, _ in steps)
    assert text == sampler.sample_texts(SampleSettings(length=40, prime="x = ", seed=2, temperature=1.0))[0][4:]
    trace = sampler.engine.trace(sampler.prime_tokens("x = " + text)[0])
    torch.testing.assert_close(torch.tensor([v for _, _, v in steps]), trace["cell"][1, -40:, 5], rtol=1e-4, atol=1e-4)
    # On a terminal the characters are painted; the plain text stays what a pipe gets.
    from charlstm.ui.sample_command import UnitPainter

    sink = _Sink()
    writer = StreamWriter(sink, paint=UnitPainter("cell"), keep_plain=True)
    stream_samples(sampler, settings, writer)
    shown = "".join(sink.parts)
    assert "\x1b[48;2;" in shown and writer.plain == "x = " + text + "\n"  # finish() ends the line


def test_cli_clamp_ablate_and_watch(lively):
    args = [str(lively), "-n", "60", "--seed", "3", "--precision", "fp32"]
    plain = runner.invoke(app, ["sample", *args])
    clamped = runner.invoke(app, ["sample", *args, "--clamp", "1:3=4", "--ablate", "2:0"])
    assert clamped.exit_code == 0, clamped.output
    assert "holding unit 1:3:cell=4 at every step" in clamped.stderr and "2:0:cell=0" in clamped.stderr
    assert clamped.stdout != plain.stdout
    watched = runner.invoke(app, ["sample", *args, "--watch", "1:3"])
    assert watched.exit_code == 0 and watched.stdout == plain.stdout  # piped: plain text, the same draws
    assert "--watch colours a terminal only" in watched.stderr


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--clamp", "1:x=2"], "bad --clamp '1:x=2'"),
        (["--clamp", "5:0=2"], "--clamp 5:0=2: layer 5 is out of range: this model has layers 1..2 (1-based)"),
        (["--ablate", "1:32"], "--ablate 1:32: neuron 32 is out of range"),
        (["--ablate", "1:3", "--clamp", "1:3:hidden=1"], "both set unit 1:3"),
        (["--watch", "1:3:forget"], "bad --watch '1:3:forget'"),
        (["--watch", "1:3", "-N", "2"], "--watch colours one drawn sample"),
    ],
)
def test_cli_bad_specs_are_one_line_errors(lively, extra, message):
    result = runner.invoke(app, ["sample", str(lively), "-n", "5", *extra])
    assert result.exit_code == 1
    assert message in result.stderr and "Traceback" not in result.output
    assert result.stderr.count("error:") == 1


# ----- the ablation study -------------------------------------------------------------------------


def test_character_classes_partition_the_text():
    text = 'def f(x):\n    """Doc\n    more."""\n    return g(x)  # done\n'
    classes = character_classes(text, "python")
    lead = leading_whitespace(text)
    assert lead.sum() == 12 and all(text[t] == " " for t in np.flatnonzero(lead))
    by = {name: "".join(ch for ch, k in zip(text, classes, strict=True) if CLASSES[k] == name) for name in CLASSES}
    assert by["indentation"] == " " * 12
    assert by["string"] == '"""Doc\nmore."""'
    assert by["comment"] == "# done"
    assert by["brackets"] == "()()"
    assert sum(len(v) for v in by.values()) == len(text)


def test_batched_scoring_equals_eval_and_the_clamped_trace():
    model = random_model("lstm", seed=3)
    engine = StepEngine(model)
    text = PYTHON_SNIPPET
    tokens = tokens_of(text)
    unit = ablation("lstm", 1, 2)
    bits = bits_with_interventions(engine, tokens, [[], [unit]])
    # Row 0: the model as it is, the figure eval gives (one lane: the text is short).
    assert bits.shape == (2, len(text))
    assert bits[0].mean() == pytest.approx(bits_per_char(model, tokens.numpy())["bpc"], rel=1e-5)
    # Row 1: exactly what a trace with that unit ablated predicts.
    trace = engine.trace(tokens[:-1], clamps=engine.clamps([unit]))
    logp = torch.log_softmax(logits_from_trace(engine, trace).double(), -1)
    expected = -logp[torch.arange(len(text)), tokens[1:]] / np.log(2)
    np.testing.assert_allclose(bits[1], expected.numpy(), rtol=1e-4, atol=1e-5)


def stepwise_bits(engine, tokens: torch.Tensor, conditions) -> np.ndarray:
    """bits_with_interventions as it was first written: the output layer and the log-softmax one
    step at a time (the blocked version must give the same numbers)."""
    rows, clamps, state = (
        len(conditions),
        engine.clamps(conditions, per_stream=True),
        engine.init_state(len(conditions)),
    )
    out = torch.empty(rows, tokens.shape[0] - 1, dtype=torch.float64)
    for t in range(tokens.shape[0] - 1):
        logits, state = engine.step(tokens[t].expand(rows), state, clamps)
        log_probs = torch.log_softmax(logits.to(torch.float64), dim=-1)
        out[:, t] = -log_probs.index_select(1, tokens[t + 1 : t + 2])[:, 0] / np.log(2.0)
    return out.numpy()


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_blocked_scoring_equals_scoring_step_by_step(kind, monkeypatch):
    import charlstm.analysis.interventions as iv

    engine = StepEngine(random_model(kind, seed=5))
    tokens = tokens_of(PYTHON_SNIPPET * 3)
    conditions = [[], [ablation(kind, 1, 2)], [ablation(kind, 2, 7), ablation(kind, 1, 0)]]
    expected = stepwise_bits(engine, tokens, conditions)
    # Not bit for bit: the blocked path runs the output layer as one product over a block of steps,
    # the reference as one product per step, and BLAS may block those differently (an AVX2 EPYC's
    # MKL does: ~1e-7 relative). A float32 logit is a 16-term dot product, so a few ulps of each
    # logit (~1e-6 of a bit) is what rounding allows; a row or step out of place costs whole bits.
    close = dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bits_with_interventions(engine, tokens, conditions), expected, **close)
    # Blocks that do not divide the text: a short last block, and blocks of a single step.
    for values in (7 * len(conditions) * engine.vocab_size, 1):
        monkeypatch.setattr(iv, "SCORE_VALUES", values)
        np.testing.assert_allclose(bits_with_interventions(engine, tokens, conditions), expected, **close)


def test_ablation_changes_bits_only_through_the_unit():
    model = random_model("lstm", seed=4)
    silence(model, 0, 5)  # unit 1:5 reaches nothing
    engine = StepEngine(model)
    report = ablation_study(engine, VOCAB, PYTHON_SNIPPET, [[(1, 5)], [(1, 6)]], "python", controls=3, seed=1)
    silent, live = report["ablations"]
    assert all(v == pytest.approx(0.0, abs=1e-9) for v in silent["delta"].values() if v is not None)
    assert abs(live["delta"]["all"]) > 1e-4
    # Controls: 3 random single units of layer 1, never a target, the same for the same seed.
    [control] = report["controls"]
    assert len(control["groups"]) == 3 and all(len(g) == 1 and g[0][0] == 1 for g in control["groups"])
    assert not {tuple(g[0]) for g in control["groups"]} & {(1, 5), (1, 6)}
    again = ablation_study(engine, VOCAB, PYTHON_SNIPPET, [[(1, 5)], [(1, 6)]], "python", controls=3, seed=1)
    assert again["controls"] == report["controls"]
    # Class effects are means over their characters: weighted, they make the overall one.
    delta, counts = live["delta"], report["counts"]
    total = sum(delta[c] * counts[c] for c in CLASSES if counts[c])
    assert total / counts["all"] == pytest.approx(delta["all"], rel=1e-6, abs=1e-9)


@pytest.fixture
def run_with_python(tmp_path) -> Path:
    ckpt = make_checkpoint(tmp_path / "run" / "best.pt", layers=2, hidden=12)
    payload = load_checkpoint(ckpt)
    payload["dataset"]["language"] = "python"
    save_checkpoint(ckpt, payload)
    return ckpt


def test_cli_inspect_ablate_and_find_causal(run_with_python, tmp_path):
    src = tmp_path / "code.py"
    src.write_text(PYTHON_SNIPPET * 3)
    common = [str(run_with_python), "--text-file", str(src), "--controls", "3"]
    result = runner.invoke(app, ["inspect-neuron", *common, "--ablate", "2:4", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["units"] == [[2, 4]] and report["chars"] == len(PYTHON_SNIPPET * 3)
    assert set(report["counts"]) == {"all", *CLASSES} and len(report["controls"][0]["groups"]) == 3
    table = runner.invoke(app, ["inspect-neuron", *common, "--ablate", "2:4", "--ablate", "1:0"])
    assert table.exit_code == 0 and "Ablating 2:4, 1:0" in table.stderr and "indentation" in table.stderr

    found = runner.invoke(app, ["inspect-neuron", *common, "--find", "indent", "--causal", "--top", "3", "--json"])
    assert found.exit_code == 0, found.output
    report = json.loads(found.stdout)
    assert all({"all", "own", "others", "indentation"} <= set(u["ablation"]) for u in report["neurons"])
    assert report["causal"]["counts"]["own"] == leading_whitespace(PYTHON_SNIPPET * 3).sum()
    shown = runner.invoke(app, ["inspect-neuron", *common, "--find", "string", "--causal", "--top", "3"])
    assert shown.exit_code == 0 and "Δ string" in shown.stderr and "Control, the mean of 3" in shown.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ablate", "1"], "bad --ablate '1'"),
        (["--ablate", "3:0"], "--ablate 3:0: layer 3 is out of range"),
        (["--ablate", "1:0", "--find", "indent"], "choose one of --find, --ablate at a time"),
        (["--ablate", "1:0", "-l", "1", "-n", "0"], "--ablate names its units itself"),
        (["--causal"], "--causal adds the ablation effect to --find"),
        (["--ablate", "1:0", "--controls", "0"], "--controls must be at least 1"),
        # The control ablates as many other units of the layer: none are left for it.
        ([arg for n in range(7) for arg in ("--ablate", f"1:{n}")], "only 5 of its 12 are left"),
        (["--find", "regex:name", "--causal", "--top", "200"], "of its 12 are left"),
    ],
)
def test_cli_inspect_bad_ablations(run_with_python, args, message):
    result = runner.invoke(app, ["inspect-neuron", str(run_with_python), "--text", "return name;\n", *args])
    assert result.exit_code == 1
    assert message in result.stderr and "Traceback" not in result.output
