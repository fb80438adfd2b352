"""The article's small studies: valid synthetic languages, honest judges, and a counter that learns."""

import json
import random
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from charlstm.analysis import experiments
from charlstm.analysis import synthetic as syn
from charlstm.analysis.experiments import run_study
from charlstm.cli import app
from charlstm.core.checkpoint import load_checkpoint, model_from_checkpoint, resolve_checkpoint
from charlstm.core.errors import CharlstmError

runner = CliRunner()
seeds = st.integers(min_value=0, max_value=2**32 - 1)
max_ns = st.integers(min_value=1, max_value=30)


# ----- generators make only valid sequences ------------------------------------------------------


@given(seeds, max_ns)
def test_counter_sequences_are_a_n_x_b_n(seed, max_n):
    body = syn.counter_example(random.Random(seed), max_n)
    match = re.fullmatch(r"(a+)X(b+)", body)
    assert match and len(match[1]) == len(match[2]) <= max_n


@given(seeds, max_ns)
def test_selective_counter_sequences_have_as_many_bs_as_as(seed, max_n):
    body = syn.selective_counter_example(random.Random(seed), max_n)
    match = re.fullmatch(r"([aX]+)Y(b+)", body)
    assert match
    assert 1 <= match[1].count("a") == len(match[2]) <= max_n


@given(seeds, max_ns)
def test_state_sequences_end_with_the_first_letter_in_lower_case(seed, max_n):
    body = syn.state_example(random.Random(seed), max_n)
    match = re.fullmatch(r"([AB])(x+)Y([ab])", body)
    assert match and match[3] == match[1].lower() and len(match[2]) <= max_n


@given(seeds, max_ns)
def test_copy_sequences_repeat_the_string(seed, max_n):
    body = syn.copy_example(random.Random(seed), max_n)
    first, second = body.split("X")
    assert first == second and 1 <= len(first) <= max_n and set(first) <= set("abc")


@settings(max_examples=50)
@given(seeds, st.sampled_from(sorted(syn.GENERATORS)))
def test_every_generated_sequence_is_judged_right_by_its_own_answer(seed, study):
    body = syn.GENERATORS[study](random.Random(seed))
    prompt, answer = syn.split_prompt(study, body)
    assert prompt.startswith(syn.START) and answer.endswith(syn.END)
    assert prompt + answer == syn.frame(body)
    assert syn.is_correct(study, prompt, answer)
    assert set(syn.frame(body)) <= set(syn.vocab().symbols)


# ----- the judges on hand-made generations -------------------------------------------------------


def test_counter_judge():
    assert syn.is_correct("counter", "^aaaX", "bbb$")
    assert syn.is_correct("counter", "aaaX", "bbb$")  # the START symbol is optional in a prompt
    assert not syn.is_correct("counter", "^aaaX", "bb$")  # one short
    assert not syn.is_correct("counter", "^aaaX", "bbbb$")  # one too many
    assert not syn.is_correct("counter", "^aaaX", "bbb")  # never ended
    assert not syn.is_correct("counter", "^aaaX", "bbb$b")  # went on after the end
    assert not syn.is_correct("counter", "^aaaX", "bab$")


def test_selective_counter_judge_ignores_the_xs():
    assert syn.is_correct("selective-counter", "^aXaXXaY", "bbb$")
    assert not syn.is_correct("selective-counter", "^aXaXXaY", "bbbbbb$")  # counted the X's
    assert not syn.is_correct("selective-counter", "^aXaXXaY", "bb$")


def test_state_judge():
    assert syn.is_correct("state", "^AxxxY", "a$")
    assert syn.is_correct("state", "^BxY", "b$")
    assert not syn.is_correct("state", "^AxxxY", "b$")
    assert not syn.is_correct("state", "^BxY", "B$")
    assert not syn.is_correct("state", "^BxY", "b")


def test_copy_judge():
    assert syn.is_correct("copy", "^abcaX", "abca$")
    assert not syn.is_correct("copy", "^abcaX", "abc$")
    assert not syn.is_correct("copy", "^abcaX", "abcb$")
    assert not syn.is_correct("copy", "^abcaX", "abcaa$")


@pytest.mark.parametrize(
    "study, prompt", [("counter", "^abX"), ("counter", "^aaa"), ("state", "^CxY"), ("copy", "^abdX"), ("state", "^AY")]
)
def test_judges_refuse_prompts_that_are_not_of_their_language(study, prompt):
    with pytest.raises(CharlstmError):
        syn.is_correct(study, prompt, "$")


def test_max_n_correct_is_the_end_of_the_first_unbroken_run():
    assert syn.max_n_correct({1: True, 2: True, 3: False, 4: True}) == 2
    assert syn.max_n_correct({1: False, 2: True}) == 0
    assert syn.max_n_correct({n: True for n in range(1, 26)}) == 25


# ----- a shortened counter run -------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_counter(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return out, run_study(
        "counter",
        seed=0,
        out_dir=out,
        steps=400,
        max_n=5,
        eval_max_n=6,
    )


