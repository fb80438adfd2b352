"""Training and evaluation: loss falls, exact resume, safe saves, precision, bad input, eval agreement."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from charlstm.cli import app
from charlstm.core.backend import choose_precision, cpu_runs_bf16_rnn
from charlstm.core.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from charlstm.core.errors import CharlstmError
from charlstm.core.stopping import TrainingInterrupted
from charlstm.evaluation.evaluate import bits_per_char, evaluate_checkpoint
from charlstm.training.batching import LaneBatcher
from charlstm.training.schedule import lr_at
from charlstm.training.train_setup import train
from conftest import JAVA_SNIPPET, PYTHON_SNIPPET, TINY_TRAIN, make_dataset

runner = CliRunner()
REPO = Path(__file__).resolve().parent.parent

TINY = TINY_TRAIN  # bf16 has its own tests (test_cpu_bf16.py)


def options(dataset, out, **extra) -> dict:
    return {"data": str(dataset.path), "out": str(out), **TINY, **extra}


def metrics(run: Path) -> list[dict]:
    """The training lines of metrics.jsonl (a run that ends between log steps adds a validation-only line)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r]


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error:"), result.output
    return result.output


# --- data and schedule --------------------------------------------------------------------------


def test_lanes_are_contiguous_streams_and_wrap_at_the_epoch():
    tokens = np.arange(100, dtype=np.uint16)
    batcher = LaneBatcher(tokens, lanes=4, seq_len=5)  # lanes of 25 → 4 windows an epoch
    assert batcher.windows == 4
    x1, y1, fresh1 = batcher.next()
    x2, _, fresh2 = batcher.next()
    assert fresh1 and not fresh2
    assert x1[:, 0].tolist() == [0, 25, 50, 75]  # each row is its own stretch of the corpus
    assert torch.equal(y1[:, :-1], x1[:, 1:])  # targets are the inputs shifted by one
    assert torch.equal(x2[:, 0], x1[:, -1] + 1)  # the next window continues each lane
    for _ in range(2):
        batcher.next()
    x5, _, fresh5 = batcher.next()
    assert fresh5 and batcher.epoch == 1 and torch.equal(x5, x1)


def test_lanes_split_by_rank_cover_the_batch():
    tokens = np.arange(100, dtype=np.uint8)
    whole = LaneBatcher(tokens, lanes=4, seq_len=5).next()[0]
    halves = [LaneBatcher(tokens, lanes=4, seq_len=5, rank=r, world=2).next()[0] for r in range(2)]
    assert torch.equal(torch.cat(halves), whole)


