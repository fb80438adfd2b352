"""The prepared run for a CUDA machine: every GPU measurement and both shipped models, in one go.

Stages, in order, each guarded (a failing stage is recorded with its one-line error and the next
one runs) and all under one deadline: the models' training budgets are kept for them, and the
benchmarks before them shrink or are skipped rather than overrun; a model's budget shrinks only
when the deadline leaves no other way.

  env           the GPU, torch, cuDNN, and what `--precision auto` picks for 3×512 (and why)
  graph_check   bench/cuda_graph_check.py, if present ("missing" otherwise): CUDA-graph sampling
                equals the plain loop
  train_speed   bench/train_speed.py --grid: fp32/fp16/bf16 × batch 64/256/1024 at hidden 512,
                ours vs bare nn.LSTM (hidden 1024 too when time is left at the end)
  python, java  `charlstm ingest` (python: the default corpus; java: --java-data DIR, else
                `--preset jdk` when a JDK's src.zip is found, else skipped with the reason), then
                `charlstm train` with only --layers/--hidden/--minutes (the device- and
                corpus-aware defaults choose batch, lr, dropout and precision), then
                scripts/ship_model.py --fp16 into pretrained-NAME (best.pt, config.json,
                metrics.jsonl, val-excerpt.txt, COMMANDS.txt), packed as OUT/pretrained-NAME.tar,
                then eval and a sample of the exported model
  sample_speed  bench/sample_speed.py: naive vs ours at batch 1 and 16 (after the models, whose
                budgets come first; the hidden-1024 row of train_speed follows if time is left)
  devices       bench/device_check.py: traces, inspect-neuron and experiment on the GPU against the
                CPU, and the Python model trained here sampled and scored on the CPU

On CUDA, datasets and run folders go where a user's would (data/, checkpoints/ in the repository).
Without CUDA (or with --smoke) it runs a shortened form in a temporary folder: a tiny model, seconds
of training, the CPU grid of train_speed.py, so the whole script is proven on a CPU.

Prints ONE JSON object on stdout (also OUT/gpu_run.json, rewritten after every stage, so a run
stopped from outside still leaves what it finished); progress goes to stderr and each command's
output to OUT/commands.log. OUT is --out, else $OUT, else a temporary folder. Exit status 1 when
a stage failed. OUT never holds more than four files, none in a folder, since a device run brings
back at most 8 files of 16 MiB: gpu_run.json, commands.log, and per shipped model one uncompressed
tar, pretrained-NAME.tar (unpack it into checkpoints/); the exported folders themselves are made
under the work folder's checkpoints/shipped/. Every command stops by the deadline plus
HARD_GRACE_S, the whole process group with it.

    PYTHONPATH=$PWD python3 bench/gpu_run.py [--java-data data/jdk] [--python-minutes 2.5]
        [--java-minutes 1.8] [--deadline-minutes 8] [--skip STAGE] [--smoke] [--out DIR]
        [--java-data-made-by "how data/jdk was made"] [--python-data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STAGES = ("env", "graph_check", "train_speed", "python", "java", "sample_speed", "devices")
PYTHON_GOAL_BPC = 1.25  # issue 12: the shipped Python model's validation bpc
SHIP_LIMIT_MB = 20.0
RETURNED_FILE_LIMIT = 16 * 2**20  # a device run brings back files of at most 16 MiB
LOG_TAIL_CHARS = 200_000  # of each command's stdout and of its stderr, in commands.log
# A command's own process group, so a timeout kills its children too (a group, not a session:
# whatever stops this script from outside still stops them).
OWN_GROUP = {"process_group": 0} if sys.version_info >= (3, 11) else {"start_new_session": True}
HARD_GRACE_S = 40  # a command may overrun the deadline by this much, no more (8 min + 40 s < a 9 min call)


class StageError(Exception):
    """A stage's failure, as the one line the JSON records; `partial`: the last JSON line a command
    printed before it was stopped, if any."""

    def __init__(self, message: str, partial: dict | None = None):
        super().__init__(message)
        self.partial = partial


def say(message: str) -> None:
    print(f"[gpu_run] {message}", file=sys.stderr, flush=True)


def last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def one_line(text: str, limit: int = 300) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "no output")[:limit]


def command_name(argv: list[str]) -> str:
    """What a message calls a command: `charlstm train` for `python -m charlstm train ...`, else the
    script or program run."""
    if argv[1:3] == ["-m", "charlstm"]:
        return " ".join(argv[2:4])
    return Path(argv[1] if len(argv) > 1 and not argv[1].startswith("-") else argv[0]).name


def rel(path: Path) -> str:
    """A path as a user in the repository would type it."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


