"""Writing files so that a crash or a full disk never leaves a torn one: `atomic_write` replaces a
file whole, `append_line` adds one whole line to a log, `default_mode` is the mode a new file gets.
No torch here: ingest and the text inputs use these too.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from .errors import CharlstmError, shown_path


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
        raise CharlstmError(f"could not write {shown_path(path)}: {exc.strerror or exc}") from None
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
            raise CharlstmError(f"could not write {shown_path(path)}: {exc.strerror or exc}") from exc
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
        raise CharlstmError(f"could not write {shown_path(path)}: {exc.strerror or exc}") from None
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
            raise CharlstmError(f"could not write {shown_path(path)}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
