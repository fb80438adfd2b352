"""bench/gpu_run.py, the prepared script for a CUDA machine, proven in its shortened CPU form."""

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

from charlstm.core.checkpoint import load_checkpoint
from conftest import JAVA_SNIPPET, PYTHON_SNIPPET, make_dataset

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bench" / "gpu_run.py"


def load_gpu_run():
    spec = importlib.util.spec_from_file_location("gpu_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_failing_stage_is_one_line_and_the_deadline_skips_rather_than_overruns(tmp_path):
    gpu_run = load_gpu_run()
    s = gpu_run.Session(tmp_path, tmp_path, deadline_s=60, smoke=True)

    def broken():
        raise ValueError("first line\nthe line that says what went wrong")

    assert s.stage("broken", broken)["status"] == "failed"
    assert s.record["stages"]["broken"]["error"] == "ValueError: the line that says what went wrong"
    assert s.stage("fine", lambda: {"x": 1}) == {"status": "ok", "x": 1, "seconds": pytest.approx(0, abs=1)}
    s.reserve = 50  # kept for later stages: 10 s of 60 remain for this one
    ran = []
    result = s.stage("big", lambda: ran.append(1), need_s=30)
    assert result["status"] == "skipped" and "deadline" in result["reason"] and not ran
    assert s.budget(300) <= 10.5
    done = s.run("echo", [sys.executable, "-c", "print(6 * 7)"], timeout=10)
    assert done.stdout.strip() == "42" and "print(6 * 7)" in (tmp_path / "commands.log").read_text()
    with pytest.raises(gpu_run.StageError, match="ran past 1 s"):
        s.run("sleep", [sys.executable, "-c", "import time; time.sleep(5)"], timeout=1)
    assert (
        json.loads((tmp_path / "gpu_run.json").read_text())["stages"]["big"]["status"] == "skipped"
    )  # saved per stage


def test_a_stopped_command_is_named_as_a_user_would_type_it():
    name = load_gpu_run().command_name
    assert name([sys.executable, "-m", "charlstm", "train", "--data", "x"]) == "charlstm train"
    assert name([sys.executable, "/repo/bench/train_speed.py", "--grid"]) == "train_speed.py"
    assert name([sys.executable, "-c", "pass"]) == Path(sys.executable).name


def test_a_stopped_command_takes_its_children_along_and_leaves_its_last_json(tmp_path, monkeypatch):
    gpu_run = load_gpu_run()
    monkeypatch.setattr(gpu_run, "HARD_GRACE_S", 0)
    s = gpu_run.Session(tmp_path, tmp_path, deadline_s=3, smoke=True)
    marker = tmp_path / "grandchild-lived"
    grandchild = f"import time, pathlib; time.sleep(4); pathlib.Path({str(marker)!r}).write_text('x')"
    script = (
        f"import json, subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {grandchild!r}]); "
        "print(json.dumps({'cells': 1}), flush=True); time.sleep(60)"
    )
    start = time.monotonic()
    # The deadline, not the 300 s asked for, stops it; the stage records its last JSON line.
    result = s.stage("stuck", lambda: s.run("stuck", [sys.executable, "-c", script], timeout=300), need_s=0)
    assert time.monotonic() - start < 10 and "ran past 3 s" in result["error"]
    assert result["status"] == "failed" and result["partial"] == {"cells": 1}
    time.sleep(5)
    assert not marker.exists()  # the whole process group was killed


@pytest.mark.slow
def test_the_smoke_form_runs_every_stage_and_ships_both_models(tmp_path):
    data = tmp_path / "data"
    make_dataset(data / "py", PYTHON_SNIPPET * 150, PYTHON_SNIPPET * 10, language="python")
    make_dataset(data / "java", JAVA_SNIPPET * 40, JAVA_SNIPPET * 3, language="java")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--smoke",
            "--out",
            str(out),
            "--python-data",
            str(data / "py"),
            "--java-data",
            str(data / "java"),
            "--java-data-made-by",
            "make_dataset in a test",
            "--python-minutes",
            "0.05",
            "--java-minutes",
            "0.05",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
    )
    assert len(done.stdout.strip().splitlines()) == 1, done.stdout  # ONE JSON object on stdout
    record = json.loads(done.stdout)
    assert record == json.loads((out / "gpu_run.json").read_text())
    assert time.monotonic() - start < record["deadline_s"] + 30 and record["finished"]
    # What a device run brings back: at most 8 files of 16 MiB, no more than 2 folders down.
    returned = [p for p in out.rglob("*") if p.is_file()]
    assert len(returned) <= 8 and all(p.stat().st_size <= 16 * 2**20 for p in returned)
    assert all(len(p.relative_to(out).parts) <= 3 for p in returned)
    stages = record["stages"]
    assert set(stages) >= {"env", "graph_check", "train_speed", "sample_speed", "python", "java"}
    assert record["failed"] == [] and done.returncode == 0, (record["failed"], done.stderr[-2000:])
    assert stages["graph_check"]["status"] in ("ok", "missing")
    assert {r["precision"] for r in stages["train_speed"]["grid"]["rows"]} >= {"fp32"}
    for lang, name in (("python", "py"), ("java", "java")):
        run = stages[lang]
        assert run["status"] == "ok" and run["steps"] >= 1 and run["best_val_bpc"] > 0
        assert run["choices"]["precision"] in ("fp32", "bf16") and run["choices"]["batch_size"] >= 1
        with tarfile.open(out / f"pretrained-{lang}.tar") as packed:
            packed.extractall(tmp_path / "unpacked", filter="data")
        shipped = tmp_path / "unpacked" / f"pretrained-{lang}"
        assert {p.name for p in shipped.iterdir()} == {
            "best.pt",
            "config.json",
            "metrics.jsonl",
            "val-excerpt.txt",
            "COMMANDS.txt",
        }
        payload = load_checkpoint(shipped / "best.pt")
        assert {v.dtype for v in payload["model"].values()} == {torch.float16} and "optimizer" not in payload
        commands = (shipped / "COMMANDS.txt").read_text()
        train_line = next(line for line in commands.splitlines() if " train " in line)
        assert f"--data {data / name}" in train_line and "--layers 2 --hidden 32 --minutes" in train_line
        assert not any(opt in train_line for opt in ("--batch-size", "--lr", "--dropout", "--seq-len", "--embed"))
        assert "ship_model.py" in commands
        # The fp16 weights score as the run did.
        assert run["export"]["eval_fp16_weights_bpc"] == pytest.approx(run["best_val_bpc"], abs=0.01)
        assert run["export"]["within_limit"] and isinstance(run["export"]["sample"], str)
    assert "make_dataset in a test" in (tmp_path / "unpacked" / "pretrained-java" / "COMMANDS.txt").read_text()
    # The goal is judged on the run's own figure (seconds of a tiny model on a repeated snippet can
    # reach it or not, depending on the recipe: it is not the point here).
    python = stages["python"]
    assert python["goal_val_bpc"] == 1.25 and python["goal_met"] is (python["best_val_bpc"] <= 1.25)


