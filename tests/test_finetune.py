"""Fine-tuning (--init-from): the vocabulary is mapped by character, the run resumes exactly."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from charlstm.cli import app
from charlstm.core.checkpoint import PRETRAINED_RUN, load_checkpoint, model_from_checkpoint
from charlstm.core.engine import StepEngine
from charlstm.training.train_setup import train
from conftest import JAVA_SNIPPET, PYTHON_SNIPPET, TINY_TRAIN, make_dataset

runner = CliRunner()
TINY = {**TINY_TRAIN, "eval_every": 0}
NEW = "€ü"  # characters the Java source model never saw


@pytest.fixture
def java_run(tmp_path):
    """A small model trained on Java: the source of the fine-tuning runs below."""
    data = make_dataset(tmp_path / "data" / "java", JAVA_SNIPPET * 12, JAVA_SNIPPET * 2)
    run = tmp_path / "java-run"
    train({"data": str(data.path), "out": str(run), **TINY, "steps": 30, "lr": 1e-2})
    return run


@pytest.fixture
def python_data(tmp_path):
    # Python with two characters the source lacks; it also lacks some of Java's (e.g. ';').
    text = PYTHON_SNIPPET.replace("Hello", "Hällo €")
    assert "ü" not in text
    return make_dataset(tmp_path / "data" / "py", text * 12 + "ü\n", text * 2)


def test_shared_characters_keep_their_weights_and_new_ones_start_improbable(java_run, python_data, tmp_path):
    source = load_checkpoint(java_run / "best.pt")  # what a run folder resolves to
    run = tmp_path / "ft"
    summary = train(
        {
            "data": str(python_data.path),
            "out": str(run),
            "init_from": str(java_run),
            "steps": 1,
            "lr": 1e-12,
            "warmup_steps": 0,
            "threads": 1,
            "precision": "fp32",
            "eval_every": 0,
            "batch_size": 4,
            "seq_len": 16,
        }
    )
    assert summary["steps"] == 1
    tuned = load_checkpoint(run / "latest.pt")
    old_vocab, vocab = source["vocab"], tuned["vocab"]
    # The source's characters first, in their order (';' included though the new corpus lacks it),
    # then those only the new corpus has.
    assert vocab[: len(old_vocab)] == old_vocab and ";" in vocab
    assert set(vocab[len(old_vocab) :]) == set(python_data.vocab.symbols) - set(old_vocab) and "€" in vocab
    old_w, new_w = source["model"], tuned["model"]
    n = len(old_vocab)
    for name in ("embedding.weight", "head.weight", "head.bias"):
        torch.testing.assert_close(new_w[name][:n], old_w[name], atol=1e-9, rtol=1e-6)  # one step at lr 1e-12
    assert new_w["head.weight"].shape[0] == len(vocab) == tuned["model_config"]["vocab_size"]
    assert (new_w["head.bias"][n:] < old_w["head.bias"].min()).all()
    # New characters start improbable: after any context, each is below the least likely old one.
    model, model_vocab = model_from_checkpoint(tuned)
    with torch.no_grad():
        logits, _ = model(torch.from_numpy(model_vocab.encode("def greet(name):"))[None])
    probs = logits[0].softmax(-1)
    assert (probs[:, n:].max(-1).values < probs[:, :n].max(-1).values / 100).all()
    config = json.loads((run / "config.json").read_text())
    assert config["init_from"]["checkpoint"].endswith("best.pt") and config["init_from"]["step"] == 30
    assert config["train_config"]["init_from"] == str(java_run)


def test_fine_tuned_model_learns_its_new_corpus_and_samples_inside_its_vocabulary(java_run, python_data, tmp_path):
    run = tmp_path / "ft"
    train(
        {
            "data": str(python_data.path),
            "out": str(run),
            "init_from": str(java_run),
            "steps": 40,
            "lr": 1e-2,
            "threads": 1,
            "precision": "fp32",
            "eval_every": 20,
            "batch_size": 4,
            "seq_len": 16,
            "log_every": 1,
        }
    )
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val_bpc"] for r in rows if "val_bpc" in r]
    assert vals[-1] < vals[0]
    model, vocab = model_from_checkpoint(load_checkpoint(run / "latest.pt"))
    engine = StepEngine(model)
    state = engine.init_state(64)
    tokens = torch.full((64,), vocab.doc_sep)
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(50):
        logits, state = engine.step(tokens, state)
        tokens = torch.multinomial((logits * 0.5).softmax(-1), 1, generator=generator)[:, 0]  # temperature 2
        seen.update(tokens.tolist())
    assert max(seen) < len(vocab) and seen - set(range(len(python_data.vocab)))  # hot sampling reaches new rows


def test_a_fine_tuning_run_resumes_exactly(java_run, python_data, tmp_path):
    opts = {
        "data": str(python_data.path),
        "init_from": str(java_run),
        "steps": 16,
        "eval_every": 8,
        "save_every": 5,
        "threads": 1,
        "precision": "fp32",
        "batch_size": 4,
        "seq_len": 16,
        "log_every": 1,
        "dropout": 0.1,
    }
    straight, paused = tmp_path / "straight", tmp_path / "paused"
    train({**opts, "out": str(straight)})
    train({**opts, "out": str(paused)}, stop_after=7)
    train({"out": str(paused)}, resume=True)
    lines = lambda run: [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]  # noqa: E731
    assert [r["loss"] for r in lines(straight)] == [r["loss"] for r in lines(paused)]
    a, b = load_checkpoint(straight / "latest.pt"), load_checkpoint(paused / "latest.pt")
    assert a["vocab"] == b["vocab"] and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert b["init_from"] == a["init_from"]


def test_the_shipped_model_fine_tunes_by_name(python_data, tmp_path):
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(python_data.path),
            "--out",
            str(tmp_path / "ft"),
            "--init-from",
            PRETRAINED_RUN.name,
            "--steps",
            "1",
            "--batch-size",
            "2",
            "--seq-len",
            "8",
            "--eval-every",
            "0",
            "--threads",
            "1",
            "--precision",
            "fp32",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "fine-tuning" in result.stderr and "fine-tuning defaults: --lr 0.001, --warmup-steps 50" in result.stderr
    config = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert config["model_config"]["hidden"] == 256 and config["train_config"]["lr"] == 1e-3


def test_the_header_names_the_warm_up_the_schedule_uses(java_run, python_data, tmp_path):
    """Warm-up is at most a twentieth of a run of known length: 40 steps warm up over 2, not the default 50."""
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(python_data.path),
            "--out",
            str(tmp_path / "ft"),
            "--init-from",
            str(java_run),
            "--steps",
            "40",
            "--batch-size",
            "4",
            "--seq-len",
            "8",
            "--eval-every",
            "0",
            "--threads",
            "1",
            "--precision",
            "fp32",
        ],
    )
    assert result.exit_code == 0, result.output
    assert load_checkpoint(tmp_path / "ft" / "latest.pt")["schedule"]["warmup"] == 2
    assert "and 2 warm-up steps" in result.stderr and "and 50 warm-up steps" not in result.stderr


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--hidden", "32"], "--hidden 32 differs from the model being fine-tuned"),
        (["--model", "gru"], "--model gru differs from the model being fine-tuned"),
    ],
)
def test_a_different_shape_is_refused_in_one_line(java_run, python_data, tmp_path, extra, message):
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(python_data.path),
            "--out",
            str(tmp_path / "ft"),
            "--init-from",
            str(java_run),
            "--steps",
            "1",
            *extra,
        ],
    )
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "ft").exists()


def test_a_missing_source_is_refused_in_one_line(python_data, tmp_path):
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(python_data.path),
            "--out",
            str(tmp_path / "ft"),
            "--init-from",
            str(tmp_path / "nope"),
        ],
    )
    assert result.exit_code == 1 and "no such checkpoint or run folder" in result.output
    assert "pretrained-python" in result.output


def test_an_empty_source_is_refused_naming_the_option(python_data, tmp_path):
    result = runner.invoke(
        app, ["train", "--data", str(python_data.path), "--out", str(tmp_path / "ft"), "--init-from", ""]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "--init-from is empty" in result.output and "holds no" not in result.output
    assert not (tmp_path / "ft").exists()


def test_fine_tuning_keeps_the_source_models_dropout_unless_given(java_run, python_data, tmp_path):
    source_dropout = json.loads((java_run / "config.json").read_text())["train_config"]["dropout"]
    common = {
        "data": str(python_data.path),
        "init_from": str(java_run),
        "epochs": 8,
        "threads": 1,
        "precision": "fp32",
        "eval_every": 0,
        "batch_size": 4,
        "seq_len": 16,
    }
    # Eight passes over a tiny corpus: a fresh run would get dropout chosen; fine-tuning keeps the source's.
    train({**common, "out": str(tmp_path / "kept")}, stop_after=2)
    kept = json.loads((tmp_path / "kept" / "config.json").read_text())["train_config"]
    assert kept["dropout"] == source_dropout and not (kept["chosen"] or {}).get("dropout")
    train({**common, "out": str(tmp_path / "given"), "dropout": 0.1}, stop_after=2)
    assert json.loads((tmp_path / "given" / "config.json").read_text())["train_config"]["dropout"] == 0.1
