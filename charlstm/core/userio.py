"""Files and streams the user names: outputs, text inputs, stdout and command-line text.

Outputs (`sample -o`, `inspect-neuron --html/--svg`, `experiment --html`) go through
`write_output`: a regular file is replaced atomically, but /dev/null, /dev/full, a FIFO or a
terminal is written in place, as a shell's `>` would, and a symlink is followed to its target.
Renaming a temporary file over a device would replace the device itself.

Text inputs (`eval --text-file`, `inspect-neuron --text-file`, `sample --prime-file`) go through
`read_text_source`: anything readable, pipes and process substitutions included, decoded the way
ingest decodes source files.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import CharlstmError, shown_path
from .files import atomic_write
from .vocab import DOC_SEP, UNK

# A text input is read whole; this bounds what `--text-file /dev/zero` can take (256 MiB of text
# is hours of CPU scoring already).
MAX_TEXT_BYTES = 256 << 20

# The most an HTML page a command writes may weigh (`eval --per-char --html`, `inspect-neuron
# --html`): a longer text's page shows its start, and says so on the page.
MAX_PAGE_BYTES = 16_000_000


# ----- outputs ---------------------------------------------------------------------------------


def write_output(path: str | Path, data: bytes) -> None:
    """Write `data` to the file the user named, without ever replacing something that is not a file.

    A new or regular file is written atomically (a crash or a full disk leaves the old one whole);
    a symlink is followed, so its target gets the data and the link stays; a character device, a
    FIFO or a socket is opened and written in place.
    """
    path = Path(path)
    try:
        st = os.stat(path)  # follows symlinks
    except FileNotFoundError:
        st = None  # a new file (or a dangling symlink: its target is created, as `>` would)
    except OSError as exc:  # a symlink loop, a parent that is a file, no permission
        raise CharlstmError(f"cannot write {shown_path(path)}: {exc.strerror or exc}") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise CharlstmError(f"cannot write {shown_path(path)}: it is a folder")
    if st is None or stat.S_ISREG(st.st_mode):
        target = Path(os.path.realpath(path)) if path.is_symlink() else path  # the link itself stays
        keep_mode = stat.S_IMODE(st.st_mode) if st is not None else None
        atomic_write(target, lambda f: f.write(data), mode=keep_mode)
    else:
        _write_in_place(path, data)


def check_output(path: str | Path) -> None:
    """Refuse, before a long job, an output `write_output` would refuse at its end: a folder, or a
    path under something that is not a folder. Creates nothing."""
    path = Path(path)
    if path.is_dir():
        raise CharlstmError(f"cannot write {shown_path(path)}: it is a folder")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:  # folders write_output would create
        parent = parent.parent
    if not parent.is_dir():
        raise CharlstmError(f"cannot write {shown_path(path)}: {shown_path(parent)} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CharlstmError(f"cannot write {shown_path(path)}: no permission to write in {shown_path(parent)}")


def refuse_output_over_input(outputs: dict, inputs: dict) -> None:
    """Refuse, before any work, an output that is the same regular file as an input (by another
    name or through a link too): writing it would replace the input. `outputs` and `inputs` map an
    option's name to its path (None: not given). Devices (/dev/stdout and a terminal) are written
    in place, never replaced, so they may be both."""
    for out_name, out in outputs.items():
        try:
            if out is None or not stat.S_ISREG(os.stat(out).st_mode):
                continue
        except (OSError, ValueError):  # not there yet (so no input), or unreadable: write_output says why
            continue
        for in_name, source in inputs.items():
            try:
                same = source is not None and os.path.samefile(out, source)
            except (OSError, ValueError):
                same = False
            if same:
                raise CharlstmError(
                    f"{out_name} {shown_path(out)} is the same file as {in_name} {shown_path(source)}: "
                    "writing it would "
                    f"replace the input; write to another file"
                )


def _write_in_place(path: Path, data: bytes) -> None:
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as exc:  # /dev/full: ENOSPC; a socket: ENXIO
        raise CharlstmError(f"cannot write {shown_path(path)}: {exc.strerror or exc}") from None


def ensure_writable_folder(folder: str | Path) -> None:
    """Create `folder` if needed and check that a file can be made in it, before a long job that
    will write there starts (a read-only file system, no permission)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except FileExistsError:  # mkdir found something there that is no folder
        raise CharlstmError(f"cannot write to {shown_path(folder)}: it exists and is not a folder") from None
    except OSError as exc:
        raise CharlstmError(f"cannot write to {shown_path(folder)}: {exc.strerror or exc}") from None


