"""Reading an ingested dataset: `meta.json` plus memory-mapped `train.bin` / `val.bin`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core import lock
from ..core.errors import CharlstmError, shown_path
from ..core.files import default_mode
from ..core.vocab import Vocab

FORMAT = "charlstm-dataset"
VERSION = 1
SPLITS = ("train", "val")
MAX_VOCAB = 65536  # token ids are stored as uint16 at most
ID_CHECK_CHUNK = 1 << 24  # tokens per np.max when checking ids on load


@dataclass
class Dataset:
    path: Path
    meta: dict
    vocab: Vocab

    @property
    def name(self) -> str:
        return self.meta.get("name", self.path.name)

    @property
    def language(self) -> str | None:
        """A Pygments lexer name for the corpus's main language, when known."""
        return self.meta.get("language")

    def tokens(self, split: str) -> np.memmap:
        """The split's token ids, memory-mapped (never read whole into RAM)."""
        if split not in SPLITS:
            raise CharlstmError(f"unknown split {split!r}")
        n = int(self.meta[f"{split}_chars"])
        if n == 0:
            return np.zeros(0, dtype=self.vocab.dtype)  # np.memmap refuses empty files
        return np.memmap(self.path / f"{split}.bin", dtype=self.vocab.dtype, mode="r", shape=(n,))

    def summary(self) -> dict:
        """What a checkpoint records about the data it was trained on."""
        return {
            "name": self.name,
            "path": os.path.abspath(self.path),  # absolute: eval and --resume find it from any folder
            "content_hash": self.meta.get("content_hash"),
            "language": self.language,
        }


