"""Where an ingest's text comes from: SOURCE arguments and presets resolved to folders, files, archives
and git clones, then walked into candidate files, filtered by folder, extension, size and symlink from
metadata alone (nothing is read here but directory entries and archive indexes).

`discover` returns the candidates, each with a function that reads its bytes later, and an entry for
every file passed over, with the reason. ingest.py reads the candidates and builds the dataset.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sysconfig
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path

from ..core.config import Preset
from ..core.errors import CharlstmError, shown_path

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
CLONE_TIMEOUT_S = 900
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


def one_line(exc: BaseException) -> str:
    """Library exceptions sometimes span lines (tarfile lists every method it tried): keep the first."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0].rstrip(":") if lines else type(exc).__name__


def is_git_url(text: str) -> bool:
    return bool(_GIT_URL.match(text))


def normalize_extensions(exts: list[str] | None) -> frozenset[str] | None:
    if not exts:
        return None
    out = set()
    for ext in (part for text in exts for part in text.split(",")):  # --ext py,java as --ext py --ext java
        ext = ext.strip().lower()
        if not ext or ext == "." or "/" in ext or os.sep in ext:
            raise CharlstmError(f"--ext {ext!r} is not a file extension (try --ext .java)")
        out.add(ext if ext.startswith(".") else "." + ext)
    return frozenset(out)


def file_extension(path: str) -> str:
    """ ".java" for "a/B.java"; "" for "Makefile" and ".bashrc" (as pathlib's suffix)."""
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


def _archive_members(archive: Path, index: int, source: Source, found: Discovery, accept, stack: ExitStack) -> None:
    """Read members in place (nothing is extracted, so nothing can be written anywhere).

    The archive stays open on `stack` until its members have been read."""
    name = archive.name.lower()
    try:
        if name.endswith(".zip"):
            zf = stack.enter_context(zipfile.ZipFile(archive))
            members = [
                (i.filename, i.file_size, i.is_dir(), stat.S_ISLNK(i.external_attr >> 16), i) for i in zf.infolist()
            ]

            def opener(info):
                return lambda: zf.read(info)

        else:
            tf = stack.enter_context(tarfile.open(archive, "r:*"))
            members = [(m.name, m.size, m.isdir(), not (m.isfile() or m.isdir()), m) for m in tf.getmembers()]

            def opener(member):
                return lambda: tf.extractfile(member).read()

    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError, ValueError) as exc:
        raise CharlstmError(f"{shown_path(archive)}: corrupt or unreadable archive ({one_line(exc)})") from None
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
        reason = git_failure(proc.stderr) or f"git exited with code {proc.returncode}"
        hint = (
            " (is the network available?)" if re.search(r"resolve host|unable to access|connect", reason, re.I) else ""
        )
        raise CharlstmError(f"cannot clone {url}: {reason}{hint}")
    head = subprocess.run(["git", "-C", str(dest), "rev-parse", "HEAD"], capture_output=True, text=True)
    return head.stdout.strip() or None


def git_failure(stderr: str) -> str:
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
            raise CharlstmError(
                f"cannot read source {spec}: {exc.strerror or exc} (a broken symlink or a symlink loop?)"
            ) from None
        if stat.S_ISDIR(st.st_mode):
            sources.append(Source(spec, "directory", path.resolve()))
        elif stat.S_ISREG(st.st_mode):
            sources.append(Source(spec, "archive" if is_archive(path) else "file", path.resolve()))
        else:
            raise CharlstmError(f"source {spec} is neither a folder nor a file")
    return sources


def discover(sources: list[Source], extensions: frozenset[str] | None, stack: ExitStack) -> Discovery:
    """Every source's candidate files and skipped entries, in order; archives are left open on `stack`."""
    found = Discovery()
    for index, source in enumerate(sources):
        exts = extensions or source.extensions or SOURCE_EXTENSIONS

        def accept(path: str, exts=exts) -> bool:
            return file_extension(path) in exts

        if source.kind in ("directory", "git"):
            _walk_directory(source.path, index, source, found, accept)
        elif source.kind == "archive":
            _archive_members(source.path, index, source, found, accept, stack)
        else:  # a file named on the command line is taken whatever its extension, unless --ext says otherwise
            name = source.path.name
            if extensions and not accept(name):
                found.skip(index, name, "extension", source.path.stat().st_size)
            else:
                full = str(source.path)
                found.candidates.append(
                    Candidate(index, name, source.path.stat().st_size, lambda full=full: _read_file(full))
                )
    return found


# Pygments lexer aliases for the usual extensions; asking Pygments itself costs a third of a second.
LANGUAGES = {
    ".py": "python",
    ".pyi": "python",
    ".pyx": "cython",
    ".java": "java",
    ".kt": "kotlin",
    ".scala": "scala",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".cxx": "cpp",
    ".hpp": "cpp",
    ".hh": "cpp",
    ".cu": "cuda",
    ".go": "go",
    ".rs": "rust",
    ".js": "javascript",
    ".mjs": "javascript",
    ".jsx": "jsx",
    ".ts": "typescript",
    ".tsx": "tsx",
    ".rb": "ruby",
    ".php": "php",
    ".cs": "csharp",
    ".swift": "swift",
    ".lua": "lua",
    ".sh": "bash",
    ".hs": "haskell",
    ".ml": "ocaml",
    ".jl": "julia",
    ".r": "r",
    ".sql": "sql",
    ".m": "objective-c",
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