def test_schedule_warms_up_then_decays_to_the_floor():
    lrs = [lr_at(s, 1.0, warmup=10, total=100, min_ratio=0.1) for s in range(120)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[100] == pytest.approx(0.1) and lrs[119] == pytest.approx(0.1)
    assert lr_at(500, 1.0, warmup=10, total=None, min_ratio=0.1) == 1.0  # length unknown: constant


# --- training -------------------------------------------------------------------------------------


def test_loss_falls_and_the_run_folder_is_complete(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    summary = train(options(tiny_dataset, run, steps=60, eval_every=30, lr=1e-2))
    rows = metrics(run)
    first, last = np.mean([r["bpc"] for r in rows[:5]]), np.mean([r["bpc"] for r in rows[-5:]])
    assert last < first - 0.7, (first, last)
    assert [r["step"] for r in rows] == list(range(1, 61))
    assert all({"step", "loss", "bpc", "lr", "chars_per_sec"} <= set(r) for r in rows)
    vals = [r["val_bpc"] for r in rows if "val_bpc" in r]
    assert len(vals) == 2 and vals[1] < vals[0]
    assert summary["steps"] == 60 and summary["val_bpc"] == vals[1] and summary["precision"] == "fp32"
    for name in ("latest.pt", "best.pt", "config.json"):
        assert (run / name).is_file()
    config = json.loads((run / "config.json").read_text())
    assert config["train_config"]["hidden"] == 24 and config["model_config"]["vocab_size"] == len(tiny_dataset.vocab)
    assert config["dataset"]["content_hash"] == tiny_dataset.meta["content_hash"]
    payload = load_checkpoint(run / "latest.pt")  # weights_only: tensors and plain types only
    assert payload["step"] == 60 and payload["data_position"]["epoch"] >= 1
    assert not any(k.startswith("module.") for k in payload["model"])


@pytest.mark.parametrize("kind", ["gru", "rnn"])
def test_gru_and_rnn_variants_train(tiny_dataset, tmp_path, kind):
    run = tmp_path / kind
    train(options(tiny_dataset, run, model=kind, steps=40, eval_every=0, lr=1e-2))
    rows = metrics(run)
    assert np.mean([r["bpc"] for r in rows[-5:]]) < np.mean([r["bpc"] for r in rows[:5]]) - 0.5
    model, _ = model_from_checkpoint(load_checkpoint(run / "latest.pt"))
    assert model.config.kind == kind


def test_resume_continues_exactly(tmp_path):
    # Few windows per epoch, so the run crosses epoch boundaries (state reset) on both sides of the
    # pause; dropout, so the RNG state matters too.
    dataset = make_dataset(tmp_path / "data" / "d", JAVA_SNIPPET * 3, JAVA_SNIPPET)
    opts = dict(steps=24, dropout=0.2, eval_every=10, save_every=7, lr=5e-3)
    straight, paused = tmp_path / "straight", tmp_path / "paused"
    train(options(dataset, straight, **opts))
    first = train(options(dataset, paused, **opts), stop_after=11)
    assert first["steps"] == 11 and load_checkpoint(paused / "latest.pt")["step"] == 11
    train({"out": str(paused)}, resume=True)
    a, b = metrics(straight), metrics(paused)
    assert [r["loss"] for r in a] == [r["loss"] for r in b]  # bit for bit, every step
    assert [r.get("val_bpc") for r in a] == [r.get("val_bpc") for r in b]
    wa, wb = load_checkpoint(straight / "latest.pt")["model"], load_checkpoint(paused / "latest.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_ctrl_c_saves_and_says_how_to_resume(tiny_dataset, tmp_path, monkeypatch):
    from charlstm.training.train import Trainer

    original = Trainer.train_step

    def step_then_interrupt(self, *args):
        loss = original(self, *args)
        if self.step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # the real signal, as Ctrl-C sends it
        return loss

    monkeypatch.setattr(Trainer, "train_step", step_then_interrupt)
    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted, match=r"Resume with: charlstm train --resume --out"):
        train(options(tiny_dataset, run, steps=50))
    assert load_checkpoint(run / "latest.pt")["step"] == 3  # the step in flight finished, then it saved


@pytest.mark.slow  # a real process, started and killed
def test_kill_9_mid_run_leaves_a_loadable_checkpoint(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "charlstm",
        "train",
        "--data",
        str(tiny_dataset.path),
        "--out",
        str(run),
        "--layers",
        "1",
        "--hidden",
        "16",
        "--embed",
        "8",
        "--batch-size",
        "4",
        "--seq-len",
        "8",
        "--steps",
        "1000000",
        "--save-every",
        "1",
        "--eval-every",
        "0",
        "--threads",
        "1",
        "--precision",
        "fp32",
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120  # start-up is slow on a loaded machine
        while not (run / "latest.pt").exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # a few hundred saves later: some write is likely in flight
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    payload = load_checkpoint(run / "latest.pt")
    assert payload["step"] >= 1
    summary = train({"out": str(run), "steps": payload["step"] + 2}, resume=True)
    assert summary["steps"] == payload["step"] + 2


def test_full_disk_while_saving_keeps_the_previous_checkpoint(tiny_dataset, tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(options(tiny_dataset, run, steps=4))
    before = (run / "latest.pt").read_bytes()

    def disk_full(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CharlstmError, match="No space left"):
        train({"out": str(run), "steps": 8}, resume=True)
    assert (run / "latest.pt").read_bytes() == before
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_dataset, tmp_path, monkeypatch):
    import torch.nn.functional as F

    real = F.cross_entropy
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] >= 7 else loss

    monkeypatch.setattr(F, "cross_entropy", poisoned)
    run = tmp_path / "run"
    with pytest.raises(CharlstmError, match=r"NaN or infinite.*step 5"):
        train(options(tiny_dataset, run, steps=20, save_every=5, eval_every=0))
    payload = load_checkpoint(run / "latest.pt")
    assert payload["step"] == 5
    assert all(torch.isfinite(t).all() for t in payload["model"].values())


def test_a_validation_that_is_nan_stops_the_run_and_is_never_the_best(tiny_dataset, tmp_path, monkeypatch):
    """Weights blown up by an update can score NaN before the training loss does: that validation
    is no new best, nor saved, nor written to metrics.jsonl as a NaN."""
    import charlstm.training.train as train_module

    real = train_module.bits_per_char
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        result = real(*args, **kwargs)
        return {**result, "bpc": float("nan")} if calls["n"] >= 2 else result

    monkeypatch.setattr(train_module, "bits_per_char", poisoned)
    run = tmp_path / "run"
    with pytest.raises(CharlstmError, match=r"NaN or infinite.*step 10"):
        train(options(tiny_dataset, run, steps=20, save_every=5, eval_every=5))
    assert load_checkpoint(run / "latest.pt")["step"] == 5
    best = load_checkpoint(run / "best.pt")
    assert best["step"] == 5 and math.isfinite(best["best_val_bpc"])
    assert "NaN" not in (run / "metrics.jsonl").read_text()


def test_bf16_on_a_cpu_without_a_bf16_rnn_is_refused_in_one_line(tiny_dataset, tmp_path):
    if cpu_runs_bf16_rnn("lstm"):
        pytest.skip("this CPU runs a bf16 LSTM; tests/test_cpu_bf16.py covers that path")
    with pytest.raises(CharlstmError, match="bf16 autocast on cpu"):
        train(options(tiny_dataset, tmp_path / "run", steps=3, precision="bf16"))
    assert not (tmp_path / "run" / "latest.pt").exists()


def test_precision_choice_on_cpu():
    cpu = torch.device("cpu")
    with pytest.raises(CharlstmError, match="fp16 is not supported on the CPU"):
        choose_precision("fp16", cpu)
    fp32 = choose_precision("fp32", cpu)
    assert fp32.name == "fp32" and fp32.rnn_dtype == "float32" and fp32.autocast().__class__.__name__ == "nullcontext"
    for kind in ("lstm", "gru", "rnn"):
        # `auto` follows the one probe that runs the layer: bf16 exactly where oneDNN runs it in bf16.
        auto = choose_precision("auto", cpu, kind)
        expected = "bf16" if cpu_runs_bf16_rnn(kind) else "fp32"
        assert (auto.name, auto.rnn_dtype) == (expected, {"bf16": "bfloat16", "fp32": "float32"}[expected]), kind
        assert not auto.grad_scaler().is_enabled()


def test_auto_precision_follows_the_probe_not_the_cpu_flags(monkeypatch):
    # An AMX CPU whose oneDNN is capped (ONEDNN_MAX_CPU_ISA=AVX2) advertises bf16 but runs no bf16 RNN.
    import charlstm.core.backend as backend

    monkeypatch.setattr(backend, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(backend, "probe_rnn_dtype", lambda device, dtype, kind="lstm": None if dtype else torch.float32)
    backend.cpu_runs_bf16_rnn.cache_clear()
    try:
        auto = choose_precision("auto", torch.device("cpu"))
        assert auto.name == "fp32" and "capped" in auto.reason
        with pytest.raises(CharlstmError, match="capped"):
            choose_precision("bf16", torch.device("cpu"))
    finally:
        backend.cpu_runs_bf16_rnn.cache_clear()


# --- eval ---------------------------------------------------------------------------------------


def test_eval_agrees_with_training_validation(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    summary = train(options(tiny_dataset, run, steps=10))
    result = runner.invoke(app, ["eval", str(run / "latest.pt"), "--data", str(tiny_dataset.path), "--json"])
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout)
    assert scored["bpc"] == pytest.approx(summary["val_bpc"], abs=1e-9)
    assert scored["chars"] == len(tiny_dataset.tokens("val")) - 1


def test_eval_scores_a_text_file_and_warns_about_unknown_characters(tiny_checkpoint, tmp_path):
    text = tmp_path / "snippet.py"
    text.write_text(PYTHON_SNIPPET + "€\n", encoding="utf-8")
    result = runner.invoke(app, ["eval", str(tiny_checkpoint), "--text-file", str(text), "--json"])
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout)
    assert scored["chars"] == len(PYTHON_SNIPPET) + 2 and scored["unknown_chars"] == ["€"]
    assert "does not know" in result.stderr
    # An untrained model is near uniform: about log2(vocab size) bits per character.
    model, vocab = model_from_checkpoint(load_checkpoint(tiny_checkpoint))
    assert abs(scored["bpc"] - math.log2(len(vocab))) < 1.0


def test_lanes_and_window_length_do_not_change_the_score(tiny_checkpoint):
    model, vocab = model_from_checkpoint(load_checkpoint(tiny_checkpoint))
    tokens = vocab.encode(JAVA_SNIPPET * 3)
    a = bits_per_char(model, tokens, seq_len=7)
    b = bits_per_char(model, tokens, seq_len=1000)
    assert a["bpc"] == pytest.approx(b["bpc"], rel=1e-5) and a["chars"] == len(tokens) - 1


def test_eval_bad_input(tiny_checkpoint, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    one_line_error(runner.invoke(app, ["eval", str(tiny_checkpoint), "--text-file", str(empty)]))
    one_line_error(runner.invoke(app, ["eval", str(tiny_checkpoint), "--text-file", str(tmp_path / "nope.txt")]))
    one_line_error(runner.invoke(app, ["eval", str(tmp_path / "missing.pt")]))


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--layers", "0"], "--layers must be at least 1"),
        (["--lr", "-1"], "--lr must be a positive"),
        (["--seq-len", "0"], "--seq-len must be at least 1"),
        (["--batch-size", "5000"], "lower --batch-size or --seq-len"),
        (["--precision", "fp16", "--device", "cpu"], "fp16 is not supported on the CPU"),
        (["--model", "transformer"], "unknown model kind"),
        (["--dropout", "1.5"], "--dropout must be in"),
    ],
)
def test_nonsense_options_give_one_line_errors(tiny_dataset, tmp_path, args, message):
    result = runner.invoke(
        app, ["train", "--data", str(tiny_dataset.path), "--out", str(tmp_path / "r"), "--steps", "2", *args]
    )
    assert message in one_line_error(result)
    assert not (tmp_path / "r" / "latest.pt").exists()


def test_run_folder_rules_and_resume_errors(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    base = [
        "train",
        "--data",
        str(tiny_dataset.path),
        "--out",
        str(run),
        "--layers",
        "1",
        "--hidden",
        "8",
        "--embed",
        "4",
        "--batch-size",
        "2",
        "--seq-len",
        "8",
        "--threads",
        "1",
        "--precision",
        "fp32",
    ]
    assert "--resume" in one_line_error(runner.invoke(app, ["train", "--out", str(tmp_path / "none"), "--resume"]))
    assert runner.invoke(app, [*base, "--steps", "2"]).exit_code == 0
    latest = (run / "latest.pt").read_bytes()
    assert "--resume, or start over with --force" in one_line_error(runner.invoke(app, [*base, "--steps", "2"]))
    assert "differs from the run's" in one_line_error(
        runner.invoke(app, ["train", "--out", str(run), "--resume", "--hidden", "9"])
    )
    both = runner.invoke(app, ["train", "--out", str(run), "--resume", "--force", "--steps", "4"])
    assert "--resume continues the run, --force starts it over" in one_line_error(both)
    for option in ("--data", "--out"):  # not the current folder, not silently the default
        empty = runner.invoke(app, ["train", *base[1:], option, "", "--steps", "2"])
        assert f"{option} is empty" in one_line_error(empty)
    other = make_dataset(tmp_path / "data" / "other", PYTHON_SNIPPET * 20, PYTHON_SNIPPET)
    result = runner.invoke(app, ["train", "--out", str(run), "--resume", "--data", str(other.path)])
    assert "different vocabulary" in one_line_error(result)
    missing = runner.invoke(app, ["train", "--data", str(tmp_path / "data" / "nope"), "--out", str(tmp_path / "x")])
    assert "dataset not found" in one_line_error(missing)
    assert (run / "latest.pt").read_bytes() == latest  # nothing above touched the run
    result = runner.invoke(app, [*base, "--steps", "3", "--force", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["steps"] == 3


def test_resuming_a_run_whose_budget_is_spent_says_so_and_touches_nothing(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    train(options(tiny_dataset, run, steps=6, epochs=None))
    before = {name: (run / name).read_bytes() for name in ("latest.pt", "metrics.jsonl", "config.json")}
    spent = one_line_error(runner.invoke(app, ["train", "--out", str(run), "--resume", "--steps", "4"]))
    assert "already at step 6" in spent and "--steps 4" in spent and "nothing to train" in spent
    finished = one_line_error(runner.invoke(app, ["train", "--out", str(run), "--resume"]))  # its own budget
    assert "already at step 6" in finished and "--steps 6" in finished
    assert {name: (run / name).read_bytes() for name in before} == before
    assert train({"out": str(run), "steps": 7}, resume=True)["steps"] == 7  # a larger budget goes on


def test_resume_refuses_a_checkpoint_with_a_pickled_object(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    train(options(tiny_dataset, run, steps=2))

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"format": "charlstm-checkpoint", "version": 1, "evil": Evil()}, run / "latest.pt")
    result = runner.invoke(app, ["train", "--out", str(run), "--resume"])
    assert "refusing to load" in one_line_error(result) and "pwned" not in result.output


def test_checkpoint_helpers_round_trip_hidden_state(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    train(options(tiny_dataset, run, steps=3))
    payload = load_checkpoint(run / "latest.pt")
    h, c = payload["hidden_state"]
    assert h.shape == (2, 4, 24) and c.shape == (2, 4, 24)
    save_checkpoint(tmp_path / "copy.pt", payload)  # what training writes loads and saves again
    assert load_checkpoint(tmp_path / "copy.pt")["rng"]["python"][0] == 3


def test_loss_scaling_skips_and_counts_overflowing_steps(tiny_dataset, tmp_path):
    # The fp16 path's scaler logic, run on the CPU with an enabled GradScaler and one gradient
    # made to overflow, as an fp16 overflow would.
    from charlstm.core.config import TrainConfig
    from charlstm.training.train import Trainer

    trainer = Trainer(TrainConfig(**options(tiny_dataset, tmp_path / "run", steps=5)), tmp_path / "run")
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    before = {k: v.clone() for k, v in trainer.raw_model.state_dict().items()}
    hook = trainer.raw_model.head.bias.register_hook(lambda g: g * float("inf"))
    trainer.train_step(*trainer.batcher.next())
    assert trainer.skipped_steps == 1 and trainer.scaler.get_scale() == 512.0
    assert all(torch.equal(before[k], v) for k, v in trainer.raw_model.state_dict().items())  # skipped, untouched
    hook.remove()
    trainer.train_step(*trainer.batcher.next())
    assert trainer.skipped_steps == 1 and not torch.equal(before["head.weight"], trainer.raw_model.head.weight)


def test_minutes_budget_fixes_the_schedule_from_measured_speed(tiny_dataset, tmp_path, monkeypatch):
    # A virtual clock that advances 50 ms per training step: the budget logic sees a steady speed
    # whatever the machine's load, so 0.04 minutes (2.4 s) is 48 steps, give or take float rounding.
    import types

    from charlstm.training import train as train_module

    clock = {"now": 0.0}
    monkeypatch.setattr(train_module, "time", types.SimpleNamespace(perf_counter=lambda: clock["now"]))
    original = train_module.Trainer.train_step

    def timed_step(self, *args):
        clock["now"] += 0.05
        return original(self, *args)

    monkeypatch.setattr(train_module.Trainer, "train_step", timed_step)
    run = tmp_path / "run"
    summary = train(options(tiny_dataset, run, minutes=0.04, eval_every=0, log_every=10))
    assert summary["steps"] in (48, 49) and summary["val_bpc"] is not None
    payload = load_checkpoint(run / "latest.pt")
    assert abs(payload["schedule"]["total"] - 48) <= 1  # estimated from the timed steps, saved for resuming
    lrs = [r["lr"] for r in metrics(run)]
    assert lrs[-1] < lrs[len(lrs) // 4]  # and the learning rate decays over it


def test_eval_on_another_datasets_split_maps_its_symbols(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    train(options(tiny_dataset, run, steps=3))
    other = make_dataset(tmp_path / "data" / "py", PYTHON_SNIPPET * 8, PYTHON_SNIPPET * 3 + "§")
    result = evaluate_checkpoint(run, data=other.path)
    assert "§" in result["unknown_chars"] and result["chars"] == len(other.tokens("val")) - 1
    assert math.isfinite(result["bpc"])


def test_a_new_budget_on_resume_continues_the_learning_rate_without_a_jump(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    train(options(tiny_dataset, run, steps=20, eval_every=0))
    train({"out": str(run), "steps": 40}, resume=True)
    lrs = [r["lr"] for r in metrics(run)]
    assert len(lrs) == 40
    # Continues from where it stood (the floor the 20-step run decayed to), no return to the peak.
    assert lrs[20] <= lrs[19] and lrs[20] == pytest.approx(3e-3 * 0.1)
    assert lrs[-1] == pytest.approx(3e-3 * 0.1)
    assert lr_at(30, 1.0, 2, 40, 0.1, from_step=20, from_ratio=0.5) < 0.5


def test_patience_stops_after_that_many_validations_without_a_new_best(tiny_dataset, tmp_path, monkeypatch):
    from charlstm.training.train import Trainer

    scores = iter([3.0, 2.9, 3.1, 3.2, 2.0, 1.0])  # best at the 2nd validation, then two worse ones
    monkeypatch.setattr(Trainer, "validate", lambda self: next(scores))
    run = tmp_path / "run"
    summary = train(options(tiny_dataset, run, steps=50, eval_every=5, patience=2))
    assert summary["stopped_early"] and summary["steps"] == 20 and summary["best_val_bpc"] == 2.9
    assert load_checkpoint(run / "best.pt")["step"] == 10
    latest = load_checkpoint(run / "latest.pt")
    assert latest["step"] == 20 and latest["stale_validations"] == 2
    assert "--patience" in one_line_error(
        runner.invoke(
            app,
            [
                "train",
                "--data",
                str(tiny_dataset.path),
                "--out",
                str(tmp_path / "p"),
                "--patience",
                "2",
                "--eval-every",
                "0",
            ],
        )
    )


def test_patience_on_a_dataset_without_a_validation_split_is_refused(tmp_path):
    """One file ingested: no validation split, so --patience could never stop the run."""
    no_val = make_dataset(tmp_path / "data" / "one-file", JAVA_SNIPPET * 12, "")
    args = [
        "train",
        "--data",
        str(no_val.path),
        "--out",
        str(tmp_path / "r"),
        "--layers",
        "1",
        "--hidden",
        "8",
        "--batch-size",
        "2",
        "--seq-len",
        "8",
        "--steps",
        "4",
        "--eval-every",
        "2",
        "--threads",
        "1",
    ]
    assert "no validation split" in one_line_error(runner.invoke(app, [*args, "--patience", "2"]))
    assert not (tmp_path / "r" / "latest.pt").exists()
    assert runner.invoke(app, args).exit_code == 0  # without --patience it trains, unvalidated
