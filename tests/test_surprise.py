"""`eval --per-char`: each character's bits and the model's top guesses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from charlstm.cli import app
from charlstm.core.checkpoint import load_checkpoint, model_from_checkpoint
from charlstm.evaluation.evaluate import bits_per_char
from charlstm.evaluation.surprise import SurprisePage, per_char_bits
from conftest import JAVA_SNIPPET, PYTHON_SNIPPET, make_lively_checkpoint

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


# ----- surprise -----------------------------------------------------------------------------------


@pytest.fixture
def lively(tmp_path):
    return make_lively_checkpoint(tmp_path / "lively" / "best.pt", hidden=24, seed=2, scale=0.5, precision="fp32")


def test_per_char_bits_sum_to_the_total_and_rank_the_predictions(lively):
    model, vocab = model_from_checkpoint(load_checkpoint(lively))
    text = (JAVA_SNIPPET + PYTHON_SNIPPET) * 3  # longer than one forward window of 256
    tokens = np.concatenate([[vocab.doc_sep], vocab.encode(text)])
    bits, top_ids, top_probs = per_char_bits(model, tokens)
    total = bits_per_char(model, tokens, max_lanes=1)
    assert len(bits) == len(text) == total["chars"]
    assert bits.sum() == pytest.approx(total["bpc"] * total["chars"], rel=1e-6)  # float32 logits, summed apart
    # The top 5 are the five most likely, in order; the character's own bits agree with them.
    with torch.no_grad():
        logits, _ = model(torch.from_numpy(tokens[:-1])[None])
    probs = torch.softmax(logits[0].double(), -1)
    expected = probs.topk(5, dim=-1)
    assert np.array_equal(top_ids, expected.indices.numpy())
    np.testing.assert_allclose(top_probs, expected.values.numpy(), rtol=1e-4, atol=1e-6)
    own = probs[torch.arange(len(text)), torch.from_numpy(tokens[1:])]
    np.testing.assert_allclose(bits, -np.log2(own.numpy()), rtol=1e-5)


def test_cli_per_char_json_terminal_and_html(lively, tmp_path):
    src = tmp_path / "code.java"
    src.write_text(JAVA_SNIPPET)
    page = tmp_path / "surprise.html"
    result = runner.invoke(app, ["eval", str(lively), "--text-file", str(src), "--per-char", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    chars = report["characters"]
    assert "".join(c["char"] for c in chars) == JAVA_SNIPPET and report["chars"] == len(JAVA_SNIPPET)
    assert all(len(c["top"]) == 5 and c["bits"] >= 0 for c in chars)
    assert sum(c["bits"] for c in chars) == pytest.approx(report["bits"], abs=1e-3 * len(chars))
    assert report["bits"] == pytest.approx(report["bpc"] * report["chars"])
    # A short file is one lane for plain eval too: the same bits per character.
    plain = json.loads(runner.invoke(app, ["eval", str(lively), "--text-file", str(src), "--json"]).stdout)
    assert plain["bpc"] == pytest.approx(report["bpc"], rel=1e-6)

    shown = runner.invoke(app, ["eval", str(lively), "--text-file", str(src), "--per-char", "--html", str(page)])
    assert shown.exit_code == 0, shown.output
    assert "public·class·Greeter·{↵" in shown.stdout and "most surprising" in shown.stderr
    html = page.read_text()
    assert html.startswith("<!doctype html>") and html.count("<span ") == len(JAVA_SNIPPET)
    assert "&quot;Hello, world!&quot;" not in html and "title=" in html

    for args, message in (
        (["--per-char"], "--per-char scores one file: give --text-file"),
        (["--html", str(page)], "--html goes with --per-char"),
    ):
        bad = runner.invoke(app, ["eval", str(lively), *args])
        assert bad.exit_code == 1 and message in bad.stderr


def test_the_page_escapes_the_text():
    page = SurprisePage("<\n", ["<", "\n", "&"], source="<x>", checkpoint="c")
    assert page.add_char("<", 3.0, [["&", 0.5]]) and page.add_char("\n", 12.0, [])
    html = page.render(1.0)
    assert "&lt;</span>" in html and "&amp;" in html and "<x>" not in html


def test_per_char_warns_about_characters_the_model_does_not_know(tiny_checkpoint, tmp_path):
    """As plain eval does: they are scored as the unknown symbol, which the coloured text does not show."""
    text = tmp_path / "t.py"
    text.write_text("class X: pass  # ü\n")
    for extra in ([], ["--json"]):
        result = runner.invoke(app, ["eval", str(tiny_checkpoint), "--per-char", "--text-file", str(text), *extra])
        assert result.exit_code == 0, result.output
        assert "scored as unknown" in result.stderr and "'ü'" in result.stderr
