"""Neuron inspection: activations equal the training model, ranking finds planted units, the CLI."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from charlstm.analysis import neurons, saturation, tracing
from charlstm.cli import app
from charlstm.core.checkpoint import VAL_EXCERPT
from charlstm.core.errors import CharlstmError
from charlstm.core.model import CharRNN, ModelConfig
from helpers import logits_from_trace
from tests.conftest import JAVA_SNIPPET, PYTHON_SNIPPET, SNIPPET_VOCAB, make_checkpoint, make_dataset, make_lively_model

runner = CliRunner()
VOCAB = SNIPPET_VOCAB


def tiny_model(kind: str, layers: int = 2, hidden: int = 12) -> CharRNN:
    return make_lively_model(kind, seed=1, layers=layers, hidden=hidden)


def layer_by_layer(model: CharRNN, tokens: torch.Tensor) -> list[torch.Tensor]:
    """Each layer's hidden states [T, H] from single-layer fused modules fed the layer below."""
    cfg = model.config
    rnn_class = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cfg.kind]
    x = model.embedding(tokens[None])
    outputs = []
    for k in range(cfg.layers):
        single = rnn_class(x.shape[-1], cfg.hidden, batch_first=True)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(single, f"{name}_l0").data.copy_(getattr(model.rnn, f"{name}_l{k}"))
        x, _ = single(x)
        outputs.append(x[0])
    return outputs


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@torch.no_grad()
def test_activations_equal_the_training_forward_pass(kind):
    model = tiny_model(kind)
    text = PYTHON_SNIPPET[:80]
    tokens = torch.from_numpy(VOCAB.encode(text))
    acts = tracing.activations(model, VOCAB, text, exact=True)
    assert set(acts) == set(neurons.SIGNALS[kind])
    for values in acts.values():
        assert values.shape == (2, len(text), 12) and values.dtype == np.float32

    logits, state = model(tokens[None])
    from charlstm.core.engine import StepEngine

    trace = {k: torch.from_numpy(v) for k, v in acts.items()}
    torch.testing.assert_close(logits_from_trace(StepEngine(model), trace), logits[0], atol=1e-5, rtol=1e-4)
    for k, expected in enumerate(layer_by_layer(model, tokens)):
        torch.testing.assert_close(trace["hidden"][k], expected, atol=1e-5, rtol=1e-4)
    h_n = state[0] if kind == "lstm" else state
    torch.testing.assert_close(trace["hidden"][:, -1], h_n[:, 0], atol=1e-5, rtol=1e-4)
    if kind == "lstm":
        torch.testing.assert_close(trace["cell"][:, -1], state[1][:, 0], atol=1e-5, rtol=1e-4)
        # The cell state at every step too: the fused module's final state after each prefix.
        for t in (0, 7, 33):
            _, (_, c_t) = model(tokens[None, : t + 1])
            torch.testing.assert_close(trace["cell"][:, t], c_t[:, 0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_default_activations_are_the_exact_ones(kind):
    """The default trace reads float32 weights now (the fused layers): --exact changes nothing."""
    torch.manual_seed(3)
    model = CharRNN(ModelConfig(vocab_size=len(VOCAB), kind=kind, layers=2, hidden=64, embed=16)).eval()
    exact = tracing.activations(model, VOCAB, PYTHON_SNIPPET, exact=True)
    default = tracing.activations(model, VOCAB, PYTHON_SNIPPET)
    for signal in exact:
        np.testing.assert_array_equal(default[signal], exact[signal], err_msg=signal)


def test_gate_values_are_consistent_with_the_states():
    acts = tracing.activations(tiny_model("lstm"), VOCAB, JAVA_SNIPPET[:60])
    i, f, o, g, c, h = (acts[s][0] for s in ("input", "forget", "output", "candidate", "cell", "hidden"))
    np.testing.assert_allclose(c[1:], f[1:] * c[:-1] + i[1:] * g[1:], atol=1e-5)
    np.testing.assert_allclose(h, o * np.tanh(c), atol=1e-5)


# ----- ranking -----------------------------------------------------------------------------------


def test_ranking_finds_planted_units_and_skips_constant_ones():
    rng = np.random.default_rng(0)
    feature = rng.integers(0, 6, size=300).astype(np.float32)
    hidden = rng.normal(size=(2, 300, 8)).astype(np.float32)
    hidden[1, :, 5] = 0.3 * feature - 1  # an exact linear copy: r = +1
    cell = rng.normal(size=(2, 300, 8)).astype(np.float32)
    cell[0, :, 2] = -feature + 0.01 * rng.normal(size=300)  # a near-perfect inverse: r ≈ −1
    cell[0, :, 3] = 0.25  # constant: undefined correlation, left out
    ranked = neurons.rank_units({"hidden": hidden, "cell": cell}, feature)
    assert (ranked[0].layer, ranked[0].neuron, ranked[0].signal) == (2, 5, "hidden")
    assert ranked[0].score == pytest.approx(1.0, abs=1e-5)
    assert (ranked[1].layer, ranked[1].neuron, ranked[1].signal) == (1, 2, "cell")
    assert ranked[1].score < -0.99
    assert len(ranked) == 2 * 2 * 8 - 1 and not any(np.isnan(u.score) for u in ranked)
    assert all(abs(a.score) >= abs(b.score) for a, b in zip(ranked, ranked[1:], strict=False))
    assert neurons.rank_units({"hidden": hidden, "cell": cell}, feature, top=3) == ranked[:3]
    as_dict = ranked[0].to_dict()
    assert as_dict == {"layer": 2, "neuron": 5, "signal": "hidden", "score": pytest.approx(1.0, abs=1e-5)}


def test_correlation_matches_numpy_and_is_point_biserial_on_binary_features():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(200, 4)).astype(np.float32)
    binary = (rng.random(200) < 0.3).astype(np.float32)
    r = neurons.correlations(values, binary)
    for n in range(4):
        assert r[n] == pytest.approx(np.corrcoef(values[:, n], binary)[0, 1], abs=1e-5)
        # Point-biserial: (mean₁ − mean₀) / std · sqrt(p q).
        x, p = values[:, n].astype(np.float64), binary.mean()
        pb = (x[binary == 1].mean() - x[binary == 0].mean()) / x.std() * np.sqrt(p * (1 - p))
        assert r[n] == pytest.approx(pb, abs=1e-5)


def test_correlation_matches_numpy_corrcoef_column_by_column_and_is_undefined_on_a_constant_one():
    rng = np.random.default_rng(2)
    feature = rng.normal(size=300)
    columns = [
        rng.normal(size=300),  # unrelated
        2.5 * feature + rng.normal(scale=0.5, size=300),  # follows the feature
        -feature,  # exactly against it
        1000.0 + 0.01 * feature + rng.normal(scale=0.01, size=300),  # a large offset, a small swing
        np.full(300, 0.7),  # constant: no correlation is defined
    ]
    values = np.stack(columns, axis=1).astype(np.float32)
    r = neurons.correlations(values, feature)
    for n in range(4):
        expected = np.corrcoef(values[:, n].astype(np.float64), feature)[0, 1]
        assert r[n] == pytest.approx(expected, abs=1e-4), n
    assert r[2] == pytest.approx(-1.0, abs=1e-5)
    assert np.isnan(r[4])
    assert np.isnan(neurons.correlations(values, np.ones(300))).all()  # a constant feature: none defined


def test_constant_feature_is_a_clear_error():
    with pytest.raises(CharlstmError, match="constant"):
        neurons.rank_units({"hidden": np.zeros((1, 10, 3), np.float32)}, np.ones(10, np.float32))


def test_find_units_on_a_planted_feature_of_a_real_trace():
    """Rank a model's real activations against a feature made from one of its own units."""
    model = tiny_model("lstm")
    text = JAVA_SNIPPET
    acts = tracing.activations(model, VOCAB, text)
    planted = acts["cell"][1, :, 7]
    ranked = neurons.rank_units(acts, planted, top=1)
    assert (ranked[0].layer, ranked[0].neuron, ranked[0].signal) == (2, 7, "cell")


def test_feature_window_picks_where_the_feature_varies():
    feature = np.zeros(500, np.float32)
    feature[300:320] = 1
    start, end = neurons.feature_window(feature, 64)
    assert end - start == 64 and start <= 300 and end >= 320
    assert neurons.feature_window(feature[:10], 64) == (0, 10)


def test_saturation_fractions():
    steps, hidden = 100, 4
    acts = {
        "input": np.full((1, steps, hidden), 0.05, np.float32),
        "forget": np.full((1, steps, hidden), 0.95, np.float32),
        "output": np.full((1, steps, hidden), 0.5, np.float32),
    }
    acts["output"][0, :30, 0] = 0.99  # one unit right-saturated 30 % of the time
    rows = {r["gate"]: r for r in saturation.saturation(acts, "lstm")}
    assert rows["input"]["left_saturated"] == 1.0 and rows["input"]["units_mostly_left"] == 4
    assert rows["forget"]["right_saturated"] == 1.0 and rows["forget"]["units_mostly_right"] == 4
    assert rows["output"]["right_saturated"] == pytest.approx(0.3 / 4)
    assert rows["output"]["units_mostly_right"] == 0 and rows["output"]["layer"] == 1
    with pytest.raises(CharlstmError, match="no gates"):
        saturation.saturation({"hidden": acts["input"]}, "rnn")


# ----- the command -------------------------------------------------------------------------------


@pytest.fixture
def run_with_data(tmp_path):
    """A checkpoint whose recorded dataset exists (same vocabulary), for --from-val."""
    data = tmp_path / "data" / "tiny"
    make_dataset(data, JAVA_SNIPPET + PYTHON_SNIPPET, JAVA_SNIPPET * 3)
    ckpt = make_checkpoint(tmp_path / "run" / "best.pt")
    payload = torch.load(ckpt, weights_only=True)
    payload["dataset"]["path"] = str(data)
    torch.save(payload, ckpt)
    return ckpt


def invoke(*args: str):
    return runner.invoke(app, ["inspect-neuron", *args])


def test_cli_colours_one_neuron(tiny_checkpoint):
    result = invoke(str(tiny_checkpoint), "--layer", "2", "--neuron", "15", "--text", "if (name) {\n    greet();\n}\n")
    assert result.exit_code == 0, result.output
    assert "if·(name)·{↵" in result.stdout and "····greet();↵" in result.stdout
    assert "hidden -1" in result.stdout  # the legend
    assert "layer 2 of 2, neuron 15 (0-based)" in result.stderr


def test_cli_state_all_shows_every_signal(tiny_checkpoint):
    result = invoke(str(tiny_checkpoint), "-l", "1", "-n", "0", "--state", "all", "--text", "return name;")
    assert result.exit_code == 0, result.output
    for signal in ("hidden", "cell", "input", "forget", "output", "candidate"):
        assert f"{signal} " in result.stdout
    assert result.stdout.count("return·name;") == 6


def test_cli_gru_names_its_own_signals(tmp_path):
    ckpt = make_checkpoint(tmp_path / "gru" / "best.pt", kind="gru")
    result = invoke(str(ckpt), "-l", "1", "-n", "0", "--state", "cell", "--text", "name")
    assert result.exit_code == 1
    assert "a GRU has no 'cell' signal; it has: reset, update, candidate, hidden" in result.stderr
    ok = invoke(str(ckpt), "-l", "1", "-n", "0", "--state", "update", "--text", "name")
    assert ok.exit_code == 0 and "update closed 0" in ok.stdout


def test_cli_from_val_and_find_json(run_with_data):
    view = invoke(str(run_with_data), "-l", "1", "-n", "3", "--from-val", "22")
    assert view.exit_code == 0, view.output
    assert "public·class·Greeter·{" in view.stdout
    result = invoke(str(run_with_data), "--find", "indent", "--top", "4", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["feature"] == "indent" and report["chars"] == len(JAVA_SNIPPET * 3)
    assert len(report["neurons"]) == 4
    for unit in report["neurons"]:
        assert set(unit) == {"layer", "neuron", "signal", "score"}
        assert 1 <= unit["layer"] <= 2 and 0 <= unit["neuron"] < 16 and -1 <= unit["score"] <= 1
    scores = [abs(u["score"]) for u in report["neurons"]]
    assert scores == sorted(scores, reverse=True)


def test_cli_find_table_and_stats(run_with_data):
    table = invoke(str(run_with_data), "--find", "string", "--top", "3")
    assert table.exit_code == 0, table.output
    assert "point-biserial" in table.stderr and "see one: charlstm inspect-neuron" in table.stderr
    stats = invoke(str(run_with_data), "--stats", "--json")
    assert stats.exit_code == 0, stats.output
    rows = json.loads(stats.stdout)["gates"]
    assert [(r["layer"], r["gate"]) for r in rows] == [
        (1, "input"),
        (1, "forget"),
        (1, "output"),
        (2, "input"),
        (2, "forget"),
        (2, "output"),
    ]
    assert all(0 <= r["left_saturated"] <= 1 and 0 <= r["right_saturated"] <= 1 for r in rows)
    table = invoke(str(run_with_data), "--stats")
    assert table.exit_code == 0 and "right >0.9" in table.stderr and "forget" in table.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["-l", "3", "-n", "0", "--text", "n"], "layers 1..2 (1-based)"),
        (["-l", "0", "-n", "0", "--text", "n"], "layers 1..2 (1-based)"),
        (["-l", "1", "-n", "16", "--text", "n"], "neurons 0..15 (0-based)"),
        (["-l", "1", "-n", "0", "--text", ""], "the text is empty"),
        (["-l", "1", "-n", "0", "--text", "naïve€"], "lacks: 'ï', '€'"),
        (["--find", "loops", "--text", "n"], "unknown feature 'loops'; choose one of indent, column"),
        (["--find", "regex:(", "--text", "n"], "invalid regex '('"),
        (["--find", "indent", "--text", "name"], "constant"),
        (["-l", "1", "--text", "n"], "give both --layer and --neuron"),
        (["--text", "n"], "give --layer and --neuron"),
        (["-l", "1", "-n", "0", "--state", "memory", "--text", "n"], "unknown --state 'memory'"),
        (["-l", "1", "-n", "0", "--text", "n", "--from-val", "5"], "give only one of --text, --from-val"),
        (["-l", "1", "-n", "0"], "dataset data/tiny (validation text for this checkpoint) is not here"),
        (
            ["-l", "1", "-n", "0", "--text-file", "/nonexistent/file.java"],
            "text file not found: /nonexistent/file.java",
        ),
        (["--stats", "--find", "indent", "--text", "n"], "choose one of --find, --stats"),
        (["-l", "1", "-n", "0", "--top-contexts", "2", "--state", "all", "--text", "n"], "one signal"),
        (["--find", "indent", "-l", "1", "-n", "0", "--text", "a\n  b\n"], "--find ranks every unit"),
        (["--stats", "-l", "1", "-n", "0", "--text", "n"], "--stats covers every unit"),
        (["-l", "1", "-n", "0", "--text", "n", "--data", "data/tiny"], "--data picks the dataset to read"),
    ],
)
def test_cli_bad_input_is_one_clear_line(tiny_checkpoint, args, message):
    result = invoke(str(tiny_checkpoint), *args)
    assert result.exit_code == 1, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1


