"""The library never prints: training, ingest and the experiments hand what they have to say to a
listener as events (charlstm/core/events.py), and only the CLI's listener (terminal.py) writes them."""

from __future__ import annotations

import json

from charlstm.analysis.experiments import run_study
from charlstm.core.events import Message, Metrics, Progress
from charlstm.corpus.ingest import ingest
from charlstm.training.train_setup import train
from charlstm.ui.terminal import Terminal
from conftest import JAVA_SNIPPET
from test_train import options


def kinds(heard: list, kind: type) -> list:
    return [event for event in heard if isinstance(event, kind)]


def test_training_writes_nothing_and_tells_its_listener_everything(tiny_dataset, tmp_path, capfd):
    run, heard = tmp_path / "run", []
    summary = train(options(tiny_dataset, run, steps=4, eval_every=2), on_event=heard.append)
    assert capfd.readouterr() == ("", "")
    said = [str(m) for m in kinds(heard, Message)]
    assert said[0].startswith("LSTM 2×24, ") and said[0].endswith(f"run folder {run}")
    assert said[-2:] == [line for line in said if line.startswith("step ")] and "step 4: validation" in said[-1]
    progress = kinds(heard, Progress)
    assert [(p.task, p.done, p.total, p.finished) for p in progress] == [
        ("training", step, 4, False) for step in range(5)
    ] + [("training", 4, 4, True)]
    assert set(progress[-1].stats) == {"loss", "bpc", "chars/s"}  # the last metrics line's figures
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [dict(m.record) for m in kinds(heard, Metrics)] == logged and summary["steps"] == 4


def test_without_a_listener_training_is_silent(tiny_dataset, tmp_path, capfd):
    train(options(tiny_dataset, tmp_path / "run", steps=2, eval_every=1))
    assert capfd.readouterr() == ("", "")


def test_a_resume_warns_through_the_listener(tiny_dataset, tmp_path, capfd):
    run, heard = tmp_path / "run", []
    train(options(tiny_dataset, run, steps=2))
    with open(run / "metrics.jsonl", "a") as f:
        f.write("not json\n")
    train({"out": str(run), "steps": 3}, resume=True, on_event=heard.append)
    warnings = [m for m in kinds(heard, Message) if m.warning]
    assert [m.text for m in warnings] == [
        f"dropped 1 damaged line(s) of {run / 'metrics.jsonl'} (not UTF-8 JSON with a step)"
    ]
    assert str(warnings[0]).startswith("warning: dropped 1 damaged line(s)")
    assert capfd.readouterr() == ("", "")


def test_ingest_reports_its_reading_in_bytes(tmp_path, capfd):
    src, heard = tmp_path / "src", []
    src.mkdir()
    for i in range(3):
        (src / f"G{i}.java").write_text(JAVA_SNIPPET.replace("Greeter", f"Greeter{i}"))
    report = ingest([str(src)], "d", data_dir=tmp_path / "data", on_event=heard.append)
    progress = kinds(heard, Progress)
    assert {p.task for p in progress} == {"reading"} and {p.unit for p in progress} == {"B"}
    assert [p.done for p in progress] == sorted(p.done for p in progress)
    assert progress[-1].finished and progress[-1].done == progress[-1].total == report["bytes_read"]
    assert capfd.readouterr() == ("", "")


def test_a_study_reports_each_training_step(tmp_path, capfd):
    heard = []
    run_study("counter", seed=0, out_dir=tmp_path, steps=5, max_n=2, eval_max_n=2, on_event=heard.append)
    progress = kinds(heard, Progress)
    assert [p.done for p in progress] == [0, 1, 2, 3, 4, 5, 5] and progress[-1].finished
    assert {p.task for p in progress} == {"training counter"} and progress[-1].stats["loss"]
    assert capfd.readouterr() == ("", "")


def test_the_terminal_writes_messages_on_stderr_and_no_bar_off_a_terminal(capsys):
    with Terminal() as show:
        show(Message("step 1: validation 2.0000 bpc"))
        show(Progress("training", 1, 10, stats={"loss": "1.0"}))
        show(Message("dropped 1 damaged line(s)", warning=True))
        show(Metrics({"step": 1, "loss": 1.0}))
    assert capsys.readouterr() == ("", "step 1: validation 2.0000 bpc\nwarning: dropped 1 damaged line(s)\n")


def test_events_read_as_lines():
    assert str(Progress("reading", 2048, 4096, "B")) == "reading: 2,048 of 4,096 B"
    assert (
        str(Progress("training", 3, None, stats={"loss": "1.2"}, finished=True))
        == "training: 3 step, loss 1.2 (finished)"
    )
    assert str(Metrics({"step": 3, "bpc": 1.5})) == '{"step": 3, "bpc": 1.5}'
