"""Hostile but fair use of the files and streams a user names (issue 16).

Outputs never replace what is not a regular file; a git source cannot pull in files from outside
its clone; a full or closed stdout, a full disk, a read-only destination and undecodable
command-line bytes end in one line on stderr, never a traceback; pipes are fine text sources.
"""

from __future__ import annotations

import errno
import io
import json
import os
import resource
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charlstm.cli import app
from charlstm.core import userio
from charlstm.corpus.dataset import load_dataset
from charlstm.corpus.sources import git_failure
from conftest import JAVA_SNIPPET, make_checkpoint

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


def invoke(*args: str):
    return runner.invoke(app, [*args])


def one_line_error(result, *fragments: str) -> str:
    """Exit 1 with a single `error: ...` line, last on stderr, naming the problem; no traceback.

    (sample says which model it loaded on the line before.)"""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.output and lines, result.output
    message = lines[-1]
    assert message.startswith("error:") and sum(line.startswith("error:") for line in lines) == 1, lines
    for fragment in fragments:
        assert fragment in message, message
    return message


def run_cli(*args, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """The real program in a child process: stdout and argv bytes are as a shell gives them."""
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    kwargs.setdefault("stdout", subprocess.PIPE)
    return subprocess.run(
        [sys.executable, "-m", "charlstm", *args], cwd=REPO, env=env, stderr=subprocess.PIPE, timeout=180, **kwargs
    )


def quiet_failure(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    stderr = proc.stderr.decode()
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    for fragment in fragments:
        assert fragment in errors[0], stderr
    return errors[0]


class FifoReader(threading.Thread):
    """Reads a FIFO until its writer closes it (what a `cat fifo` in another terminal would)."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.path, self.data = path, b""
        self.start()

    def run(self):
        with open(self.path, "rb") as f:
            self.data = f.read()


def fifo_with_text(path: Path, data: bytes) -> Path:
    """A FIFO that hands `data` to whoever opens it (as `<(printf ...)` does)."""
    os.mkfifo(path)

    def feed():
        with open(path, "wb") as f:
            f.write(data)

    threading.Thread(target=feed, daemon=True).start()
    return path


SAMPLE = ("sample", "-n", "40", "--seed", "3", "--precision", "fp32")


# ----- ingest sources: symlinks out of a source (item 3), a full disk (5), git's own reason (10) ---


def git(*args, cwd=None):
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


SECRET = "TOP-SECRET-TOKEN = 'do not train on me'\n"


def tree_with_symlinks(root: Path, secret: Path) -> None:
    """Two modules, a link to a file outside (absolute and relative) and a link to a module inside."""
    root.mkdir()
    (root / "a.py").write_text("def a():\n    return 1\n")
    (root / "b.py").write_text("def b():\n    return 2\n")
    (root / "config.py").symlink_to(secret)
    (root / "settings.py").symlink_to("../" * 40 + str(secret).lstrip("/"))  # reaches it from any clone
    (root / "alias.py").symlink_to("a.py")


def all_text(dataset_dir: Path) -> str:
    dataset = load_dataset(dataset_dir)
    return "".join(dataset.vocab.decode(list(dataset.tokens(split))) for split in ("train", "val"))


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_source_cannot_pull_in_files_from_outside_the_clone(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    work = tmp_path / "work"
    tree_with_symlinks(work, secret)
    git("init", "-q", str(work))
    git("add", ".", cwd=work)
    git("commit", "-qm", "modules and links", cwd=work)
    bare = tmp_path / "repo.git"
    git("clone", "-q", "--bare", str(work), str(bare))
    data = tmp_path / "data"
    result = invoke("ingest", bare.as_uri(), "--name", "g", "--data-dir", str(data), "--ext", ".py", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    # The link inside the clone resolves to a.py: read, and dropped as its duplicate.
    assert report["files_skipped"] == {"symlink-outside": 2, "duplicate": 1, "excluded-folder": 1}
    assert report["files_kept"] == 2
    text = all_text(data / "g")
    assert "TOP-SECRET" not in text and "def a()" in text and "def b()" in text
    skipped = {f["path"]: f.get("reason") for f in load_dataset(data / "g").meta["files"]}
    assert skipped["config.py"] == skipped["settings.py"] == "symlink-outside"


def test_directory_source_skips_symlinks_leaving_it_but_a_single_file_source_is_read(tmp_path):
    secret = tmp_path / "secret.py"
    secret.write_text(SECRET)
    tree_with_symlinks(tmp_path / "src", secret)
    data = tmp_path / "data"
    result = invoke("ingest", str(tmp_path / "src"), "--name", "d", "--data-dir", str(data), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["files_skipped"]["symlink-outside"] == 2
    assert "TOP-SECRET" not in all_text(data / "d")
    # A file named on the command line is the user's explicit choice, symlink or not.
    chosen = invoke(
        "ingest",
        str(tmp_path / "src" / "config.py"),
        str(tmp_path / "src"),
        "--name",
        "e",
        "--data-dir",
        str(data),
        "--json",
    )
    assert chosen.exit_code == 0, chosen.output
    assert "TOP-SECRET" in all_text(data / "e")


def test_ingest_onto_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    """The file-size limit makes the kernel refuse writes past 64 KB, as a full disk refuses them
    (EFBIG instead of ENOSPC; Python ignores SIGXFSZ)."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(12):  # about 160 KB of distinct files
        (src / f"M{i}.java").write_text(JAVA_SNIPPET.replace("Greeter", f"Greeter{i}") * 40)
    data = tmp_path / "data"
    data.mkdir()

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))

    proc = run_cli("ingest", str(src), "--name", "full", "--data-dir", str(data), preexec_fn=small_files)
    quiet_failure(proc, f"cannot write the dataset in {data}: File too large")
    assert list(data.iterdir()) == []


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_a_failed_clone_shows_gits_reason(tmp_path):
    missing = (tmp_path / "nothing.git").as_uri()
    message = one_line_error(invoke("ingest", missing, "--name", "x", "--data-dir", str(tmp_path / "data")))
    assert "does not appear to be a git repository" in message and "Could not read from remote repository" in message
    assert not message.endswith("and the repository exists.")


