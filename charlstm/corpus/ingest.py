"""Corpus ingestion: source code in, a `charlstm-dataset` out (`train.bin`, `val.bin`, `meta.json`).

The pipeline keeps memory bounded by a small multiple of the largest file, never of the corpus:

1. discover    walk every SOURCE (directory, file, archive, git clone) into candidate files, filtering by
               folder, extension, size and symlink from metadata alone (sources.py);
2. read        per candidate: reject empty, binary, duplicate and undecodable files, decode UTF-8,
               normalise newlines, count characters, and append DOC_SEP + the text's code points
               (uint32) to a scratch stream on disk;
3. vocabulary  from the code-point counts gathered while reading: every character seen at least
               `min_char_count` times, in code-point order (`Vocab.from_counts`);
4. split       whole files go to validation, in a seeded pseudo-random order, up to `val_fraction` of
               the characters, so validation measures unseen files;
5. write       map each file's code points to token ids through a lookup table and append them to
               train.bin / val.bin; meta.json last.

Everything is written inside a hidden work folder beside `data/NAME` and renamed into place only when
complete, so an interrupted or failed ingest leaves nothing that `load_dataset` would accept.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections import Counter
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..core import lock
from ..core.config import Preset
from ..core.errors import CharlstmError, shown_path
from ..core.events import Listener, Progress, ignore
from ..core.userio import decode_source
from ..core.vocab import DOC_SEP, Vocab
from .dataset import FORMAT, VERSION, load_dataset
from .sources import (
    Candidate,
    Discovery,
    Source,
    discover,
    file_extension,
    language_for_extension,
    normalize_extensions,
    one_line,
    resolve_sources,
)

# A file is "not UTF-8" (skipped) above this fraction of invalid bytes; below it, each invalid sequence
# becomes U+FFFD (the UNK symbol) and is counted. One stray Latin-1 comment should not cost a file.
MAX_INVALID_FRACTION = 0.01
# Above this share of unknown symbols ingest warns: a model learns nothing from them. Files kept
# have at most MAX_INVALID_FRACTION invalid bytes, so it takes --min-char-count to pass it.
UNK_WARN_RATE = 0.01
MAX_CODE_POINT = 0x110000


def validate_name(name: str | None) -> str:
    if name is None or not name.strip():
        raise CharlstmError("a dataset name is required: --name NAME (or use a --preset)")
    if "/" in name or "\\" in name or os.sep in name or name in (".", "..") or name.startswith(".") or "\0" in name:
        raise CharlstmError(
            f"invalid dataset name {name!r}: use a plain folder name without path separators or a leading dot"
        )
    return name


@dataclass(frozen=True)
class Settings:
    """What shapes the dataset's content; meta.json records each of them. Checked when made."""

    name: str
    extensions: frozenset[str] | None = None  # --ext; None: each source's own set
    max_file_bytes: int = 1_000_000
    min_char_count: int = 1
    val_fraction: float = 0.05
    seed: int = 0

    def __post_init__(self):
        if self.max_file_bytes <= 0:
            raise CharlstmError("--max-file-bytes must be positive")
        if self.min_char_count < 1:
            raise CharlstmError("--min-char-count must be at least 1")
        if not 0.0 < self.val_fraction < 1.0:
            raise CharlstmError("--val-fraction must be between 0 and 1 (exclusive)")


@dataclass
class _Kept:
    entry: dict
    offset: int  # in bytes, in the scratch stream
    width: int  # bytes per code point there: 1 for ASCII files, else 4
    chars: int  # tokens in the dataset: the text's characters plus the DOC_SEP before them
    order_key: bytes