# ----- text inputs -----------------------------------------------------------------------------


def decode_source(data: bytes) -> tuple[str, int]:
    """UTF-8 text with newlines normalised to \\n, and the number of invalid bytes replaced by U+FFFD.

    The one decoding policy for code the model reads: ingest and every text input use it.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # a byte-order mark is an encoding marker, not content
    try:
        text, invalid = data.decode("utf-8"), 0
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        added = text.count(UNK) - data.count(UNK.encode("utf-8"))
        # Valid parts re-encode to their own bytes; each added U+FFFD re-encodes to 3 bytes.
        invalid = len(data) - (len(text.encode("utf-8")) - 3 * added)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if DOC_SEP in text:
        text = text.replace(DOC_SEP, UNK)  # the separator is reserved for file boundaries
    return text, invalid


def read_text_source(path: str | Path, what: str = "text file") -> str:
    """The text of a file, pipe or device, decoded as ingest decodes source files.

    Invalid UTF-8 becomes U+FFFD (the unknown symbol), newlines become \\n, a byte-order mark is
    dropped. `what` names the input in errors: "text file not found: x.txt".
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = _read_at_most(f, MAX_TEXT_BYTES + 1)
    except FileNotFoundError:
        raise CharlstmError(f"{what} not found: {shown_path(path)}") from None
    except IsADirectoryError:
        raise CharlstmError(f"{what} {shown_path(path)} is a folder, not a file") from None
    except OSError as exc:
        raise CharlstmError(f"cannot read {what} {shown_path(path)}: {exc.strerror or exc}") from None
    if len(data) > MAX_TEXT_BYTES:
        raise CharlstmError(f"{what} {shown_path(path)} is larger than {MAX_TEXT_BYTES:,} bytes")
    text, _ = decode_source(data)
    if not text:
        raise CharlstmError(f"{what} {shown_path(path)} is empty")
    return text


def _read_at_most(f, limit: int) -> bytes:
    """Up to `limit` bytes of `f`, read a MiB at a time: `f.read(limit)` would reserve all of
    `limit` (256 MiB) for every text, however short."""
    chunks, size = [], 0
    while size < limit:
        chunk = f.read(min(1 << 20, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def text_from_argv(text: str) -> str:
    """Command-line text with its non-UTF-8 bytes as U+FFFD, as ingest reads such bytes.

    Python hands undecodable argv bytes over as lone surrogates (\\udcff for 0xff), which no
    UTF-8 file can hold.
    """
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that did not come from a byte
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "replace")


# ----- stdout ----------------------------------------------------------------------------------


class StdoutError(CharlstmError):
    """Writing to stdout failed: a full disk, /dev/full, an I/O error."""


def silence_stdout() -> None:
    """Point file descriptor 1 at /dev/null, so the interpreter's last flush at exit cannot fail
    again (as "Exception ignored ... BrokenPipeError") after the failure was reported."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


@contextmanager
def _stdout_errors():
    try:
        yield
    except BrokenPipeError:
        raise  # the reader went away (`| head`): the caller stops quietly
    except OSError as exc:
        raise StdoutError(f"cannot write to stdout: {exc.strerror or exc}") from None


class _GuardedStdout:
    """sys.stdout, except that a failed write or flush raises StdoutError, which says it was stdout."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        with _stdout_errors():
            return self._stream.write(text)

    def writelines(self, lines):
        with _stdout_errors():
            self._stream.writelines(lines)

    def flush(self):
        with _stdout_errors():
            self._stream.flush()

    def __getattr__(self, name):  # encoding, isatty, fileno, reconfigure, buffer, ...
        return getattr(self._stream, name)


@contextmanager
def guarded_stdout():
    """Run a command with stdout failures as StdoutError, and flush stdout at its end.

    A broken pipe stays a BrokenPipeError, for the caller to stop quietly.

    Whether a write to a full stdout fails at once or only at the final flush depends on the
    buffering (PYTHONUNBUFFERED): either way it surfaces here, not as a traceback at exit.
    """
    real = sys.stdout
    if real is None:  # stdout was closed (`>&-`): print() writes nothing, sample refuses
        yield
        return
    sys.stdout = _GuardedStdout(real)
    try:
        yield
        sys.stdout.flush()
    except (StdoutError, BrokenPipeError):
        silence_stdout()  # once reported, the unwritten rest must not fail again at exit
        raise
    finally:
        sys.stdout = real
