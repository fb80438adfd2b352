"""The run folder: who owns it, what a fresh start or a resume finds there, and the files beside
the checkpoints (config.json, metrics.jsonl).

`own_run_dir` holds the folder's lock for the whole run; `check_run_dir` refuses to start afresh
over saved progress; `prepare_run_dir` (`clear_earlier_run`, `truncate_metrics`) leaves only this
run's files; `checkpoint_to_resume` and `check_resumable` find and check what --resume reads.
"""

from __future__ import annotations

import glob
import json
import os
from contextlib import contextmanager, suppress
from pathlib import Path

from ..core import lock
from ..core.checkpoint import BEST, LATEST
from ..core.config import malformed_fields
from ..core.distributed import distributed_layout
from ..core.errors import CharlstmError, shown_path
from ..core.events import Listener, Message, ignore
from ..core.files import atomic_write

RUN_LOCK = ".lock"  # in the run folder, held by the process training in it (see charlstm.lock)
SUMMARY = "summary.json"  # written when a run ends its budget (or --patience ends it); a resume removes it
RUN_FILES = (LATEST, BEST, "metrics.jsonl", "config.json", SUMMARY)  # what a run writes there
# What resuming reads from a checkpoint; an inference-only export (export_for_inference) lacks most of it.
RESUME_KEYS = ("model_config", "vocab", "model", "step", "optimizer", "data_position")


def check_run_dir(run_dir: Path, resume: bool, force: bool) -> None:
    """A fresh start refuses a folder with saved progress; one whose run saved nothing starts afresh."""
    if resume or force:
        return
    if (run_dir / LATEST).exists():
        raise CharlstmError(
            f"{shown_path(run_dir)} already holds a run: continue it with --resume, or start over with --force"
        )
    if (run_dir / BEST).exists():
        raise CharlstmError(
            f"{shown_path(run_dir)} holds a {BEST} but no {LATEST} (its run stopped before its first save): "
            f"continue from {BEST} with --resume, or start over with --force"
        )


def clear_earlier_run(run_dir: Path, on_event: Listener = ignore) -> None:
    """Remove the files of a run that saved nothing, or of the run --force replaces: they would be
    mistaken for the new run's. A message to `on_event` says which."""
    leftovers = [run_dir / name for name in RUN_FILES if (run_dir / name).exists()]
    if leftovers:
        names = ", ".join(f.name for f in leftovers)
        on_event(Message(f"starting afresh in {shown_path(run_dir)}: removing the earlier run's {names}"))
    for f in leftovers:
        f.unlink(missing_ok=True)


def prepare_run_dir(run_dir: Path, resumed_at: int | None, on_event: Listener = ignore) -> None:
    """A resumed run's metrics cut back to its checkpoint's step `resumed_at`; a fresh run's folder
    made, without an earlier run's files."""
    if resumed_at is not None:
        truncate_metrics(run_dir, resumed_at, on_event)
        (run_dir / SUMMARY).unlink(missing_ok=True)  # the run goes on: it is no longer finished
    else:
        clear_earlier_run(run_dir, on_event)
    run_dir.mkdir(parents=True, exist_ok=True)


def write_run_config(run_dir: Path, record: dict) -> None:
    """config.json: the run's options, model, data and backend, for people and for reproducing it."""
    text = json.dumps(record, indent=2) + "\n"
    atomic_write(run_dir / "config.json", lambda f: f.write(text.encode()))


def write_run_summary(run_dir: Path, summary: dict) -> None:
    """summary.json: the run finished (what `train --json` prints); `charlstm runs` reads it."""
    text = json.dumps(summary, indent=2) + "\n"
    atomic_write(run_dir / SUMMARY, lambda f: f.write(text.encode()))


