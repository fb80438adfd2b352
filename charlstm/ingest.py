"""Corpus ingestion: source code in, a `charlstm-dataset` out (`train.bin`, `val.bin`, `meta.json`).

The pipeline keeps memory bounded by a small multiple of the largest file, never of the corpus:

1. discover    walk every SOURCE (directory, file, archive, git clone) into candidate files, filtering by
               folder, extension, size and symlink from metadata alone;
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
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path

import numpy as np

from charlstm import __version__, lock
from charlstm.config import Preset
from charlstm.dataset import FORMAT, VERSION, load_dataset
from charlstm.errors import CharlstmError
from charlstm.userio import decode_source
from charlstm.vocab import DOC_SEP, Vocab

# Common source-code extensions, used for plain directories when no --ext is given. Prose and data
# formats (.md, .txt, .json, .csv) are left out: the model is meant to learn code.
SOURCE_EXTENSIONS = frozenset(
    ".py .pyi .pyx .java .kt .kts .scala .groovy .c .h .cc .cpp .cxx .hh .hpp .hxx .inl .cu .cuh .m .mm "
    ".go .rs .js .jsx .mjs .ts .tsx .rb .php .cs .fs .swift .dart .lua .pl .pm .r .jl .hs .ml .mli .ex .exs "
    ".erl .clj .el .lisp .scm .sh .bash .zsh .sql .proto .zig .nim .v .sv .vhd .f90 .f .asm .s".split()
)
# Version control, vendored dependencies, build outputs and caches: never someone's own source code.
EXCLUDED_FOLDERS = frozenset(
    ".git .hg .svn .bzr CVS node_modules bower_components vendor third_party build dist target out "
    "__pycache__ .venv .tox .nox .mypy_cache .pytest_cache .gradle .idea .vscode .eggs".split()
)
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
# A file is "not UTF-8" (skipped) above this fraction of invalid bytes; below it, each invalid sequence
# becomes U+FFFD (the UNK symbol) and is counted. One stray Latin-1 comment should not cost a file.
MAX_INVALID_FRACTION = 0.01
CLONE_TIMEOUT_S = 900
MAX_CODE_POINT = 0x110000
_WORK_FOLDER = re.compile(r"^\..+\.ingest-")  # an ingest in progress (ours, when --data-dir lies inside a SOURCE)
_GIT_URL = re.compile(r"^[a-z][a-z0-9+.-]*://|^[\w.-]+@[\w.-]+:", re.IGNORECASE)


# The standard library's own tests are left out of the python-stdlib preset: they are about 3/4 of its
# bytes, mostly assertion tables and data, and include deliberately broken files (bad encodings). IDLE and
# turtledemo stay in: they are ordinary application code.
STDLIB_EXCLUDED = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test"})


# ----------------------------------------------------------------------------------------- sources


@dataclass
class Source:
    """One SOURCE argument, resolved to something readable."""

    label: str  # what the user gave (path, URL or preset name)
    kind: str  # directory | file | archive | git
    path: Path  # directory, file or archive on disk (for git: the clone)
    exclude: frozenset[str] = EXCLUDED_FOLDERS
    extensions: frozenset[str] | None = None  # None: the run's extension set
    commit: str | None = None

    def describe(self) -> dict:
        info = {"source": self.label, "kind": self.kind}
        if self.kind != "git":
            info["path"] = str(self.path)
        if self.commit:
            info["commit"] = self.commit
        return info


@dataclass
class Candidate:
    """A file that passed the metadata filters; `read` fetches its bytes only when needed."""

    source: int
    path: str
    size: int
    read: Callable[[], bytes]


@dataclass
class Discovery:
    candidates: list[Candidate] = field(default_factory=list)
    entries: list[dict] = field(default_factory=list)  # every file seen, in order; kept ones filled in later

    def skip(self, source: int, path: str, reason: str, size: int | None = None, **extra) -> None:
        entry = {"source": source, "path": path, "reason": reason, **extra}
        if size is not None:
            entry["size"] = size
        self.entries.append(entry)


def _one_line(exc: BaseException) -> str:
    """Library exceptions sometimes span lines (tarfile lists every method it tried): keep the first."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0].rstrip(":") if lines else type(exc).__name__


def is_git_url(text: str) -> bool:
    return bool(_GIT_URL.match(text))