@dataclass
class _Pass1:
    """What reading gathered: the kept files' places in the scratch stream, and every code point's count."""

    kept: list[_Kept] = field(default_factory=list)
    counts: np.ndarray = field(default_factory=lambda: np.zeros(MAX_CODE_POINT, dtype=np.int64))  # DOC_SEP included
    bytes_read: int = 0
    invalid_bytes: int = 0
    total_chars: int = 0
    offset: int = 0  # the scratch stream's length in bytes

    def append(self, out, codes: np.ndarray, entry: dict, order_key: bytes) -> None:
        """Count `codes` and write them to the scratch stream `out` (ASCII one byte wide, else four)."""
        if codes.dtype == np.uint8:
            self.counts[:128] += np.bincount(codes, minlength=128)
        else:
            present, n = np.unique(codes, return_counts=True)
            self.counts[present] += n
            if self.offset % 4:
                out.write(bytes(4 - self.offset % 4))  # keep uint32 runs aligned in the scratch stream
                self.offset += 4 - self.offset % 4
        self.counts[ord(DOC_SEP)] += 1  # written before each file in pass 3
        out.write(codes.data)
        chars = len(codes) + 1
        entry["chars"] = chars
        self.kept.append(_Kept(entry, self.offset, codes.itemsize, chars, order_key))
        self.offset += codes.nbytes
        self.total_chars += chars
        self.invalid_bytes += entry.get("invalid_bytes", 0)


def ingest(
    sources: list[str] | None = None,
    name: str | None = None,
    *,
    preset: str | None = None,
    extensions: list[str] | None = None,
    data_dir: str | Path = "data",
    max_file_bytes: int = 1_000_000,
    min_char_count: int = 1,
    val_fraction: float = 0.05,
    seed: int = 0,
    force: bool = False,
    on_event: Listener | None = None,
) -> dict:
    """Build `data_dir/name/` from the sources; return the summary (what `--json` prints).
    `on_event` hears the reading's progress, in bytes (events.Progress)."""
    start = time.perf_counter()
    sources = list(sources or [])
    if not sources and not preset:
        preset = Preset.python_stdlib.value
    if preset is not None:
        try:
            preset = Preset(preset).value
        except ValueError:
            raise CharlstmError(
                f"unknown preset {preset!r} (choose from {', '.join(p.value for p in Preset)})"
            ) from None
    settings = Settings(
        name=validate_name(name or preset),
        extensions=normalize_extensions(extensions),
        max_file_bytes=max_file_bytes,
        min_char_count=min_char_count,
        val_fraction=val_fraction,
        seed=seed,
    )

    data_dir = Path(data_dir)
    target = data_dir / settings.name
    # One ingest of a name at a time, from the existence check through the final rename.
    name_lock = lock.acquire(data_dir / f".{settings.name}.lock", f"dataset {target}")
    try:
        _check_target(target, force)
        work = Path(tempfile.mkdtemp(prefix=f".{settings.name}.ingest-", dir=data_dir))
    except BaseException as exc:
        name_lock.release()
        if isinstance(exc, OSError):
            raise CharlstmError(f"cannot write to {shown_path(data_dir)}: {exc.strerror or exc}") from None
        raise
    try:
        (work / "scratch").mkdir()
        (work / "dataset").mkdir()
        resolved = resolve_sources(sources, preset, work / "scratch")
        with ExitStack() as archives:  # open until their members have been read
            found = discover(resolved, settings.extensions, archives)
            with _write_errors(data_dir):
                read = _read_all(found, work / "scratch" / "codepoints", settings, on_event or ignore)
        if not read.kept:
            raise CharlstmError(_nothing_to_ingest(resolved, found))
        with _write_errors(data_dir):
            report = _write_dataset(work, found, read, resolved, settings)
        _install(work / "dataset", target, work)
        load_dataset(target)  # the same checks every later command makes
    finally:
        shutil.rmtree(work, ignore_errors=True)
        name_lock.release()
    seconds = time.perf_counter() - start
    report["seconds"] = round(seconds, 3)
    report["mb_per_s"] = round(report["bytes_read"] / 1e6 / max(seconds, 1e-9), 2)
    return report


@contextmanager
def _write_errors(data_dir: Path):
    """A failed write of the scratch stream or the dataset files (a full disk, a quota) as one line.

    Sources' read errors are caught per file before this; what is left is our own writing.
    """
    try:
        yield
    except OSError as exc:
        raise CharlstmError(f"cannot write the dataset in {shown_path(data_dir)}: {exc.strerror or exc}") from None


