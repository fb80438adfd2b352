"""Beam search: width 1 is greedy, a wider beam escapes a greedy trap, pieces stream the answer."""

from __future__ import annotations

import math

import pytest
import torch
from typer.testing import CliRunner

from charlstm.cli import app
from charlstm.core.checkpoint import PRETRAINED_RUN, load_checkpoint, model_from_checkpoint
from charlstm.core.model import CharRNN, ModelConfig
from charlstm.core.vocab import DOC_SEP, Vocab
from charlstm.sampling.beam import beam_search
from charlstm.sampling.sample import Sampler, SampleSettings
from conftest import make_checkpoint, make_lively_checkpoint

runner = CliRunner()
TRAP = Vocab([DOC_SEP, "\ufffd", "a", "b", "x", "y", *"0123456789"])


def bigram_model(table: dict[str, dict[str, float]]) -> CharRNN:
    """A real CharRNN (one tanh layer) that is exactly a bigram model: P(next | previous) = table.

    The embedding is one-hot, the layer copies it into the hidden state (tanh(8) ≈ 1, no
    recurrence), and the head's column for character k holds log P(· | k).
    """
    v = len(TRAP)
    model = CharRNN(ModelConfig(vocab_size=v, kind="rnn", layers=1, hidden=v, embed=v))
    log_p = torch.full((v, v), math.log(1e-6))  # [next, previous]
    for prev, nexts in table.items():
        for ch, p in nexts.items():
            log_p[TRAP.index[ch], TRAP.index[prev]] = math.log(p)
    with torch.no_grad():
        model.embedding.weight.copy_(torch.eye(v))
        model.rnn.weight_ih_l0.copy_(8 * torch.eye(v))
        model.rnn.weight_hh_l0.zero_()
        model.rnn.bias_ih_l0.zero_()
        model.rnn.bias_hh_l0.zero_()
        model.head.weight.copy_(log_p / math.tanh(8))
        model.head.bias.zero_()
    return model.eval()


# After the start of a file, "a" is likelier than "b"; but "a" leads to ten equally likely digits,
# while "b" is always followed by "x". Greedy takes "a" (0.6 × 0.1 = 0.06 over two characters); the
# best two-character text is "bx" (0.4 × 0.99 ≈ 0.4).
TRAP_TABLE = {
    DOC_SEP: {"a": 0.6, "b": 0.4},
    "a": {d: 0.1 for d in "0123456789"},
    "b": {"x": 0.99},
    "x": {"y": 0.99},
    "y": {"y": 0.99},
    **{d: {"y": 0.99} for d in "0123456789"},
}


def trap_sampler() -> Sampler:
    return Sampler(bigram_model(TRAP_TABLE), TRAP, "cpu", "fp32")


def test_a_wider_beam_escapes_the_greedy_trap():
    sampler = trap_sampler()
    [greedy] = sampler.sample_texts(SampleSettings(length=4, greedy=True))
    assert greedy == "a0yy"  # the trap: the likely first step, then a 1-in-10 guess
    assert "".join(beam_search(sampler, "", width=1, length=4)) == greedy
    assert "".join(beam_search(sampler, "", width=2, length=4)) == "bxyy"


def test_generate_searches_when_beam_is_set_and_says_so():
    """The one entry point: `generate` (and `sample_texts` over it) runs the beam search for
    --beam, not a draw, and `last_path` reports it."""
    sampler = trap_sampler()
    assert sampler.plan(SampleSettings(beam=2)).path == "beam"
    assert sampler.sample_texts(SampleSettings(length=4, beam=2, prime="")) == ["bxyy"]
    assert sampler.last_path == ("beam", "--beam searches instead of drawing")
    assert sampler.sample_texts(SampleSettings(length=50, beam=3, stop="xy")) == ["bxy"]
    assert sampler.sample_texts(SampleSettings(length=4, greedy=True)) == ["a0yy"]
    assert sampler.last_path[0] == "eager"


