"""Runs you can see: the runs table and its statuses, curves in the terminal and as pictures, and
TensorBoard's event files read back with TensorBoard's own reader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charlstm.cli import app
from charlstm.training.runs import find_runs
from charlstm.training.train_setup import train
from conftest import JAVA_SNIPPET, make_dataset

runner = CliRunner()
REPO = Path(__file__).resolve().parent.parent
TINY = {
    "layers": 1,
    "hidden": 16,
    "embed": 8,
    "batch_size": 4,
    "seq_len": 16,
    "threads": 1,
    "log_every": 2,
    "precision": "fp32",
    "eval_every": 4,
    "save_every": 4,
}


@pytest.fixture
def dataset(tmp_path):
    return make_dataset(tmp_path / "data" / "tiny", JAVA_SNIPPET * 12, JAVA_SNIPPET * 2)


def options(dataset, out, **extra) -> dict:
    return {"data": str(dataset.path), "out": str(out), **TINY, **extra}


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def hold_lock(run: Path):
    """Another process holding the run's lock, as a live `train` does: (process, its PID)."""
    code = (
        "import sys, time; from charlstm.core import lock; lock.acquire(sys.argv[1], 'run'); "
        "print('held', flush=True); time.sleep(60)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(run / ".lock")], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture
def four_runs(tmp_path, dataset):
    """A folder with a finished, a stopped, a live (locked) and a damaged run, made in that order."""
    runs = tmp_path / "runs"
    train(options(dataset, runs / "finished", steps=6))
    train(options(dataset, runs / "stopped", steps=8), stop_after=4)  # a pause: the budget is not spent
    train(options(dataset, runs / "live", steps=4))
    (runs / "live" / "summary.json").unlink()  # as while a resumed run trains: not finished
    train(options(dataset, runs / "damaged", steps=4))
    latest = runs / "damaged" / "latest.pt"
    latest.write_bytes(latest.read_bytes()[:1000])  # cut off, as a full disk outside charlstm would
    with open(runs / "damaged" / "metrics.jsonl", "a") as f:
        f.write("{not json\n")
    for i, name in enumerate(("finished", "stopped", "live", "damaged")):  # their order in time
        for f in (runs / name).iterdir():
            os.utime(f, (1_700_000_000 + i * 60, 1_700_000_000 + i * 60))
    proc = hold_lock(runs / "live")
    yield runs, proc.pid
    proc.kill()
    proc.wait()


@pytest.mark.slow
def test_runs_table_shows_finished_stopped_live_and_damaged_runs(four_runs):
    runs, pid = four_runs
    rows = {row["name"]: row for row in find_runs(runs)}
    assert [row["name"] for row in find_runs(runs)] == ["finished", "stopped", "live", "damaged"]  # by time
    assert rows["finished"]["status"] == "finished" and rows["finished"]["steps"] == 6
    assert rows["finished"]["model"] == "LSTM 1×16" and rows["finished"]["dataset"] == "tiny"
    assert rows["finished"]["precision"] == "fp32" and rows["finished"]["device"] == "cpu"
    assert rows["finished"]["best_val_bpc"] == min(r["val_bpc"] for r in records(runs / "finished") if "val_bpc" in r)
    assert rows["stopped"]["status"] == "stopped" and rows["stopped"]["steps"] == 4
    assert rows["stopped"]["note"] == f"resume with: charlstm train --resume --out {runs / 'stopped'}"
    assert rows["live"]["status"] == "training" and rows["live"]["pid"] == pid
    assert rows["damaged"]["status"] == "damaged"
    assert "latest.pt is not a whole checkpoint" in rows["damaged"]["note"]
    assert "metrics.jsonl has 1 unreadable line(s)" in rows["damaged"]["note"]

    result = runner.invoke(app, ["runs", str(runs)])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["run", "model", "data"]
    table = {line.split()[0]: line.split() for line in lines[1:5]}
    assert table["finished"][-1] == "finished" and table["stopped"][-1] == "stopped"
    assert table["live"][-1] == "training" and table["damaged"][-1] == "damaged"
    assert f"stopped: resume with: charlstm train --resume --out {runs / 'stopped'}" in result.output
    assert f"live: in use by PID {pid}" in result.output
    assert "damaged: metrics.jsonl has 1 unreadable line(s)" in result.output
    assert "latest.pt is not a whole checkpoint" in result.output

    as_json = runner.invoke(app, ["runs", str(runs), "--json"])
    assert as_json.exit_code == 0
    assert [row["status"] for row in json.loads(as_json.stdout)] == ["finished", "stopped", "training", "damaged"]


def test_a_run_no_longer_locked_is_stopped_and_a_resumed_one_finishes(tmp_path, dataset):
    run = tmp_path / "runs" / "r"
    train(options(dataset, run, steps=8), stop_after=4)
    assert find_runs(tmp_path / "runs")[0]["status"] == "stopped"
    train(options(dataset, run, steps=8), resume=True)
    (row,) = find_runs(tmp_path / "runs")
    assert (row["status"], row["steps"]) == ("finished", 8)


def test_runs_in_an_empty_or_missing_folder(tmp_path, monkeypatch):
    result = runner.invoke(app, ["runs", str(tmp_path)])
    assert result.exit_code == 0 and "no runs in" in result.output
    monkeypatch.chdir(tmp_path)  # no checkpoints/ in the current folder: no runs yet
    default = runner.invoke(app, ["runs"])
    assert default.exit_code == 0 and "no runs in checkpoints" in default.output
    missing = runner.invoke(app, ["runs", str(tmp_path / "nope")])
    assert missing.exit_code == 1 and missing.output.startswith("error:") and "Traceback" not in missing.output


def test_a_run_with_broken_config_is_a_damaged_row(tmp_path):
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    (run / "config.json").write_text("[1, 2")
    (run / "metrics.jsonl").write_text('{"step": 2, "bpc": 3.0, "loss": 2.0}\n"step"\n')
    (run / "latest.pt").write_bytes(b"")
    (row,) = find_runs(tmp_path / "runs")
    assert row["status"] == "damaged"
    assert "config.json is not valid JSON" in row["note"] and "latest.pt is empty" in row["note"]
    assert "metrics.jsonl has 1 unreadable line(s) (line 2 first)" in row["note"]


# --- curves ------------------------------------------------------------------------------------


def fake_run(run: Path, slope: float, steps: int = 200) -> None:
    """A run folder with metrics only: training bpc falling at `slope`, validation every 50 steps."""
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"train_config": {"batch_size": 4, "seq_len": 10}}))
    lines = []
    for step in range(10, steps + 1, 10):
        record = {"step": step, "epoch": 0, "loss": 1.0, "bpc": 5 - slope * step, "lr": 1e-3, "chars_per_sec": 400.0}
        if step % 50 == 0:
            record["val_bpc"] = 5.2 - slope * step
        lines.append(json.dumps(record))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def test_plot_of_two_runs_has_both_series_in_legend_and_picture(tmp_path):
    fake_run(tmp_path / "alpha", 0.01)
    fake_run(tmp_path / "beta", 0.005, steps=120)
    svg, html = tmp_path / "curves.svg", tmp_path / "curves.html"
    result = runner.invoke(
        app, ["runs", str(tmp_path / "alpha"), str(tmp_path / "beta"), "--plot", "--svg", str(svg), "--html", str(html)]
    )
    assert result.exit_code == 0, result.output
    for label in ("alpha train", "alpha val", "beta train", "beta val"):
        assert label in result.output
    assert "┤" in result.output and "step" in result.output  # axes drawn
    picture = svg.read_text()
    assert picture.startswith("<?xml") and "<svg" in picture
    for label in ("alpha train", "alpha val", "beta train", "beta val", "bits per character"):
        assert f">{label}</text>" in picture  # the same legend as the terminal's
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 1 and ">beta val</text>" in page

    points = json.loads(
        runner.invoke(app, ["runs", str(tmp_path / "alpha"), str(tmp_path / "beta"), "--plot", "--json"]).stdout
    )
    assert [p["name"] for p in points] == ["alpha", "beta"]
    assert points[0]["val"][0] == [50, pytest.approx(4.7)] and len(points[1]["train"]) == 12


