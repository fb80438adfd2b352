"""Device- and corpus-aware training defaults (charlstm/training/defaults.py): pure decisions from facts."""

import numpy as np
import pytest

from charlstm.core.config import TrainConfig
from charlstm.training.batching import LaneBatcher
from charlstm.training.defaults import Facts, choose_defaults, estimated_chars_per_second, implied_passes

H100_JAVA = Facts(
    device="cuda",
    world=1,
    train_chars=8_000_000,
    parameters=5_400_000,
    vocab=100,
    layers=3,
    hidden=512,
    reduced_precision=False,
)
CPU_STDLIB = Facts(
    device="cpu",
    world=1,
    train_chars=12_000_000,
    parameters=5_400_000,
    vocab=100,
    layers=3,
    hidden=512,
    reduced_precision=True,
)


def test_gpu_minutes_on_a_mid_sized_corpus_gets_the_measured_best_settings():
    # The H100 run: 2.2 minutes on 8M characters; best measured: batch 256, lr 4e-3, dropout 0.3.
    chosen = choose_defaults({"minutes": 2.2}, H100_JAVA)
    assert chosen.values == {"batch_size": 256, "lr": 0.004, "dropout": 0.3}
    assert set(chosen.reasons) == set(chosen.values)
    header = chosen.header()
    assert "--batch-size 256" in header and "--lr 0.004" in header and "--dropout 0.3" in header


def test_the_gpu_speed_estimate_matches_the_measured_anchor():
    # 3×512 on an H100: 1.26M chars/s at 256 lanes, 315k at 64; within a factor of 1.5 is what we rely on.
    assert 1.26e6 / 1.5 < estimated_chars_per_second(H100_JAVA, 256, 128) < 1.26e6 * 1.5
    assert 315e3 / 1.5 < estimated_chars_per_second(H100_JAVA, 64, 128) < 315e3 * 1.5


def test_cpu_defaults_are_unchanged_for_a_run_of_minutes_on_a_large_corpus():
    # The demo's case: 3 minutes over the standard library is well under one pass.
    assert choose_defaults({"minutes": 3}, CPU_STDLIB).values == {}
    assert choose_defaults({}, CPU_STDLIB).values == {}  # no budget: one pass


def test_cpu_estimate_follows_precision_and_the_measured_rates():
    fp32 = Facts(**{**CPU_STDLIB.__dict__, "reduced_precision": False})
    # docs/performance.md: 3×512 on 2 cores, ~7k chars/s fp32 and ~20k bf16.
    assert 4e3 < estimated_chars_per_second(fp32, 64, 128) < 9e3
    assert 12e3 < estimated_chars_per_second(CPU_STDLIB, 64, 128) < 25e3
    # Measured on 2 cores in bf16 (`charlstm train --steps 30 --json`): a 1×16 model over 110
    # symbols ran at 1.05M chars/s, over 1,939 symbols at 68k: small models are bound by the logits.
    tiny = dict(device="cpu", world=1, train_chars=10**7, layers=1, hidden=16, reduced_precision=True)
    assert 0.5e6 < estimated_chars_per_second(Facts(**tiny, parameters=14_158, vocab=110), 64, 128) < 2e6
    assert 34e3 < estimated_chars_per_second(Facts(**tiny, parameters=162_307, vocab=1939), 64, 128) < 136e3


@pytest.mark.parametrize("epochs, dropout", [(0.5, None), (1.5, 0.1), (3, 0.2), (5, 0.3), (40, 0.3)])
def test_dropout_grows_with_the_passes_the_budget_implies(epochs, dropout):
    chosen = choose_defaults({"epochs": epochs}, CPU_STDLIB)
    assert chosen.values.get("dropout") == dropout
    if dropout:
        assert f"~{epochs:.1f} passes" in chosen.reasons["dropout"]


def test_steps_are_turned_into_passes_exactly():
    passes, how = implied_passes({"steps": 1000}, CPU_STDLIB, batch=64, seq_len=128)
    assert passes == pytest.approx(1000 * 64 * 128 / 12_000_000)
    assert "1,000 steps of 64 × 128" in how


def test_the_tightest_budget_decides_the_passes():
    passes, _ = implied_passes({"steps": 10, "epochs": 50}, CPU_STDLIB, batch=64, seq_len=128)
    assert passes < 0.01