class Session:
    """The deadline, the folders, the record of every stage and of every command run."""

    def __init__(self, out: Path, work: Path, deadline_s: float, smoke: bool):
        self.start = time.monotonic()
        self.deadline = self.start + deadline_s
        self.out, self.work, self.smoke = out, work, smoke
        out.mkdir(parents=True, exist_ok=True)
        self.record: dict = {"smoke": smoke, "deadline_s": deadline_s, "out": str(out), "finished": False, "stages": {}}
        self.commands: list[str] = []  # every command, as run (cwd: the repository)
        self.reserve = 0.0  # seconds kept for the stages still to come (the models' budgets)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def budget(self, cap: float) -> float:
        """Seconds this stage may take: its cap, or less, so the reserve stays for the later stages."""
        return max(min(cap, self.left() - self.reserve), 1.0)

    def run(self, log: str, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        """Run a command from the repository root, its output kept in OUT/commands.log under LOG.

        Stopped after `timeout` s, and never later than the deadline plus HARD_GRACE_S: then its
        whole process group is killed (a check's own children too), and StageError carries the
        last JSON line it had printed."""
        shown = " ".join(shlex.quote(a) for a in argv)
        self.commands.append(shown)
        timeout = max(min(timeout, self.left() + HARD_GRACE_S), 1)
        say(f"$ {shown}  (at most {timeout:.0f} s)")
        env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        with subprocess.Popen(
            argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **OWN_GROUP
        ) as proc:
            try:
                stdout, stderr = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:  # the group ended meanwhile
                    pass
                stdout, stderr = proc.communicate()
                self._log(log, shown, stdout, stderr, "timeout")
                raise StageError(
                    f"{command_name(argv)} ran past {timeout:.0f} s and was stopped", last_json(stdout or "")
                ) from None
        self._log(log, shown, stdout, stderr, proc.returncode)
        return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)

    def _log(self, log: str, shown: str, stdout, stderr, rc) -> None:
        def tail(s: str) -> str:
            if len(s) <= LOG_TAIL_CHARS:
                return s
            return f"[… {len(s) - LOG_TAIL_CHARS} characters left out]" + s[-LOG_TAIL_CHARS:]

        with open(self.out / "commands.log", "a", encoding="utf-8") as f:
            f.write(
                f"===== {log}\n$ {shown}\n[exit {rc}]\n"
                f"--- stdout\n{tail(stdout or '')}\n--- stderr\n{tail(stderr or '')}\n"
            )

    def save(self) -> None:
        """OUT/gpu_run.json as it stands (after every stage; the final one adds the totals)."""
        (self.out / "gpu_run.json").write_text(json.dumps(self.record) + "\n", encoding="utf-8")

    def charlstm(self, log: str, args: list[str], timeout: float) -> subprocess.CompletedProcess:
        return self.run(log, [sys.executable, "-m", "charlstm", *args], timeout)

    def stage(self, name: str, fn, need_s: float = 5.0) -> dict:
        """Run one stage guarded: skipped when under `need_s` seconds are left, any error recorded."""
        t = time.monotonic()
        if self.left() - self.reserve < need_s:
            result = {
                "status": "skipped",
                "reason": f"deadline: {self.left():.0f} s left ({self.reserve:.0f} kept "
                f"for later stages), the stage needs {need_s:.0f}",
            }
        else:
            say(f"stage {name} ({self.left():.0f} s left)")
            try:
                result = {"status": "ok", **(fn() or {})}
            except StageError as exc:
                result = {"status": "failed", "error": str(exc)} | ({"partial": exc.partial} if exc.partial else {})
            except Exception as exc:  # noqa: BLE001 — one stage's bug must not cost the others
                result = {"status": "failed", "error": f"{type(exc).__name__}: {one_line(str(exc))}"}
        result["seconds"] = round(time.monotonic() - t, 1)
        self.record["stages"][name] = result
        say(f"stage {name}: {result['status']} {result.get('error') or result.get('reason') or ''}")
        self.save()
        return result


