"""Checkpoints: atomic saving (through files.py), safe loading, finding the run a command should use,
and `open_model`, the one way every command opens a model: resolve, load, check, build on a device.

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

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .backend import resolve_device
from .errors import CharlstmError, first_line, refuse_empty, shown_path
from .files import atomic_write
from .model import CharRNN, ModelConfig, parameter_shapes
from .vocab import Vocab

FORMAT = "charlstm-checkpoint"
VERSION = 1
LATEST, BEST = "latest.pt", "best.pt"
# A run folder may carry the start of its validation split as text (the shipped model does), so
# inspection works where the dataset it was trained on is not.
VAL_EXCERPT = "val-excerpt.txt"
DEFAULT_RUNS_DIR = Path("checkpoints")
# The model that ships with the repository, used until the user has trained one of their own.
PRETRAINED_RUN = Path(__file__).resolve().parents[2] / "checkpoints" / "pretrained-python"
# The models a copy of the repository may ship, by the name `sample --model` takes.
SHIPPED_MODELS = {"python": PRETRAINED_RUN, "java": PRETRAINED_RUN.parent / "pretrained-java"}


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
    """Load a checkpoint onto the CPU without unpickling arbitrary objects.

    `map_location` puts every tensor on the CPU whatever device it was saved from (a GPU run's
    checkpoint loads on a CPU-only machine); callers move the model to their --device after.
    """
    path = Path(path)
    if not path.is_file():
        raise CharlstmError(f"checkpoint not found: {shown_path(path)}")
    _check_is_zip(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CharlstmError(
            f"refusing to load {shown_path(path)}: it carries pickled Python objects, not just tensors and plain data"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, IndexError, KeyError, TypeError) as exc:
        raise CharlstmError(f"{shown_path(path)} is corrupt or not a checkpoint ({type(exc).__name__})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CharlstmError(f"{shown_path(path)} is not a charlstm checkpoint")
    if payload.get("version") != VERSION:
        raise CharlstmError(f"{shown_path(path)} has checkpoint version {payload.get('version')}, expected {VERSION}")
    _check_fields(payload, path)
    _check_weights(payload.get("model") or {}, path)
    _check_model(payload, path)
    return payload


# The type each field must have where a checkpoint has it (None: absent), so that an edited or
# damaged file is one line here rather than an AttributeError wherever the field is read.
_NUMBER, _TEXT = (int, float), (str, type(None))
FIELD_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "model_config": ((dict,), "a dict"),
    "model": ((dict,), "a dict"),
    "vocab": ((list, tuple), "a list"),
    "dataset": ((dict, type(None)), "a dict"),
    "step": ((int,), "a whole number"),
    "train_config": ((dict,), "a dict"),
    "schedule": ((dict, type(None)), "a dict"),
    "rng": ((dict, type(None)), "a dict"),
    "init_from": ((dict, type(None)), "a dict"),
    "experiment": ((dict, type(None)), "a dict"),
    "precision": (_TEXT, "a string"),
    "val_bpc": ((*_NUMBER, type(None)), "a number"),
    "best_val_bpc": ((*_NUMBER, type(None)), "a number"),
    "skipped_steps": ((int,), "a whole number"),
    "stale_validations": ((int,), "a whole number"),
}
DATASET_FIELDS = ("name", "path", "content_hash", "language")  # Dataset.summary(): each a string or None


def _check_fields(payload: dict, path: Path) -> None:
    for key, (types, expected) in FIELD_TYPES.items():
        value = payload.get(key)
        if key in payload and (not isinstance(value, types) or isinstance(value, bool)):
            raise CharlstmError(
                f"{shown_path(path)} has a malformed {key!r} field: it should be {expected}, got {type(value).__name__}"
            )
    for key in DATASET_FIELDS:
        value = (payload.get("dataset") or {}).get(key)
        if not isinstance(value, _TEXT):
            raise CharlstmError(
                f"{shown_path(path)} has a malformed 'dataset' field: its {key!r} should be a string, "
                f"got {type(value).__name__}"
            )


def _check_weights(weights: dict, path: Path) -> None:
    """Every weight a tensor, and a finite one: NaN or inf samples nothing sensible (and int8
    quantization fails on it)."""
    for name, value in weights.items():
        if not isinstance(value, torch.Tensor):
            raise CharlstmError(
                f"{shown_path(path)} has a malformed 'model' field: {name} is a {type(value).__name__}, not a tensor"
            )
        if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all()):
            raise CharlstmError(
                f"{shown_path(path)} holds non-finite weights (NaN or inf in {name}): no use can be made of it"
            )


MODEL_INTS = ("vocab_size", "layers", "hidden", "embed")
SHOWN_MISMATCHES = 3  # a config of 100 layers over one layer's weights lists 396: the first few say enough


def _check_model(payload: dict, path: Path) -> None:
    """The weights are those its model_config and vocabulary describe, name for name and shape for
    shape: the one check every command (sample, eval, inspect, --init-from, --resume) makes, so an
    edited or mismatched file is one line rather than load_state_dict's page of differences."""
    if "model_config" not in payload or "model" not in payload:
        return  # what needs them says so (model_from_checkpoint, check_resumable)
    given = payload["model_config"]
    for key in MODEL_INTS:
        if key in given and (not isinstance(given[key], int) or isinstance(given[key], bool)):
            raise CharlstmError(
                f"{shown_path(path)} has a malformed model_config: {key} should be a whole number, got {given[key]!r}"
            )
    try:
        config = ModelConfig.from_dict(given)
    except (TypeError, CharlstmError) as exc:
        raise CharlstmError(f"{shown_path(path)} has a malformed model_config: {first_line(exc)}") from None
    if "vocab" in payload:
        try:
            Vocab(payload["vocab"])
        except CharlstmError as exc:
            raise CharlstmError(f"{shown_path(path)}: {exc}") from None
    if "vocab" in payload and len(payload["vocab"]) != config.vocab_size:
        raise CharlstmError(
            f"{shown_path(path)}: its vocabulary has {len(payload['vocab'])} symbols but its model_config "
            f"{config.vocab_size} (one output per symbol)"
        )
    expected = parameter_shapes(config)  # no memory, however large the config claims to be
    found = {k: tuple(v.shape) for k, v in payload["model"].items()}
    problems = [f"{k} missing" for k in expected if k not in found]
    problems += [
        f"{k} is {list(found[k])}, expected {list(s)}" for k, s in expected.items() if k in found and found[k] != s
    ]
    problems += [f"{k} unexpected" for k in found if k not in expected]
    if problems:
        more = f" and {len(problems) - SHOWN_MISMATCHES} more" if len(problems) > SHOWN_MISMATCHES else ""
        raise CharlstmError(
            f"{shown_path(path)}: its weights do not match its model_config "
            f"({config.kind} {config.layers}×{config.hidden}, "
            f"embed {config.embed}, {config.vocab_size} symbols): {'; '.join(problems[:SHOWN_MISMATCHES])}{more}"
        )


