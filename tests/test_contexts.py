"""`inspect-neuron --top-contexts`: a unit's highest and lowest windows over a corpus, streamed in chunks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from charlstm.analysis import contexts, neurons
from charlstm.analysis.contexts import AFTER, BEFORE, top_contexts
from charlstm.cli import app
from charlstm.core.checkpoint import save_checkpoint
from charlstm.core.engine import StepEngine
from charlstm.core.lanes import LaneLayout
from charlstm.core.model import CharRNN, ModelConfig
from charlstm.core.vocab import Vocab
from charlstm.ui import render
from tests.conftest import make_dataset
from tests.test_lanes import integrating_model

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


# ----- top contexts -------------------------------------------------------------------------------

PLANT = 3  # the planted unit
VOCAB = Vocab.from_counts({ch: 1 for ch in "abcdefghij qz\n"})


def planted_model(kind: str) -> CharRNN:
    """Layer 2, unit PLANT is +1 right after a 'q' and −1 right after a 'z', ~0 elsewhere: the
    embedding's first dimension is +1 for q, −1 for z, 0 for the rest, layer 1's unit 0 copies it,
    and the planted unit reads only that."""
    hidden = 8
    model = CharRNN(ModelConfig(vocab_size=len(VOCAB), kind=kind, layers=2, hidden=hidden, embed=4))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embedding.weight[VOCAB.index["q"], 0] = 1.0
        model.embedding.weight[VOCAB.index["z"], 0] = -1.0
        for layer, source, unit in ((0, 0, 0), (1, 0, PLANT)):
            w_ih, b_ih = getattr(model.rnn, f"weight_ih_l{layer}"), getattr(model.rnn, f"bias_ih_l{layer}")
            if kind == "lstm":  # input and output gates open, forget gate shut, candidate = tanh(6 x)
                b_ih[unit] = b_ih[3 * hidden + unit] = 12.0
                b_ih[hidden + unit] = -12.0
                w_ih[2 * hidden + unit, source] = 6.0
            elif kind == "gru":  # update gate shut (take the candidate), candidate = tanh(6 x)
                b_ih[hidden + unit] = -12.0
                w_ih[2 * hidden + unit, source] = 6.0
            else:
                w_ih[unit, source] = 6.0
    return model.eval()


def planted_text(rng, length: int = 3000) -> tuple[str, list[int], list[int]]:
    letters = np.array(list("abcdefghij \n"))
    chars = list(rng.choice(letters, size=length))
    q_at, z_at = [400, 1100, 2500], [700, 1900, 2950]
    for p in q_at:
        chars[p] = "q"
    for p in z_at:
        chars[p] = "z"
    return "".join(chars), q_at, z_at


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_top_contexts_find_the_planted_pattern_across_chunks(kind):
    model = planted_model(kind)
    text, q_at, z_at = planted_text(np.random.default_rng(0))
    tokens = torch.from_numpy(VOCAB.encode(text))
    engine = StepEngine(model)
    found = top_contexts(engine, tokens, 1, PLANT, "hidden", k=3, chunk=97)  # many chunk boundaries
    assert sorted(p for _, p, _, _ in found["positive"]) == q_at
    assert sorted(p for _, p, _, _ in found["negative"]) == z_at
    whole = engine.trace(tokens)["hidden"][1, :, PLANT].numpy()
    for value, p, start, values in found["positive"] + found["negative"]:
        assert value == pytest.approx(whole[p], abs=1e-5)
        assert start == p - BEFORE and len(values) == BEFORE + AFTER + 1
        np.testing.assert_allclose(values, whole[start : start + len(values)], atol=1e-5)
    # The same with one chunk for the whole text.
    assert [p for _, p, _, _ in top_contexts(engine, tokens, 1, PLANT, "hidden", k=3)["positive"]] == [
        p for _, p, _, _ in found["positive"]
    ]


def test_top_contexts_keep_windows_apart_and_reach_the_ends():
    model = planted_model("rnn")
    text = "q" * 10 + "a" * 300 + "qq" + "b" * 5
    engine = StepEngine(model)
    found = top_contexts(engine, torch.from_numpy(VOCAB.encode(text)), 1, PLANT, "hidden", k=4, chunk=50)
    positions = [p for _, p, _, _ in found["positive"]]
    assert len(positions) == 4 and min(positions) < 10 and max(positions) >= 310
    assert all(abs(a - b) > BEFORE + AFTER for i, a in enumerate(positions) for b in positions[i + 1 :])
    assert all(len(v) >= 1 for _, _, _, v in found["positive"])


def save_planted(ckpt, dataset_path) -> None:
    """The planted LSTM as a checkpoint trained on the dataset at `dataset_path` (there or not)."""
    ckpt.parent.mkdir()
    model = planted_model("lstm")
    save_checkpoint(
        ckpt,
        {
            "model_config": model.config.to_dict(),
            "vocab": VOCAB.symbols,
            "model": model.state_dict(),
            "dataset": {"name": "planted", "path": str(dataset_path), "language": "python"},
            "step": 0,
        },
    )


def test_cli_top_contexts(tmp_path):
    ckpt = tmp_path / "planted" / "best.pt"
    save_planted(ckpt, tmp_path / "nowhere")
    text, q_at, z_at = planted_text(np.random.default_rng(1))
    (ckpt.parent / "val-excerpt.txt").write_text(text)  # the default corpus when the dataset is absent
    result = runner.invoke(
        app, ["inspect-neuron", str(ckpt), "-l", "2", "-n", str(PLANT), "--top-contexts", "3", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["chars"] == len(text)
    assert sorted(e["position"] for e in report["positive"]) == q_at
    assert sorted(e["position"] for e in report["negative"]) == z_at
    for e in report["positive"]:
        assert e["text"][e["position"] - e["start"]] == "q" and e["value"] > 0.5
        assert e["line"] == text.count("\n", 0, e["position"]) + 1
    shown = runner.invoke(app, ["inspect-neuron", str(ckpt), "-l", "2", "-n", str(PLANT), "--top-contexts", "2"])
    assert shown.exit_code == 0 and "its highest values" in shown.stdout and "its lowest values" in shown.stdout
    bad = runner.invoke(app, ["inspect-neuron", str(ckpt), "--top-contexts", "2"])
    assert bad.exit_code == 1 and "--top-contexts needs the unit" in bad.stderr


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_top_contexts_in_lanes_find_what_one_piece_finds(kind):
    model = planted_model(kind)
    text, q_at, z_at = planted_text(np.random.default_rng(2), length=6000)
    tokens = torch.from_numpy(VOCAB.encode(text))
    engine = StepEngine(model)
    layout = LaneLayout.for_text(len(tokens), warmup=40, max_lanes=9)
    assert layout.lanes == 9
    heard = []
    found = top_contexts(engine, tokens, 1, PLANT, "hidden", k=3, lanes=layout, progress=lambda *a: heard.append(a))
    assert heard[-1] == (len(tokens), len(tokens)) and [d for d, _ in heard] == sorted(d for d, _ in heard)
    assert sorted(p for _, p, _, _ in found["positive"]) == q_at
    assert sorted(p for _, p, _, _ in found["negative"]) == z_at
    assert found["boundaries"].units == {"hidden": [], **({"cell": []} if kind == "lstm" else {})}
    whole = engine.trace(tokens)["hidden"][1, :, PLANT].numpy()
    for value, p, start, values in found["positive"] + found["negative"]:
        assert value == pytest.approx(whole[p], abs=1e-5)
        np.testing.assert_allclose(values, whole[start : start + len(values)], atol=1e-5)
        assert start <= p < start + len(values) <= start + BEFORE + AFTER + 1


def test_cli_top_contexts_read_the_training_split_when_the_dataset_is_here(tmp_path):
    train, *_ = planted_text(np.random.default_rng(3))
    val = planted_text(np.random.default_rng(4))[0][:900]
    dataset = make_dataset(tmp_path / "data" / "planted", train, val, language="python")
    assert dataset.vocab == VOCAB
    ckpt = tmp_path / "run" / "best.pt"
    save_planted(ckpt, dataset.path)
    unit = ["inspect-neuron", str(ckpt), "-l", "2", "-n", str(PLANT), "--top-contexts", "2", "--json"]
    report = json.loads(runner.invoke(app, unit).stdout)
    assert report["chars"] == len(train) and "training characters" in report["source"]
    report = json.loads(runner.invoke(app, [*unit, "--split", "val"]).stdout)
    assert report["chars"] == len(val) and "validation characters" in report["source"]
    bad = runner.invoke(app, [*unit, "--split", "test"])
    assert bad.exit_code == 1 and "--split is train or val" in bad.stderr


@pytest.mark.parametrize(("lanes", "passes", "retraced"), [(3, 3, False), (4, 3, True)])
def test_top_contexts_trace_again_from_the_neighbours_states_then_in_one_piece(monkeypatch, lanes, passes, retraced):
    """A cell that forgets nothing joins one lane further per round of lanes traced again from their
    neighbours' last states: three lanes join after two rounds; four do not, and the text is traced
    in one piece. Either way the values shown are the sequential trace's."""
    vocab = Vocab.from_counts({c: 1 for c in "abcdefghij\n"})
    inspection = neurons.Inspection(Path("integrator"), {}, integrating_model(len(vocab)), vocab)
    text = "".join(np.random.default_rng(7).choice(list("abcdefghij\n"), size=2000))
    layout_for = LaneLayout.for_text
    monkeypatch.setattr(LaneLayout, "for_text", lambda n: layout_for(n, warmup=50, max_lanes=lanes))
    result = contexts.unit_top_contexts(inspection, text, 1, 0, "cell", 2)
    assert result["lanes"]["lanes"] == lanes
    assert (result["lanes"]["passes"], result["lanes"]["retraced"]) == (passes, retraced)
    sequential = StepEngine(inspection.model).trace(torch.from_numpy(vocab.encode(text)))["cell"][0, :, 0]
    for entry in result["positive"] + result["negative"]:
        assert entry["value"] == pytest.approx(float(sequential[entry["position"]]), rel=1e-5)
    assert result["positive"][0]["position"] > 1900  # it counts up to the text's end
    assert result["lanes"]["traced_again"] == list(range(1, lanes))
    caption = render.contexts_view(result, "a text")[-1].caption
    assert caption.startswith(
        "traced in one piece" if retraced else f"traced in {lanes} lanes (lanes 1, 2 traced again from the last state"
    )