def test_cli_text_file_and_missing_checkpoint(tmp_path, tiny_checkpoint):
    f = tmp_path / "Snippet.java"
    f.write_bytes(b"int n;\r\n")
    result = invoke(str(tiny_checkpoint), "-l", "1", "-n", "1", "--text-file", str(f))
    assert result.exit_code == 0 and "int·n;↵" in result.stdout and "\r" not in result.stdout
    missing = invoke(str(tmp_path / "nothing.pt"), "-l", "1", "-n", "0", "--text", "n")
    assert missing.exit_code == 1 and "checkpoint not found" in missing.stderr


def test_cli_svg_saves_the_coloured_view(tiny_checkpoint, tmp_path):
    picture = tmp_path / "views" / "neuron.svg"
    result = invoke(str(tiny_checkpoint), "-l", "1", "-n", "2", "--text", "if (name) {\n}\n", "--svg", str(picture))
    assert result.exit_code == 0, result.output
    svg = picture.read_text(encoding="utf-8").replace("&#160;", " ")
    assert svg.startswith("<svg") and "layer 1, neuron 2: hidden" in svg
    drawn = "".join(re.findall(r"<text class=\"[^\"]*-r\d+\"[^>]*>([^<]*)</text>", svg))
    assert drawn.startswith("if·(name)·{↵\n}↵\n")  # every character, in order
    assert len(set(re.findall(r'<rect fill="(#[0-9a-f]{6})"', svg))) > 3  # on their own colours
    clash = invoke(str(tiny_checkpoint), "--find", "indent", "--text", "a\n  b\n", "--svg", str(picture))
    assert clash.exit_code == 1 and "--svg saves the view of one neuron" in clash.stderr