@pytest.fixture
def lively_sampler(tmp_path) -> Sampler:
    model, vocab = model_from_checkpoint(load_checkpoint(make_lively_checkpoint(tmp_path / "lively" / "best.pt")))
    return Sampler(model, vocab, "cpu", "fp32")


@pytest.mark.parametrize("prime", ["", "public class "])
def test_width_one_is_greedy_and_wider_beams_score_at_least_as_well(lively_sampler, prime):
    [greedy] = lively_sampler.sample_texts(SampleSettings(length=40, prime=prime, greedy=True))
    assert prime + "".join(beam_search(lively_sampler, prime, width=1, length=40)) == greedy

    def log_prob(text: str) -> float:
        ids = lively_sampler.prime_tokens(text)[0]
        with torch.no_grad():
            logits, _ = lively_sampler.model(ids[None, :-1])
        lp = torch.log_softmax(logits[0].double(), -1).gather(1, ids[1:, None])[:, 0]
        return float(lp[len(prime) :].sum())

    wide = "".join(beam_search(lively_sampler, prime, width=8, length=40))
    assert len(wide) == 40 and log_prob(prime + wide) >= log_prob(greedy) - 1e-9
    assert "".join(beam_search(lively_sampler, prime, width=8, length=40)) == wide  # deterministic


def test_beam_stops_after_the_stop_text():
    # The digits' beams never produce "xy" and run on to the length; the stop text's beam wins.
    assert "".join(beam_search(trap_sampler(), "", width=3, length=50, stop="xy")) == "bxy"


def test_a_long_search_copies_only_the_characters_not_yet_streamed(monkeypatch):
    # Each step extends every beam; a beam that carried its whole text made the search quadratic in
    # --length (the shipped model, width 4: 36 s for 32,000 characters, 22 s once beams drop what streamed).
    from charlstm.sampling import beam as beam_module

    longest = [0]

    class Recorded(beam_module.Beam):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            longest[0] = max(longest[0], len(self.tokens))

    monkeypatch.setattr(beam_module, "Beam", Recorded)
    sampler, _ = Sampler.from_checkpoint(PRETRAINED_RUN, precision="fp32")
    assert len("".join(beam_search(sampler, "def ", width=4, length=400))) == 400
    assert longest[0] < 100


def test_a_stop_text_that_begins_in_streamed_characters_ends_the_search():
    # Width 1 settles every character at once: the stop text is found across what already streamed.
    assert "".join(beam_search(trap_sampler(), "", width=1, length=50, stop="yyyy")) == "a0yyyy"


def test_settled_characters_stream_before_the_search_ends():
    sampler, _ = Sampler.from_checkpoint(PRETRAINED_RUN, precision="fp32")
    pieces = list(beam_search(sampler, "def ", width=4, length=120))
    assert len("".join(pieces)) == 120
    assert len(pieces) > 5  # the beams agree on most characters soon after choosing them


def test_cli_beam_and_its_bad_combinations(tmp_path):
    path = make_checkpoint(tmp_path / "run" / "best.pt")
    result = runner.invoke(
        app, ["sample", str(path), "--beam", "3", "-n", "30", "--prime", "class ", "--precision", "fp32"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("class ") and len(result.stdout.rstrip("\n")) >= len("class ")
    again = runner.invoke(
        app, ["sample", str(path), "--beam", "3", "-n", "30", "--prime", "class ", "--precision", "fp32"]
    )
    assert again.stdout == result.stdout
    for extra, message in [
        (["-t", "0.5"], "drop --temperature"),
        (["--top-k", "3"], "drop --top-k"),
        (["--greedy"], "drop --greedy"),
        (["-N", "2"], "drop --num-samples"),
        (["--beam", "0"], "--beam must be at least 1"),
    ]:
        bad = runner.invoke(app, ["sample", str(path), "--beam", "2", *extra])
        assert bad.exit_code == 1 and message in bad.output and "Traceback" not in bad.output, (extra, bad.output)
