"""The recipe's defaults for short runs (docs/performance.md, "Time to quality"): PyTorch's init for the forget
gates, the peak rate held and decayed over the run's last fifth, a --minutes run that decides its
decay from the time left; each recorded in config.json and kept by a resumed run."""

from __future__ import annotations

import json
import types

import pytest
import torch

from charlstm.core.checkpoint import load_checkpoint, save_checkpoint
from charlstm.core.config import TrainConfig
from charlstm.core.events import Message
from charlstm.core.model import CharRNN, ModelConfig
from charlstm.training.schedule import lr_at, new_schedule
from charlstm.training.train_setup import train
from test_train import metrics, options


def forget_biases(model: CharRNN) -> torch.Tensor:
    h = model.config.hidden
    return torch.cat([model.rnn.bias_ih_l0[h : 2 * h], model.rnn.bias_hh_l0[h : 2 * h]])


def test_forget_gates_start_as_pytorch_initialises_them_unless_asked():
    torch.manual_seed(0)
    default = forget_biases(CharRNN(ModelConfig(vocab_size=10, layers=1, hidden=32)))
    assert default.abs().max() <= 32**-0.5 and default.std() > 0  # PyTorch's uniform(±1/√hidden)
    torch.manual_seed(0)
    opened = CharRNN(ModelConfig(vocab_size=10, layers=2, hidden=32, forget_bias=1.0))
    h = 32
    for layer in range(2):  # the sum of the two biases is what the gate sees: 1
        total = (
            getattr(opened.rnn, f"bias_ih_l{layer}")[h : 2 * h] + getattr(opened.rnn, f"bias_hh_l{layer}")[h : 2 * h]
        )
        assert torch.equal(total, torch.ones(h))
    defaults = TrainConfig()
    assert (
        defaults.forget_bias is None
        and defaults.decay_fraction == 0.2
        and defaults.lr == 3e-3
        and defaults.warmup_steps == 0
    )


def test_a_run_of_known_length_holds_the_peak_then_decays_over_its_last_fifth():
    schedule = new_schedule(warmup_steps=20, total=500, decay_fraction=0.2)
    assert schedule["from_step"] == 400
    lrs = [lr_at(s, 1.0, schedule["warmup"], 500, 0.1, schedule["from_step"]) for s in range(520)]
    assert lrs[0] == pytest.approx(1 / 20) and all(lr == 1.0 for lr in lrs[19:401])  # warm-up, then held
    assert all(a > b for a, b in zip(lrs[400:500], lrs[401:501], strict=True))  # decays every step of the last fifth
    assert lrs[500] == pytest.approx(0.1) and lrs[519] == pytest.approx(0.1)
    # decay_fraction 1 is the former schedule: cosine over everything after warm-up.
    old = new_schedule(20, 500, decay_fraction=1.0)
    assert [lr_at(s, 1.0, 20, 500, 0.1, old["from_step"]) for s in range(500)] == [
        lr_at(s, 1.0, 20, 500, 0.1) for s in range(500)
    ]


def test_config_json_records_the_new_defaults_and_the_header_says_them(tiny_dataset, tmp_path):
    run, heard = tmp_path / "run", []
    train(options(tiny_dataset, run, steps=30, eval_every=0), on_event=heard.append)
    config = json.loads((run / "config.json").read_text())["train_config"]
    assert config["forget_bias"] is None and config["decay_fraction"] == 0.2
    assert config["lr"] == 3e-3 and config["warmup_steps"] == 0
    said = "\n".join(str(event) for event in heard if isinstance(event, Message))
    assert "0.003 from the first step, held, then cosine decay to 0.0003 from step 24 to 30 (the last 20%" in said
    assert load_checkpoint(run / "latest.pt")["schedule"] == {
        "warmup": 0,
        "total": 30,
        "from_step": 24,
        "from_ratio": 1.0,
    }
    lrs = [r["lr"] for r in metrics(run)]
    assert lrs[:25] == [3e-3] * 25 and lrs[-1] < 7e-4 and lrs[-1] == pytest.approx(lr_at(29, 3e-3, 0, 30, 0.1, 24))


def test_a_paused_and_resumed_run_keeps_the_schedule_it_started_with(tiny_dataset, tmp_path):
    straight, paused = tmp_path / "straight", tmp_path / "paused"
    train(options(tiny_dataset, straight, steps=40, eval_every=0))
    train(options(tiny_dataset, paused, steps=40, eval_every=0), stop_after=15)
    train({"out": str(paused)}, resume=True)
    assert [r["lr"] for r in metrics(straight)] == [r["lr"] for r in metrics(paused)]
    assert load_checkpoint(paused / "latest.pt")["schedule"] == load_checkpoint(straight / "latest.pt")["schedule"]


def test_a_run_saved_before_these_defaults_resumes_with_its_own(tiny_dataset, tmp_path):
    # A checkpoint from before decay_fraction and forget_bias existed: cosine over the whole run,
    # forget gates opened at 1. Resumed with a new budget, it decays as it always did.
    run = tmp_path / "run"
    train(options(tiny_dataset, run, steps=10, eval_every=0, decay_fraction=1.0, forget_bias=1.0))
    payload = load_checkpoint(run / "latest.pt")
    for key in ("decay_fraction", "forget_bias"):
        del payload["train_config"][key]
    save_checkpoint(run / "latest.pt", payload)
    train({"out": str(run), "steps": 30}, resume=True)
    config = json.loads((run / "config.json").read_text())["train_config"]
    assert config["decay_fraction"] == 1.0 and config["forget_bias"] == 1.0
    assert load_checkpoint(run / "latest.pt")["schedule"]["from_step"] == 10  # decays from where it stood


def test_minutes_decide_the_decay_from_the_speed_so_far_not_the_first_steps(tiny_dataset, tmp_path, monkeypatch):
    # A virtual clock: the first 5 steps take 200 ms each (a slow start: allocation, other work on
    # the cores), the rest 50 ms. 0.06 minutes = 3.6 s: 5 slow steps (1 s), then 52 fast ones.
    # Timing steps 3..12, as charlstm did, planned ~35 steps and sat at the floor for the last 22.
    from charlstm.training import train as train_module

    clock = {"now": 0.0, "steps": 0}
    monkeypatch.setattr(train_module, "time", types.SimpleNamespace(perf_counter=lambda: clock["now"]))
    original = train_module.Trainer.train_step

    def timed_step(self, *args):
        clock["steps"] += 1
        clock["now"] += 0.2 if clock["steps"] <= 5 else 0.05
        return original(self, *args)

    monkeypatch.setattr(train_module.Trainer, "train_step", timed_step)
    run = tmp_path / "run"
    summary = train(options(tiny_dataset, run, minutes=0.06, eval_every=0, warmup_steps=2))
    assert summary["steps"] in (57, 58)
    schedule = load_checkpoint(run / "latest.pt")["schedule"]
    # Speed timed from 40% of the time (step 14) on; decay from when 20% is left (step 43, 2.9 s),
    # planned to the step the time ends at.
    assert schedule["from_step"] == 43 and 56 <= schedule["total"] <= 58
    lrs = [r["lr"] for r in metrics(run)]
    assert lrs[2:44] == [3e-3] * 42 and lrs[-1] < 3e-3 * 0.15