def test_a_run_folder_excerpt_stands_in_for_a_missing_dataset(tiny_checkpoint):
    missing = invoke(str(tiny_checkpoint), "-l", "1", "-n", "0")
    assert missing.exit_code == 1 and "is not here" in missing.stderr
    (tiny_checkpoint.parent / VAL_EXCERPT).write_text(JAVA_SNIPPET, encoding="utf-8")
    view = invoke(str(tiny_checkpoint), "-l", "1", "-n", "0", "--from-val", "12")
    assert view.exit_code == 0, view.output
    assert JAVA_SNIPPET[:12].replace(" ", "·") in view.stdout and VAL_EXCERPT in view.stderr.replace("\n", "")


@pytest.mark.parametrize("mode", [["--find", "indent"], ["--stats"], ["--ablate", "1:0"], ["-l", "1", "-n", "0"]])
def test_a_text_file_name_with_brackets_is_shown_as_it_is(tiny_checkpoint, tmp_path, mode):
    folder = tmp_path / "["
    folder.mkdir()
    f = folder / "x] [bold]y.java"  # "[/x]": a closing tag rich would refuse; "[bold]": one it would eat
    f.write_text("if (name) {\n    greet();\n}\n", encoding="utf-8")
    result = invoke(str(tiny_checkpoint), *mode, "--text-file", str(f))
    assert result.exit_code == 0, result.output
    assert "[/x][bold]y.java" in re.sub(r"\s", "", result.stderr)  # as the title wraps it