def normalize_extensions(exts: list[str] | None) -> frozenset[str] | None:
    if not exts:
        return None
    out = set()
    for ext in exts:
        ext = ext.strip().lower()
        if not ext or ext == "." or "/" in ext or os.sep in ext:
            raise CharlstmError(f"--ext {ext!r} is not a file extension (try --ext .java)")
        out.add(ext if ext.startswith(".") else "." + ext)
    return frozenset(out)


def file_extension(path: str) -> str:
    """".java" for "a/B.java"; "" for "Makefile" and ".bashrc" (as pathlib's suffix)."""
    return os.path.splitext(path.rpartition("/")[2])[1].lower()


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _walk_directory(root: Path, index: int, source: Source, found: Discovery, accept: Callable[[str], bool]) -> None:
    """Sorted, symlink-safe walk: symlinked folders are never followed, so no loop is possible.

    A symlinked file is read only when it resolves inside `root` (its content is then part of the
    source; a copy of a file already read is dropped as a duplicate). One that leaves the root is
    skipped as "symlink-outside": a cloned repository must not pull in ~/.ssh/id_rsa.
    """
    real_root = os.path.realpath(root)
    stack = [(root, "")]
    while stack:
        folder, rel = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            found.skip(index, rel or ".", "unreadable", error=exc.strerror or str(exc))
            continue
        subfolders = []
        for entry in entries:
            path = f"{rel}{entry.name}"
            full = entry.path
            try:
                if entry.is_symlink():
                    try:
                        st = os.stat(entry.path)  # follows the link; ELOOP or ENOENT when it goes nowhere
                    except OSError:
                        found.skip(index, path, "broken-symlink")
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        found.skip(index, path + "/", "symlinked-folder")
                        continue
                    full = os.path.realpath(entry.path)  # read later by this path, the one checked here
                    if os.path.commonpath([real_root, full]) != real_root:
                        found.skip(index, path, "symlink-outside")
                        continue
                elif entry.is_dir(follow_symlinks=False):
                    # A virtual environment is someone else's code whatever its name: it has a pyvenv.cfg.
                    if (
                        entry.name in source.exclude
                        or _WORK_FOLDER.match(entry.name)
                        or os.path.isfile(os.path.join(entry.path, "pyvenv.cfg"))
                    ):
                        found.skip(index, path + "/", "excluded-folder")
                    else:
                        subfolders.append((Path(entry.path), path + "/"))
                    continue
                else:
                    st = entry.stat(follow_symlinks=False)
            except OSError as exc:
                found.skip(index, path, "unreadable", error=exc.strerror or str(exc))
                continue
            if not stat.S_ISREG(st.st_mode):
                found.skip(index, path, "not-a-regular-file")
            elif not accept(path):
                found.skip(index, path, "extension", st.st_size)
            else:
                found.candidates.append(Candidate(index, path, st.st_size, lambda full=full: _read_file(full)))
        stack.extend(reversed(subfolders))  # depth first, in name order


def _unsafe_member(name: str) -> bool:
    """Archive member names that would land outside the folder if extracted."""
    if name.startswith(("/", "\\")) or re.match(r"^[a-zA-Z]:", name):
        return True
    return ".." in re.split(r"[/\\]", name)


def _archive_members(archive: Path, index: int, source: Source, found: Discovery, accept, stack) -> None:
    """Read members in place (nothing is extracted, so nothing can be written anywhere)."""
    name = archive.name.lower()
    try:
        if name.endswith(".zip"):
            zf = stack.enter(zipfile.ZipFile(archive))
            members = [(i.filename, i.file_size, i.is_dir(), stat.S_ISLNK(i.external_attr >> 16), i) for i in zf.infolist()]

            def opener(info):
                return lambda: zf.read(info)

        else:
            tf = stack.enter(tarfile.open(archive, "r:*"))
            members = [(m.name, m.size, m.isdir(), not (m.isfile() or m.isdir()), m) for m in tf.getmembers()]

            def opener(member):
                return lambda: tf.extractfile(member).read()

    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError, ValueError) as exc:
        raise CharlstmError(f"{archive}: corrupt or unreadable archive ({_one_line(exc)})") from None
    for member_name, size, is_dir, is_special, handle in members:
        if is_dir:
            continue
        if _unsafe_member(member_name):
            found.skip(index, member_name, "unsafe-path", size)
        elif is_special:
            found.skip(index, member_name, "not-a-regular-file")
        elif any(part in source.exclude for part in member_name.split("/")[:-1]):
            found.skip(index, member_name, "excluded-folder", size)
        elif not accept(member_name):
            found.skip(index, member_name, "extension", size)
        else:
            found.candidates.append(Candidate(index, member_name, size, opener(handle)))