def test_an_fp16_export_halves_the_file_and_loads_back_into_float32(tmp_path):
    from charlstm.core.checkpoint import export_for_inference, model_from_checkpoint
    from conftest import make_checkpoint

    src = make_checkpoint(tmp_path / "run" / "best.pt", hidden=64)
    full = export_for_inference(src, tmp_path / "fp32.pt")
    half = export_for_inference(src, tmp_path / "fp16.pt", half=True)
    assert {v.dtype for v in half["model"].values()} == {torch.float16}
    assert (tmp_path / "fp16.pt").stat().st_size < 0.6 * (tmp_path / "fp32.pt").stat().st_size
    a, _ = model_from_checkpoint(load_checkpoint(tmp_path / "fp32.pt"))
    b, _ = model_from_checkpoint(load_checkpoint(tmp_path / "fp16.pt"))
    assert next(b.parameters()).dtype == torch.float32
    x = torch.randint(0, len(full["vocab"]), (2, 30))
    with torch.no_grad():
        assert torch.allclose(a(x)[0], b(x)[0], atol=5e-3)  # fp16's rounding of the weights, no more


def test_the_java_stage_is_skipped_with_the_reason_when_there_are_no_jdk_sources(tmp_path, monkeypatch):
    from charlstm.corpus import sources

    gpu_run = load_gpu_run()
    s = gpu_run.Session(tmp_path / "out", tmp_path, deadline_s=60, smoke=False)
    monkeypatch.setattr(sources, "jdk_src_zip_candidates", lambda: [tmp_path / "jdk" / "lib" / "src.zip"])
    assert "no JDK sources" in gpu_run.java_unavailable(s, None)
    assert gpu_run.java_unavailable(s, tmp_path / "given") is None
    (tmp_path / "jdk" / "lib").mkdir(parents=True)
    (tmp_path / "jdk" / "lib" / "src.zip").write_bytes(b"")
    assert gpu_run.java_unavailable(s, None) is None
    # The shortened CPU form never ingests a whole JDK: its validation alone outlasts the budget.
    smoke = gpu_run.Session(tmp_path / "out2", tmp_path, deadline_s=60, smoke=True)
    assert "--java-data" in gpu_run.java_unavailable(smoke, None)
    assert gpu_run.java_unavailable(smoke, tmp_path / "given") is None