def test_git_reasons_are_its_fatal_and_error_lines():
    stderr = (
        "fatal: '/x' does not appear to be a git repository\nfatal: Could not read from remote repository.\n\n"
        "Please make sure you have the correct access rights\nand the repository exists.\n"
    )
    assert git_failure(stderr) == "'/x' does not appear to be a git repository; Could not read from remote repository."
    assert git_failure("warning: odd\nsomething else went wrong\n") == "something else went wrong"
    assert git_failure("") == ""


# ----- outputs: never replace a special file (item 2); read-only destinations (9) -----------------


def test_sample_out_onto_a_fifo_writes_through_it(tiny_checkpoint, tmp_path):
    fifo = tmp_path / "samples.fifo"
    os.mkfifo(fifo)
    reader = FifoReader(fifo)
    result = invoke(*SAMPLE, str(tiny_checkpoint), "-o", str(fifo))
    reader.join(timeout=30)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # not replaced by a regular file
    assert reader.data.decode() == result.stdout


def test_sample_out_through_a_symlink_writes_its_target(tiny_checkpoint, tmp_path):
    target = tmp_path / "kept" / "samples.txt"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "latest-samples.txt"
    link.symlink_to(target)
    result = invoke(*SAMPLE, str(tiny_checkpoint), "-o", str(link))
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == result.stdout
    assert [p.name for p in target.parent.iterdir()] == ["samples.txt"]  # no temporary file left


