"""Every command, fed random option values and files, ends cleanly: never a traceback (issue 16).

For each command a hypothesis strategy draws an argument list: valid values, boundaries and
hostile ones (zero, negative and huge integers, nan and infinities, empty and odd text with
control characters and the lone surrogates Python makes of undecodable argv bytes), and paths to
a missing file, a folder, an empty file, random bytes, a text file, /dev/null, a symlink loop, a
truncated checkpoint, a torch file that is no checkpoint, a broken dataset, and a tiny checkpoint,
trained run and dataset. Whatever is drawn, the command must exit 0, 1 with an `error: ...` line,
2 (a usage error from click) or 130, print no traceback, and end within a minute and 3 GiB more
address space (a hang or a runaway allocation fails the example rather than stall the suite or
wake the OOM killer).

Paths are drawn as tokens ("@text", "%new", ...) and resolved when an example runs, so failures
read as what they are. "@..." names an input shared by all examples (built once, only ever read);
"%..." names an output inside the example's own fresh folder, which is also its working folder:
no two examples share a run folder, a dataset folder or a default `checkpoints/`.
"""

from __future__ import annotations

import functools
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, currently_in_test_context, event, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from charlstm.cli import app
from charlstm.training.train_setup import train
from conftest import JAVA_SNIPPET, PYTHON_SNIPPET, make_checkpoint, make_dataset

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()