def stage_env(s: Session, device: str) -> dict:
    import torch

    from charlstm.core.backend import choose_precision

    cuda = device == "cuda"
    chosen = choose_precision("auto", torch.device(device), hidden=512, batch=256)
    return {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "bf16_supported": torch.cuda.is_bf16_supported() if cuda else None,
        "auto_precision_3x512_batch256": {
            "precision": chosen.name,
            "rnn_dtype": chosen.rnn_dtype,
            "reason": chosen.reason,
        },
    }


def stage_graph_check(s: Session, device: str) -> dict:
    script = REPO / "bench" / "cuda_graph_check.py"
    if not script.is_file():
        return {"status": "missing", "reason": f"{rel(script)} is not in this checkout"}
    quick = [] if device == "cuda" else ["--quick"]  # the CPU only proves the script runs
    done = s.run("graph_check", [sys.executable, str(script), *quick], timeout=s.budget(60 if device == "cuda" else 30))
    result = last_json(done.stdout)
    if done.returncode != 0:
        raise StageError(
            f"exit {done.returncode}: {json.dumps(result) if result else one_line(done.stderr or done.stdout)}"
        )
    return {"result": result if result is not None else one_line(done.stdout)}


def stage_train_speed(s: Session, device: str, hiddens: list[int], cap_s: float) -> dict:
    args = [sys.executable, str(REPO / "bench" / "train_speed.py"), "--grid", "--device", device, "--json"]
    args += ["--steps", "4"] if device == "cuda" else ["--quick"]
    for h in hiddens:
        args += ["--hidden", str(h)]
    if device != "cuda":
        args += ["--batch", "4"]  # the CPU's proof: one tiny cell per hidden size
    done = s.run(f"train_speed-{'-'.join(map(str, hiddens))}", args, timeout=s.budget(cap_s))
    result = last_json(done.stdout)
    if done.returncode != 0 or result is None:
        raise StageError(f"exit {done.returncode}: {one_line(done.stderr)}")
    table = [line for line in done.stderr.splitlines() if line.startswith("3×")]
    return {"grid": result, "table": table}


def stage_sample_speed(s: Session, device: str) -> dict:
    script = REPO / "bench" / "sample_speed.py"
    timing = ["--rounds", "1", "--seconds", "1.0"] if device == "cuda" else ["--rounds", "1", "--seconds", "0.2"]
    asks_json = "--json" in script.read_text(encoding="utf-8")  # an older sample_speed.py prints its JSON unasked
    argv = [sys.executable, str(script), "--device", device, *timing, *(["--json"] if asks_json else [])]
    done = s.run("sample_speed", argv, timeout=s.budget(60 if device == "cuda" else 45))
    if done.returncode != 0:
        raise StageError(f"exit {done.returncode}: {one_line(done.stderr)}")
    result = last_json(done.stdout)
    return (
        {"result": result} if result is not None else {"text": (done.stdout + done.stderr).strip().splitlines()[-12:]}
    )


def prepare_data(s: Session, lang: str, given: Path | None) -> tuple[Path, list[str]]:
    """The dataset for `lang` and how it was made (for COMMANDS.txt)."""
    if given is not None:
        if not (given / "meta.json").is_file():
            raise StageError(f"--{lang}-data {given} holds no dataset (meta.json)")
        meta = json.loads((given / "meta.json").read_text())
        sources = [src.get("label", src) if isinstance(src, dict) else src for src in meta.get("sources", [])]
        return given, [f"# dataset {rel(given)} given with --{lang}-data; its sources: {json.dumps(sources)}"]
    name = "python-stdlib" if lang == "python" else "jdk"
    data_dir = s.work / "data"
    if (data_dir / name / "meta.json").is_file():
        return data_dir / name, [f"# dataset {rel(data_dir / name)} already there: not ingested again"]
    args = ["ingest", "--data-dir", rel(data_dir), "--json"] + ([] if lang == "python" else ["--preset", "jdk"])
    done = s.charlstm(f"{lang}-ingest", args, timeout=min(150, max(s.left() - 60, 1)))
    if done.returncode != 0:
        raise StageError(f"no {lang} dataset: {one_line(done.stderr)}")
    return data_dir / name, ["charlstm " + " ".join(args)]