def test_outputs_onto_dev_full_through_a_link_keep_the_device_and_say_disk_full(tiny_checkpoint, tmp_path):
    """/dev/full behind a symlink: without the rule the link is replaced, with it the device is
    written in place and refuses (ENOSPC). The device itself is never at risk in this test."""
    link = tmp_path / "full"
    link.symlink_to("/dev/full")
    sampled = invoke(*SAMPLE, str(tiny_checkpoint), "-o", str(link))
    one_line_error(sampled, f"cannot write {link}", "No space left on device")
    svg = invoke("inspect-neuron", str(tiny_checkpoint), "-l", "1", "-n", "0", "--text", "int n;", "--svg", str(link))
    one_line_error(svg, "No space left on device")
    html = invoke("inspect-neuron", str(tiny_checkpoint), "--html", str(link), "--text", "int n;\n")
    one_line_error(html, "No space left on device")
    assert link.is_symlink() and stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_html_and_svg_onto_fifos_write_through_them(tiny_checkpoint, tmp_path):
    for option, extra in (("--html", ()), ("--svg", ("-l", "1", "-n", "0"))):
        fifo = tmp_path / f"view{option}"
        os.mkfifo(fifo)
        reader = FifoReader(fifo)
        result = invoke("inspect-neuron", str(tiny_checkpoint), *extra, "--text", "int n;\n", option, str(fifo))
        reader.join(timeout=30)
        assert result.exit_code == 0, result.output
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
        assert reader.data.startswith(b"<!DOCTYPE html>" if option == "--html" else b"<svg")


def test_sample_out_onto_a_character_device_of_our_own(tiny_checkpoint, tmp_path):
    """A twin of /dev/null made with mknod (root only, and a file system that allows devices)."""
    null = tmp_path / "null"
    try:
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        with open(null, "wb") as f:
            f.write(b"probe")
    except OSError:
        pytest.skip("cannot make or open a device node here")
    result = invoke(*SAMPLE, str(tiny_checkpoint), "-o", str(null))
    assert result.exit_code == 0, result.output
    assert stat.S_ISCHR(os.lstat(null).st_mode)