def test_given_options_are_never_overridden():
    given = {"minutes": 2.2, "batch_size": 32, "lr": 1e-3, "dropout": 0.0}
    assert choose_defaults(given, H100_JAVA).values == {}


def test_learning_rate_scales_with_a_batch_the_user_gave():
    chosen = choose_defaults({"batch_size": 1024, "dropout": 0.0}, H100_JAVA)
    assert chosen.values == {"lr": 0.004}  # 3e-3 × √16, held at the best measured 4e-3
    assert "held at 0.004" in chosen.reasons["lr"]
    assert choose_defaults({"batch_size": 96, "dropout": 0.0}, H100_JAVA).values == {"lr": 0.00367}  # 3e-3 × √1.5
    assert choose_defaults({"batch_size": 16, "dropout": 0.0}, H100_JAVA).values == {}  # small batches keep 3e-3


def test_a_short_corpus_gets_fewer_lanes_instead_of_an_error():
    tiny = Facts(
        device="cpu",
        world=1,
        train_chars=5_000,
        parameters=10_000,
        vocab=100,
        layers=1,
        hidden=32,
        reduced_precision=False,
    )
    chosen = choose_defaults({"seq_len": 32, "steps": 10}, tiny)
    lanes = chosen.values["batch_size"]
    assert lanes < TrainConfig.batch_size
    assert 5_000 // lanes >= 4 * 32 + 1  # every lane holds four windows and a target
    assert "5,000 characters" in chosen.reasons["batch_size"]


def test_lanes_stay_a_multiple_of_the_process_count():
    facts = Facts(
        device="cuda",
        world=3,
        train_chars=200_000,
        parameters=10_000,
        vocab=100,
        layers=1,
        hidden=32,
        reduced_precision=False,
    )
    lanes = choose_defaults({"steps": 10}, facts).values["batch_size"]
    assert lanes % 3 == 0 and lanes < 768


def test_gpu_lanes_scale_with_processes():
    facts = Facts(**{**H100_JAVA.__dict__, "world": 4, "train_chars": 80_000_000})
    assert choose_defaults({"steps": 10}, facts).values["batch_size"] == 1024


# ----- through `charlstm train` ----------------------------------------------------------------

SMALL = [
    "--layers",
    "1",
    "--hidden",
    "16",
    "--embed",
    "8",
    "--seq-len",
    "16",
    "--threads",
    "1",
    "--precision",
    "fp32",
    "--eval-every",
    "0",
    "--log-every",
    "1",
]


def _train(dataset, run, *extra):
    from typer.testing import CliRunner

    from charlstm.cli import app

    return CliRunner().invoke(app, ["train", "--data", str(dataset.path), "--out", str(run), *SMALL, *extra])


def _config(run):
    import json

    return json.loads((run / "config.json").read_text())["train_config"]


