"""One owner at a time for a run folder or a dataset name.

An advisory `flock` on a small lock file: the kernel drops it when its holder exits in any way
(kill -9 included), so a lock file left behind by a dead process never blocks anyone. The file
holds the owner's PID, for the message the next would-be owner gets, and the owner removes it
when done. Removing it is safe because whoever locks a file checks afterwards that it is still
the one at that path (not one removed meanwhile), and starts over if not.

Readers (eval, sample, inspect-neuron) take no lock: every file a writer replaces is renamed
into place whole.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import CharlstmError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs go unguarded there
    fcntl = None


class OwnerLock:
    """A held lock; `release()` (or leaving a `with` block) gives it up and removes its file."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink()  # while still holding it: see the module's docstring
        except OSError:
            pass
        os.close(self._fd)  # closing the descriptor drops the flock
        self._fd = None

    def __enter__(self) -> OwnerLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(lock_file: str | Path, what: str) -> OwnerLock:
    """Take `lock_file` (created, with its folder, if missing) or fail at once naming the holder.

    `what` names the thing owned in the message: "runs/x is in use by PID 1234".
    """
    lock_file = Path(lock_file)
    while True:
        fd = _open(lock_file)
        if fcntl is None:
            return OwnerLock(lock_file, fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"PID {holder}" if holder else "another process"
            raise CharlstmError(f"{what} is in use by {who}; wait for it to finish or stop it first") from None
        except OSError as exc:  # a file system without locks (some network mounts)
            os.close(fd)
            raise CharlstmError(f"cannot lock {lock_file}: {exc.strerror or exc}") from None
        if _still_at(fd, lock_file):
            break
        os.close(fd)  # its owner removed it as we opened it: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass  # the lock holds without the PID; only the message loses it
    return OwnerLock(lock_file, fd)


def holder(lock_file: str | Path) -> int | None:
    """Whether a process holds `lock_file` now: its PID (0 where the file does not say), else None.

    For `charlstm runs`; it never creates the file. It tests by taking a shared lock for an instant,
    so a `train` starting in that very instant could be refused as if the folder were in use.
    """
    if fcntl is None:
        return None
    try:
        fd = os.open(lock_file, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None  # no lock file: nobody holds it
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or 0
        except OSError:
            return None  # a file system without locks: unknown, reported as free
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _open(lock_file: Path) -> int:
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        # O_CLOEXEC: a child process (git, torchrun's workers) must not inherit, and so keep, the lock.
        return os.open(lock_file, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    except FileExistsError:  # mkdir found something there that is no folder
        raise CharlstmError(f"cannot write to {lock_file.parent}: it exists and is not a folder") from None
    except OSError as exc:
        raise CharlstmError(f"cannot write to {lock_file.parent}: {exc.strerror or exc}") from None


def _still_at(fd: int, lock_file: Path) -> bool:
    try:
        on_disk = os.stat(lock_file)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class SharedLock:
    """A shared hold on a lock file: any number of readers at once, but no owner meanwhile."""

    def __init__(self, path: Path, fd: int | None):
        self.path = path
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:  # the last reader out removes the file, as an owner does (holding it alone: see the docstring)
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.path.unlink()
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> SharedLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def share(lock_file: str | Path, what: str) -> SharedLock:
    """Hold `lock_file` shared, so that `acquire` (an owner: `ingest --force`) fails while we read.
    Fails at once if an owner holds it. Where no lock file can be made (a read-only dataset), reads
    go unguarded: nobody can replace what we read there either."""
    lock_file = Path(lock_file)
    if fcntl is None:
        return SharedLock(lock_file, None)
    while True:
        try:
            fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError:
            return SharedLock(lock_file, None)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"PID {holder}" if holder else "another process"
            raise CharlstmError(f"{what} is being written by {who}; wait for it to finish") from None
        except OSError:
            os.close(fd)
            return SharedLock(lock_file, None)
        if _still_at(fd, lock_file):
            try:
                os.pwrite(fd, f"{os.getpid()}\n".ljust(32).encode(), 0)  # one reader's PID, for an owner's message
            except OSError:
                pass
            return SharedLock(lock_file, fd)
        os.close(fd)