# Deterministic and bounded: the same examples on every run, no example database, no deadline
# (a loaded machine is slow), no complaint that examples share module fixtures.
# CHARLSTM_FUZZ_SCALE=20 draws twenty times as many, afresh on each run: a longer hunt by hand.
SCALE = int(os.environ.get("CHARLSTM_FUZZ_SCALE", "1"))
FUZZ = dict(
    deadline=None,
    derandomize=SCALE == 1,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
EXAMPLE_SECONDS = 60  # an example still running after this is a hang, reported as a failure
EXAMPLE_MEMORY = 3 << 30  # address space an example may add; more is a runaway allocation
CHILD_MEMORY = 8 << 30  # the same for `python -m charlstm` in a child process, torch included


# ----- the files examples point at ---------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    """Inputs shared by every example, keyed by the token strategies draw. Never written to."""
    base = tmp_path_factory.mktemp("fuzz-inputs")
    (base / "folder").mkdir()
    (base / "empty.txt").write_bytes(b"")
    (base / "random.bin").write_bytes(random.Random(0).randbytes(4096))
    (base / "Greeter.java").write_text(JAVA_SNIPPET)
    os.symlink("loop", base / "loop")
    src = base / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "Greeter.java").write_text(JAVA_SNIPPET)
    (src / "greet.py").write_text(PYTHON_SNIPPET)
    (src / "blob.py").write_bytes(b"\x00\xff" * 64)
    with zipfile.ZipFile(base / "src.zip", "w") as z:
        z.writestr("a/Greeter.java", JAVA_SNIPPET)
    data = make_dataset(base / "data" / "tiny", JAVA_SNIPPET * 12, JAVA_SNIPPET * 2).path
    broken = base / "data" / "broken"
    shutil.copytree(data, broken)
    (broken / "meta.json").write_bytes(b'{"format": "charlstm-dataset", "vocab": ')
    ckpt = make_checkpoint(base / "untrained" / "best.pt", layers=2, hidden=16)
    whole = ckpt.read_bytes()
    (base / "truncated.pt").write_bytes(whole[: len(whole) // 2])
    torch.save({"weights": torch.zeros(3), "note": "not ours"}, base / "foreign.pt")
    crafted = craft_checkpoints(ckpt, base / "crafted")
    before = torch.get_num_threads()
    train(
        {
            "data": str(data),
            "out": str(base / "run"),
            "layers": 1,
            "hidden": 8,
            "embed": 4,
            "batch_size": 2,
            "seq_len": 16,
            "steps": 2,
            "eval_every": 0,
            "save_every": 0,
            "precision": "fp32",
            "device": "cpu",
            "threads": 1,
        }
    )
    torch.set_num_threads(before)
    torch.set_flush_denormal(False)  # training turns it on for the process
    return {
        "@missing": str(base / "missing.txt"),
        "@folder": str(base / "folder"),
        "@empty": str(base / "empty.txt"),
        "@bytes": str(base / "random.bin"),
        "@text": str(base / "Greeter.java"),
        "@loop": str(base / "loop"),
        "@under-file": str(base / "Greeter.java" / "x"),
        "@devnull": os.devnull,
        "@src": str(src),
        "@zip": str(base / "src.zip"),
        "@data": str(data),
        "@broken-data": str(broken),
        "@ckpt": str(ckpt),
        "@truncated": str(base / "truncated.pt"),
        "@foreign": str(base / "foreign.pt"),
        "@run": str(base / "run"),
        "@latest": str(base / "run" / "latest.pt"),
        **crafted,
    }


def craft_checkpoints(ckpt: Path, folder: Path) -> dict[str, str]:
    """Checkpoints in the right format whose contents were edited (issue 24): weights that do not
    match the config, a config of 100 layers over two layers' weights, a size that is a float, a
    vocabulary holding a lone surrogate."""
    from charlstm.core.checkpoint import load_checkpoint, save_checkpoint

    payload = {k: v for k, v in load_checkpoint(ckpt).items() if k not in ("format", "version")}
    model, config, vocab = payload["model"], payload["model_config"], payload["vocab"]
    edits = {
        "@crafted-rows": {"model": {**model, "embedding.weight": model["embedding.weight"].new_zeros(200, 8)}},
        "@crafted-no-bias": {"model": {k: v for k, v in model.items() if k != "head.bias"}},
        "@crafted-layers": {"model_config": {**config, "layers": 100}},
        "@crafted-float": {"model_config": {**config, "hidden": float(config["hidden"])}},
        "@crafted-surrogate": {"vocab": [*vocab[:-1], "\ud800"]},
    }
    folder.mkdir()
    found = {}
    for token, edit in edits.items():
        path = folder / f"{token[1:]}.pt"
        save_checkpoint(path, {**payload, **edit})
        found[token] = str(path)
    return found


def outputs(work: Path) -> dict[str, str]:
    """Outputs inside one example's own folder (`work`, also its working folder)."""
    (work / "existing.txt").write_text("an earlier file\n")
    (work / "folder").mkdir()
    return {
        "%new": str(work / "new-output"),
        "%deep": str(work / "a" / "b" / "out"),
        "%existing": str(work / "existing.txt"),
        "%folder": str(work / "folder"),
        "%under-file": str(work / "existing.txt" / "out"),
        "%devfull": "/dev/full",
        "%run-copy": str(work / "run"),  # a copy of the trained run, made only when drawn
    }


@contextmanager
def example_folder(inputs: dict[str, str]):
    """A fresh working folder per example; the process's folder and thread count come back after."""
    cwd, threads = os.getcwd(), torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        work = Path(tmp)
        os.chdir(work)
        try:
            yield work, {**inputs, **outputs(work)}
        finally:
            os.chdir(cwd)
            torch.set_num_threads(threads)
            torch.set_flush_denormal(False)  # train and eval turn it on for the whole process


class Hang(Exception):
    pass


@contextmanager
def bounded(seconds: int = EXAMPLE_SECONDS, memory: int = EXAMPLE_MEMORY):
    """Run an example with a time limit and, off CUDA machines, `memory` more bytes of address
    space: a hang or a runaway allocation fails the example instead of stalling the suite or
    waking the machine's OOM killer."""

    def alarm(signum, frame):
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    limit = resource.getrlimit(resource.RLIMIT_AS)
    if not torch.cuda.is_available():  # CUDA reserves far more address space than it uses
        in_use = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
        cap = in_use + memory
        if limit[1] == resource.RLIM_INFINITY or cap < limit[1]:
            resource.setrlimit(resource.RLIMIT_AS, (cap, limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, limit)
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def resolve(argv: list[str], paths: dict[str, str], work: Path) -> list[str]:
    if "%run-copy" in argv:
        shutil.copytree(paths["@run"], work / "run")
    return [paths.get(arg, arg) for arg in argv]


def check_outcome(code: int, stdout: str, stderr: str, argv: list[str]) -> None:
    """0, 1 with an `error: ...` line, 2 (click's usage error) or 130; never a traceback."""
    if currently_in_test_context():
        event(f"exit {code}")  # --hypothesis-show-statistics: how often each ending was reached
    shown = f"argv: {argv!r}\nexit {code}\nstdout: {stdout[-2000:]}\nstderr: {stderr[-4000:]}"
    assert code in (0, 1, 2, 130), shown
    assert "Traceback" not in stdout + stderr and "Exception ignored" not in stderr, shown
    if code == 1:
        assert any(line.startswith("error:") for line in stderr.splitlines()), shown


def run_in_process(argv: list[str], inputs: dict[str, str]):
    with example_folder(inputs) as (work, paths):
        args = resolve(argv, paths, work)
        with bounded():
            result = runner.invoke(app, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        trace = "".join(traceback.format_exception(*result.exc_info))
        pytest.fail(f"argv: {argv!r}\n{trace}\nstderr: {result.stderr[-4000:]}")
    check_outcome(result.exit_code, result.stdout, result.stderr, argv)
    return result


# ----- values ------------------------------------------------------------------------------------
#
# Each option has valid values and hostile ones. An example draws at most two options to make
# hostile and gives the rest valid values (or leaves them out), so most examples get past option
# parsing and deep into the command, each with one or two bad values to handle on the way.

# Control characters and the lone surrogates Python decodes undecodable argv bytes to (\xff → \udcff).
# No NUL: no command line can hold one.
CONTROL = [chr(c) for c in range(1, 32)] + ["\x7f", "\x85", "\u2028", "\ufeff", "\ufffd", "\x1c"]
SURROGATES = [chr(c) for c in range(0xDC80, 0xDD00)]
odd_char = st.one_of(st.characters(codec="utf-8", exclude_characters="\x00"), st.sampled_from(CONTROL + SURROGATES))
odd_text = st.text(odd_char, max_size=12)
# A name in the example's folder: no separator and not "..", so nothing is written outside it.
odd_name = odd_text.filter(lambda name: "/" not in name and name != "..")
HUGE = [2**31, 2**63, 2**70]
NONPOSITIVE = [0, -1, -(2**70)]
FLOAT_EDGES = ["nan", "inf", "-inf", "1e309", "-0.0", "0", "-1", "1e-320", "1e308"]


@dataclass(frozen=True)
class Opt:
    flag: str | None  # None: the command's positional argument
    valid: st.SearchStrategy[str] | None  # None: a switch
    hostile: st.SearchStrategy[str] | None = None
    required: bool = False  # always given: keeps models tiny and runs short
    rare: bool = False  # given only when drawn hostile
    repeat: bool = False  # given once or twice (a repeatable option)


def ints(flag: str, low: int, high: int, hostile: tuple[int, ...] = (*NONPOSITIVE, *HUGE), required=False) -> Opt:
    """Integers in [low, high]; hostile: the given values, or text that is no number at all."""
    return Opt(flag, st.integers(low, high).map(str), st.sampled_from(hostile).map(str) | odd_text, required)


def floats(flag: str, low: float, high: float, required=False) -> Opt:
    # No subnormals drawn: hypothesis refuses them while a command has flushing on.
    valid = st.floats(low, high, allow_subnormal=False).map(repr)
    return Opt(flag, valid, st.sampled_from(FLOAT_EDGES) | odd_text, required)


def words(flag: str | None, valid: list[str], hostile: list[str] = (), required=False) -> Opt:
    """Names and paths: valid ones, and hostile ones or odd text."""
    return Opt(flag, st.sampled_from(valid), st.sampled_from([*hostile, ""]) | odd_text, required)


def paths(flag: str | None, valid: list[str], hostile: list[str], required=False, odd_names=False) -> Opt:
    """Path tokens; `odd_names`: hostile ones include odd names in the example's folder (outputs)."""
    bad = st.sampled_from(hostile)
    return Opt(flag, st.sampled_from(valid), bad | odd_name if odd_names else bad, required)


def switch(flag: str) -> Opt:
    return Opt(flag, None)


@st.composite
def command(draw, name: str, *opts: Opt, choose_one: tuple[tuple[tuple[str, ...], ...], ...] = ()) -> list[str]:
    """The command with its options drawn. `choose_one` holds groups of alternatives (each a tuple
    of flags given together, () for none of them) that do not go together: three examples in four
    give one alternative of each group and leave the others out; the rest mix them freely."""
    hostile = draw(st.sets(st.sampled_from([o for o in opts if o.valid is not None]), max_size=2))
    given: set[str] = set()
    left_out: set[str] = set()
    if draw(st.integers(0, 3)) < 3:
        for group in choose_one:
            pick = draw(st.sampled_from(group))
            given |= set(pick)
            left_out |= {flag for alternative in group for flag in alternative} - set(pick)
    argv = [name]
    for o in opts:
        if o.flag in left_out or (o.rare and o not in hostile):
            continue
        if not (o.required or o.flag in given or o in hostile or draw(st.booleans())):
            continue
        if o.valid is None:  # a switch
            argv.append(o.flag)
            continue
        for _ in range(draw(st.integers(1, 2)) if o.repeat else 1):
            value = draw(o.hostile if o in hostile else o.valid)
            argv += [value] if o.flag is None else [o.flag, value]
    return argv


# ----- one strategy per command ------------------------------------------------------------------

# Units as --clamp, --ablate and --watch name them (layer from 1, neuron from 0). The checkpoints
# drawn have 1 layer of 8 units (@run, @latest) or 2 of 16 (@ckpt).
UNITS = ["1:0", "1:7", " 1 : 3 "]
BAD_UNITS = ["0:0", "1:99", "3:0", "1:-1", "-1:0", "x", "1", "1:", ":", "1:0:gate", f"{2**70}:0", f"1:{2**70}"]
unit_spec = Opt(None, st.sampled_from(UNITS), st.sampled_from(BAD_UNITS) | odd_text)


def unit_specs(flag: str) -> Opt:
    return Opt(flag, unit_spec.valid, unit_spec.hostile, repeat=True)


CLAMPS = ["1:0=1.5", "1:7:cell=-4", "1:3:hidden=0.5", "1:0=0"]
BAD_CLAMPS = [
    *(u + "=1" for u in BAD_UNITS),
    "1:0",
    "1:0=",
    "1:0=nan",
    "1:0=inf",
    "1:0=1e309",
    "1:0=x",
    "1:0:gate=1",
    "1:0=1=2",
]

INPUTS = ["@missing", "@folder", "@empty", "@bytes", "@text", "@loop", "@under-file", "@devnull"]
CHECKPOINTS = ["@ckpt", "@run", "@latest"]
CRAFTED = ["@crafted-rows", "@crafted-no-bias", "@crafted-layers", "@crafted-float", "@crafted-surrogate"]
NOT_CHECKPOINTS = ["@data", "@truncated", "@foreign", *CRAFTED, *INPUTS]
NOT_DATASETS = ["@broken-data", "@run", *INPUTS]
OUTPUTS = ["%new", "%deep", "%existing", "@devnull"]
BAD_OUTPUTS = ["%folder", "%under-file", "%devfull"]
FOLDERS = ["%new", "%deep", "%folder"]
BAD_FOLDERS = ["%existing", "%under-file", "@devnull"]

# Never without a source nor with --preset python-stdlib: either reads the whole standard library.
ingest_argv = st.tuples(
    st.lists(st.sampled_from(["@src", "@zip", "@text"]), min_size=1, max_size=2),
    st.lists(st.sampled_from([*INPUTS, "file:///nonexistent"]) | odd_text, max_size=1),
    command(
        "ingest",
        words("--name", ["tiny", "x", "My Data"], [".", "..", ".hidden", "a/b"], required=True),
        paths("--data-dir", FOLDERS, BAD_FOLDERS, odd_names=True),
        switch("--force"),
        switch("--json"),
        # Only names that are no preset, now and then: the real ones read a whole standard library or JDK.
        Opt("--preset", st.nothing(), st.sampled_from(["jdk-typo", "PYTHON-STDLIB", ""]) | odd_text, rare=True),
        words("--ext", [".java", "py", ".py"], [".", "..java", "*"]),
        ints("--max-file-bytes", 1, 10_000),
        ints("--min-char-count", 1, 5),
        floats("--val-fraction", 0.01, 0.99),
        ints("--seed", 0, 10),
    ),
).map(lambda t: [t[2][0], *t[0], *t[1], *t[2][1:]])  # the sources right after "ingest"

# Tiny models always: --hidden (or --init-from, whose shape is tiny), --seq-len and --steps are
# given (the defaults train a 3×512 model for an epoch), and past the valid range only sizes beyond
# any machine are drawn.
SIZES = (0, -1, 2**31, 2**70)
train_argv = command(
    "train",
    paths("--data", ["@data"], NOT_DATASETS, required=True),
    paths("--out", ["%new", "%run-copy"], ["%existing", "%under-file", "@devnull", ""], odd_names=True),
    switch("--force"),
    paths("--init-from", ["@ckpt", "@run"], ["@truncated", "@foreign", *INPUTS]),
    words("--model", ["lstm", "gru", "rnn"], ["LSTM", "transformer"]),
    ints("--layers", 1, 2, SIZES),
    ints("--hidden", 1, 16, SIZES, required=True),
    ints("--embed", 1, 8, SIZES),
    floats("--dropout", 0.0, 0.9),
    ints("--batch-size", 1, 4, SIZES),
    ints("--seq-len", 1, 16, SIZES, required=True),
    floats("--lr", 1e-4, 1e-1),
    floats("--min-lr-ratio", 0.01, 1.0),
    ints("--warmup-steps", 0, 5),
    floats("--weight-decay", 0.0, 1.0),
    floats("--grad-clip", 0.0, 5.0),
    ints("--steps", 1, 3, tuple(NONPOSITIVE), required=True),
    floats("--epochs", 1e-6, 2.0),
    floats("--minutes", 1e-6, 0.001),
    ints("--seed", 0, 2**63 - 1),
    ints("--eval-every", 0, 3),
    ints("--save-every", 0, 3),
    ints("--log-every", 1, 3),
    ints("--patience", 1, 3),
    words("--precision", ["fp32"], ["fp16", "FP32", "int8"], required=True),  # auto/bf16 depend on the CPU
    words("--device", ["cpu"], ["mps", "cpu:0", "tpu"]),
    ints("--threads", 1, 2, (0, -1, 4097, 2**70)),
    switch("--json"),
    choose_one=((("--init-from",), ("--model", "--layers", "--hidden", "--embed")),),  # fine-tuning keeps the shape
)

# --resume: a copy of the trained run, with the options a resumed run may change (and, now and
# then, one it may not).
resume_argv = command(
    "train",
    paths("--data", ["@data"], NOT_DATASETS),
    ints("--steps", 1, 4, tuple(NONPOSITIVE)),
    floats("--epochs", 1e-6, 0.01),
    floats("--minutes", 1e-6, 0.001),
    ints("--eval-every", 0, 3),
    ints("--save-every", 0, 3),
    ints("--log-every", 1, 3),
    words("--precision", ["fp32"], ["fp16", "int8"], required=True),
    words("--device", ["cpu"], ["mps"]),
    ints("--threads", 1, 2, (0, -1, 4097)),
    Opt("--hidden", st.nothing(), st.sampled_from(["8", "9"]), rare=True),
    Opt("--lr", st.nothing(), st.sampled_from(["0.5", "nan"]), rare=True),
    switch("--force"),
    switch("--json"),
    Opt("--resume", st.just("%run-copy"), st.sampled_from(["%new", "%existing", "%folder", "@devnull"]), required=True),
).map(lambda argv: [a for arg in argv for a in (["--resume", "--out"] if arg == "--resume" else [arg])])

# Only eval is left without a checkpoint now and then: the default, with no runs under the example's
# checkpoints/, is the shipped 3×256 model, slow to load for sample and inspect-neuron.
eval_argv = command(
    "eval",
    paths(None, CHECKPOINTS, NOT_CHECKPOINTS),
    paths("--data", ["@data"], NOT_DATASETS),
    paths("--text-file", ["@text"], [p for p in INPUTS if p != "@text"]),
    words("--device", ["cpu"], ["mps", "tpu"]),
    words("--precision", ["auto", "fp32", "bf16"], ["fp16", "int8"]),
    switch("--dynamic"),
    floats("--dynamic-lr", 1e-3, 1.0),
    switch("--per-char"),
    paths("--html", OUTPUTS, BAD_OUTPUTS, odd_names=True),
    switch("--json"),
    choose_one=(
        (("--data",), ("--text-file",), ("--text-file", "--per-char"), ("--text-file", "--per-char", "--html"), ()),
        (("--dynamic", "--dynamic-lr"), ("--dynamic",), ()),
    ),
)

sample_argv = command(
    "sample",
    paths(None, CHECKPOINTS, NOT_CHECKPOINTS, required=True),
    ints("--length", 1, 50, (0, -1, -(2**70)), required=True),
    floats("--temperature", 0.05, 3.0),
    switch("--greedy"),
    ints("--top-k", 1, 100),
    floats("--top-p", 0.01, 1.0),
    Opt("--prime", st.sampled_from(["public ", "x"]) | odd_text, odd_text),
    paths("--prime-file", ["@text"], [p for p in INPUTS if p != "@text"]),
    Opt("--stop", st.sampled_from(["\\n", "}", ";"]), st.sampled_from(["\\x", "\\", "\\u12", "\\N{nope}"]) | odd_text),
    ints("--num-samples", 1, 3),
    ints("--seed", 0, 2**63 - 1, (-1, 2**63, 2**64, 2**70)),
    ints("--beam", 1, 3),
    Opt("--clamp", st.sampled_from(CLAMPS), st.sampled_from(BAD_CLAMPS) | odd_text, repeat=True),
    unit_specs("--ablate"),
    Opt("--watch", st.sampled_from([*UNITS, "1:2:cell", "1:2:hidden"]), unit_spec.hostile | st.just("1:0:gate")),
    paths("--out", OUTPUTS, BAD_OUTPUTS, odd_names=True),
    switch("--no-color"),
    words("--device", ["cpu"], ["cpu:0", "mps", "meta", "cuda:x"]),
    ints("--threads", 1, 2, (0, -1, 2**70)),
    words("--precision", ["auto", "fp32", "fp16", "int8"], ["bf16", "FP32"]),
    choose_one=(
        (
            ("--beam",),
            ("--temperature",),
            ("--top-k",),
            ("--top-p",),
            ("--greedy",),
            ("--seed",),
            ("--num-samples",),
            ("--temperature", "--top-p", "--seed", "--num-samples"),
            (),
        ),
        (("--prime",), ("--prime-file",), ()),
    ),
)

inspect_argv = command(
    "inspect-neuron",
    paths(None, CHECKPOINTS, NOT_CHECKPOINTS, required=True),
    ints("--layer", 1, 2, (0, -1, 3, 2**70)),
    ints("--neuron", 0, 7, (-1, 8, 16, 2**70)),
    words(
        "--state", ["hidden", "cell", "input", "forget", "output", "candidate", "all"], ["reset", "update", "HIDDEN"]
    ),
    Opt("--text", st.sampled_from(["public String greet() {", "    return name;\n"]), odd_text),
    paths("--text-file", ["@text"], [p for p in INPUTS if p != "@text"]),
    ints("--from-val", 1, 300),
    paths("--data", ["@data"], NOT_DATASETS),
    words(
        "--find",
        ["indent", "column", "string", "comment", "brackets", "spaces", "regex:[{}]"],
        ["regex:(", "regex:", "regex:x{99999999}", "Indent"],
    ),
    ints("--top", 1, 20),
    switch("--stats"),
    switch("--json"),
    paths("--html", OUTPUTS, BAD_OUTPUTS, odd_names=True),
    paths("--svg", OUTPUTS, BAD_OUTPUTS, odd_names=True),
    switch("--exact"),
    unit_specs("--ablate"),
    switch("--causal"),
    ints("--controls", 1, 3),
    ints("--seed", 0, 2**32),
    ints("--top-contexts", 1, 5),
    ints("--max-chars", 1, 300),
    words("--device", ["cpu"], ["mps", "tpu", "cuda:x"]),
    choose_one=(
        (
            ("--layer", "--neuron"),
            ("--layer", "--neuron", "--svg"),
            ("--layer", "--neuron", "--top-contexts"),
            ("--find",),
            ("--find", "--json"),
            ("--find", "--causal"),
            ("--stats",),
            ("--stats", "--json"),
            ("--html",),
            ("--ablate",),
            ("--ablate", "--json"),
        ),
        (("--text",), ("--text-file",), ("--from-val",), ()),
    ),
)

# --steps is always given and tiny (the studies' own take a minute); the training and judging
# sizes are small, or hostile.
experiment_argv = command(
    "experiment",
    words(None, ["counter", "selective-counter", "state", "copy", "all"], ["Counter", "-h"], required=True),
    ints("--seed", 0, 2**32),
    ints("--steps", 1, 2, tuple(NONPOSITIVE), required=True),
    ints("--max-n", 1, 4),
    ints("--eval-max-n", 1, 4),
    paths("--out-dir", FOLDERS, BAD_FOLDERS, odd_names=True),
    switch("--json"),
    switch("--quiet"),
    paths("--html", OUTPUTS, BAD_OUTPUTS, odd_names=True),
    words("--device", ["cpu"], ["mps", "tpu", "cuda:x"]),
)

# A run folder, a folder of none, or anything else; the curves drawn, pictured, or as JSON.
runs_argv = command(
    "runs",
    paths(None, ["@run", "%folder"], ["@ckpt", "@latest", "@truncated", "@data", *INPUTS]),
    switch("--plot"),
    words("--x", ["steps", "chars", "minutes"], ["Steps", "hours"]),
    paths("--svg", OUTPUTS, BAD_OUTPUTS, odd_names=True),
    paths("--html", OUTPUTS, BAD_OUTPUTS, odd_names=True),
    switch("--json"),
)


# ----- the fuzz tests, in process ----------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("one_thread")


@settings(max_examples=40 * SCALE, **FUZZ)
@given(argv=ingest_argv)
def test_ingest_fuzz(inputs, argv):
    run_in_process(argv, inputs)


@settings(max_examples=40 * SCALE, **FUZZ)
@given(argv=train_argv | resume_argv)
@example(
    argv=[
        "train",
        "--data",
        "@data",
        "--layers",
        str(2**70),
        "--hidden",
        "1",
        "--seq-len",
        "8",
        "--steps",
        "1",
        "--precision",
        "fp32",
    ]
)  # building the layers never ended
@example(
    argv=[
        "train",
        "--data",
        "@data",
        "--hidden",
        "4",
        "--seq-len",
        "1",
        "--steps",
        "1",
        "--epochs",
        "1e308",
        "--precision",
        "fp32",
    ]
)  # epochs × windows overflowed to infinity
def test_train_fuzz(inputs, argv):
    run_in_process(argv, inputs)


@settings(max_examples=40 * SCALE, **FUZZ)
@given(argv=eval_argv)
def test_eval_fuzz(inputs, argv):
    run_in_process(argv, inputs)


@settings(max_examples=40 * SCALE, **FUZZ)
@given(argv=sample_argv)
@example(argv=["sample", "@latest", "--length", "1", "--seed", str(2**64)])  # torch refused the seed
@example(argv=["sample", "@latest", "--length", "1", "--num-samples", str(2**31)])  # took all memory
@example(argv=["sample", "@latest", "--length", "5", "--beam", str(2**31)])  # took all memory
@example(argv=["sample", "@latest", "--length", "1", "--threads", str(2**70)])  # torch refused the number
def test_sample_fuzz(inputs, argv):
    run_in_process(argv, inputs)


@settings(max_examples=40 * SCALE, **FUZZ)
@given(argv=inspect_argv)
@example(
    argv=["inspect-neuron", "@ckpt", "--text", "x = 1;", "--ablate", "1:7", "--controls", str(2**31)]
)  # never ended
@example(
    argv=["inspect-neuron", "@ckpt", "--text", "x = 1;", "--ablate", "1:7", "--seed", "-1"]
)  # numpy refused the seed
def test_inspect_neuron_fuzz(inputs, argv):
    run_in_process(argv, inputs)


@settings(max_examples=30 * SCALE, **FUZZ)
@given(argv=experiment_argv)
@example(argv=["experiment", "copy", "--steps", "1", "--max-n", "1"])  # its units had nothing to be judged on
@example(argv=["experiment", "all", "--steps", "1", "--eval-max-n", str(2**70)])  # judging never ended
@example(argv=["experiment", "counter", "--seed", "-1", "--steps", "1"])  # torch refused the seed
@example(argv=["experiment", "all", "--steps", "1", "--html", ""])  # no name to add -STUDY to, after training
def test_experiment_fuzz(inputs, argv):
    run_in_process(argv, inputs)


@settings(max_examples=30 * SCALE, **FUZZ)
@given(argv=runs_argv)
def test_runs_fuzz(inputs, argv):
    run_in_process(argv, inputs)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["experiment", "copy", "--steps", "1", "--max-n", "1"], "--max-n must be at least 2 for the copy study"),
        (["experiment", "all", "--steps", "1", "--eval-max-n", "1001"], "--eval-max-n must be at most 1000"),
        (["experiment", "counter", "--steps", "1", "--seed", "-1"], "--seed must be between 0 and"),
        (
            ["train", "--data", "@data", "--layers", "101", "--hidden", "4", "--steps", "1"],
            "--layers must be at most 100",
        ),
        (["sample", "@latest", "--seed", str(2**63)], "--seed must be between 0 and 9223372036854775807"),
        (["sample", "@latest", "--num-samples", "4097"], "--num-samples must be at most 4096"),
        (["sample", "@latest", "--beam", "1025"], "--beam must be at most 1024"),
        (["sample", "@latest", "--threads", "4097"], "--threads must be between 1 and 4096"),
        (["ingest", "@src", "--name", "x", "--data-dir", "%existing"], "existing.txt: it exists and is not a folder"),
        (["experiment", "counter", "--steps", "1", "--out-dir", "%existing"], "it exists and is not a folder"),
        (["experiment", "all", "--steps", "1", "--html", ""], "--html needs a file name"),
        (
            ["inspect-neuron", "@ckpt", "--text", "x = 1;", "--ablate", "1:7", "--controls", "101"],
            "--controls must be at most 100",
        ),
        (
            ["inspect-neuron", "@ckpt", "--text", "x = 1;", "--ablate", "1:7", "--seed", "-1"],
            "--seed must be 0 or more",
        ),
    ],
)
def test_what_the_fuzz_found_fails_in_one_line(inputs, argv, message):
    result = run_in_process(argv, inputs)
    assert result.exit_code == 1 and message in result.stderr.strip().splitlines()[-1], result.stderr


# ----- a few through the real program ------------------------------------------------------------


def _child_limits():
    """For the child, set between fork and exec: the address space an example may use (see bounded)."""
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    if torch.cuda.is_available() or (hard != resource.RLIM_INFINITY and hard < CHILD_MEMORY):
        return None
    return functools.partial(resource.setrlimit, resource.RLIMIT_AS, (CHILD_MEMORY, hard))


# A standard stream the shell closed (`2>&-`), and terminal sizes from the environment (issue 24).
CLOSED_STREAMS = st.sampled_from([None, None, 0, 1, 2])
ODD_COLUMNS = st.sampled_from([None, "0", "1", "-4", "abc", "", "99999"])


@pytest.mark.slow
@settings(max_examples=4 * SCALE, **FUZZ)
@given(
    argv=st.one_of(sample_argv, eval_argv, inspect_argv, train_argv, ingest_argv, experiment_argv),
    closed=CLOSED_STREAMS,
    columns=ODD_COLUMNS,
)
@example(
    argv=["train", "--data", "@data", "--hidden", "4", "--seq-len", "8", "--steps", "1", "--json"],
    closed=2,
    columns="0",
)
@example(argv=["sample", "@crafted-layers", "-n", "3"], closed=None, columns="0")
def test_cli_fuzz_in_a_process(inputs, argv, closed, columns):
    """`python -m charlstm` itself: argv as bytes (a lone surrogate is the byte it came from), a
    real stdout and stderr, and the interpreter's own exit; one standard stream may be closed, and
    COLUMNS may be nonsense."""
    with example_folder(inputs) as (work, paths):
        args = [os.fsencode(a) for a in resolve(argv, paths, work)]
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        env.pop("COLUMNS", None)
        if columns is not None:
            env["COLUMNS"] = columns
        # Through a shell, so that `N>&-` closes the stream for real (the program starts without it).
        closing = f" {closed}>&-" if closed is not None else ""
        cmd = ["bash", "-c", f'exec "$@"{closing}', "bash", sys.executable, "-m", "charlstm", *args]
        try:
            proc = subprocess.run(
                cmd,
                cwd=work,
                env=env,
                capture_output=True,
                stdin=subprocess.DEVNULL,
                timeout=EXAMPLE_SECONDS,
                preexec_fn=_child_limits(),
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"argv: {argv!r}\nstill running after {EXAMPLE_SECONDS} s")
    stderr = proc.stderr.decode(errors="replace")
    if closed == 2:  # nothing can be said: still a clean exit, and stdout holds only what it promises
        assert proc.returncode in (0, 1, 2, 130), f"argv: {argv!r} exit {proc.returncode}"
        stderr = "error: (stderr closed)"
    check_outcome(proc.returncode, proc.stdout.decode(errors="replace"), stderr, argv)
    if "--json" in argv and proc.returncode == 0 and closed != 1:
        json.loads(proc.stdout)  # --json's stdout is one JSON value, whatever else happened