def _check_is_zip(path: Path) -> None:
    """A text file, source code or random bytes is refused before torch tries to unpickle it."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(ZIP_MAGIC))
    except OSError as exc:
        raise CharlstmError(f"cannot read {shown_path(path)}: {exc.strerror or exc}") from None
    if head != ZIP_MAGIC:
        what = "it is empty" if not head else "not a PyTorch zip file"
        raise CharlstmError(f"{shown_path(path)} is not a charlstm checkpoint ({what})")


def model_from_checkpoint(payload: dict) -> tuple[CharRNN, Vocab]:
    """Rebuild the model (on the CPU, in eval mode) and its vocabulary."""
    try:
        config = ModelConfig.from_dict(payload["model_config"])
        vocab = Vocab(payload["vocab"])
        model = CharRNN(config)
        model.load_state_dict(payload["model"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise CharlstmError(f"checkpoint is missing or has mismatched model data ({exc})") from exc
    if len(vocab) != config.vocab_size:  # each output row of the model is one symbol of the vocabulary
        raise CharlstmError(
            f"checkpoint's vocabulary has {len(vocab)} symbols but its model has {config.vocab_size} outputs"
        )
    return model.eval(), vocab


def _latest_run(runs_dir: Path) -> Path | None:
    runs = [p for p in runs_dir.glob("*/") if (p / LATEST).is_file() or (p / BEST).is_file()]
    # The shipped models and the synthetic studies of `charlstm experiment` are never "your newest run".
    shipped = set(SHIPPED_MODELS.values())
    runs = [p for p in runs if p.resolve() not in shipped and not p.name.startswith("experiment-")]
    if not runs:
        return None
    return max(runs, key=lambda p: max((p / f).stat().st_mtime for f in (LATEST, BEST) if (p / f).exists()))


def resolve_checkpoint(where: str | Path | None, runs_dir: Path = DEFAULT_RUNS_DIR) -> Path:
    """A checkpoint file from a file, a run folder, or (None) the newest run, else the shipped model."""
    refuse_empty(where, "CHECKPOINT", "a checkpoint file or run folder, or leave it out for the newest run")
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
        raise CharlstmError(f"{shown_path(where)} holds no {BEST} or {LATEST}")
    if not where.exists():
        raise CharlstmError(f"checkpoint not found: {shown_path(where)}")
    return where


def shipped_models() -> list[str]:
    """Names of the shipped models this copy holds."""
    return [name for name, run in SHIPPED_MODELS.items() if (run / BEST).is_file()]


def resolve_model(name: str) -> Path:
    """`--model`: a shipped model by name (python, java), else a run folder or checkpoint file."""
    shipped = ", ".join(shipped_models()) or "none"
    refuse_empty(name, "--model", f"a shipped model ({shipped}), a run folder or a checkpoint file")
    if name in SHIPPED_MODELS:
        if not (SHIPPED_MODELS[name] / BEST).is_file():
            raise CharlstmError(
                f"model {name!r} is not shipped in this copy ({SHIPPED_MODELS[name]} holds no {BEST}); "
                f"shipped: {shipped}"
            )
        return SHIPPED_MODELS[name]
    if Path(name).exists():
        return Path(name)
    raise CharlstmError(
        f"unknown model {name!r}: shipped models are {shipped}; or give a run folder or checkpoint file"
    )


@dataclass
class OpenedModel:
    """A checkpoint opened for use: where it was found, what it holds, and its model on a device."""

    path: Path  # the checkpoint file `where` resolved to
    payload: dict  # what load_checkpoint returned (step, dataset, precision, ...)
    model: CharRNN  # on `device`, in eval mode
    vocab: Vocab
    device: torch.device

    @property
    def language(self) -> str | None:
        """The corpus's language, as ingest recorded it (None: unknown)."""
        return (self.payload.get("dataset") or {}).get("language")


