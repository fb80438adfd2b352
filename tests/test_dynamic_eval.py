"""Dynamic evaluation: scored before learning, the same as static with no learning, better on repeats."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from charlstm.cli import app
from charlstm.core.checkpoint import load_checkpoint, model_from_checkpoint
from charlstm.evaluation.dynamic_eval import dynamic_bits_per_char
from charlstm.evaluation.evaluate import bits_per_char
from conftest import JAVA_SNIPPET

runner = CliRunner()


def test_without_learning_it_is_static_evaluation(tiny_checkpoint):
    model, vocab = model_from_checkpoint(load_checkpoint(tiny_checkpoint))
    tokens = np.concatenate([[vocab.doc_sep], vocab.encode(JAVA_SNIPPET)])
    static = bits_per_char(model, tokens)
    dynamic = dynamic_bits_per_char(model, tokens, lr=1e-12)
    assert dynamic["chars"] == static["chars"] == len(JAVA_SNIPPET)
    assert dynamic["bpc"] == pytest.approx(static["bpc"], abs=1e-5)


def test_it_learns_a_repeated_text_and_leaves_the_model_alone(tiny_checkpoint):
    model, vocab = model_from_checkpoint(load_checkpoint(tiny_checkpoint))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tokens = np.concatenate([[vocab.doc_sep], vocab.encode(JAVA_SNIPPET * 6)])
    static = bits_per_char(model, tokens)["bpc"]
    dynamic = dynamic_bits_per_char(model, tokens, lr=0.3)["bpc"]
    assert dynamic < static - 0.5, (static, dynamic)  # an untrained model learns the repeats as it reads
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_cli_reports_both_and_rejects_bad_rates(tiny_checkpoint, tmp_path):
    text = tmp_path / "t.java"
    text.write_text(JAVA_SNIPPET * 3)
    result = runner.invoke(app, ["eval", str(tiny_checkpoint), "--text-file", str(text), "--dynamic", "--json"])
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout)
    assert scored["dynamic"]["chars"] == scored["chars"] and scored["dynamic"]["bpc"] < scored["bpc"]
    for args, message in [
        (["--dynamic", "--dynamic-lr", "0"], "--dynamic-lr must be a positive number"),
        (["--dynamic-lr", "0.1"], "--dynamic-lr needs --dynamic"),
    ]:
        bad = runner.invoke(app, ["eval", str(tiny_checkpoint), "--text-file", str(text), *args])
        assert bad.exit_code == 1 and message in bad.output and "Traceback" not in bad.output


def test_a_rate_that_diverges_is_a_one_line_error_not_a_nan(tiny_checkpoint, tmp_path):
    """NaN is no JSON value and no score: a rate that blows the weights up says so."""
    text = tmp_path / "t.java"
    text.write_text(JAVA_SNIPPET * 3)
    result = runner.invoke(
        app, ["eval", str(tiny_checkpoint), "--text-file", str(text), "--dynamic", "--dynamic-lr", "1e30", "--json"]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "diverged" in result.output and "NaN" not in result.stdout