class _Closer:
    """Keeps archives open while their members are read, and closes them at the end."""

    def __init__(self):
        self.items = []

    def enter(self, obj):
        self.items.append(obj)
        return obj

    def close(self):
        for obj in reversed(self.items):
            obj.close()
        self.items.clear()


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def clone(url: str, dest: Path, timeout: float = CLONE_TIMEOUT_S) -> str:
    """Shallow-clone `url` into `dest` with the git program; return the commit."""
    if shutil.which("git") is None:
        raise CharlstmError(f"cannot clone {url}: the git program is not installed")
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}  # fail instead of asking for a password
    cmd = ["git", "clone", "--depth", "1", "--quiet", "--", url, str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise CharlstmError(f"cannot clone {url}: git clone took more than {timeout:.0f} s") from None
    if proc.returncode != 0:
        reason = _git_failure(proc.stderr) or f"git exited with code {proc.returncode}"
        hint = " (is the network available?)" if re.search(r"resolve host|unable to access|connect", reason, re.I) else ""
        raise CharlstmError(f"cannot clone {url}: {reason}{hint}")
    head = subprocess.run(["git", "-C", str(dest), "rev-parse", "HEAD"], capture_output=True, text=True)
    return head.stdout.strip() or None


def _git_failure(stderr: str) -> str:
    """git's reasons, joined: its `fatal:`/`error:` lines, without the advice paragraph after them
    ("Please make sure you have the correct access rights / and the repository exists.")."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    reasons = [line.split(":", 1)[1].strip() for line in lines if line.startswith(("fatal:", "error:"))]
    return "; ".join(reasons or lines[-1:])


def stdlib_source() -> Source:
    root = Path(sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise CharlstmError(f"the Python standard library was not found at {root}")
    return Source("python-stdlib", "directory", root, EXCLUDED_FOLDERS | STDLIB_EXCLUDED, frozenset({".py"}))


def jdk_src_zip_candidates() -> list[Path]:
    """Where a JDK keeps its sources: $JAVA_HOME, the `java` on PATH, then the usual install folders."""
    homes = []
    if os.environ.get("JAVA_HOME"):
        homes.append(Path(os.environ["JAVA_HOME"]))
    java = shutil.which("java")
    if java:
        real = Path(os.path.realpath(java))
        homes += [real.parent.parent, real.parent.parent.parent]  # JDK 9+: HOME/bin/java; JDK 8: HOME/jre/bin/java
    roots = sorted(glob("/usr/lib/jvm/*")) + sorted(glob("/Library/Java/JavaVirtualMachines/*/Contents/Home"))
    homes += [Path(p) for p in roots]
    out = []
    for home in homes:
        for p in (home / "lib" / "src.zip", home / "src.zip"):
            if p not in out:
                out.append(p)
    return out


def jdk_source() -> Source:
    looked = jdk_src_zip_candidates()
    for path in looked:
        if path.is_file():  # follows symlinks: a dangling src.zip link (sources not installed) is passed over
            return Source("jdk", "archive", path, EXCLUDED_FOLDERS, frozenset({".java"}))
    where = ", ".join(str(p) for p in looked) or "$JAVA_HOME (unset) and no `java` on PATH"
    raise CharlstmError(
        f"no JDK sources (src.zip) found; looked in: {where}. Install a JDK with its sources "
        "(e.g. apt install openjdk-17-source) or pass a src.zip or source folder as SOURCE"
    )


PRESETS: dict[str, Callable[[], Source]] = {Preset.python_stdlib.value: stdlib_source, Preset.jdk.value: jdk_source}


def resolve_sources(specs: list[str], preset: str | None, scratch: Path) -> list[Source]:
    """Turn SOURCE arguments (and a preset) into readable sources; git URLs are cloned into `scratch`."""
    sources = []
    if preset:
        sources.append(PRESETS[str(Preset(preset).value)]())
    for i, spec in enumerate(specs):
        if is_git_url(spec):
            dest = scratch / f"clone-{i}"
            commit = clone(spec, dest)
            sources.append(Source(spec, "git", dest, commit=commit))
            continue
        path = Path(spec).expanduser()
        if not os.path.lexists(path):
            raise CharlstmError(f"source not found: {spec}")
        try:
            st = path.stat()
        except OSError as exc:
            raise CharlstmError(f"cannot read source {spec}: {exc.strerror or exc} (a broken symlink or a symlink loop?)") from None
        if stat.S_ISDIR(st.st_mode):
            sources.append(Source(spec, "directory", path.resolve()))
        elif stat.S_ISREG(st.st_mode):
            sources.append(Source(spec, "archive" if is_archive(path) else "file", path.resolve()))
        else:
            raise CharlstmError(f"source {spec} is neither a folder nor a file")
    return sources


def discover(sources: list[Source], extensions: frozenset[str] | None, closer: _Closer) -> Discovery:
    found = Discovery()
    for index, source in enumerate(sources):
        exts = extensions or source.extensions or SOURCE_EXTENSIONS

        def accept(path: str, exts=exts) -> bool:
            return file_extension(path) in exts

        if source.kind in ("directory", "git"):
            _walk_directory(source.path, index, source, found, accept)
        elif source.kind == "archive":
            _archive_members(source.path, index, source, found, accept, closer)
        else:  # a file named on the command line is taken whatever its extension, unless --ext says otherwise
            name = source.path.name
            if extensions and not accept(name):
                found.skip(index, name, "extension", source.path.stat().st_size)
            else:
                full = str(source.path)
                found.candidates.append(Candidate(index, name, source.path.stat().st_size, lambda full=full: _read_file(full)))
    return found


# Pygments lexer aliases for the usual extensions; asking Pygments itself costs a third of a second.
LANGUAGES = {
    ".py": "python", ".pyi": "python", ".pyx": "cython", ".java": "java", ".kt": "kotlin", ".scala": "scala",
    ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hpp": "cpp", ".hh": "cpp", ".cu": "cuda",
    ".go": "go", ".rs": "rust", ".js": "javascript", ".mjs": "javascript", ".jsx": "jsx", ".ts": "typescript",
    ".tsx": "tsx", ".rb": "ruby", ".php": "php", ".cs": "csharp", ".swift": "swift", ".lua": "lua", ".sh": "bash",
    ".hs": "haskell", ".ml": "ocaml", ".jl": "julia", ".r": "r", ".sql": "sql", ".m": "objective-c",
}


def language_for_extension(ext: str) -> str | None:
    """The Pygments lexer alias for files with this extension (sampling and inspection use it)."""
    if ext in LANGUAGES:
        return LANGUAGES[ext]
    from pygments.lexers import get_lexer_for_filename
    from pygments.util import ClassNotFound

    try:
        return get_lexer_for_filename("file" + ext).aliases[0]
    except (ClassNotFound, IndexError):
        return None


def validate_name(name: str | None) -> str:
    if name is None or not name.strip():
        raise CharlstmError("a dataset name is required: --name NAME (or use a --preset)")
    if "/" in name or "\\" in name or os.sep in name or name in (".", "..") or name.startswith(".") or "\0" in name:
        raise CharlstmError(f"invalid dataset name {name!r}: use a plain folder name without path separators or a leading dot")
    return name


# ------------------------------------------------------------------------------------------ ingest


@dataclass
class _Kept:
    entry: dict
    offset: int  # in bytes, in the scratch stream
    width: int  # bytes per code point there: 1 for ASCII files, else 4
    chars: int  # tokens in the dataset: the text's characters plus the DOC_SEP before them
    order_key: bytes


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
    progress: bool = True,
) -> dict:
    """Build `data_dir/name/` from the sources; return the summary (what `--json` prints)."""
    start = time.perf_counter()
    sources = list(sources or [])
    if not sources and not preset:
        preset = Preset.python_stdlib.value
    if preset is not None:
        try:
            preset = Preset(preset).value
        except ValueError:
            raise CharlstmError(f"unknown preset {preset!r} (choose from {', '.join(p.value for p in Preset)})") from None
    name = validate_name(name or preset)
    exts = normalize_extensions(extensions)
    if max_file_bytes <= 0:
        raise CharlstmError("--max-file-bytes must be positive")
    if min_char_count < 1:
        raise CharlstmError("--min-char-count must be at least 1")
    if not 0.0 < val_fraction < 1.0:
        raise CharlstmError("--val-fraction must be between 0 and 1 (exclusive)")

    data_dir = Path(data_dir)
    target = data_dir / name
    # One ingest of a name at a time, from the existence check through the final rename.
    name_lock = lock.acquire(data_dir / f".{name}.lock", f"dataset {target}")
    try:
        _check_target(target, force)
        work = Path(tempfile.mkdtemp(prefix=f".{name}.ingest-", dir=data_dir))
    except BaseException as exc:
        name_lock.release()
        if isinstance(exc, OSError):
            raise CharlstmError(f"cannot write to {data_dir}: {exc.strerror or exc}") from None
        raise
    closer = _Closer()
    try:
        (work / "scratch").mkdir()
        (work / "dataset").mkdir()
        resolved = resolve_sources(sources, preset, work / "scratch")
        found = discover(resolved, exts, closer)
        with _write_errors(data_dir):
            stats = _read_all(found, work / "scratch" / "codepoints", max_file_bytes, seed, progress)
        closer.close()
        if not stats["kept"]:
            raise CharlstmError(_nothing_to_ingest(resolved, found))
        with _write_errors(data_dir):
            report = _write_dataset(work, name, found, stats, resolved, min_char_count, val_fraction, seed, exts)
        _install(work / "dataset", target, work)
        load_dataset(target)  # the same checks every later command makes
    finally:
        closer.close()
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
        raise CharlstmError(f"cannot write the dataset in {data_dir}: {exc.strerror or exc}") from None


def _check_target(target: Path, force: bool) -> None:
    if not os.path.lexists(target):
        return
    if not force:
        raise CharlstmError(f"dataset {target} already exists (use --force to replace it)")
    if not target.is_dir() or target.is_symlink() or not (target / "meta.json").is_file() and any(target.iterdir()):
        raise CharlstmError(f"{target} exists and is not a charlstm dataset; not replacing it, even with --force")


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
            raise CharlstmError(f"cannot create {target}: {exc.strerror or exc}") from None
        raise


def _read_all(found: Discovery, scratch_path: Path, max_file_bytes: int, seed: int, progress: bool) -> dict:
    """Pass 1: filter, decode and append each file's code points to the scratch stream."""
    from tqdm import tqdm

    kept: list[_Kept] = []
    seen: dict[bytes, str] = {}
    counts = np.zeros(MAX_CODE_POINT, dtype=np.int64)  # occurrences of every code point, DOC_SEP included
    bytes_read = invalid_total = 0
    offset = total_chars = 0
    total = sum(min(c.size, max_file_bytes + 1) for c in found.candidates)
    with open(scratch_path, "wb", buffering=1 << 20) as out, tqdm(
        total=total, unit="B", unit_scale=True, desc="reading", file=sys.stderr, disable=None if progress else True,
        leave=False, dynamic_ncols=True,
    ) as bar:
        for cand in found.candidates:
            entry = {"source": cand.source, "path": cand.path, "size": cand.size}
            found.entries.append(entry)
            if cand.size > max_file_bytes:
                entry["reason"] = "too-large"
                bar.update(min(cand.size, max_file_bytes + 1))
                continue
            try:
                data = cand.read()
            except PermissionError as exc:
                entry["reason"], entry["error"] = "unreadable", exc.strerror or str(exc)
                bar.update(cand.size)
                continue
            except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as exc:
                raise CharlstmError(f"corrupt archive member {cand.path} ({_one_line(exc)})") from None
            except OSError as exc:
                entry["reason"], entry["error"] = "unreadable", exc.strerror or str(exc)
                bar.update(cand.size)
                continue
            bar.update(cand.size)
            bytes_read += len(data)
            entry["size"] = len(data)
            if len(data) > max_file_bytes:
                entry["reason"] = "too-large"
                continue
            if not data:
                entry["reason"] = "empty"
                continue
            if b"\0" in data:
                entry["reason"] = "binary"
                continue
            digest = hashlib.sha256(data).digest()
            if digest in seen:
                entry["reason"], entry["duplicate_of"] = "duplicate", seen[digest]
                continue
            seen[digest] = cand.path
            if data.isascii() and b"\r" not in data and b"\x1c" not in data:
                # Most source files: the bytes already are the code points, with nothing to decode or fix.
                codes = np.frombuffer(data, dtype=np.uint8)  # kept one byte wide in the scratch stream
                counts[:128] += np.bincount(codes, minlength=128)
            else:
                text, invalid = decode_source(data)
                if invalid > MAX_INVALID_FRACTION * len(data):
                    entry["reason"], entry["invalid_bytes"] = "not-utf8", invalid
                    continue
                if not text:  # a file that held only a byte-order mark
                    entry["reason"] = "empty"
                    continue
                if invalid:
                    entry["invalid_bytes"] = invalid
                    invalid_total += invalid
                codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
                present, n = np.unique(codes, return_counts=True)
                counts[present] += n
                if offset % 4:
                    out.write(bytes(4 - offset % 4))  # keep uint32 runs aligned in the scratch stream
                    offset += 4 - offset % 4
            counts[ord(DOC_SEP)] += 1  # written before each file in pass 3
            out.write(codes.data)
            chars = len(codes) + 1
            entry["chars"] = chars
            order_key = hashlib.sha256(f"{seed}\0{cand.path}".encode("utf-8", "surrogateescape")).digest()
            kept.append(_Kept(entry, offset, codes.itemsize, chars, order_key))
            offset += codes.nbytes
            total_chars += chars
    return {"kept": kept, "counts": counts, "bytes_read": bytes_read, "invalid_bytes": invalid_total, "total_chars": total_chars}


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


def _write_dataset(work, name, found, stats, sources, min_char_count, val_fraction, seed, exts) -> dict:
    """Passes 2 and 3: vocabulary from counts, split, then ids into train.bin / val.bin and meta.json."""
    kept: list[_Kept] = stats["kept"]
    scratch_path = work / "scratch" / "codepoints"
    scratch = np.memmap(scratch_path, dtype=np.uint8, mode="r") if scratch_path.stat().st_size else np.zeros(0, np.uint8)
    counts = stats["counts"]
    present = np.flatnonzero(counts)
    vocab = Vocab.from_counts({chr(cp): int(counts[cp]) for cp in present}, min_count=min_char_count)
    if len(vocab) > np.iinfo(np.uint16).max + 1:
        raise CharlstmError(f"the corpus has {len(vocab)} distinct characters, more than 65536; raise --min-char-count")
    lookup = np.full(MAX_CODE_POINT, vocab.unk, dtype=vocab.dtype)
    for i, symbol in enumerate(vocab.symbols):
        lookup[ord(symbol)] = i
    vocab_counts = [int(counts[ord(s)]) for s in vocab.symbols]
    vocab_counts[vocab.unk] = int(stats["total_chars"] - sum(vocab_counts) + vocab_counts[vocab.unk])

    _split(kept, val_fraction)
    out_dir = work / "dataset"
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
    del scratch

    ext_stats: dict[str, dict] = {}
    for k in kept:
        ext = file_extension(k.entry["path"]) or "(none)"
        s = ext_stats.setdefault(ext, {"files": 0, "chars": 0})
        s["files"] += 1
        s["chars"] += k.chars
    dominant = max(ext_stats, key=lambda e: ext_stats[e]["chars"])
    skipped = Counter(e["reason"] for e in found.entries if "reason" in e)
    total = stats["total_chars"]
    warnings = []
    if split_chars["val"] == 0:
        warnings.append("only one file was kept, so the validation split is empty; add more files to validate")
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "name": name,
        "vocab": vocab.symbols,
        "vocab_counts": vocab_counts,
        "dtype": vocab.dtype.name,
        "train_chars": split_chars["train"],
        "val_chars": split_chars["val"],
        "content_hash": digest.hexdigest(),
        "language": language_for_extension(dominant) if dominant != "(none)" else None,
        "sources": [s.describe() for s in sources],
        "extensions": dict(sorted(ext_stats.items(), key=lambda kv: -kv[1]["chars"])),
        "min_char_count": min_char_count,
        "val_fraction": val_fraction,
        "seed": seed,
        "ext_filter": sorted(exts) if exts else None,
        "unk_count": vocab_counts[vocab.unk],
        "invalid_bytes": stats["invalid_bytes"],
        "files_kept": len(kept),
        "files_skipped": dict(skipped.most_common()),
        "files": sorted(found.entries, key=lambda e: (e["source"], e["path"])),
        "charlstm_version": __version__,
    }
    (out_dir / "meta.json").write_text(_meta_json(meta), encoding="utf-8")
    return {
        "name": name,
        "path": str(work.parent / name),
        "files_kept": len(kept),
        "files_skipped": dict(skipped.most_common()),
        "train_files": sum(k.entry["split"] == "train" for k in kept),
        "val_files": sum(k.entry["split"] == "val" for k in kept),
        "train_chars": split_chars["train"],
        "val_chars": split_chars["val"],
        "vocab_size": len(vocab),
        "dtype": vocab.dtype.name,
        "unk_rate": vocab_counts[vocab.unk] / total,
        "invalid_bytes": stats["invalid_bytes"],
        "language": meta["language"],
        "bytes_read": stats["bytes_read"],
        "content_hash": meta["content_hash"],
        "warnings": warnings,
    }


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