def test_plot_against_characters_and_minutes(tmp_path):
    fake_run(tmp_path / "alpha", 0.01)
    by_chars = json.loads(
        runner.invoke(app, ["runs", str(tmp_path / "alpha"), "--plot", "--x", "chars", "--json"]).stdout
    )
    assert by_chars[0]["train"][0][0] == 10 * 4 * 10  # steps × batch × sequence length
    by_minutes = json.loads(
        runner.invoke(app, ["runs", str(tmp_path / "alpha"), "--plot", "--x", "minutes", "--json"]).stdout
    )
    # 10 steps of 40 characters at 400 chars/s: one second of training per line
    assert by_minutes[0]["train"][-1][0] == pytest.approx(20 / 60)
    bad = runner.invoke(app, ["runs", str(tmp_path / "alpha"), "--plot", "--x", "hours"])
    assert bad.exit_code == 1 and bad.output.startswith("error: --x 'hours'")


def test_pictures_without_matplotlib_are_a_one_line_error(tmp_path, monkeypatch):
    fake_run(tmp_path / "alpha", 0.01)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the extra were not installed
    result = runner.invoke(app, ["runs", str(tmp_path / "alpha"), "--svg", str(tmp_path / "c.svg")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.startswith("error: pictures of curves need matplotlib: pip install 'charlstm[svg]'")
    assert not (tmp_path / "c.svg").exists()


# --- TensorBoard -------------------------------------------------------------------------------


def scalars(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}, acc


def raw_steps(log_dir: Path, tag: str) -> list[int]:
    """Every event of `tag` in every file, as written (EventFileLoader: no purging)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return [
        e.step
        for f in sorted(log_dir.glob("events.out.tfevents.*"))
        for e in EventFileLoader(str(f)).Load()
        for v in e.summary.value
        if v.tag == tag
    ]


def test_tensorboard_events_hold_the_metrics_and_a_resume_adds_no_duplicate_steps(tmp_path, dataset):
    pytest.importorskip("tensorboard")
    import numpy as np

    run, logs = tmp_path / "runs" / "tb", tmp_path / "tb"
    train(options(dataset, run, steps=12), stop_after=6, tensorboard=str(logs))
    assert [r["step"] for r in records(run)] == [2, 4, 6]
    # As if killed before its save at step 6: it resumes from best.pt (step 4, its validation), so
    # step 6 is logged again; metrics.jsonl is cut back to step 4 and TensorBoard's reader purges.
    (run / "latest.pt").unlink()
    train(options(dataset, run, steps=12), resume=True, tensorboard=str(logs))
    metrics = records(run)
    assert [r["step"] for r in metrics] == [2, 4, 6, 8, 10, 12]
    assert raw_steps(logs / "tb", "bpc/train") == [2, 4, 6, 6, 8, 10, 12]  # written twice: the purge has work
    found, acc = scalars(logs / "tb")
    for key, tag in (
        ("bpc", "bpc/train"),
        ("val_bpc", "bpc/val"),
        ("loss", "loss/train"),
        ("lr", "optim/lr"),
        ("grad_norm", "optim/grad_norm"),
        ("chars_per_sec", "speed/chars_per_sec"),
        ("epoch", "data/epoch"),
    ):
        expected = [(r["step"], float(np.float32(r[key]))) for r in metrics if key in r]
        assert found[tag] == expected, tag  # the same steps once each, the same numbers as TensorBoard's float32
    assert [step for step, _ in found["bpc/val"]] == [4, 8, 12]
    samples = acc.Tensors("sample/text_summary")
    assert [e.step for e in samples] == [4, 8, 12]
    assert len(samples[-1].tensor_proto.string_val[0].decode()) > 100
    assert acc.PluginTagToContent("hparams")  # the configuration as hyperparameters


def test_tensorboard_does_not_change_training(tmp_path, dataset):
    pytest.importorskip("tensorboard")
    train(options(dataset, tmp_path / "plain", steps=8))
    train(options(dataset, tmp_path / "logged", steps=8), tensorboard=str(tmp_path / "tb"))
    strip = lambda rs: [{k: v for k, v in r.items() if k != "chars_per_sec"} for r in rs]  # noqa: E731
    assert strip(records(tmp_path / "plain")) == strip(records(tmp_path / "logged"))


def test_tensorboard_without_the_extra_is_a_one_line_error(tmp_path, dataset, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the package were missing
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(dataset.path),
            "--out",
            str(tmp_path / "r"),
            "--steps",
            "2",
            "--tensorboard",
            str(tmp_path / "tb"),
        ],
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.startswith(
        "error: --tensorboard needs the tensorboard package: pip install 'charlstm[tensorboard]'"
    )
    assert not (tmp_path / "r").exists()


def test_runs_help_does_not_import_torch():
    code = (
        "import sys; from typer.testing import CliRunner; from charlstm.cli import app; "
        "r = CliRunner().invoke(app, ['runs', '--help']); print(r.exit_code, 'torch' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["0", "False"], done.stderr


def test_a_finished_train_ends_with_its_curve_on_a_terminal_only(tmp_path):
    import io

    from rich.console import Console

    from charlstm.ui.runs_command import report_training

    fake_run(tmp_path / "alpha", 0.01)
    summary = {"steps": 200, "val_bpc": 3.2, "best_val_bpc": 3.2, "run_dir": str(tmp_path / "alpha")}
    shown = {}
    for terminal in (True, False):
        out = io.StringIO()
        report_training(summary, False, Console(file=out, force_terminal=terminal, width=80))
        shown[terminal] = out.getvalue()
    assert "done: 200 steps" in shown[True] and "done: 200 steps" in shown[False]
    assert "alpha train" in shown[True] and "alpha val" in shown[True] and "┤" in shown[True]
    assert "alpha" not in shown[False].replace(str(tmp_path / "alpha"), "")  # piped: the line alone


def test_several_folders_without_plot_is_a_one_line_error(tmp_path):
    result = runner.invoke(app, ["runs", str(tmp_path), str(tmp_path)])
    assert result.exit_code == 1 and result.output.startswith("error: give one folder of runs")