def test_short_counter_run_learns_every_n_up_to_5(short_counter):
    _, result = short_counter
    per_n = result["evaluation"]["per_n"]
    assert all(per_n[str(n)] is True for n in range(1, 6)), per_n
    assert result["evaluation"]["max_n_correct"] >= 5
    unit = result["neurons"]["counting_unit"]
    assert abs(unit["r_with_count"]) > 0.8 and 0 <= unit["neuron"] < 10 and unit["layer"] == 1


def test_short_counter_run_is_saved_as_an_ordinary_checkpoint(short_counter):
    out, result = short_counter
    payload = load_checkpoint(resolve_checkpoint(out / "experiment-counter"))
    model, vocab = model_from_checkpoint(payload)
    assert payload["dataset"]["name"] == "experiment-counter"
    assert model.config.hidden == 10 and model.config.layers == 1
    assert vocab.symbols[:2] == list(syn.SPECIALS)
    saved = json.loads((out / "experiment-counter" / "results.json").read_text())
    assert saved["evaluation"]["per_n"] == result["evaluation"]["per_n"]


def test_same_seed_same_result_other_seed_other_result(tmp_path):
    runs = [
        run_study(
            "counter",
            seed=s,
            out_dir=tmp_path,
            steps=60,
            max_n=3,
            eval_max_n=3,
        )
        for s in (7, 7, 8)
    ]
    assert runs[0]["final_loss"] == runs[1]["final_loss"] != runs[2]["final_loss"]
    assert runs[0]["views"] == runs[1]["views"]


def test_cli_json_smoke(tmp_path):
    result = runner.invoke(
        app,
        [
            "experiment",
            "counter",
            "--steps",
            "150",
            "--max-n",
            "3",
            "--eval-max-n",
            "4",
            "--json",
            "--out-dir",
            str(tmp_path),
            "--html",
            str(tmp_path / "counter.html"),
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["study"] == "counter"
    assert set(payload["evaluation"]["per_n"]) == {"1", "2", "3", "4"}
    assert isinstance(payload["evaluation"]["max_n_correct"], int)
    assert (tmp_path / "experiment-counter" / "best.pt").is_file()
    assert "counting unit" in result.stderr and "max_n_correct" in result.stderr
    assert "<script" in (tmp_path / "counter.html").read_text()


def test_cli_all_gives_one_object_keyed_by_study_and_the_comparison_table(tmp_path):
    result = runner.invoke(
        app,
        [
            "experiment",
            "all",
            "--steps",
            "20",
            "--max-n",
            "2",
            "--eval-max-n",
            "2",
            "--quiet",
            "--json",
            "--out-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert list(payload) == ["counter", "selective-counter", "state", "copy"]
    assert all(r["ours"] and r["article"] for r in payload.values())
    assert "fails at 19" in payload["counter"]["article"] and "article" in result.stderr
    assert {"A_neuron", "B_neuron"} <= set(payload["state"]["neurons"])
    assert {"counting_unit", "input_gate_on_X", "input_gate_on_a"} <= set(payload["selective-counter"]["neurons"])


def test_cli_rejects_an_unknown_study_in_one_line(tmp_path):
    result = runner.invoke(app, ["experiment", "nonsense", "--out-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "unknown experiment" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    "args, named",
    [
        (["--max-n", "8", "--eval-max-n", "5"], "below --max-n 8"),
        (["--eval-max-n", "5"], "below the default --max-n 10"),
    ],
)
def test_cli_refuses_an_eval_max_n_below_the_training_range(tmp_path, args, named):
    result = runner.invoke(app, ["experiment", "counter", "--steps", "1", *args, "--out-dir", str(tmp_path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "--eval-max-n 5" in lines[0] and named in lines[0]
    assert not any(tmp_path.iterdir())  # refused before training
    # Not given, it is each study's own, raised to the training range when --max-n passes it.
    assert experiments.configured_study("counter", max_n=30).eval_max_n == 30


def test_the_studies_correlate_through_neurons_and_a_constant_unit_scores_zero():
    rng = np.random.default_rng(0)
    target = rng.normal(size=50)
    values = np.stack([target + rng.normal(scale=0.3, size=50), np.full(50, 2.0), -target], axis=1).astype(np.float32)
    r = experiments._corr(torch.from_numpy(values), target.tolist())
    assert r[0] == pytest.approx(np.corrcoef(values[:, 0].astype(np.float64), target)[0, 1], abs=1e-5)
    assert r[1] == 0.0  # a unit that never moves follows nothing
    assert r[2] == pytest.approx(-1.0, abs=1e-5)
    assert experiments._corr(torch.from_numpy(values), [True] * 50).eq(0).all()  # nor does a constant target


@pytest.mark.parametrize("page", ["folder", "file/x.html"])
def test_cli_html_that_cannot_be_written_fails_before_training(tmp_path, page):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("not a folder")
    result = runner.invoke(
        app,
        [
            "experiment",
            "counter",
            "--steps",
            "1",
            "--out-dir",
            str(tmp_path / "runs"),
            "--html",
            str(tmp_path / page),
            "--quiet",
        ],
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "cannot write" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs" / "experiment-counter").exists()  # nothing trained for a page it could not write