def _check_target(target: Path, force: bool) -> None:
    if not os.path.lexists(target):
        return
    if not force:
        raise CharlstmError(f"dataset {shown_path(target)} already exists (use --force to replace it)")
    if not target.is_dir() or target.is_symlink() or not (target / "meta.json").is_file() and any(target.iterdir()):
        raise CharlstmError(
            f"{shown_path(target)} exists and is not a charlstm dataset; not replacing it, even with --force"
        )


def _install(built: Path, target: Path, work: Path) -> None:
    """Rename the finished folder into place; a replaced dataset is removed only after that."""
    old = None
    if os.path.lexists(target):
        old = work / "replaced"
        os.replace(target, old)
    try:
        os.replace(built, target)
    except BaseException as exc:  # including Ctrl-C: put the previous dataset back
        if old is not None:
            os.replace(old, target)
        if isinstance(exc, OSError):
            raise CharlstmError(f"cannot create {shown_path(target)}: {exc.strerror or exc}") from None
        raise


def _read_all(found: Discovery, scratch_path: Path, settings: Settings, on_event: Listener) -> _Pass1:
    """Pass 1: filter, decode and append each file's code points to the scratch stream."""
    read = _Pass1()
    seen: dict[bytes, str] = {}  # content digest → the first path that had it
    limit = settings.max_file_bytes
    total = sum(min(c.size, limit + 1) for c in found.candidates)
    done = 0
    on_event(Progress("reading", done, total, "B"))
    try:
        with open(scratch_path, "wb", buffering=1 << 20) as out:
            for cand in found.candidates:
                entry = {"source": cand.source, "path": cand.path, "size": cand.size}
                found.entries.append(entry)
                data = _fetch(cand, entry, limit)
                done += min(cand.size, limit + 1)
                on_event(Progress("reading", done, total, "B"))
                if data is None:
                    continue
                read.bytes_read += len(data)
                entry["size"] = len(data)
                if not _screen(data, entry, limit, seen):
                    continue
                codes = _code_points(data, entry)
                if codes is not None:
                    key = hashlib.sha256(f"{settings.seed}\0{cand.path}".encode("utf-8", "surrogateescape")).digest()
                    read.append(out, codes, entry, key)
    finally:
        on_event(Progress("reading", done, total, "B", finished=True))
    return read


def _fetch(cand: Candidate, entry: dict, max_file_bytes: int) -> bytes | None:
    """The candidate's bytes, or None with the reason in `entry`; a corrupt archive member stops the ingest."""
    if cand.size > max_file_bytes:
        entry["reason"] = "too-large"
        return None
    try:
        return cand.read()
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as exc:
        raise CharlstmError(f"corrupt archive member {cand.path} ({one_line(exc)})") from None
    except OSError as exc:
        entry["reason"], entry["error"] = "unreadable", exc.strerror or str(exc)
        return None


def _screen(data: bytes, entry: dict, max_file_bytes: int, seen: dict[bytes, str]) -> bool:
    """Whether the bytes are worth decoding; if not, why, in `entry`. Remembers each new content in `seen`."""
    if len(data) > max_file_bytes:  # it grew since it was listed
        entry["reason"] = "too-large"
    elif not data:
        entry["reason"] = "empty"
    elif b"\0" in data:
        entry["reason"] = "binary"
    else:
        digest = hashlib.sha256(data).digest()
        if digest in seen:
            entry["reason"], entry["duplicate_of"] = "duplicate", seen[digest]
        else:
            seen[digest] = entry["path"]
            return True
    return False


