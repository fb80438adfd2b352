"""Hostile but fair use of training, evaluation and the run folder: full disks, wrong files as
checkpoints, edited vocabularies, the precision a run recorded."""

from __future__ import annotations

import errno
import json
import os
import zipfile

import pytest
from typer.testing import CliRunner

from charlstm.checkpoint import append_line, load_checkpoint, save_checkpoint
from charlstm.cli import app
from charlstm.errors import CharlstmError
from charlstm.evaluate import evaluate_checkpoint
from charlstm.train import train
from conftest import JAVA_SNIPPET, make_checkpoint

runner = CliRunner()

# A model small enough that each step takes a millisecond or two; fp32 runs alike on every CPU.
TINY = {"layers": 2, "hidden": 24, "embed": 8, "batch_size": 4, "seq_len": 16, "threads": 1, "precision": "fp32"}
TINY_ARGS = ["--layers", "2", "--hidden", "24", "--embed", "8", "--batch-size", "4", "--seq-len", "16",
             "--threads", "1", "--precision", "fp32"]  # fmt: skip


def options(dataset, out, **extra) -> dict:
    return {"data": str(dataset.path), "out": str(out), **TINY, **extra}


def train_args(dataset, out, *extra) -> list[str]:
    return ["train", "--data", str(dataset.path), "--out", str(out), *TINY_ARGS, *extra]


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error:"), result.output  # progress lines may come before it
    return lines[-1]


# --- 5. a full disk during training -----------------------------------------------------------


def test_append_line_cuts_a_torn_write_back(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n')
    real_write = os.write

    def half_then_full(fd, data):
        if len(data) > 4:
            return real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(CharlstmError, match="No space left on device"):
        append_line(path, '{"step": 2}\n')
    assert path.read_text() == '{"step": 1}\n'


def test_save_checkpoint_reports_torchs_unexpected_pos_as_the_disk_error(tmp_path, monkeypatch):
    """torch.save turns a failed write into 'RuntimeError: ... unexpected pos'; say what happened."""
    path = make_checkpoint(tmp_path / "best.pt")
    before = path.read_bytes()
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, f):
            self.f, self.room = f, 300

        def write(self, data):
            if len(data) > self.room:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.room -= len(data)
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: FullDisk(real_fdopen(fd, *a, **k)))
    with pytest.raises(CharlstmError, match="No space left on device"):
        save_checkpoint(path, load_checkpoint(path))
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["best.pt"]


# --- 7. wrong files given as a checkpoint -----------------------------------------------------


@pytest.mark.parametrize(
    "content, what",
    [
        (b"numpy>=1.24\npytest\n", "not a PyTorch zip file"),  # requirements.txt: was IndexError
        (b"import os\n\nprint(os.getcwd())\n", "not a PyTorch zip file"),  # was "pickled Python objects"
        (bytes(range(256)) * 4, "not a PyTorch zip file"),
        (b"", "it is empty"),
    ],
)
@pytest.mark.parametrize("command", ["sample", "eval"])
def test_a_file_that_is_no_checkpoint_gets_one_line(tmp_path, content, what, command):
    path = tmp_path / "requirements.txt"
    path.write_bytes(content)
    result = runner.invoke(app, [command, str(path)])
    assert f"is not a charlstm checkpoint ({what})" in one_line_error(result)


def test_a_zip_that_is_no_checkpoint_gets_one_line(tmp_path):
    path = tmp_path / "sources.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("Main.java", JAVA_SNIPPET)
    assert "corrupt or not a checkpoint" in one_line_error(runner.invoke(app, ["eval", str(path)]))


# --- 8. an edited dataset vocabulary ------------------------------------------------------------


def edit_vocab(dataset, change) -> None:
    meta_path = dataset.path / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["vocab"] = change(meta["vocab"])
    meta_path.write_text(json.dumps(meta))


def test_a_shrunk_vocabulary_is_caught_on_load(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    train(options(tiny_dataset, run, steps=2))
    edit_vocab(tiny_dataset, lambda v: v[:-5])
    message = one_line_error(runner.invoke(app, train_args(tiny_dataset, tmp_path / "other", "--steps", "2")))
    assert "meta.json" in message and "token id" in message
    assert "token id" in one_line_error(runner.invoke(app, ["eval", str(run)]))


def test_a_vocabulary_symbol_that_is_no_character_is_caught(tiny_dataset, tmp_path):
    edit_vocab(tiny_dataset, lambda v: [*v[:-1], 5])
    message = one_line_error(runner.invoke(app, train_args(tiny_dataset, tmp_path / "run", "--steps", "2")))
    assert "meta.json" in message and "single characters" in message


def test_a_checkpoint_whose_vocabulary_holds_a_number_is_caught_by_sample(tmp_path):
    path = make_checkpoint(tmp_path / "best.pt")
    payload = load_checkpoint(path)
    save_checkpoint(path, {**payload, "vocab": [*payload["vocab"][:-1], 5]})
    assert "single characters" in one_line_error(runner.invoke(app, ["sample", str(path), "-n", "5"]))


# --- 10. the dataset path and precision a run recorded -------------------------------------------


def test_eval_scores_in_the_precision_the_run_was_trained_with(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    summary = train(options(tiny_dataset, run, steps=2))
    assert evaluate_checkpoint(str(run))["precision"] == summary["precision"] == "fp32"
    # A run whose precision does not run here (fp16 from a GPU) is scored as auto picks.
    payload = load_checkpoint(run / "latest.pt")
    save_checkpoint(run / "latest.pt", {**payload, "precision": "fp16"})
    assert evaluate_checkpoint(str(run / "latest.pt"), device="cpu")["precision"] in ("bf16", "fp32")
    assert evaluate_checkpoint(str(run / "latest.pt"), precision="fp32")["precision"] == "fp32"