def resetting_counter(vocab: Vocab) -> CharRNN:
    """The integrator of `integrating_model`, whose cell 'x' sets back to 1: unit 0's cell counts the
    characters since the last 'x'."""
    model = integrating_model(len(vocab))
    with torch.no_grad():
        model.embedding.weight[:, 0] = 0.0
        model.embedding.weight[vocab.encode("x")[0], 0] = 10.0
        model.rnn.weight_ih_l0[6, 0] = -12.0  # the forget gate's row of unit 0: shut by an 'x'
    return model


def test_only_the_lane_that_did_not_join_is_traced_again(monkeypatch):
    """Every lane's warm-up but lane 2's holds an 'x', which sets the counter's cell as the
    sequential trace has it: lane 2 alone starts apart, and it alone is traced again (from lane 1's
    last state), after which every lane joins and every value shown is the sequential trace's."""
    vocab = Vocab.from_counts({c: 1 for c in "abcdefghijx\n"})
    inspection = neurons.Inspection(Path("counter"), {}, resetting_counter(vocab), vocab)
    layout_for = LaneLayout.for_text
    monkeypatch.setattr(LaneLayout, "for_text", lambda n: layout_for(n, warmup=50, max_lanes=4))
    layout = LaneLayout.for_text(2000)
    chars = list("".join(np.random.default_rng(8).choice(list("abcdefghij\n"), size=2000)))
    for lane in (1, 3):
        chars[layout.first(lane) + 10] = "x"
    text = "".join(chars)
    heard = []
    result = contexts.unit_top_contexts(inspection, text, 1, 0, "cell", 4, progress=lambda *a: heard.append(a))
    assert (result["lanes"]["traced_again"], result["lanes"]["passes"], result["lanes"]["retraced"]) == ([2], 2, False)
    assert heard[-1] == (layout.share, layout.share)  # the round of one lane, after the pass over all
    sequential = StepEngine(inspection.model).trace(torch.from_numpy(vocab.encode(text)))["cell"][0, :, 0]
    # the counter peaks at the end of lane 2's share, which its first trace had counted from its warm-up
    top = result["positive"][0]
    assert layout.first(2) < top["position"] < layout.first(3) + 10
    for entry in result["positive"] + result["negative"]:
        assert entry["value"] == pytest.approx(float(sequential[entry["position"]]), rel=1e-5)
        np.testing.assert_allclose(
            entry["values"], sequential[entry["start"] : entry["start"] + len(entry["values"])], rtol=1e-5
        )