def _code_points(data: bytes, entry: dict) -> np.ndarray | None:
    """The text's code points (uint8 for plain ASCII, else uint32), or None with the reason in `entry`."""
    if data.isascii() and b"\r" not in data and b"\x1c" not in data:
        # Most source files: the bytes already are the code points, with nothing to decode or fix.
        return np.frombuffer(data, dtype=np.uint8)
    text, invalid = decode_source(data)
    if invalid > MAX_INVALID_FRACTION * len(data):
        entry["reason"], entry["invalid_bytes"] = "not-utf8", invalid
        return None
    if not text:  # a file that held only a byte-order mark
        entry["reason"] = "empty"
        return None
    if invalid:
        entry["invalid_bytes"] = invalid
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def _nothing_to_ingest(sources: list[Source], found: Discovery) -> str:
    where = ", ".join(s.label for s in sources)
    if not found.entries:
        return f"nothing to ingest: no files in {where}"
    reasons = Counter(e["reason"] for e in found.entries if "reason" in e)
    detail = ", ".join(f"{r}: {n}" for r, n in reasons.most_common())
    hint = " (try --ext)" if reasons.get("extension") else ""
    return f"nothing to ingest in {where}: every file was skipped ({detail}){hint}"


def _split(kept: list[_Kept], val_fraction: float) -> None:
    """Whole files to validation, in seeded hash order, without passing val_fraction of the characters."""
    for k in kept:
        k.entry["split"] = "train"
    if len(kept) < 2:
        return
    total = sum(k.chars for k in kept)
    budget = val_fraction * total
    order = sorted(range(len(kept)), key=lambda i: kept[i].order_key)
    val_chars = 0
    for i in order:
        if val_chars + kept[i].chars <= budget:
            kept[i].entry["split"] = "val"
            val_chars += kept[i].chars
    if val_chars == 0:  # every file is bigger than the budget: validate on the smallest one
        smallest = min(order, key=lambda i: kept[i].chars)
        kept[smallest].entry["split"] = "val"


def _vocabulary(read: _Pass1, min_char_count: int) -> tuple[Vocab, np.ndarray, list[int]]:
    """Pass 2: the vocabulary, a code point → id lookup table, and each symbol's count (UNK's gathers the rare)."""
    counts = read.counts
    vocab = Vocab.from_counts({chr(cp): int(counts[cp]) for cp in np.flatnonzero(counts)}, min_count=min_char_count)
    if len(vocab) > np.iinfo(np.uint16).max + 1:
        raise CharlstmError(f"the corpus has {len(vocab)} distinct characters, more than 65536; raise --min-char-count")
    lookup = np.full(MAX_CODE_POINT, vocab.unk, dtype=vocab.dtype)
    for i, symbol in enumerate(vocab.symbols):
        lookup[ord(symbol)] = i
    vocab_counts = [int(counts[ord(s)]) for s in vocab.symbols]
    vocab_counts[vocab.unk] = int(read.total_chars - sum(vocab_counts) + vocab_counts[vocab.unk])
    return vocab, lookup, vocab_counts


