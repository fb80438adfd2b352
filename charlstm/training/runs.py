"""What the runs in a folder are: `charlstm runs`' rows and `--plot`'s curves, read from their files.

A run folder holds config.json, metrics.jsonl, latest.pt and best.pt (runfolder.py); summary.json
appears when its run finishes. Nothing here imports torch or loads a checkpoint: a row comes from
the JSON files, a checkpoint is only checked to be a whole zip file (what `torch.save` writes), and
whether a process is training in the folder comes from its lock (lock.holder). A damaged run is a
row whose `problems` say what is wrong; reading a folder never raises for what is inside it.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import zipfile
from pathlib import Path

from ..core import lock
from ..core.checkpoint import BEST, LATEST
from ..core.errors import CharlstmError, first_line, shown_path
from .runfolder import RUN_FILES, RUN_LOCK, SUMMARY

X_AXES = ("steps", "chars", "minutes")
# Status of a row: the run finished its budget, stopped before it (resumable), is training now, or is damaged.
FINISHED, STOPPED, TRAINING, DAMAGED = "finished", "stopped", "training", "damaged"


def is_run(folder: Path) -> bool:
    return any((folder / name).is_file() for name in RUN_FILES)


def find_runs(folder: str | Path) -> list[dict]:
    """A row per run in `folder` (or for `folder` itself when it is a run), oldest activity first."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CharlstmError(
            f"{shown_path(folder)} is not a folder of runs" if folder.exists() else f"{shown_path(folder)} not found"
        )
    if is_run(folder):
        return [describe_run(folder)]
    try:
        children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError as exc:
        raise CharlstmError(f"cannot read {shown_path(folder)}: {exc.strerror or exc}") from None
    rows = [describe_run(p) for p in children if is_run(p)]
    return sorted(rows, key=lambda row: (row["updated"] or 0, row["name"]))


def describe_run(path: Path) -> dict:
    """One row: model, data, progress, scores, backend, time and status, with any problems found."""
    try:
        return _describe(path)
    except Exception as exc:  # noqa: BLE001 -- files of any shape: what is wrong is the row, never a traceback
        return {
            **dict.fromkeys(ROW_KEYS),
            "name": path.name,
            "path": str(path),
            "steps": 0,
            "checkpoints": [],
            "problems": [first_line(exc)],
            "status": DAMAGED,
            "note": f"unreadable: {first_line(exc)}",
        }


def _describe(path: Path) -> dict:
    problems: list[str] = []
    config = _read_json(path / "config.json", problems)
    records = read_metrics(path / "metrics.jsonl", problems)
    checkpoints = {name: _checkpoint_problem(path / name) for name in (LATEST, BEST) if (path / name).exists()}
    problems += [problem for problem in checkpoints.values() if problem]
    if config is None and not problems:
        problems.append("no config.json: not written by `charlstm train`, or its files were moved")
    config = config or {}
    tc, mc, data = (_section(config, key, problems) for key in ("train_config", "model_config", "dataset"))
    train = [r["bpc"] for r in records if _finite(r.get("bpc"))]
    vals = [r["val_bpc"] for r in records if _finite(r.get("val_bpc"))]
    epochs = [r["epoch"] for r in records if isinstance(r.get("epoch"), int)]
    row = {
        "name": path.name,
        "path": str(path),
        "model": f"{str(mc.get('kind', '?')).upper()} {mc.get('layers', '?')}×{mc.get('hidden', '?')}" if mc else None,
        "parameters": _text(config.get("parameters")),
        "dataset": _text(data.get("name")),
        "steps": max((r["step"] for r in records), default=0),
        "epoch": epochs[-1] if epochs else None,
        "train_bpc": train[-1] if train else None,
        "best_val_bpc": min(vals) if vals else None,
        "precision": _text(config.get("precision")),
        "device": _text(config.get("device")),
        "minutes": training_minutes(records, tc),
        "updated": _last_change(path),
        "checkpoints": sorted(checkpoints),
        "problems": problems,
    }
    row.update(_status(path, row, config, tc))
    return row


ROW_KEYS = (
    "name",
    "path",
    "model",
    "parameters",
    "dataset",
    "steps",
    "epoch",
    "train_bpc",
    "best_val_bpc",
    "precision",
    "device",
    "minutes",
    "updated",
    "checkpoints",
    "problems",
    "status",
    "note",
)


def _section(config: dict, key: str, problems: list[str]) -> dict:
    value = config.get(key)
    if value is not None and not isinstance(value, dict):
        problems.append(f"config.json: {key} is not an object")
    return value if isinstance(value, dict) else {}


def _text(value) -> str | int | None:
    """A config value shown in the table: a string or an integer as it is, anything else as text."""
    return value if value is None or isinstance(value, (str, int)) else str(value)


def _status(path: Path, row: dict, config: dict, tc: dict) -> dict:
    pid = lock.holder(path / RUN_LOCK)
    if pid is not None:
        return {"status": TRAINING, "pid": pid or None, "note": f"in use by PID {pid}" if pid else "in use"}
    if row["problems"]:
        return {"status": DAMAGED, "note": "; ".join(row["problems"])}
    if (path / SUMMARY).is_file() or _budget_reached(row["steps"], tc, config.get("windows_per_epoch")):
        return {"status": FINISHED, "note": None}
    if not row["checkpoints"]:
        return {"status": STOPPED, "note": "stopped before its first save: start it again with the same command"}
    world = config.get("world_size")
    return {"status": STOPPED, "note": "resume with: " + resume_command(path, world if isinstance(world, int) else 1)}


