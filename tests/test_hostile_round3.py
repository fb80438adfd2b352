"""Hostile use, round 3: data replaced under a run, outputs over inputs, closed streams and odd
terminals, SIGTERM, crafted checkpoints, paths the OS refuses, damaged run and dataset files,
float32 edges."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charlstm.cli import app
from charlstm.core.checkpoint import load_checkpoint, save_checkpoint
from charlstm.core.errors import CharlstmError
from charlstm.corpus.ingest import ingest
from charlstm.training.train_setup import train
from conftest import JAVA_SNIPPET, PYTHON_SNIPPET, make_checkpoint
from test_hostile_train import ENV, REPO, TINY, one_line_error, options, train_args

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")


def java_sources(folder: Path, texts: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (folder / name).write_text(text)
    return folder


def ingest_java(tmp_path: Path, texts: dict[str, str], **kw) -> Path:
    src = java_sources(tmp_path / f"src{len(list(tmp_path.glob('src*')))}", texts)
    ingest([str(src)], "t", data_dir=tmp_path / "data", val_fraction=0.3, **kw)
    return tmp_path / "data" / "t"


FILES_A = {f"A{i}.java": JAVA_SNIPPET.replace("Greeter", f"Greeter{i}") * 3 for i in range(6)}
FILES_B = {f"B{i}.java": JAVA_SNIPPET.replace("Greeter", f"Greeter{5 - i}") * 4 for i in range(6)}


# --- 1. a dataset replaced under a run ---------------------------------------------------------


def test_resume_refuses_data_ingested_again_unless_new_data_is_given(tmp_path):
    data = ingest_java(tmp_path, FILES_A)
    run = tmp_path / "run"
    train({"data": str(data), "out": str(run), **{**TINY, "batch_size": 2}, "steps": 2})
    ingest_java(tmp_path, FILES_B, force=True)  # the same alphabet, other files
    result = runner.invoke(app, ["train", "--out", str(run), "--resume", "--steps", "4"])
    line = one_line_error(result)
    assert "content hash" in line and "--new-data" in line
    assert load_checkpoint(run / "latest.pt")["step"] == 2  # nothing trained on the other data
    result = runner.invoke(app, ["train", "--out", str(run), "--resume", "--steps", "4", "--new-data"])
    assert result.exit_code == 0, result.output
    assert "continuing on it (--new-data)" in result.output
    assert load_checkpoint(run / "latest.pt")["step"] == 4


def test_new_data_without_resume_is_refused(tiny_dataset, tmp_path):
    result = runner.invoke(app, [*train_args(tiny_dataset, tmp_path / "run"), "--new-data"])
    assert "--new-data goes with --resume" in one_line_error(result)


def test_ingest_force_cannot_replace_a_dataset_a_run_is_reading(tmp_path, monkeypatch):
    from charlstm.training.train import Trainer

    data = ingest_java(tmp_path, FILES_A)
    meta_before = (data / "meta.json").read_bytes()
    original, refused = Trainer.train_step, []

    def step_then_ingest(self, *args):
        loss = original(self, *args)
        if self.step == 1:
            try:
                ingest_java(tmp_path, FILES_B, force=True)
            except CharlstmError as exc:
                refused.append(str(exc))
        return loss

    monkeypatch.setattr(Trainer, "train_step", step_then_ingest)
    train({"data": str(data), "out": str(tmp_path / "run"), **{**TINY, "batch_size": 2}, "steps": 2})
    assert refused and "in use" in refused[0] and str(data) in refused[0]
    assert (data / "meta.json").read_bytes() == meta_before
    monkeypatch.setattr(Trainer, "train_step", original)
    ingest_java(tmp_path, FILES_B, force=True)  # the run is over: the name is free again
    assert (data / "meta.json").read_bytes() != meta_before
    assert not (data.parent / ".t.lock").exists()


# --- 2. an output written over an input ---------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        lambda ck, f, link: ["eval", str(ck), "--per-char", "--text-file", str(f), "--html", str(link)],
        lambda ck, f, link: ["inspect-neuron", str(ck), "--text-file", str(f), "--html", str(link)],
        lambda ck, f, link: [
            "inspect-neuron",
            str(ck),
            "--text-file",
            str(f),
            "-l",
            "1",
            "-n",
            "0",
            "--svg",
            str(link),
        ],
        lambda ck, f, link: ["sample", str(ck), "-n", "5", "--prime-file", str(f), "-o", str(link)],
        lambda ck, f, link: ["sample", str(ck), "-n", "5", "-o", str(ck)],
    ],
    ids=["eval-html", "inspect-html", "inspect-svg", "sample-prime", "sample-checkpoint"],
)
def test_an_output_that_is_an_input_is_refused_and_the_input_kept(tiny_checkpoint, tmp_path, command):
    source = tmp_path / "f.py"
    source.write_text(PYTHON_SNIPPET)
    link = tmp_path / "link.py"
    link.symlink_to(source)  # the same file by another name
    before, checkpoint_before = source.read_bytes(), tiny_checkpoint.read_bytes()
    line = one_line_error(runner.invoke(app, command(tiny_checkpoint, source, link)))
    assert "is the same file as" in line
    assert source.read_bytes() == before and tiny_checkpoint.read_bytes() == checkpoint_before


def test_a_device_may_be_input_and_output(tiny_checkpoint, tmp_path):
    from charlstm.core.userio import refuse_output_over_input

    refuse_output_over_input({"-o": os.devnull}, {"--prime-file": os.devnull})  # written in place, not replaced


# --- 3. closed standard streams and odd terminal sizes ------------------------------------------


def shell(command: str, env: dict | None = None, timeout: int = 180) -> subprocess.CompletedProcess:
    """`python -m charlstm` under a shell, so that its redirections (`2>&-`) close streams for real."""
    return subprocess.run(
        ["bash", "-c", f"exec {sys.executable} -m charlstm {command}"],
        cwd=REPO,
        env={**ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_train_json_with_stderr_and_stdin_closed_prints_only_its_json(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    args = " ".join(train_args(tiny_dataset, run, "--steps", "2", "--json"))
    done = shell(f"{args} 2>&- 0<&-")
    assert done.returncode == 0
    summary = json.loads(done.stdout)  # the header and progress went nowhere, not onto stdout
    assert summary["steps"] == 2 and (run / "latest.pt").is_file()


@pytest.mark.parametrize("columns", ["0", "-3", "abc", "1"])
def test_error_messages_survive_an_unusable_columns(tmp_path, columns):
    done = shell(f"sample {tmp_path / 'nothing'}", env={"COLUMNS": columns, "LINES": "0"})
    assert done.returncode == 1
    assert f"error: checkpoint not found: {tmp_path / 'nothing'}" in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr


def test_sample_with_stdout_closed_says_so_and_saves_with_o(tiny_checkpoint, tmp_path):
    done = shell(f"sample {tiny_checkpoint} -n 5 >&-")
    assert done.returncode == 1 and "stdout is closed" in done.stderr
    done = shell(f"sample {tiny_checkpoint} -n 5 --seed 1 -o {tmp_path / 'out.txt'} >&- 2>&-")
    assert done.returncode == 0 and len((tmp_path / "out.txt").read_text()) >= 5


# --- 4. SIGTERM and SIGHUP act as Ctrl-C ---------------------------------------------------------


def wait_for(condition, seconds: float = 120) -> None:
    deadline = time.time() + seconds  # start-up is slow on a loaded machine
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_save_a_training_run_as_ctrl_c_does(tiny_dataset, tmp_path, sig):
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "charlstm",
        *train_args(
            tiny_dataset, run, "--steps", "1000000", "--save-every", "0", "--eval-every", "0", "--log-every", "1"
        ),
    ]
    # The child starts with the signal's default action, as from a terminal: a suite run under
    # nohup would otherwise pass on an ignored SIGHUP, which train rightly keeps ignoring.
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(sig, signal.SIG_DFL),
    )
    try:
        wait_for(lambda: (run / "metrics.jsonl").exists() and (run / "metrics.jsonl").stat().st_size > 0)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "Resume with: charlstm train --resume --out" in stderr
    assert load_checkpoint(run / "latest.pt")["step"] >= 1  # saved on the way out, not lost


def test_sigterm_during_sample_o_keeps_the_text_so_far(lively_checkpoint, tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("old")
    cmd = [
        sys.executable,
        "-m",
        "charlstm",
        "sample",
        str(lively_checkpoint),
        "-n",
        "100000000",
        "--seed",
        "1",
        "--precision",
        "fp32",
        "-o",
        str(out),
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = proc.stdout.read(200)  # it is generating
        proc.send_signal(signal.SIGTERM)
        rest, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    saved = out.read_bytes()
    # The text so far, as the pipe got it (a signal during a blocked write to the pipe may cut a piece short).
    assert saved != b"old" and saved.startswith(first)


# --- 5. crafted or mismatched checkpoints ----------------------------------------------------------


def _gru_weights(payload):
    from charlstm.core.model import CharRNN, ModelConfig

    config = ModelConfig(**{**payload["model_config"], "kind": "gru"})
    return {**payload, "model": CharRNN(config).state_dict()}


CRAFTED = {
    "short-vocab": (lambda p: {**p, "vocab": p["vocab"][:-1]}, "symbols but its model_config"),
    "no-head-bias": (
        lambda p: {**p, "model": {k: v for k, v in p["model"].items() if k != "head.bias"}},
        "head.bias missing",
    ),
    "gru-weights": (_gru_weights, "do not match its model_config"),
    "layers-100": (lambda p: {**p, "model_config": {**p["model_config"], "layers": 100}}, "missing"),
    "embedding-200": (
        lambda p: {**p, "model": {**p["model"], "embedding.weight": p["model"]["embedding.weight"].new_zeros(200, 8)}},
        "embedding.weight is [200, 8]",
    ),
    "hidden-float": (
        lambda p: {**p, "model_config": {**p["model_config"], "hidden": 24.0}},
        "hidden should be a whole number",
    ),
    "data-number": (lambda p: {**p, "train_config": {**p["train_config"], "data": 123}}, "data: 123"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
@pytest.mark.parametrize("command", ["init-from", "resume", "sample"])
def test_a_crafted_checkpoint_is_one_short_line_for_every_command(tiny_dataset, tmp_path, case, command):
    run = tmp_path / "run"
    train(options(tiny_dataset, run, steps=2))
    craft, expected = CRAFTED[case]
    payload = load_checkpoint(run / "latest.pt")
    save_checkpoint(run / "latest.pt", {k: v for k, v in craft(payload).items() if k not in ("format", "version")})
    (run / "best.pt").unlink(missing_ok=True)
    argv = {
        "init-from": [
            "train",
            "--data",
            str(tiny_dataset.path),
            "--out",
            str(tmp_path / "ft"),
            "--batch-size",
            "4",
            "--seq-len",
            "16",
            "--threads",
            "1",
            "--init-from",
            str(run / "latest.pt"),
            "--steps",
            "1",
        ],
        "resume": ["train", "--out", str(run), "--resume", "--steps", "3"],
        "sample": ["sample", str(run / "latest.pt"), "-n", "5"],
    }[command]
    result = runner.invoke(app, argv)
    if case == "data-number" and command != "resume":
        assert result.exit_code == 0, result.output  # only resuming reads the training config
        return
    line = one_line_error(result)
    assert expected in line and len(line) < 400


# --- 8. paths the OS refuses ----------------------------------------------------------------------

LONG = "x" * 300  # longer than a file name may be (ENAMETOOLONG)


@pytest.mark.parametrize(
    "argv",
    [
        lambda d, ck, t: ["sample", str(t / LONG), "-n", "5"],
        lambda d, ck, t: ["eval", str(t / LONG)],
        lambda d, ck, t: ["inspect-neuron", str(t / LONG), "-l", "1", "-n", "0", "--text", "x"],
        lambda d, ck, t: ["train", "--data", str(d.path), "--out", str(t / "ft"), "--init-from", str(t / LONG)],
        lambda d, ck, t: ["train", "--data", str(t / LONG), "--out", str(t / "r")],
        lambda d, ck, t: ["train", "--out", str(t / LONG), "--resume"],
        lambda d, ck, t: ["sample", str(ck), "-n", "5", "-o", str(t / LONG / "out.txt")],
    ],
    ids=["sample", "eval", "inspect", "init-from", "data", "resume", "sample-o"],
)
def test_a_name_too_long_for_the_os_is_one_line(tiny_dataset, tiny_checkpoint, tmp_path, argv):
    before = sorted(p.name for p in tmp_path.iterdir())
    line = one_line_error(runner.invoke(app, argv(tiny_dataset, tiny_checkpoint, tmp_path)))
    assert LONG in line and "too long" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing made on the way


def test_an_os_error_names_its_path_on_one_line():
    from charlstm.core.errors import os_error_message

    assert os_error_message(PermissionError(13, "Permission denied", "a/b")) == "cannot use a/b: Permission denied"
    assert "\n" not in os_error_message(PermissionError(13, "Permission denied", "a\nb"))


# --- 9. damaged run and dataset files ---------------------------------------------------------------


def test_a_damaged_metrics_line_is_dropped_with_a_warning_and_the_run_resumes(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    train(options(tiny_dataset, run, steps=2, log_every=1))
    metrics = run / "metrics.jsonl"
    good = metrics.read_bytes()
    metrics.write_bytes(good + b'{"step": 1, "loss": "\xff\xfe"}\n' + b"not json\n")
    result = runner.invoke(app, ["train", "--out", str(run), "--resume", "--steps", "3"])
    assert result.exit_code == 0, result.output
    assert "dropped 2 damaged line(s)" in result.output
    lines = metrics.read_bytes().splitlines()
    assert lines[: len(good.splitlines())] == good.splitlines()
    assert [json.loads(line)["step"] for line in lines][-1] == 3


def test_metrics_that_is_a_folder_is_one_line(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    train(options(tiny_dataset, run, steps=2))
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").mkdir()
    line = one_line_error(runner.invoke(app, ["train", "--out", str(run), "--resume", "--steps", "3"]))
    assert "metrics.jsonl is a folder" in line


@pytest.mark.parametrize(
    "edit, expected",
    [
        ({"train_chars": -1}, "train_chars should be a whole number of 0 or more"),
        ({"val_chars": 2.5}, "val_chars should be a whole number"),
        ({"language": 123}, "language should be a string"),
        ({"name": ["t"]}, "name should be a string"),
    ],
)
def test_an_edited_meta_json_is_refused_when_the_dataset_is_opened(tiny_dataset, tmp_path, edit, expected):
    meta_path = tiny_dataset.path / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, **edit}))
    if "train_chars" in edit:
        (tiny_dataset.path / "train.bin").unlink()
    line = one_line_error(runner.invoke(app, train_args(tiny_dataset, tmp_path / "run", "--steps", "1")))
    assert expected in line
    assert not (tmp_path / "run").exists()


# --- 6. characters no UTF-8 text holds ----------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["sample", "-n", "5", "-o", "OUT"],
        ["sample", "-n", "5", "--watch", "1:0", "-o", "OUT"],
        ["eval", "--per-char", "--text-file", "TEXT", "--json"],
    ],
)
def test_a_vocabulary_with_a_lone_surrogate_is_refused_in_one_line(tmp_path, command):
    path = make_checkpoint(tmp_path / "run" / "best.pt")
    payload = load_checkpoint(path)
    vocab = list(payload["vocab"])
    vocab[-1] = "\ud800"
    save_checkpoint(path, {**{k: v for k, v in payload.items() if k not in ("format", "version")}, "vocab": vocab})
    (tmp_path / "t.py").write_text(PYTHON_SNIPPET)
    argv = [a.replace("OUT", str(tmp_path / "o.txt")).replace("TEXT", str(tmp_path / "t.py")) for a in command]
    line = one_line_error(runner.invoke(app, [argv[0], str(path), *argv[1:]]))
    assert "lone surrogate" in line
    assert not (tmp_path / "o.txt").exists()


def test_a_dataset_vocabulary_with_a_lone_surrogate_is_refused(tiny_dataset, tmp_path):
    meta_path = tiny_dataset.path / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["vocab"][-1] = "\ud800"
    meta_path.write_text(json.dumps(meta))
    assert "lone surrogate" in one_line_error(
        runner.invoke(app, train_args(tiny_dataset, tmp_path / "r", "--steps", "1"))
    )


# --- 7. float32 edges --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--clamp", "1:1=1e39"], "finite float32 number"),
        (["--clamp", "1:1=-1e39"], "finite float32 number"),
        (["--clamp", "1:1:hidden=3.5e38"], "finite float32 number"),
    ],
)
def test_sampling_numbers_beyond_float32_are_refused(tiny_checkpoint, extra, expected):
    assert expected in one_line_error(runner.invoke(app, ["sample", str(tiny_checkpoint), "-n", "5", *extra]))


@pytest.mark.parametrize("top_p", ["1e-46", "1e-30"])
def test_a_top_p_below_float32s_range_is_greedy_not_all_separators(lively_checkpoint, top_p):
    greedy = runner.invoke(app, ["sample", str(lively_checkpoint), "-n", "40", "--greedy", "--precision", "fp32"])
    result = runner.invoke(
        app, ["sample", str(lively_checkpoint), "-n", "40", "--top-p", top_p, "--seed", "1", "--precision", "fp32"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == greedy.stdout  # 1e-46 is 0 in float32: every character was dropped, a separator drawn


def test_steps_beyond_exact_float64_are_refused(tiny_dataset, tmp_path):
    line = one_line_error(
        runner.invoke(app, train_args(tiny_dataset, tmp_path / "r", "--steps", "99999999999999999999"))
    )
    assert "--steps must be at most" in line


# --- 10. bounded work: beam search on a large vocabulary ------------------------------------------------


def brute_force_extensions(log_probs, beam_log_probs, width):
    """The former selection: every beam × character in float64, sorted (score desc, index asc)."""
    import torch

    totals = (torch.tensor(beam_log_probs, dtype=torch.float64)[:, None] + log_probs.double()).flatten()
    order = torch.argsort(-totals, stable=True)[:width]
    vocab = log_probs.shape[-1]
    return (order // vocab).tolist(), (order % vocab).tolist(), totals[order].tolist()


@pytest.mark.parametrize("seed", range(6))
def test_beam_selection_per_beam_equals_the_full_sort_ties_included(seed):
    import torch

    from charlstm.sampling.beam import best_extensions

    g = torch.Generator().manual_seed(seed)
    beams, vocab, width = 5, 40, [1, 3, 7, 40, 64][seed % 5]
    log_probs = torch.randn(beams, vocab, generator=g).round()  # rounded: many ties, across cuts too
    if seed == 5:
        log_probs[2] = 0.0  # a uniform row: every character tied
    beam_lps = torch.randn(beams, generator=g).round().tolist()
    assert best_extensions(log_probs, beam_lps, width) == brute_force_extensions(log_probs, beam_lps, width)


def test_beam_selection_never_sorts_beams_times_vocabulary(monkeypatch):
    import torch

    from charlstm.sampling.beam import best_extensions

    sizes, argsort = [], torch.argsort
    monkeypatch.setattr(torch, "argsort", lambda t, *a, **k: (sizes.append(t.numel()), argsort(t, *a, **k))[1])
    log_probs = torch.log_softmax(torch.randn(64, 120_000, generator=torch.Generator().manual_seed(0)), dim=-1)
    parents, chars, scores = best_extensions(log_probs, [0.0] * 64, 64)
    assert len(parents) == 64 and scores == sorted(scores, reverse=True)
    assert max(sizes) <= 64 * 64  # candidates: beams × width, never beams × 120k


# --- 11. smaller ---------------------------------------------------------------------------------------


def test_bidi_overrides_and_line_separators_do_not_reach_a_terminal_raw_but_reach_o():
    import io

    from charlstm.ui.sample_command import StreamWriter

    text = "a\u202eb\u2028c\u2067d\x9be\n"
    shown = io.StringIO()
    writer = StreamWriter(shown, terminal=True, keep_plain=True)
    writer.write(text)
    assert shown.getvalue() == "a?b?c?d?e\n"
    assert writer.plain == text  # what -o saves and a pipe receives stays the text itself
    piped = io.StringIO()
    StreamWriter(piped, terminal=False).write(text)
    assert piped.getvalue() == text


def test_watch_with_colour_off_on_a_terminal_says_why(lively_checkpoint, monkeypatch):
    import charlstm.ui.sample_command as sc

    monkeypatch.setattr(sc, "_isatty", lambda stream: True)
    monkeypatch.setenv("NO_COLOR", "1")
    result = runner.invoke(app, ["sample", str(lively_checkpoint), "-n", "5", "--watch", "1:0", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "colour is off" in result.output and "not one" not in result.output


def test_inspect_html_with_ablate_and_json_is_refused(tiny_checkpoint, tmp_path):
    result = runner.invoke(
        app,
        [
            "inspect-neuron",
            str(tiny_checkpoint),
            "--text",
            "x = 1\n",
            "--ablate",
            "1:3",
            "--html",
            str(tmp_path / "p.html"),
            "--json",
        ],
    )
    assert "--html writes a page instead" in one_line_error(result)
    assert not (tmp_path / "p.html").exists()


def test_an_empty_local_folder_named_like_the_shipped_model_gets_a_hint(tiny_dataset, tmp_path, monkeypatch):
    from charlstm.core.checkpoint import PRETRAINED_RUN

    monkeypatch.chdir(tmp_path)
    (tmp_path / PRETRAINED_RUN.name).mkdir()
    result = runner.invoke(app, train_args(tiny_dataset, tmp_path / "ft", "--init-from", PRETRAINED_RUN.name))
    line = one_line_error(result)
    assert "hides the shipped model" in line and str(PRETRAINED_RUN) in line


def test_a_folder_the_os_will_not_enter_is_one_line(tiny_checkpoint, tmp_path, monkeypatch):
    # The tests may run as root, whom no permission stops: the OS's refusal is simulated where
    # pathlib first meets it (Path.is_dir/exists raise PermissionError for a parent without x).
    import pathlib

    locked = tmp_path / "locked"
    real_stat = pathlib.Path.stat

    def stat(self, *args, **kwargs):
        if str(self).startswith(str(locked)):
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "stat", stat)
    cases = [
        (["sample", str(locked / "run"), "-n", "5"], locked / "run"),
        (["eval", str(locked / "run")], locked / "run"),
        (["sample", str(tiny_checkpoint), "-n", "5", "-o", str(locked / "out.txt")], locked / "out.txt"),
    ]
    for argv, refused in cases:
        assert one_line_error(runner.invoke(app, argv)) == f"error: cannot use {refused}: Permission denied"
