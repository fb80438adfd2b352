"""The CPU bf16 training path: the default wherever oneDNN runs a bf16 LSTM (AMX / AVX-512 BF16).

Skipped, with the reason, on CPUs where it does not (AVX2-only, or oneDNN capped by
ONEDNN_MAX_CPU_ISA); tests/test_train.py checks there that bf16 is refused in one line.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from charlstm.cli import app
from charlstm.core.backend import cpu_runs_bf16_rnn
from charlstm.core.checkpoint import load_checkpoint
from charlstm.training.train import Trainer
from charlstm.training.train_setup import train
from conftest import JAVA_SNIPPET, TINY_TRAIN, make_dataset

pytestmark = pytest.mark.skipif(
    not cpu_runs_bf16_rnn("lstm"), reason="this CPU's oneDNN runs no bf16 LSTM (needs AVX-512 BF16 or AMX)"
)

BF16 = {**TINY_TRAIN, "precision": "bf16"}


def options(dataset, out, **extra) -> dict:
    return {"data": str(dataset.path), "out": str(out), **BF16, **extra}


def losses(run) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def test_auto_picks_bf16_and_the_lstm_runs_in_bfloat16(tiny_dataset, tmp_path):
    summary = train({**options(tiny_dataset, tmp_path / "run", steps=2, eval_every=0), "precision": "auto"})
    assert summary["precision"] == "bf16" and summary["rnn_dtype"] == "bfloat16"


def test_loss_falls_without_nan_and_denormals_are_flushed(tiny_dataset, tmp_path, monkeypatch):
    flushed = []
    original = Trainer.train_step

    def step_and_check_denormals(self, *args):
        # With flush-to-zero on, a product that would be subnormal in fp32 comes out as 0.
        flushed.append((torch.tensor([1e-30]) * torch.tensor([1e-10])).item() == 0.0)
        return original(self, *args)

    monkeypatch.setattr(Trainer, "train_step", step_and_check_denormals)
    torch.set_flush_denormal(False)  # whatever an earlier test left, training must switch it on itself
    run = tmp_path / "run"
    summary = train(options(tiny_dataset, run, steps=60, eval_every=30, lr=1e-2))
    rows = losses(run)
    assert all(math.isfinite(r["loss"]) for r in rows) and len(rows) == 60
    first, last = np.mean([r["bpc"] for r in rows[:5]]), np.mean([r["bpc"] for r in rows[-5:]])
    assert last < first - 0.7, (first, last)
    assert summary["precision"] == "bf16" and math.isfinite(summary["val_bpc"])
    assert flushed and all(flushed)


def test_resume_in_bf16_continues_exactly(tmp_path):
    dataset = make_dataset(tmp_path / "data" / "d", JAVA_SNIPPET * 3, JAVA_SNIPPET)
    opts = dict(steps=24, dropout=0.2, eval_every=10, save_every=7, lr=5e-3)
    straight, paused = tmp_path / "straight", tmp_path / "paused"
    train(options(dataset, straight, **opts))
    train(options(dataset, paused, **opts), stop_after=11)
    train({"out": str(paused)}, resume=True)
    a, b = losses(straight), losses(paused)
    assert [r["loss"] for r in a] == [r["loss"] for r in b]  # bit for bit, bf16 kernels included
    wa, wb = load_checkpoint(straight / "latest.pt")["model"], load_checkpoint(paused / "latest.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_eval_agrees_with_bf16_training_validation(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    summary = train(options(tiny_dataset, run, steps=10))
    result = CliRunner().invoke(app, ["eval", str(run / "latest.pt"), "--data", str(tiny_dataset.path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["bpc"] == pytest.approx(summary["val_bpc"], abs=1e-9)