def train_run(s: Session, lang: str, data: Path, minutes: float, shape: tuple[int, int]) -> tuple[dict, Path]:
    """`charlstm train` with the model size and a time budget only; its summary and header choices."""
    layers, hidden = shape
    run_dir = s.work / "checkpoints" / f"{data.name}-{layers}x{hidden}"
    args = [
        "train",
        "--data",
        rel(data),
        "--out",
        rel(run_dir),
        "--layers",
        str(layers),
        "--hidden",
        str(hidden),
        "--minutes",
        f"{minutes:.2f}",
        "--force",
        "--json",
    ]
    done = s.charlstm(f"{lang}-train", args, timeout=minutes * 60 + 120)
    summary = last_json(done.stdout)
    if done.returncode != 0 or summary is None:
        raise StageError(f"train exit {done.returncode}: {one_line(done.stderr)}")
    config = json.loads((run_dir / "config.json").read_text())
    tc = config["train_config"]
    header = re.search(r"precision (\w+) \((.*); the \w+ runs in (\w+)\)", done.stderr)
    result = {
        "minutes": round(minutes, 2),
        "best_val_bpc": summary.get("best_val_bpc"),
        "val_bpc": summary.get("val_bpc"),
        "train_bpc": summary.get("train_bpc"),
        "steps": summary.get("steps"),
        "epoch": summary.get("epoch"),
        "chars_per_sec": summary.get("chars_per_sec"),
        "skipped_steps": summary.get("skipped_steps"),
        "dataset": {k: config["dataset"].get(k) for k in ("path", "train_chars", "val_chars", "vocab_size")},
        "choices": {
            k: tc.get(k) for k in ("batch_size", "seq_len", "lr", "dropout", "embed", "warmup_steps", "eval_every")
        }
        | {
            "precision": config.get("precision"),
            "rnn_dtype": config.get("rnn_dtype_under_autocast"),
            "precision_reason": header.group(2) if header else None,
        },
        "header": next((line.strip() for line in done.stderr.splitlines() if "precision " in line), None),
    }
    return result, run_dir


def exported(s: Session, lang: str) -> Path:
    """Where the fp16 export of `lang` is made (OUT gets it packed: `pack`)."""
    return s.work / "checkpoints" / "shipped" / f"pretrained-{lang}"


def pack(s: Session, folder: Path) -> dict:
    """OUT/FOLDER.tar: the folder's files under FOLDER/, one file that a device run brings back."""
    tar = s.out / f"{folder.name}.tar"
    with tarfile.open(tar, "w") as archive:
        for path in sorted(folder.iterdir()):
            archive.add(path, arcname=f"{folder.name}/{path.name}")
    size = tar.stat().st_size
    return {"packed": tar.name, "packed_mib": round(size / 2**20, 2), "packed_fits_16mib": size <= RETURNED_FILE_LIMIT}


def ship(s: Session, lang: str, run_dir: Path, made_by: list[str], device: str) -> dict:
    """Export for inference in fp16 into pretrained-LANG, packed into OUT at once; check it loads,
    scores, samples."""
    to = exported(s, lang)
    done = s.run(
        f"{lang}-ship", [sys.executable, "scripts/ship_model.py", rel(run_dir), "--to", str(to), "--fp16"], timeout=120
    )
    if done.returncode != 0:
        raise StageError(f"ship_model.py exit {done.returncode}: {one_line(done.stderr)}")
    size_mb = (to / "best.pt").stat().st_size / 1e6
    commands = [
        f"# {lang} model made by bench/gpu_run.py, {time.strftime('%Y-%m-%d')}; run from the repository root",
        *made_by,
        *s.commands[-2:],
    ]
    (to / "COMMANDS.txt").write_text("\n".join(commands) + "\n", encoding="utf-8")
    result: dict = {"folder": rel(to), "best_pt_mb": round(size_mb, 2), "within_limit": size_mb <= SHIP_LIMIT_MB}
    result |= pack(s, to)  # before the checks below: the model comes back even if one of them hangs
    if s.left() > 20:
        done = s.charlstm(f"{lang}-eval", ["eval", str(to), "--device", device, "--json"], timeout=min(90, s.left()))
        scored = last_json(done.stdout)
        result["eval_fp16_weights_bpc"] = scored.get("bpc") if scored else one_line(done.stderr)
    if s.left() > 10:
        done = s.charlstm(
            f"{lang}-sample",
            [
                "sample",
                str(to),
                "--length",
                "400",
                "--seed",
                "1",
                "--temperature",
                "0.7",
                "--device",
                device,
                "--no-color",
            ],
            timeout=min(60, s.left()),
        )
        result["sample"] = done.stdout[:400] if done.returncode == 0 else one_line(done.stderr)
    if not result["within_limit"]:
        raise StageError(f"{to / 'best.pt'} is {size_mb:.1f} MB, over {SHIP_LIMIT_MB:.0f} MB")
    if not result["packed_fits_16mib"]:
        raise StageError(f"{result['packed']} is {result['packed_mib']} MiB: a device run brings back 16 MiB a file")
    return result


