"""Hostile but fair use of training, evaluation and the run folder: two owners at once, runs that
died early, full disks, wrong files as checkpoints, edited vocabularies, absurd options."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charlstm.cli import app
from charlstm.core import lock
from charlstm.core.checkpoint import export_for_inference, load_checkpoint, save_checkpoint
from charlstm.core.errors import CharlstmError
from charlstm.core.files import append_line
from charlstm.corpus.ingest import ingest
from charlstm.evaluation.evaluate import evaluate_checkpoint
from charlstm.training.train_setup import train
from conftest import JAVA_SNIPPET, make_checkpoint

runner = CliRunner()
REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

# A model small enough that each step takes a millisecond or two; fp32 runs alike on every CPU.
TINY = {"layers": 2, "hidden": 24, "embed": 8, "batch_size": 4, "seq_len": 16, "threads": 1, "precision": "fp32"}
TINY_ARGS = [
    "--layers",
    "2",
    "--hidden",
    "24",
    "--embed",
    "8",
    "--batch-size",
    "4",
    "--seq-len",
    "16",
    "--threads",
    "1",
    "--precision",
    "fp32",
]


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


def snapshot(folder: Path) -> dict:
    """Every file of a run folder but the lock file (which holds its owner's PID)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != ".lock"}


def hold_lock_in_another_process(lock_file: Path) -> subprocess.Popen:
    """A live process owning `lock_file` until its stdin closes."""
    code = (
        "import sys; from charlstm.core import lock; "
        f"held = lock.acquire({str(lock_file)!r}, 'x'); print('held', flush=True); sys.stdin.read()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


# --- 1. one owner per run folder and per dataset name ----------------------------------------


def test_a_second_trainer_is_refused_while_the_first_runs_and_not_after_a_kill_9(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "charlstm",
            *train_args(tiny_dataset, run, "--steps", "1000000", "--save-every", "1", "--eval-every", "0"),
        ],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120  # start-up is slow on a loaded machine
        while not (run / "latest.pt").exists() and time.time() < deadline:
            time.sleep(0.05)
        for extra in ([], ["--resume"], ["--force"]):
            result = runner.invoke(app, [*train_args(tiny_dataset, run, "--steps", "5"), *extra])
            assert f"{run} is in use by PID {first.pid}" in one_line_error(result)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The kernel dropped the dead process's lock; its lock file, PID and all, blocks no one.
    step = load_checkpoint(run / "latest.pt")["step"]
    assert train({"out": str(run), "steps": step + 2}, resume=True)["steps"] == step + 2


def test_a_refused_trainer_touches_nothing(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    train(options(tiny_dataset, run, steps=3))
    before = snapshot(run)
    holder = hold_lock_in_another_process(run / ".lock")
    try:
        for extra in ([], ["--resume"], ["--force"]):
            result = runner.invoke(app, [*train_args(tiny_dataset, run, "--steps", "6"), *extra])
            assert f"in use by PID {holder.pid}" in one_line_error(result)
    finally:
        holder.stdin.close()
        holder.wait()
    assert snapshot(run) == before


def test_a_stale_lock_file_does_not_block(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text("999999\n")  # left by a process long gone
    assert train(options(tiny_dataset, run, steps=2))["steps"] == 2
    assert not (run / ".lock").exists()  # an owner removes its lock file when done


def test_the_lock_file_names_its_owner_and_goes_when_released(tmp_path):
    path = tmp_path / "run" / ".lock"
    with lock.acquire(path, "run"):
        assert path.read_text().strip() == str(os.getpid())
        with pytest.raises(CharlstmError, match=f"run is in use by PID {os.getpid()}"):
            lock.acquire(path, "run")  # a second open file description conflicts, even in one process
    assert not path.exists()
    with lock.acquire(path, "run"):  # and it is free again
        pass


def test_ingest_of_a_name_being_ingested_is_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "Greeter.java").write_text(JAVA_SNIPPET * 20)
    data_dir = tmp_path / "data"
    with lock.acquire(data_dir / ".same.lock", "x"):  # another ingest of "same" is under way
        with pytest.raises(
            CharlstmError, match=re.escape(f"dataset {data_dir / 'same'} is in use by PID {os.getpid()}")
        ):
            ingest([str(src)], "same", data_dir=data_dir)
        assert not (data_dir / "same").exists()
    ingest([str(src)], "same", data_dir=data_dir)  # once it is done, the name is free
    assert (data_dir / "same" / "meta.json").is_file()


# --- 4. a run that died before its first save --------------------------------------------------


def nan_from_the_first_step(monkeypatch):
    import torch.nn.functional as F

    real = F.cross_entropy
    monkeypatch.setattr(F, "cross_entropy", lambda *a, **k: real(*a, **k) * float("nan"))


def test_a_run_that_died_before_its_first_save_starts_afresh(tiny_dataset, tmp_path, monkeypatch):
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        nan_from_the_first_step(m)
        with pytest.raises(CharlstmError, match="NaN"):
            train(options(tiny_dataset, run, steps=10, log_every=1))
    assert (run / "config.json").is_file() and not (run / "latest.pt").exists()

    result = runner.invoke(app, ["train", "--out", str(run), "--resume"])
    assert "nothing saved yet" in one_line_error(result) and "without --resume" in result.output

    result = runner.invoke(app, train_args(tiny_dataset, run, "--steps", "3", "--log-every", "1"))
    assert result.exit_code == 0, result.output
    assert "starting afresh" in result.output
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[:3] == [1, 2, 3]  # the dead run's lines are gone


def test_a_run_with_only_best_pt_resumes_from_it_or_says_how(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    train(options(tiny_dataset, run, steps=4, eval_every=2))
    (run / "latest.pt").unlink()  # as a kill between validating and the first save leaves it
    result = runner.invoke(app, train_args(tiny_dataset, run, "--steps", "4"))
    assert "--resume" in one_line_error(result) and "--force" in result.output
    assert train({"out": str(run), "steps": 6}, resume=True)["steps"] == 6


def test_temporaries_of_killed_saves_are_removed_by_the_next_owner(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    train(options(tiny_dataset, run, steps=2))
    stale = [run / ".latest.pt.k1ll3d.tmp", run / ".metrics.jsonl.x9.tmp"]
    for path in stale:
        path.write_bytes(b"half a save")
    (run / "notes.tmp").write_text("not ours")
    train({"out": str(run), "steps": 3}, resume=True)
    assert not any(p.exists() for p in stale) and (run / "notes.tmp").exists()


# --- 5. a full disk during training -----------------------------------------------------------


@pytest.fixture
def file_size_limit():
    """Set RLIMIT_FSIZE: writes past it fail in the kernel (EFBIG), part-way, as on a full disk."""
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write instead of killing the process
    yield lambda n: resource.setrlimit(resource.RLIMIT_FSIZE, (n, hard))
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, previous)


def test_a_checkpoint_save_that_hits_the_limit_keeps_the_previous_one(tiny_dataset, tmp_path, file_size_limit):
    run = tmp_path / "run"
    train(options(tiny_dataset, run, steps=4))
    before = (run / "latest.pt").read_bytes()
    file_size_limit(len(before) // 2)  # config.json and metrics.jsonl fit; a checkpoint does not
    result = runner.invoke(app, ["train", "--out", str(run), "--resume", "--steps", "8", "--save-every", "2"])
    file_size_limit(-1)
    message = one_line_error(result)
    assert "could not write" in message and "latest.pt (step 4) is intact" in message and "--resume" in message
    assert (run / "latest.pt").read_bytes() == before
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_a_metrics_line_that_hits_the_limit_leaves_no_torn_line(tiny_dataset, tmp_path, file_size_limit):
    run = tmp_path / "run"
    train(options(tiny_dataset, run, steps=40, log_every=1, eval_every=0))  # metrics.jsonl outgrows config.json
    metrics = (run / "metrics.jsonl").read_bytes()
    file_size_limit(len(metrics) + 40)  # room for part of one more line
    result = runner.invoke(app, ["train", "--out", str(run), "--resume", "--steps", "80"])
    file_size_limit(-1)
    assert "metrics.jsonl" in one_line_error(result)
    assert (run / "metrics.jsonl").read_bytes() == metrics  # cut back to the last whole line


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


def test_resuming_an_inference_export_or_a_stripped_checkpoint_says_what_is_missing(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    train(options(tiny_dataset, run, steps=2))
    full = load_checkpoint(run / "latest.pt")
    export_for_inference(run / "latest.pt", run / "latest.pt")
    message = one_line_error(runner.invoke(app, ["train", "--out", str(run), "--resume"]))
    assert "cannot be resumed" in message and "optimizer" in message and "data_position" in message

    save_checkpoint(run / "latest.pt", {k: v for k, v in full.items() if k != "data_position"})
    message = one_line_error(runner.invoke(app, ["train", "--out", str(run), "--resume"]))
    assert "has no data_position" in message

    save_checkpoint(run / "latest.pt", {**full, "optimizer": {"state": {}, "param_groups": []}})  # another model's
    message = one_line_error(runner.invoke(app, ["train", "--out", str(run), "--resume"]))
    assert "does not fit the run it should resume" in message


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


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("dataset", "tiny", "a dict"),
        ("dataset", {"name": "tiny", "language": 5}, "its 'language' should be a string"),
        ("model_config", ["lstm"], "a dict"),
        ("model", [1, 2], "a dict"),
        ("step", "20", "a whole number"),
        ("precision", 16, "a string"),
        ("train_config", "steps=4", "a dict"),
        ("val_bpc", "low", "a number"),
    ],
)
def test_a_checkpoint_with_a_field_of_the_wrong_type_is_one_line(tmp_path, field, value, expected):
    path = make_checkpoint(tmp_path / "best.pt")
    save_checkpoint(path, {**load_checkpoint(path), field: value})
    message = one_line_error(runner.invoke(app, ["sample", str(path), "-n", "5"]))
    assert "malformed" in message and expected in message and str(path) in message


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("command", [["sample", "-n", "5"], ["sample", "-n", "5", "--precision", "fp32"], ["eval"]])
def test_a_checkpoint_with_non_finite_weights_is_one_line(tmp_path, bad, command):
    path = make_checkpoint(tmp_path / "best.pt")
    payload = load_checkpoint(path)
    name = next(k for k in payload["model"] if "weight_hh" in k)
    payload["model"][name][0, 0] = bad
    save_checkpoint(path, payload)
    message = one_line_error(runner.invoke(app, [command[0], str(path), *command[1:]]))
    assert "non-finite weights" in message and name in message


# --- 9. odd places and absurd numbers ------------------------------------------------------------


def test_a_fresh_run_refused_at_set_up_leaves_no_folder_behind(tiny_dataset, tmp_path):
    """A batch the corpus cannot hold is found once the run folder is owned: the folder it made goes again."""
    result = runner.invoke(
        app,
        [*train_args(tiny_dataset, tmp_path / "r" / "deep", "--steps", "2"), "--batch-size", "64", "--seq-len", "200"],
    )
    assert "lower --batch-size or --seq-len" in one_line_error(result)
    assert not (tmp_path / "r" / "deep").exists()


def test_out_that_is_a_file_is_refused_and_left_alone(tiny_dataset, tmp_path):
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    assert "is not a folder" in one_line_error(runner.invoke(app, train_args(tiny_dataset, out, "--steps", "2")))
    assert out.read_text() == "mine"


def test_a_read_only_run_folder_gets_one_line(tiny_dataset, tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(options(tiny_dataset, run, steps=2))
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):  # root ignores chmod; a read-only mount does not
        if str(path).startswith(str(run)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    for args in (["--resume"], ["--force", "--data", str(tiny_dataset.path)]):
        assert "Read-only file system" in one_line_error(runner.invoke(app, ["train", "--out", str(run), *args]))
    assert "Read-only file system" in one_line_error(runner.invoke(app, train_args(tiny_dataset, run / "new")))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs", "inf"], "--epochs must be a positive number"),
        (["--minutes", "inf"], "--minutes must be a positive number"),
        (["--seed", str(2**70)], "--seed must be between 0 and"),
        (["--seed", "-1"], "--seed must be between 0 and"),
        (["--threads", str(2**40)], "--threads must be between 1 and"),
        (["--weight-decay", "inf"], "--weight-decay must be 0 or more"),
    ],
)
def test_absurd_numbers_give_one_line_errors(tiny_dataset, tmp_path, args, message):
    result = runner.invoke(app, [*train_args(tiny_dataset, tmp_path / "r", "--steps", "2"), *args])
    assert message in one_line_error(result)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("hidden, message", [("1000000", "GiB of memory"), (str(2**40), "too large to build")])
def test_a_model_too_large_for_memory_is_refused_up_front(tiny_dataset, tmp_path, hidden, message):
    result = runner.invoke(app, [*train_args(tiny_dataset, tmp_path / "r", "--steps", "2"), "--hidden", hidden])
    assert message in one_line_error(result)


def test_ctrl_c_while_the_cli_starts_up_exits_quietly(monkeypatch, capsys):
    """Importing torch takes seconds; a Ctrl-C then must not print a traceback."""
    import charlstm.__main__ as entry

    class InterruptedImport:
        def find_spec(self, name, path=None, target=None):
            if name == "charlstm.cli":
                raise KeyboardInterrupt

    monkeypatch.delitem(sys.modules, "charlstm.cli")
    monkeypatch.setattr(sys, "meta_path", [InterruptedImport(), *sys.meta_path])
    with pytest.raises(SystemExit) as exit_info:
        entry.main()
    assert exit_info.value.code == 130 and capsys.readouterr().err.strip() == "interrupted"


# --- 10. the dataset path and precision a run recorded -------------------------------------------


def test_eval_finds_the_dataset_from_another_folder(tiny_dataset, tmp_path, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    train(options(tiny_dataset, "run", steps=2, data=os.path.relpath(tiny_dataset.path)))
    assert Path(load_checkpoint(run / "latest.pt")["dataset"]["path"]).is_absolute()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert evaluate_checkpoint(str(run))["chars"] == len(tiny_dataset.tokens("val")) - 1
    assert train({"out": str(run), "steps": 3}, resume=True)["steps"] == 3


def test_a_relative_data_given_on_resume_is_recorded_absolute(tiny_dataset, tmp_path, monkeypatch):
    """--data given again on --resume, relative to a folder the run is not under, is still found later."""
    run = tmp_path / "runs" / "run"
    train(options(tiny_dataset, run, steps=2))
    monkeypatch.chdir(tiny_dataset.path.parent)
    train({"out": str(run), "steps": 3, "data": tiny_dataset.path.name}, resume=True)
    assert Path(load_checkpoint(run / "latest.pt")["train_config"]["data"]).is_absolute()
    monkeypatch.chdir(tmp_path / "runs")
    assert train({"out": str(run), "steps": 4}, resume=True)["steps"] == 4


def test_an_older_relative_dataset_path_is_found_beside_the_run(tiny_dataset, tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(options(tiny_dataset, run, steps=2))
    payload = load_checkpoint(run / "latest.pt")
    relative = os.path.relpath(tiny_dataset.path, tmp_path)  # data/tiny, as older versions recorded it
    payload["dataset"]["path"] = relative
    payload["train_config"]["data"] = relative
    save_checkpoint(run / "latest.pt", payload)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert evaluate_checkpoint(str(run / "latest.pt"))["chars"] == len(tiny_dataset.tokens("val")) - 1
    assert train({"out": str(run), "steps": 3}, resume=True)["steps"] == 3


def test_eval_scores_in_the_precision_the_run_was_trained_with(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    summary = train(options(tiny_dataset, run, steps=2))
    assert evaluate_checkpoint(str(run))["precision"] == summary["precision"] == "fp32"
    # A run whose precision does not run here (fp16 from a GPU) is scored as auto picks.
    payload = load_checkpoint(run / "latest.pt")
    save_checkpoint(run / "latest.pt", {**payload, "precision": "fp16"})
    assert evaluate_checkpoint(str(run / "latest.pt"), device="cpu")["precision"] in ("bf16", "fp32")
    assert evaluate_checkpoint(str(run / "latest.pt"), precision="fp32")["precision"] == "fp32"