def load_dataset(path: str | Path) -> Dataset:
    """Open `data/NAME/`, checking format and file sizes before anything trusts it."""
    path = Path(path)
    meta_path = path / "meta.json"
    if not path.is_dir():
        raise CharlstmError(
            f"dataset not found: {shown_path(path)} (create it with `charlstm ingest --name {path.name}`)"
        )
    if not meta_path.is_file():
        raise CharlstmError(f"{shown_path(path)} is not a dataset: no meta.json (ingest again with --force)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CharlstmError(f"{shown_path(meta_path)} is unreadable or corrupt: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CharlstmError(f"{shown_path(path)} is not a charlstm dataset (wrong format in meta.json)")
    if meta.get("version") != VERSION:
        raise CharlstmError(
            f"{shown_path(path)} has dataset version {meta.get('version')}, expected {VERSION}; ingest again"
        )
    _check_meta_fields(meta, meta_path)
    try:
        vocab = _vocab(meta, meta_path)
        for split in SPLITS:
            n = int(meta[f"{split}_chars"])
            f = path / f"{split}.bin"
            size = f.stat().st_size if f.exists() else -1
            if size != n * vocab.dtype.itemsize:
                raise CharlstmError(
                    f"{f} is missing or has the wrong size "
                    f"({size} bytes, expected {n * vocab.dtype.itemsize}); ingest again"
                )
    except (KeyError, TypeError, ValueError) as exc:
        raise CharlstmError(f"{shown_path(meta_path)} is missing fields ({exc}); ingest again") from exc
    dataset = Dataset(path=path, meta=meta, vocab=vocab)
    _check_token_ids(dataset, meta_path)
    return dataset


def _check_meta_fields(meta: dict, meta_path: Path) -> None:
    """Counts that are whole numbers of 0 or more, and names that are text: an edited meta.json is
    refused when the dataset is opened, not later (a train_chars of -1 matched a missing file's size
    of -1; a language of 123 went into checkpoints that sample then refused)."""
    for split in SPLITS:
        n = meta.get(f"{split}_chars")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise CharlstmError(
                f"{shown_path(meta_path)}: {split}_chars should be a whole number of 0 or more, got {n!r}; ingest again"
            )
    for key in ("name", "language", "content_hash"):
        if not isinstance(meta.get(key), (str, type(None))):
            raise CharlstmError(f"{shown_path(meta_path)}: {key} should be a string, got {meta[key]!r}; ingest again")


def _vocab(meta: dict, meta_path: Path) -> Vocab:
    """meta.json's vocabulary, checked: distinct single characters, as many as its dtype holds."""
    symbols = meta["vocab"]
    if not isinstance(symbols, list):
        raise CharlstmError(f"{shown_path(meta_path)}: vocab must be a list of characters; ingest again")
    if len(symbols) > MAX_VOCAB:
        raise CharlstmError(
            f"{shown_path(meta_path)}: vocab has {len(symbols):,} symbols, more than {MAX_VOCAB:,}; ingest again"
        )
    try:
        vocab = Vocab(symbols)
    except CharlstmError as exc:
        raise CharlstmError(f"{shown_path(meta_path)}: {exc}; ingest again") from None
    if "dtype" in meta and meta["dtype"] != vocab.dtype.name:
        raise CharlstmError(
            f"{shown_path(meta_path)}: dtype {meta['dtype']} does not match a vocabulary of {len(vocab)} symbols "
            f"({vocab.dtype.name}); was the vocab edited? ingest again"
        )
    return vocab


def _check_token_ids(dataset: Dataset, meta_path: Path) -> None:
    """Every id in the data must name a symbol of the vocabulary (a shortened vocab would not).

    One pass over each split in chunks, never the whole file in RAM."""
    size = len(dataset.vocab)
    for split in SPLITS:
        tokens = dataset.tokens(split)
        for start in range(0, len(tokens), ID_CHECK_CHUNK):
            largest = int(np.max(tokens[start : start + ID_CHECK_CHUNK]))
            if largest >= size:
                raise CharlstmError(
                    f"{dataset.path / (split + '.bin')} holds token id {largest}, "
                    f"but {shown_path(meta_path)} lists only "
                    f"{size} symbols (was the vocab edited?); ingest again"
                )


def reading(path: str | Path):
    """Hold dataset `path` for reading (a training run), so that `ingest --force` cannot replace it
    meanwhile: a shared hold on the lock file ingest owns while it writes that name."""
    path = Path(os.path.abspath(path))
    return lock.share(path.parent / f".{path.name}.lock", f"dataset {path}")


def check_same_data(dataset: Dataset, recorded: dict | None, checkpoint: str | Path, allow: bool) -> str | None:
    """A resumed run must read the data it recorded: other data (a dataset ingested again over the
    same name) silently breaks exact resumption and mixes validation files into training. With
    `allow`, returns a warning saying what changes instead of refusing."""
    old = (recorded or {}).get("content_hash")
    new = dataset.meta.get("content_hash")
    if old is None or new is None or old == new:
        return None
    what = (
        f"{dataset.path} is not the data {checkpoint} was trained on (content hash {old[:12]}…, now "
        f"{new[:12]}…; ingested again?)"
    )
    if not allow:
        raise CharlstmError(
            f"{what}: resuming on it loses exact resumption and an honest validation split; "
            f"give the original data, or --new-data to continue on this one anyway"
        )
    return (
        f"{what}: continuing on it (--new-data); the step and schedule carry on, "
        "the batches and validation split are the new data's"
    )


def locate_recorded_dataset(recorded: str | Path, checkpoint: str | Path) -> Path:
    """The dataset folder a checkpoint recorded. Absolute paths are taken as they are; an older
    checkpoint's relative one is tried from the current folder, then from the checkpoint's run
    folder and each folder above it (`checkpoints/RUN/` sits beside `data/`)."""
    path = Path(recorded)
    if path.is_absolute() or (path / "meta.json").is_file():
        return path
    run_dir = Path(os.path.abspath(checkpoint)).parent
    for base in (run_dir, *run_dir.parents):
        if (base / path / "meta.json").is_file():
            return base / path
    return path


def write_dataset(path: str | Path, vocab: Vocab, train_ids: np.ndarray, val_ids: np.ndarray, meta: dict) -> Dataset:
    """Write a small dataset whole (tests, synthetic data); `charlstm ingest` streams instead.

    The folder appears only once complete: written beside it, then renamed into place.
    """
    import hashlib
    import os
    import shutil
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    os.chmod(tmp, default_mode(directory=True))  # mkdtemp makes 0700
    try:
        digest = hashlib.sha256()
        for split, ids in (("train", train_ids), ("val", val_ids)):
            data = np.asarray(ids, dtype=vocab.dtype).tobytes()
            digest.update(data)
            (tmp / f"{split}.bin").write_bytes(data)
        full_meta = {
            "format": FORMAT,
            "version": VERSION,
            "name": path.name,
            "vocab": vocab.symbols,
            "dtype": vocab.dtype.name,
            "train_chars": int(len(train_ids)),
            "val_chars": int(len(val_ids)),
            "content_hash": digest.hexdigest(),
            **meta,
        }
        (tmp / "meta.json").write_text(json.dumps(full_meta, ensure_ascii=False, indent=1), encoding="utf-8")
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_dataset(path)
