"""Files the user names, outputs and text inputs, and text given on the command line.

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
import tempfile
from pathlib import Path

from charlstm.checkpoint import atomic_write
from charlstm.errors import CharlstmError

# A text input is read whole; this bounds what `--text-file /dev/zero` can take (256 MiB of text
# is hours of CPU scoring already).
MAX_TEXT_BYTES = 256 << 20


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
        raise CharlstmError(f"cannot write {path}: {exc.strerror or exc}") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise CharlstmError(f"cannot write {path}: it is a folder")
    if st is None or stat.S_ISREG(st.st_mode):
        target = Path(os.path.realpath(path)) if path.is_symlink() else path  # the link itself stays
        keep_mode = stat.S_IMODE(st.st_mode) if st is not None else None
        atomic_write(target, lambda f: f.write(data), mode=keep_mode)
    else:
        _write_in_place(path, data)


def _write_in_place(path: Path, data: bytes) -> None:
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as exc:  # /dev/full: ENOSPC; a socket: ENXIO
        raise CharlstmError(f"cannot write {path}: {exc.strerror or exc}") from None


def ensure_writable_folder(folder: str | Path) -> None:
    """Create `folder` if needed and check that a file can be made in it, before a long job that
    will write there starts (a read-only file system, no permission)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise CharlstmError(f"cannot write to {folder}: {exc.strerror or exc}") from None


# ----- text inputs -----------------------------------------------------------------------------


def read_text_source(path: str | Path, what: str = "text file") -> str:
    """The text of a file, pipe or device, decoded as ingest decodes source files.

    Invalid UTF-8 becomes U+FFFD (the unknown symbol), newlines become \\n, a byte-order mark is
    dropped. `what` names the input in errors: "text file not found: x.txt".
    """
    from charlstm.ingest import decode_source  # the one decoding policy for code the model reads

    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TEXT_BYTES + 1)
    except FileNotFoundError:
        raise CharlstmError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise CharlstmError(f"{what} {path} is a folder, not a file") from None
    except OSError as exc:
        raise CharlstmError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_TEXT_BYTES:
        raise CharlstmError(f"{what} {path} is larger than {MAX_TEXT_BYTES:,} bytes")
    text, _ = decode_source(data)
    if not text:
        raise CharlstmError(f"{what} {path} is empty")
    return text


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