def stage_model(
    s: Session, lang: str, given: Path | None, minutes: float, shape, device: str, made_by: str | None
) -> dict:
    """Data, training within what the deadline leaves (keeping s.reserve for the stages after), export."""
    data, how = prepare_data(s, lang, given)
    if made_by:
        how.append(f"# the dataset was made with: {made_by}")
    overhead = 40 if device == "cuda" else 25  # start-up, final validation, export, eval, sample
    fit = (s.left() - s.reserve - overhead) / 60
    if fit < min(minutes, 0.3 if device == "cuda" else 0.05):
        raise StageError(f"deadline: {fit * 60:.0f} s left for training, too little")
    trained, run_dir = train_run(s, lang, data, min(minutes, fit), shape)
    if minutes > fit:
        trained["shrunk_from_minutes"] = minutes
    trained["export"] = ship(s, lang, run_dir, how, device)
    if lang == "python" and trained["best_val_bpc"] is not None:
        trained["goal_val_bpc"] = PYTHON_GOAL_BPC
        trained["goal_met"] = trained["best_val_bpc"] <= PYTHON_GOAL_BPC
    return trained


def stage_devices(s: Session, device: str) -> dict:
    """bench/device_check.py: trace, inspect-neuron and experiment on the device against the CPU, and
    the model trained here (the Python export) sampled and scored on the CPU."""
    budget = s.budget(90)
    argv = [
        sys.executable,
        str(REPO / "bench" / "device_check.py"),
        "--device",
        device,
        "--deadline-s",
        f"{max(budget - 25, 1):.0f}",
    ]  # no check starts in the last 25 s
    python_model = exported(s, "python")
    if (python_model / "best.pt").is_file():
        argv += ["--gpu-model", str(python_model)]
    done = s.run("devices", argv, timeout=budget)
    result = last_json(done.stdout)
    if done.returncode != 0:
        raise StageError(f"exit {done.returncode}: {json.dumps(result) if result else one_line(done.stderr)}")
    return {"result": result}