def resume_command(path: Path, world: int = 1) -> str:
    prefix = f"torchrun --nproc-per-node {world} -m charlstm" if world > 1 else "charlstm"
    return f"{prefix} train --resume --out {shlex.quote(str(path))}"


def _budget_reached(step: int, tc: dict, windows: int | None) -> bool:
    """For runs from before summary.json: had they reached their --steps or --epochs?"""
    steps, epochs = tc.get("steps"), tc.get("epochs")
    if isinstance(steps, int) and steps > 0 and step >= steps:
        return True
    return _finite(epochs) and isinstance(windows, int) and step >= math.ceil(epochs * windows) > 0


def read_metrics(path: Path, problems: list[str]) -> list[dict]:
    """metrics.jsonl's records in order; lines that are not a record with an integer step are counted as a problem."""
    if not path.exists():
        return []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        problems.append(f"cannot read metrics.jsonl: {exc.strerror or exc}")
        return []
    records, bad = [], []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            if not (isinstance(record, dict) and isinstance(record.get("step"), int)):
                raise ValueError
        except ValueError:
            bad.append(number)
            continue
        records.append(record)
    if bad:
        problems.append(f"metrics.jsonl has {len(bad)} unreadable line(s) (line {bad[0]} first)")
    return records


def training_minutes(records: list[dict], tc: dict) -> float | None:
    """Minutes spent training (validation and saving excluded), from each line's steps and chars/s."""
    per_step = _chars_per_step(tc)
    if per_step is None:
        return None
    return _minutes_by_step(records, per_step).get(max((r["step"] for r in records), default=0), 0.0)


def _chars_per_step(tc: dict) -> int | None:
    batch, seq = tc.get("batch_size"), tc.get("seq_len")
    return batch * seq if isinstance(batch, int) and isinstance(seq, int) else None


def _minutes_by_step(records: list[dict], per_step: int) -> dict[int, float]:
    """Cumulative training minutes at each logged step; a line's chars/s covers the steps since the one before."""
    minutes, total, last = {0: 0.0}, 0.0, 0
    for r in records:
        speed = r.get("chars_per_sec")
        if "bpc" in r and _finite(speed) and speed > 0 and r["step"] > last:
            total += (r["step"] - last) * per_step / speed / 60
            last = r["step"]
        minutes[r["step"]] = total
    return minutes


def curve_series(path: str | Path, x: str = "steps") -> dict:
    """A run's training and validation bpc as (x, bpc) points; x in steps, characters or training minutes."""
    if x not in X_AXES:
        raise CharlstmError(f"--x {x!r}: choose one of {', '.join(X_AXES)}")
    path = Path(path)
    if not path.exists():
        raise CharlstmError(f"{shown_path(path)} not found")
    if not path.is_dir() or not is_run(path):
        raise CharlstmError(
            f"{shown_path(path)} is not a run folder (no metrics.jsonl, config.json or checkpoint there)"
        )
    problems: list[str] = []
    records = read_metrics(path / "metrics.jsonl", problems)
    if not records:
        raise CharlstmError(
            f"{shown_path(path)} has no metrics to draw" + (f": {problems[0]}" if problems else " (no metrics.jsonl)")
        )
    tc = _section(_read_json(path / "config.json", problems) or {}, "train_config", problems)
    per_step = _chars_per_step(tc)
    if x != "steps" and per_step is None:
        raise CharlstmError(
            f"{shown_path(path)}: --x {x} needs the batch size and sequence length from its config.json"
        )
    minutes = _minutes_by_step(records, per_step) if x == "minutes" else {}
    at = {"steps": lambda s: s, "chars": lambda s: s * per_step, "minutes": lambda s: minutes[s]}[x]
    train = [(at(r["step"]), r["bpc"]) for r in records if _finite(r.get("bpc"))]
    val = [(at(r["step"]), r["val_bpc"]) for r in records if _finite(r.get("val_bpc"))]
    if not train and not val:
        raise CharlstmError(f"{shown_path(path)} has no finite bits per character to draw")
    return {"name": path.name, "path": str(path), "x": x, "train": train, "val": val, "problems": problems}


def newest_run(folder: str | Path) -> Path:
    rows = find_runs(folder)
    if not rows:
        raise CharlstmError(
            f"no runs in {shown_path(folder)}: train one with `charlstm train`, or name run folders to plot"
        )
    return Path(rows[-1]["path"])


def _read_json(path: Path, problems: list[str]) -> dict | None:
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"cannot read {path.name}: {getattr(exc, 'strerror', None) or exc}")
        return None
    except ValueError as exc:
        problems.append(f"{path.name} is not valid JSON ({exc})")
        return None
    if not isinstance(value, dict):
        problems.append(f"{path.name} holds a {type(value).__name__}, not an object")
        return None
    return value


def _checkpoint_problem(path: Path) -> str | None:
    """A checkpoint torch.save wrote is a zip archive; a cut-off or foreign file is not one."""
    try:
        if path.stat().st_size == 0:
            return f"{path.name} is empty"
        if not zipfile.is_zipfile(path):
            return f"{path.name} is not a whole checkpoint (cut off, or not written by torch.save)"
    except OSError as exc:
        return f"cannot read {path.name}: {exc.strerror or exc}"
    return None


def _last_change(path: Path) -> float | None:
    times = []
    for name in RUN_FILES:
        try:
            times.append(os.stat(path / name).st_mtime)
        except OSError:
            continue
    return max(times) if times else None


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
