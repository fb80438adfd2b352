"""Checkpoints: atomic writes, safe loading, and finding the run a command should use.

A checkpoint is a dict of tensors and plain Python values only (config and vocabulary as plain
containers), so it loads with ``torch.load(weights_only=True)`` and never runs pickled code.

Keys every checkpoint has: ``format``, ``version``, ``model_config`` (ModelConfig.to_dict()),
``vocab`` (list of symbols), ``model`` (state dict of the unwrapped CharRNN), ``dataset``
(Dataset.summary(): name, path, content_hash, language) and ``step``. Training adds what exact
resumption needs: ``train_config``, ``optimizer``, ``scaler``, ``data_position``,
``hidden_state`` (fp32, every lane), ``rng``, ``schedule``, ``skipped_steps``, ``precision``,
``val_bpc`` and ``best_val_bpc``. Experiment runs add ``experiment``.
"""

from __future__ import annotations

import errno
import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

from charlstm.errors import CharlstmError
from charlstm.model import CharRNN, ModelConfig
from charlstm.vocab import Vocab

FORMAT = "charlstm-checkpoint"
VERSION = 1
LATEST, BEST = "latest.pt", "best.pt"
# A run folder may carry the start of its validation split as text (the shipped model does), so
# inspection works where the dataset it was trained on is not.
VAL_EXCERPT = "val-excerpt.txt"
DEFAULT_RUNS_DIR = Path("checkpoints")
# The model that ships with the repository, used until the user has trained one of their own.
PRETRAINED_RUN = Path(__file__).resolve().parent.parent / "checkpoints" / "pretrained-python"


def default_mode(directory: bool = False) -> int:
    """The mode open() or mkdir() would give a new file or folder under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def atomic_write(path: Path, write, mode: int | None = None) -> None:
    """Call write(file_object) on a temporary file beside `path`, then rename it into place.

    A crash or a full disk at any moment leaves the previous file at `path` untouched. The file
    gets `mode`, else the mode a new file gets. For regular files only: the rename would replace a
    device or a FIFO (user-named outputs go through charlstm.userio.write_output).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # a read-only file system, no permission, a parent that is a file
        raise CharlstmError(f"could not write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(fd, default_mode() if mode is None else mode)  # mkstemp makes 0600
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise CharlstmError(f"could not write {path}: {exc.strerror or exc}") from exc
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def append_line(path: Path, line: str) -> None:
    """Append `line` to a log file in one write; if that fails (a full disk), cut the file back to
    where it was, so no torn line is left behind."""
    data = line.encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as exc:
        raise CharlstmError(f"could not write {path}: {exc.strerror or exc}") from None
    try:
        end = os.fstat(fd).st_size
        try:
            written = os.write(fd, data)
            if written < len(data):  # the disk filled up part-way: the rest fails with the reason
                written += os.write(fd, data[written:])
            if written < len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            try:
                os.ftruncate(fd, end)
            except OSError:
                pass
            raise CharlstmError(f"could not write {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


class _WriteErrorRecorder:
    """A file wrapper that remembers the OSError of a failed write.

    torch.save reports a failed write (ENOSPC) only as "unexpected pos ..."; this recovers the real cause.
    """

    def __init__(self, f):
        self._f = f
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self._f.flush()


def save_checkpoint(path: Path, payload: dict) -> None:
    payload = {"format": FORMAT, "version": VERSION, **payload}

    def write(f) -> None:
        recorder = _WriteErrorRecorder(f)
        try:
            torch.save(payload, recorder)
        except RuntimeError:
            if recorder.error is not None:
                raise recorder.error from None  # atomic_write turns it into one line
            raise

    atomic_write(Path(path), write)


ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint onto the CPU without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise CharlstmError(f"checkpoint not found: {path}")
    _check_is_zip(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CharlstmError(
            f"refusing to load {path}: it carries pickled Python objects, not just tensors and plain data"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, IndexError, KeyError, TypeError) as exc:
        raise CharlstmError(f"{path} is corrupt or not a checkpoint ({type(exc).__name__})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CharlstmError(f"{path} is not a charlstm checkpoint")
    if payload.get("version") != VERSION:
        raise CharlstmError(f"{path} has checkpoint version {payload.get('version')}, expected {VERSION}")
    return payload


def _check_is_zip(path: Path) -> None:
    """A text file, source code or random bytes is refused before torch tries to unpickle it."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(ZIP_MAGIC))
    except OSError as exc:
        raise CharlstmError(f"cannot read {path}: {exc.strerror or exc}") from None
    if head != ZIP_MAGIC:
        what = "it is empty" if not head else "not a PyTorch zip file"
        raise CharlstmError(f"{path} is not a charlstm checkpoint ({what})")


def model_from_checkpoint(payload: dict) -> tuple[CharRNN, Vocab]:
    """Rebuild the model (on the CPU, in eval mode) and its vocabulary."""
    try:
        config = ModelConfig.from_dict(payload["model_config"])
        vocab = Vocab(payload["vocab"])
        model = CharRNN(config)
        model.load_state_dict(payload["model"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise CharlstmError(f"checkpoint is missing or has mismatched model data ({exc})") from exc
    return model.eval(), vocab


def _latest_run(runs_dir: Path) -> Path | None:
    runs = [p for p in runs_dir.glob("*/") if (p / LATEST).is_file() or (p / BEST).is_file()]
    # The shipped model and the synthetic studies of `charlstm experiment` are never "your newest run".
    runs = [p for p in runs if p.resolve() != PRETRAINED_RUN and not p.name.startswith("experiment-")]
    if not runs:
        return None
    return max(runs, key=lambda p: max((p / f).stat().st_mtime for f in (LATEST, BEST) if (p / f).exists()))


def resolve_checkpoint(where: str | Path | None, runs_dir: Path = DEFAULT_RUNS_DIR) -> Path:
    """A checkpoint file from a file, a run folder, or (None) the newest run, else the shipped model."""
    if where is None:
        run = _latest_run(Path(runs_dir))
        if run is None and (PRETRAINED_RUN / BEST).is_file():
            run = PRETRAINED_RUN
        if run is None:
            raise CharlstmError(
                f"no trained runs under {runs_dir}/; train one with "
                "`charlstm ingest --name python-stdlib && charlstm train --data data/python-stdlib`"
            )
        where = run
    where = Path(where)
    if where.is_dir():
        for name in (BEST, LATEST):
            if (where / name).is_file():
                return where / name
        raise CharlstmError(f"{where} holds no {BEST} or {LATEST}")
    if not where.exists():
        raise CharlstmError(f"checkpoint not found: {where}")
    return where


# What sampling, inspection and evaluation need; the rest only serves resuming a run.
INFERENCE_KEYS = ("model_config", "vocab", "model", "dataset", "step", "val_bpc", "best_val_bpc", "precision", "train_config")


def export_for_inference(src: Path, dst: Path) -> dict:
    """Write a copy of checkpoint `src` without optimizer, RNG and lane state (about a third the size)."""
    payload = load_checkpoint(src)
    slim = {k: payload[k] for k in INFERENCE_KEYS if k in payload}
    save_checkpoint(dst, slim)
    return slim