def open_model(where: str | Path | None, device: str | torch.device = "cpu") -> OpenedModel:
    """The model a command works with: `where` is a checkpoint file, a run folder, or None (the
    newest run, else the shipped model; `resolve_model` turns a shipped model's name into its
    folder first). `device` is a --device name (auto included, checked before the slow load) or a
    torch device a command chose by its own rule (sampling's). The checkpoint loads onto the CPU,
    is checked, and its model is built there and moved to the device."""
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    path = resolve_checkpoint(where)
    payload = load_checkpoint(path)
    model, vocab = model_from_checkpoint(payload)
    return OpenedModel(path, payload, model.to(dev), vocab, dev)


# What sampling, inspection and evaluation need; the rest only serves resuming a run.
INFERENCE_KEYS = (
    "model_config",
    "vocab",
    "model",
    "dataset",
    "step",
    "val_bpc",
    "best_val_bpc",
    "precision",
    "train_config",
)


def export_for_inference(src: Path, dst: Path, half: bool = False) -> dict:
    """Write a copy of checkpoint `src` without optimizer, RNG and lane state (about a third the size);
    `half` stores the weights in float16 (half again: loading casts them back to the model's float32)."""
    payload = load_checkpoint(src)
    slim = {k: payload[k] for k in INFERENCE_KEYS if k in payload}
    if half:
        slim["model"] = {k: v.half() if v.is_floating_point() else v for k, v in slim["model"].items()}
    save_checkpoint(dst, slim)
    return slim