def test_train_prints_and_records_the_chosen_defaults(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    result = _train(tiny_dataset, run, "--batch-size", "4", "--epochs", "6")
    assert result.exit_code == 0, result.output
    assert "chosen for this device and corpus: --dropout 0.3 (~6.0 passes over" in result.output
    config = _config(run)
    assert config["dropout"] == 0.3
    assert set(config["chosen"]) == {"dropout"} and "passes" in config["chosen"]["dropout"]
    # A resumed run keeps what was chosen and does not announce it again.
    again = _train(tiny_dataset, run, "--resume", "--epochs", "7")
    assert again.exit_code == 0, again.output
    assert "chosen for this device" not in again.output
    assert _config(run)["dropout"] == 0.3 and _config(run)["chosen"] == config["chosen"]


def test_options_given_are_kept_and_nothing_is_announced(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    result = _train(tiny_dataset, run, "--batch-size", "4", "--epochs", "6", "--dropout", "0")
    assert result.exit_code == 0, result.output
    assert "chosen for this device" not in result.output
    assert _config(run)["dropout"] == 0.0 and _config(run)["chosen"] is None


def test_a_short_corpus_trains_on_fewer_lanes_unless_the_batch_was_given(tiny_dataset, tmp_path):
    chars = int(tiny_dataset.meta["train_chars"])
    assert chars < 64 * (4 * 16 + 1)  # 64 lanes of four 16-character windows do not fit
    result = _train(tiny_dataset, tmp_path / "auto", "--steps", "2", "--dropout", "0")
    assert result.exit_code == 0, result.output
    lanes = _config(tmp_path / "auto")["batch_size"]
    assert 1 <= lanes < 64 and f"--batch-size {lanes} (the training split ({chars:,} characters)" in result.output
    given = _train(tiny_dataset, tmp_path / "given", "--steps", "2", "--batch-size", "64", "--seq-len", "200")
    assert given.exit_code == 1 and "lower --batch-size or --seq-len" in given.output


def test_cpu_lanes_are_shared_evenly_among_processes():
    facts = Facts(**{**CPU_STDLIB.__dict__, "world": 3})
    chosen = choose_defaults({"minutes": 1}, facts)
    assert chosen.values["batch_size"] == 63 and "3 processes" in chosen.reasons["batch_size"]
    assert "batch_size" not in choose_defaults({"minutes": 1}, Facts(**{**CPU_STDLIB.__dict__, "world": 2})).values


def test_an_fp32_gpu_run_turns_tf32_on_for_its_matrix_products(monkeypatch):
    import torch

    from charlstm.core import backend

    picked = backend.Precision("fp32", "cuda", "float32", "auto: measured no faster")
    monkeypatch.setattr(backend, "choose_precision", lambda *a, **k: picked)
    before = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        backend.training_precision("cpu-run", torch.device("cpu"), "lstm", 16, lanes=4)
        assert torch.backends.cuda.matmul.allow_tf32 is False  # a CPU run leaves it alone
        assert backend.training_precision("auto", torch.device("cuda"), "lstm", 512, lanes=256) is picked
        assert torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def test_a_small_model_beside_a_large_corpus_gets_no_dropout():
    # The demo: a 3×128 LSTM (406,752 parameters) for 3 CPU minutes over the stdlib (11.5M
    # characters), batch 32 × 64. Measured: 1.8736 bpc without dropout, 1.9245 with 0.2.
    demo = Facts(
        device="cpu",
        world=1,
        train_chars=11_511_940,
        parameters=406_752,
        vocab=300,
        layers=3,
        hidden=128,
        reduced_precision=True,
    )
    given = {"minutes": 3, "batch_size": 32, "seq_len": 64, "lr": 4e-3}
    assert choose_defaults(given, demo).values == {}
    # Its speed, measured at 7,606 steps in those 3 minutes (86.5k chars/s), is estimated within 1.5×.
    assert 86.5e3 / 1.5 < estimated_chars_per_second(demo, 32, 64) < 86.5e3 * 1.5
    # Three passes: still nothing for it, while a model the corpus's size gets dropout.
    three = {"epochs": 3, "batch_size": 32, "seq_len": 64, "lr": 4e-3}
    assert "dropout" not in choose_defaults(three, demo).values
    big = Facts(**{**demo.__dict__, "parameters": 11_000_000})
    assert choose_defaults(three, big).values["dropout"] == 0.3


def test_no_dropout_within_one_pass_however_large_the_model():
    huge = Facts(**{**CPU_STDLIB.__dict__, "parameters": 10**9})
    assert "dropout" not in choose_defaults({"epochs": 1.0}, huge).values
    assert choose_defaults({"epochs": 1.2}, huge).values["dropout"] == 0.3


def test_a_corpus_too_short_for_four_windows_a_lane_still_gets_lanes_that_fit():
    """300 training characters hold no lane of four 128-character windows, but two lanes of one:
    the default then is 2 lanes, not 64 (an error the user never asked for)."""
    facts = Facts(**{**CPU_STDLIB.__dict__, "train_chars": 300})
    chosen = choose_defaults({"steps": 1}, facts)
    assert chosen.values["batch_size"] == 2 and "300 characters" in chosen.reasons["batch_size"]
    LaneBatcher(np.zeros(300, dtype=np.uint8), chosen.values["batch_size"], 128)  # fits
    assert (
        choose_defaults({"steps": 1}, Facts(**{**CPU_STDLIB.__dict__, "train_chars": 100})).values.get("batch_size")
        is None
    )