def java_unavailable(s: Session, given: Path | None) -> str | None:
    """Why the java stage can't get a dataset (None when it can): no --java-data, none ingested
    already, and no JDK sources for `--preset jdk`."""
    from charlstm.corpus.sources import jdk_src_zip_candidates

    if given is not None or (s.work / "data" / "jdk" / "meta.json").is_file():
        return None
    if s.smoke:  # a JDK's 10M validation characters alone outlast the shortened form's budget
        return "the shortened form takes Java only from --java-data"
    looked = jdk_src_zip_candidates()
    if any(path.is_file() for path in looked):
        return None
    where = ", ".join(str(p) for p in looked) or "$JAVA_HOME (unset) and no `java` on PATH"
    return f"no --java-data and no JDK sources (src.zip) for --preset jdk; looked in: {where}"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="artifacts folder (default: $OUT, else a temporary one)")
    parser.add_argument(
        "--java-data", type=Path, default=None, help="an ingested Java dataset (else --preset jdk is tried)"
    )
    parser.add_argument("--java-data-made-by", default=None, help="how --java-data was made, for COMMANDS.txt")
    parser.add_argument(
        "--python-data", type=Path, default=None, help="an ingested Python dataset (default: ingest the stdlib)"
    )
    parser.add_argument("--python-minutes", type=float, default=None, help="training budget (CUDA 2.5, smoke 0.1)")
    parser.add_argument("--java-minutes", type=float, default=None, help="training budget (CUDA 1.8, smoke 0.1)")
    parser.add_argument("--deadline-minutes", type=float, default=None, help="everything within this (CUDA 8, smoke 4)")
    parser.add_argument("--skip", action="append", default=[], choices=STAGES, help="leave a stage out (repeatable)")
    parser.add_argument("--smoke", action="store_true", help="the shortened CPU form (automatic without CUDA)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    import torch

    smoke = args.smoke or not torch.cuda.is_available()
    device = "cpu" if smoke else "cuda"
    out = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else Path(tempfile.mkdtemp(prefix="gpu_run-")))
    scratch = tempfile.TemporaryDirectory(prefix="gpu_run-work-") if smoke else None
    work = Path(scratch.name) if scratch else REPO  # on CUDA, data/ and checkpoints/ as a user's
    minutes = {
        "python": args.python_minutes or (0.1 if smoke else 2.5),
        "java": args.java_minutes or (0.1 if smoke else 1.8),
    }
    shape = (2, 32) if smoke else (3, 512)
    s = Session(out, work, (args.deadline_minutes or (4 if smoke else 8)) * 60, smoke)
    if smoke:
        say("shortened form: no CUDA GPU here or --smoke (a tiny model, seconds of training)")
    # Time kept for the stages after each one: the benchmarks shrink, not the models' budgets.
    overhead = 40 if not smoke else 25  # a model's start-up, final validation, export, eval, sample
    no_java = None if "java" in args.skip else java_unavailable(s, args.java_data)
    if no_java:
        say(f"java: skipped, {no_java}")
        args.skip.append("java")
    sample_need = 0 if "sample_speed" in args.skip else 20
    devices_need = 0 if "devices" in args.skip else 50
    java_need = 0 if "java" in args.skip else minutes["java"] * 60 + overhead
    python_need = (
        0 if "python" in args.skip else minutes["python"] * 60 + overhead + (10 if args.python_data is None else 0)
    )
    reserve = {
        "python": java_need + sample_need + devices_need,
        "java": sample_need + devices_need,
        "sample_speed": devices_need,
        "devices": 0.0,
    }
    plan = [
        ("env", lambda: stage_env(s, device), 1),
        ("graph_check", lambda: stage_graph_check(s, device), 10),
        (
            "train_speed",
            lambda: stage_train_speed(s, device, [512] if not smoke else [32], 90 if not smoke else 45),
            20,
        ),
        (
            "python",
            lambda: stage_model(s, "python", args.python_data, minutes["python"], shape, device, made_by=None),
            30,
        ),
        (
            "java",
            lambda: stage_model(s, "java", args.java_data, minutes["java"], shape, device, args.java_data_made_by),
            30,
        ),
        (
            "sample_speed",
            lambda: stage_sample_speed(s, device),
            15,
        ),  # after the models: docs/performance.md has figures already
        ("devices", lambda: stage_devices(s, device), 20),
    ]
    try:
        for name, fn, need in plan:
            if name in args.skip:
                s.record["stages"][name] = {
                    "status": "skipped",
                    "reason": no_java if name == "java" and no_java else "--skip",
                }
                continue
            s.reserve = reserve.get(name, python_need + java_need + sample_need + devices_need)
            s.stage(name, fn, need_s=need)  # graph_check's own "missing" status replaces "ok"
        s.reserve = 0.0
        if "train_speed" not in args.skip and s.left() > 100:  # extra: the larger hidden size, when time is left
            s.stage(
                "train_speed_1024",
                lambda: stage_train_speed(s, device, [1024] if not smoke else [64], s.left() - 10),
                60,
            )
    finally:
        if scratch is not None:
            scratch.cleanup()
    stages = s.record["stages"]
    s.record["failed"] = [name for name, r in stages.items() if r["status"] == "failed"]
    s.record["ok"] = not s.record["failed"]
    s.record["seconds"] = round(time.monotonic() - s.start, 1)
    s.record["finished"] = True
    s.save()
    print(json.dumps(s.record), flush=True)
    sys.exit(0 if s.record["ok"] else 1)


if __name__ == "__main__":
    main()