def test_an_existing_regular_file_is_replaced_atomically_with_its_mode_kept(tiny_checkpoint, tmp_path):
    out = tmp_path / "private.txt"
    out.write_text("old")
    out.chmod(0o600)
    result = invoke(*SAMPLE, str(tiny_checkpoint), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_text() == result.stdout and stat.S_IMODE(out.stat().st_mode) == 0o600
    folder = invoke(*SAMPLE, str(tiny_checkpoint), "-o", str(tmp_path))
    one_line_error(folder, f"cannot write {tmp_path}: it is a folder")


def test_an_out_that_cannot_be_written_is_refused_before_anything_is_generated(tiny_checkpoint, tmp_path):
    (tmp_path / "a-file").write_text("x")
    for out, reason in ((tmp_path, "it is a folder"), (tmp_path / "a-file" / "s.txt", "is not a folder")):
        result = invoke(*SAMPLE, str(tiny_checkpoint), "-o", str(out))
        one_line_error(result, f"cannot write {out}", reason)
        assert result.stdout == ""  # no sample streamed first


@pytest.fixture
def read_only_file_system(monkeypatch):
    """Every file our writers would create fails as on a file system mounted read-only (root
    ignores permission bits, so a chmod-ed folder would not stop the tests in CI)."""

    def refuse(*args, dir=None, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)


def test_read_only_destinations_are_one_line_errors_naming_the_path(tiny_checkpoint, tmp_path, read_only_file_system):
    out, page, svg = tmp_path / "out.txt", tmp_path / "page.html", tmp_path / "view.svg"
    one_line_error(invoke(*SAMPLE, str(tiny_checkpoint), "-o", str(out)), str(out), "Read-only file system")
    one_line_error(
        invoke("inspect-neuron", str(tiny_checkpoint), "--html", str(page), "--text", "int n;\n"),
        str(page),
        "Read-only file system",
    )
    one_line_error(
        invoke("inspect-neuron", str(tiny_checkpoint), "-l", "1", "-n", "0", "--text", "int n;", "--svg", str(svg)),
        str(svg),
        "Read-only file system",
    )
    runs = tmp_path / "runs"
    one_line_error(
        invoke("experiment", "counter", "--out-dir", str(runs), "--steps", "1"),
        f"cannot write to {runs}",
        "Read-only file system",
    )  # before any training
    assert not out.exists() and not page.exists() and not svg.exists()


def test_a_folder_that_refuses_files_is_a_one_line_error(tiny_checkpoint):
    """/sys refuses new files even to root: the real kernel path, no monkeypatching."""
    one_line_error(invoke(*SAMPLE, str(tiny_checkpoint), "-o", "/sys/samples.txt"), "/sys/samples.txt")


# ----- text sources: pipes and unreadable files (item 10), command-line bytes that are not UTF-8 (9) ---


def test_pipes_are_text_sources_for_eval_inspect_and_sample(tiny_checkpoint, tmp_path):
    """`--text-file <(printf ...)`: a pipe, read once, decoded as ingest decodes files."""
    scored = invoke(
        "eval",
        str(tiny_checkpoint),
        "--text-file",
        str(fifo_with_text(tmp_path / "eval.fifo", b"int n;\r\n")),
        "--json",
    )
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["chars"] == len("int n;\n")
    shown = invoke(
        "inspect-neuron",
        str(tiny_checkpoint),
        "-l",
        "1",
        "-n",
        "0",
        "--text-file",
        str(fifo_with_text(tmp_path / "inspect.fifo", b"int \xff;\n")),
    )
    assert shown.exit_code == 0, shown.output  # the invalid byte is the unknown symbol, as in ingest
    primed = invoke(*SAMPLE, str(tiny_checkpoint), "--prime-file", str(fifo_with_text(tmp_path / "p.fifo", b"int")))
    assert primed.exit_code == 0 and primed.stdout.startswith("int"), primed.output


@pytest.mark.parametrize("command", ["eval", "inspect", "sample"])
def test_text_sources_that_cannot_be_read_are_one_line_errors(tiny_checkpoint, tmp_path, command):
    option, what, extra = {
        "eval": ("--text-file", "text file", ()),
        "inspect": ("--text-file", "text file", ("-l", "1", "-n", "0")),
        "sample": ("--prime-file", "prime file", ()),
    }[command]
    head = ["inspect-neuron" if command == "inspect" else command, str(tiny_checkpoint), *extra]
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    one_line_error(invoke(*head, option, str(tmp_path / "nope.txt")), f"{what} not found: {tmp_path / 'nope.txt'}")
    one_line_error(invoke(*head, option, str(tmp_path)), f"{what} {tmp_path} is a folder")
    one_line_error(invoke(*head, option, str(empty)), f"{what} {empty} is empty")


def test_an_endless_text_source_is_refused_at_the_limit(tiny_checkpoint, monkeypatch):
    monkeypatch.setattr(userio, "MAX_TEXT_BYTES", 1000)
    one_line_error(
        invoke("eval", str(tiny_checkpoint), "--text-file", "/dev/zero"), "text file /dev/zero is larger than"
    )


def test_prime_with_bytes_that_are_not_utf8_reads_them_as_unknown(tiny_checkpoint, tmp_path):
    out = tmp_path / "out.txt"
    proc = run_cli(*SAMPLE, str(tiny_checkpoint), "--prime", b"\xffint", "-o", str(out))  # as `--prime $'\xff'int`
    assert proc.returncode == 0, proc.stderr.decode()
    assert out.read_text(encoding="utf-8").startswith("\ufffdint")
    # The same through typer, where Python has already turned the byte into a lone surrogate.
    result = invoke(*SAMPLE, str(tiny_checkpoint), "--prime", "\udcffint", "--stop", "\udcfe", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8").startswith("\ufffdint")
    page = tmp_path / "page.html"
    shown = invoke("inspect-neuron", str(tiny_checkpoint), "--text", "int\udcff n;\n", "--html", str(page))
    assert shown.exit_code == 0, shown.output
    oddly_named = tmp_path / "\udcff.java"  # a file name that is not UTF-8, named in the page
    oddly_named.write_text("int n;\n")
    shown = invoke("inspect-neuron", str(tiny_checkpoint), "--text-file", str(oddly_named), "--html", str(page))
    assert shown.exit_code == 0, shown.output
    assert "\ufffd.java" in page.read_text(encoding="utf-8")


# ----- stdout: full (item 5), closed, or its reader gone (9) --------------------------------------


@pytest.mark.parametrize("unbuffered", ["1", ""], ids=["unbuffered", "buffered"])
def test_sample_and_eval_json_onto_dev_full_are_one_line_errors(tmp_path, unbuffered):
    """Buffered, a full stdout fails only at the interpreter's last flush ("Exception ignored");
    unbuffered (PYTHONUNBUFFERED=1), at the first write."""
    checkpoint = make_checkpoint(tmp_path / "run" / "best.pt")
    text = tmp_path / "Snippet.java"
    text.write_text(JAVA_SNIPPET)
    env = {"PYTHONUNBUFFERED": unbuffered}
    with open("/dev/full", "wb") as full:
        sampled = run_cli(*SAMPLE, str(checkpoint), stdout=full, env=env)
        scored = run_cli("eval", str(checkpoint), "--text-file", str(text), "--json", stdout=full, env=env)
    quiet_failure(sampled, "cannot write to stdout: No space left on device")
    quiet_failure(scored, "cannot write to stdout: No space left on device")


def test_closed_stdout(tiny_checkpoint, tmp_path):
    """`charlstm sample >&-`: Python starts with sys.stdout None."""
    closed = run_cli(*SAMPLE, str(tiny_checkpoint), stdout=None, preexec_fn=lambda: os.close(1))
    quiet_failure(closed, "stdout is closed", "-o FILE")
    out = tmp_path / "out.txt"
    saved = run_cli(*SAMPLE, str(tiny_checkpoint), "-o", str(out), stdout=None, preexec_fn=lambda: os.close(1))
    assert saved.returncode == 0, saved.stderr.decode()
    assert out.read_text() == invoke(*SAMPLE, str(tiny_checkpoint)).stdout  # the same seed, the same text


@pytest.mark.parametrize("unbuffered", ["1", ""], ids=["unbuffered", "buffered"])
def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path, unbuffered):
    """`charlstm sample | head -c 10` and `charlstm eval --json | true`: no traceback, no noise."""
    checkpoint = make_checkpoint(tmp_path / "run" / "best.pt")
    text = tmp_path / "Snippet.java"
    text.write_text(JAVA_SNIPPET)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": unbuffered}
    commands = (
        ["sample", str(checkpoint), "-n", "10000000", "--precision", "fp32"],
        ["eval", str(checkpoint), "--text-file", str(text), "--json"],
    )
    for command in commands:
        proc = subprocess.Popen(
            [sys.executable, "-m", "charlstm", *command],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        if command[0] == "sample":
            proc.stdout.read(10)
        proc.stdout.close()
        stderr = proc.stderr.read().decode()
        assert proc.wait(timeout=180) == 0, stderr
        assert "Traceback" not in stderr and "Exception ignored" not in stderr and "error" not in stderr, stderr


class _StdoutThatStops(io.StringIO):
    """A stdout whose reader stops after `limit` characters: the next write raises `error`."""

    def __init__(self, limit: int, error: type[BaseException]):
        super().__init__()
        self.limit, self.error = limit, error

    def write(self, text):
        if self.tell() + len(text) > self.limit:
            raise self.error()
        return super().write(text)


@pytest.mark.parametrize("error, code", [(BrokenPipeError, 0), (KeyboardInterrupt, 130)])
def test_out_keeps_what_was_generated_when_the_stream_stops_early(tiny_checkpoint, tmp_path, monkeypatch, error, code):
    """`charlstm sample -o samples.txt | head` and Ctrl-C: -o was never written (exit 0 after a
    broken pipe, so nothing said so)."""
    from charlstm.ui import sample_command

    stream = _StdoutThatStops(300, error)
    monkeypatch.setattr(sample_command, "stdout_text", lambda: stream)
    out = tmp_path / "samples.txt"
    result = invoke("sample", str(tiny_checkpoint), "-n", "100000", "--seed", "3", "-o", str(out))
    assert result.exit_code == code, result.output
    saved = out.read_text(encoding="utf-8")
    assert saved.startswith(stream.getvalue()) and len(saved) >= 300 and str(out) in result.stderr
