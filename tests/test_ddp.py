"""Multi-process training: a real 2-process DistributedDataParallel run with the gloo backend on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from charlstm.core.checkpoint import load_checkpoint, model_from_checkpoint
from charlstm.training.train_setup import train

REPO = Path(__file__).resolve().parent.parent
ARGS = [
    "--layers",
    "2",
    "--hidden",
    "16",
    "--embed",
    "8",
    "--batch-size",
    "4",
    "--seq-len",
    "16",
    "--steps",
    "12",
    "--eval-every",
    "6",
    "--save-every",
    "6",
    "--log-every",
    "3",
    "--lr",
    "5e-3",
]


@pytest.mark.slow  # two processes start torch: seconds, more on a loaded machine
def test_two_process_gloo_run_matches_one_process(tiny_dataset, tmp_path):
    run = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "charlstm",
        "train",
        "--data",
        str(tiny_dataset.path),
        "--out",
        str(run),
        "--device",
        "cpu",
        *ARGS,
        "--precision",
        "fp32",
        "--json",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])  # only rank 0 prints
    assert summary["world_size"] == 2 and summary["steps"] == 12 and summary["val_bpc"] is not None
    assert len(done.stdout.strip().splitlines()) == 1

    # The checkpoint loads as a plain model and holds every lane's hidden state (gathered from both ranks).
    payload = load_checkpoint(run / "latest.pt")
    model, _ = model_from_checkpoint(payload)
    assert payload["step"] == 12 and payload["hidden_state"][0].shape == (2, 4, 16)
    assert (run / "best.pt").is_file() and len((run / "metrics.jsonl").read_text().splitlines()) == 4

    # Each rank took half the lanes of the same global batch: the same training as one process.
    single = tmp_path / "single"
    options = {"data": str(tiny_dataset.path), "out": str(single), "device": "cpu", "threads": 1, "precision": "fp32"}
    options.update(
        {
            a[2:].replace("-", "_"): float(b) if "." in b or "e" in b else int(b)
            for a, b in zip(ARGS[::2], ARGS[1::2], strict=True)
        }
    )
    train(options)
    reference = load_checkpoint(single / "latest.pt")["model"]
    for name, weight in payload["model"].items():
        torch.testing.assert_close(weight, reference[name], atol=1e-4, rtol=1e-4)

    # A run started on two processes resumes on one.
    resumed = train({"out": str(run), "steps": 14, "threads": 1}, resume=True)
    assert resumed["steps"] == 14 and resumed["world_size"] == 1