def _write_splits(scratch_path: Path, out_dir: Path, kept: list[_Kept], vocab: Vocab, lookup: np.ndarray):
    """Pass 3: each file's ids, after a DOC_SEP, into train.bin or val.bin; return their lengths and content hash."""
    size = scratch_path.stat().st_size
    scratch = np.memmap(scratch_path, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
    digest = hashlib.sha256()  # over train.bin then val.bin, as dataset.write_dataset computes it
    separator = np.array([vocab.doc_sep], dtype=vocab.dtype).tobytes()
    split_chars = {}
    for split in ("train", "val"):
        n = 0
        with open(out_dir / f"{split}.bin", "wb", buffering=1 << 20) as out:
            for k in kept:
                if k.entry["split"] == split:
                    codes = scratch[k.offset : k.offset + (k.chars - 1) * k.width]
                    data = lookup[codes.view(np.uint32) if k.width == 4 else codes].tobytes()
                    for chunk in (separator, data):
                        digest.update(chunk)
                        out.write(chunk)
                    n += k.chars
        split_chars[split] = n
    del scratch  # the memory map closes before the work folder is removed
    return split_chars, digest.hexdigest()


def _extension_stats(kept: list[_Kept]) -> dict[str, dict]:
    """Files and characters per extension, most characters first."""
    stats: dict[str, dict] = {}
    for k in kept:
        s = stats.setdefault(file_extension(k.entry["path"]) or "(none)", {"files": 0, "chars": 0})
        s["files"] += 1
        s["chars"] += k.chars
    return dict(sorted(stats.items(), key=lambda kv: -kv[1]["chars"]))


def _write_dataset(work: Path, found: Discovery, read: _Pass1, sources: list[Source], settings: Settings) -> dict:
    """Passes 2 and 3: vocabulary from counts, split, then ids into train.bin / val.bin and meta.json."""
    kept = read.kept
    vocab, lookup, vocab_counts = _vocabulary(read, settings.min_char_count)
    _split(kept, settings.val_fraction)
    out_dir = work / "dataset"
    split_chars, content_hash = _write_splits(work / "scratch" / "codepoints", out_dir, kept, vocab, lookup)
    ext_stats = _extension_stats(kept)
    dominant = next(iter(ext_stats))
    skipped = dict(Counter(e["reason"] for e in found.entries if "reason" in e).most_common())
    language = language_for_extension(dominant) if dominant != "(none)" else None
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "name": settings.name,
        "vocab": vocab.symbols,
        "vocab_counts": vocab_counts,
        "dtype": vocab.dtype.name,
        "train_chars": split_chars["train"],
        "val_chars": split_chars["val"],
        "content_hash": content_hash,
        "language": language,
        "sources": [s.describe() for s in sources],
        "extensions": ext_stats,
        "min_char_count": settings.min_char_count,
        "val_fraction": settings.val_fraction,
        "seed": settings.seed,
        "ext_filter": sorted(settings.extensions) if settings.extensions else None,
        "unk_count": vocab_counts[vocab.unk],
        "invalid_bytes": read.invalid_bytes,
        "files_kept": len(kept),
        "files_skipped": skipped,
        "files": sorted(found.entries, key=lambda e: (e["source"], e["path"])),
        "charlstm_version": __version__,
    }
    (out_dir / "meta.json").write_text(_meta_json(meta), encoding="utf-8")
    warnings = []
    if split_chars["val"] == 0:
        warnings.append("only one file was kept, so the validation split is empty; add more files to validate")
    unk_rate = vocab_counts[vocab.unk] / read.total_chars
    if unk_rate > UNK_WARN_RATE:
        warnings.append(_unknown_warning(unk_rate, settings.min_char_count))
    return {
        "name": settings.name,
        "path": str(work.parent / settings.name),
        "files_kept": len(kept),
        "files_skipped": skipped,
        "train_files": sum(k.entry["split"] == "train" for k in kept),
        "val_files": sum(k.entry["split"] == "val" for k in kept),
        "train_chars": split_chars["train"],
        "val_chars": split_chars["val"],
        "vocab_size": len(vocab),
        "dtype": vocab.dtype.name,
        "unk_rate": unk_rate,
        "invalid_bytes": read.invalid_bytes,
        "language": language,
        "bytes_read": read.bytes_read,
        "content_hash": content_hash,
        "warnings": warnings,
    }


def _unknown_warning(unk_rate: float, min_char_count: int) -> str:
    cause = (
        f"--min-char-count {min_char_count} maps every character seen fewer times to it; lower it"
        if min_char_count > 1
        else "invalid UTF-8 bytes and U+FFFD characters in the files"
    )
    return (
        f"{unk_rate:.2%} of the characters are the unknown symbol (this warns above {UNK_WARN_RATE:.0%}), "
        f"and a model learns nothing from them: {cause}"
    )


def _meta_json(meta: dict) -> str:
    """One line per key and one per file: readable, and written by json's C encoder (indent= is pure Python)."""
    lines = []
    for key, value in meta.items():
        if key == "files":
            # ASCII escapes: file names that are not valid UTF-8 carry surrogates that UTF-8 cannot write.
            files = ",\n  ".join(json.dumps(entry) for entry in value)
            lines.append(f'"files": [\n  {files}\n ]')
        else:
            lines.append(f"{json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}")
    return "{\n " + ",\n ".join(lines) + "\n}\n"