def truncate_metrics(run_dir: Path, step: int, on_event: Listener = ignore) -> None:
    """Drop metrics logged after the checkpoint we resume from, so no step appears twice. A damaged
    line (not UTF-8, not JSON, no step) is dropped too, with a warning to `on_event`: a log never
    stops a resume."""
    path = run_dir / "metrics.jsonl"
    if not os.path.lexists(path):
        return
    if path.is_dir():
        raise CharlstmError(f"{shown_path(path)} is a folder, not the run's metrics log: move it away, then resume")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CharlstmError(f"cannot read {shown_path(path)}: {exc.strerror or exc}") from None
    kept, damaged = [], 0
    for raw in data.splitlines():
        try:
            line = raw.decode("utf-8")
            record_step = json.loads(line)["step"]
            if isinstance(record_step, bool) or not isinstance(record_step, (int, float)):
                raise TypeError(record_step)
        except (ValueError, KeyError, TypeError):  # UnicodeDecodeError is a ValueError
            damaged += raw.strip() != b""
            continue
        if record_step <= step:
            kept.append(line + "\n")
    if damaged:
        on_event(
            Message(
                f"dropped {damaged} damaged line(s) of {shown_path(path)} (not UTF-8 JSON with a step)", warning=True
            )
        )
    atomic_write(path, lambda f: f.write("".join(kept).encode()))


def checkpoint_to_resume(run_dir: Path, on_event: Listener = ignore) -> Path:
    """latest.pt, else best.pt (with a message to `on_event`): a run that validated but was killed
    before its first save of latest.pt."""
    latest, best = run_dir / LATEST, run_dir / BEST
    if latest.is_file():
        return latest
    if best.is_file():
        on_event(Message(f"{shown_path(run_dir)} has no {LATEST}: resuming from {BEST}"))
        return best
    if any((run_dir / name).exists() for name in ("config.json", "metrics.jsonl")):
        raise CharlstmError(
            f"nothing saved yet in {shown_path(run_dir)}: its run stopped before its first save (no {LATEST}); "
            f"start it again without --resume to begin afresh"
        )
    raise CharlstmError(f"nothing to resume: {latest} not found (pass --out RUN, or start a run without --resume)")


def check_resumable(payload: dict, path: Path) -> None:
    """Everything Trainer._restore reads is there, so a stripped or foreign checkpoint fails in one line."""
    if not isinstance(payload.get("train_config"), dict):
        raise CharlstmError(f"{path} was not written by `charlstm train`: it has no training config")
    malformed = malformed_fields(payload["train_config"])
    if malformed:
        raise CharlstmError(f"{path} has a malformed training config ({', '.join(malformed[:3])}): was it edited?")
    missing = [key for key in RESUME_KEYS if key not in payload]
    if missing:
        raise CharlstmError(
            f"{shown_path(path)} cannot be resumed: it has no {', '.join(missing)} "
            "(an inference-only export keeps just the "
            f"weights); sample or evaluate it, or start a new run with --force"
        )
    position = payload["data_position"]
    if not (isinstance(position, dict) and all(isinstance(position.get(k), int) for k in ("epoch", "window"))):
        raise CharlstmError(
            f"{shown_path(path)} cannot be resumed: its data_position is not {{'epoch': int, 'window': int}}"
        )


@contextmanager
def own_run_dir(run_dir: Path):
    """Hold the run folder for the whole run, so no second process trains in it at the same time.

    Under torchrun only rank 0 takes the lock: it is the only process that writes there. The owner
    then removes the temporary files of saves that a kill interrupted.
    """
    if os.path.lexists(run_dir) and not run_dir.is_dir():
        raise CharlstmError(f"--out {shown_path(run_dir)} exists and is not a folder")
    if distributed_layout()[0] != 0:
        yield
        return
    made = not os.path.lexists(run_dir)
    try:
        with lock.acquire(run_dir / RUN_LOCK, str(run_dir)):
            remove_stale_temporaries(run_dir)
            yield
    except BaseException:
        if made:
            with suppress(OSError):  # not empty (a run that saved something), or gone: leave it
                run_dir.rmdir()  # a new run refused at set-up leaves no empty folder behind
        raise


def remove_stale_temporaries(run_dir: Path) -> None:
    """atomic_write's `.NAME.*.tmp` files left by a kill during a save; safe only while holding the lock."""
    for name in RUN_FILES:
        for tmp in run_dir.glob(f".{glob.escape(name)}.*.tmp"):
            try:
                tmp.unlink()
            except OSError:
                pass  # harmless where it stays
