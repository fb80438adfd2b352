"""Files the user names as outputs: `sample -o`, `inspect-neuron --html/--svg`, `experiment --html`.

`write_output` replaces a regular file atomically, but writes /dev/null, /dev/full, a FIFO or a
terminal in place, as a shell's `>` would, and follows a symlink to its target: renaming a
temporary file over a device would replace the device itself.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from charlstm.checkpoint import atomic_write
from charlstm.errors import CharlstmError


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