@pytest.mark.parametrize("causal", [[], ["--causal", "--controls", "1"]])
def test_a_regex_feature_with_brackets_is_shown_as_it_is(tiny_checkpoint, causal):
    result = invoke(
        str(tiny_checkpoint), "--find", "regex:[/e]", "--top", "2", *causal, "--text", "if (name) {\n    greet();\n}\n"
    )
    assert result.exit_code == 0, result.output
    assert "regex:[/e]" in result.stderr


def test_help_states_every_default_text_length():
    result = runner.invoke(app, ["inspect-neuron", "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    assert "5000 for --find/--stats/--ablate" in result.output and "whole split for --top-contexts" in result.output


def test_a_large_offset_does_not_inflate_the_spread():
    """A chunk's mean is first guessed by a float32 product (off by up to ~5e-4 at 1000): centred on
    the guess alone, every square would gain that error squared (the spread of 1000 ± 0.01 came out
    0.1–0.7% too large); the residual sums correct it."""
    rng = np.random.default_rng(3)
    feature = rng.normal(size=3000)
    values = (1000.0 + 0.01 * rng.normal(size=(1, 3000, 64))).astype(np.float32)
    stats = neurons.FeatureCorrelation(feature)
    for start in range(0, 3000, 700):
        stats.add(start, {"cell": values[:, start : start + 700]})
    exact = values[0].astype(np.float64)
    np.testing.assert_allclose(stats.m2["cell"][0], ((exact - exact.mean(axis=0)) ** 2).sum(axis=0), rtol=1e-4)
    np.testing.assert_allclose(stats.mean["cell"][0], exact.mean(axis=0), rtol=1e-9)


def test_the_cell_colour_scale_is_its_largest_finite_value():
    """--find draws a cell at full colour at its largest |value| over the text: an overflow or a NaN
    at one character leaves the others to set the scale."""
    snippets = neurons.WindowSnippets((0, 4))
    first = np.array([[[1.0, -0.5], [-3.0, 0.25], [np.inf, 0.0], [2.0, np.nan]]], dtype=np.float32)
    snippets.add(0, {"cell": first})
    np.testing.assert_array_equal(snippets.largest["cell"], [[3.0, 0.5]])
    snippets.add(4, {"cell": np.array([[[-4.0, 0.1]]], dtype=np.float32)})
    np.testing.assert_array_equal(snippets.largest["cell"], [[4.0, 0.5]])


def test_correlations_take_float64_values_as_float32_ones():
    rng = np.random.default_rng(5)
    feature = rng.normal(size=500)
    values = rng.normal(size=(2, 500, 8))
    scores = {}
    for dtype in (np.float64, np.float32):
        stats = neurons.FeatureCorrelation(feature)
        stats.add(0, {"hidden": values.astype(dtype)})
        scores[dtype] = stats.scores()["hidden"]
    np.testing.assert_allclose(scores[np.float64], scores[np.float32], atol=1e-6)
    np.testing.assert_allclose(scores[np.float32][1, 3], np.corrcoef(values[1, :, 3], feature)[0, 1], atol=1e-5)
