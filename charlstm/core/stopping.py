"""How a training run ends before its budget: Ctrl-C, and the two ways the CLI reports.

`CtrlC` lets the loop finish its step and save on the first Ctrl-C; `TrainingInterrupted` then
carries the command that resumes. `TrainingStopped` is a run that cannot go on (a NaN loss, a
full disk): one line saying what was kept.
"""

from __future__ import annotations

import signal
import threading

from .errors import CharlstmError


class TrainingInterrupted(Exception):
    """Ctrl-C: the run was saved; `message` says how to resume it."""


class TrainingStopped(CharlstmError):
    """The loss became NaN or infinite, or a save failed; nothing was saved after the last good checkpoint."""


def stop_signals() -> list[int]:
    """The signals that ask a command to stop as Ctrl-C does: SIGINT, and SIGTERM (`kill`, a job
    scheduler's time-out) and SIGHUP (the terminal closed), but not where they are ignored (`nohup`)."""
    found = [signal.SIGINT]
    for name in ("SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        if number is not None and signal.getsignal(number) is not signal.SIG_IGN:
            found.append(number)
    return found


def stop_like_ctrl_c() -> None:
    """SIGTERM and SIGHUP raise KeyboardInterrupt, as Ctrl-C does, so each command stops the way
    it stops on Ctrl-C (train saves, sample -o keeps the text so far) instead of dying at once."""
    if threading.current_thread() is threading.main_thread():
        for number in stop_signals()[1:]:
            signal.signal(number, signal.default_int_handler)


class CtrlC:
    """While held: the first Ctrl-C (or SIGTERM, SIGHUP) sets `pressed` (the loop finishes its
    step, saves and stops); a second raises KeyboardInterrupt at once. Only the main thread
    receives signals."""

    def __init__(self, say):
        self.pressed = False
        self._say = say
        self._previous: dict[int, object] = {}

    def __enter__(self) -> CtrlC:
        if threading.current_thread() is threading.main_thread():
            self._previous = {number: signal.signal(number, self._handler) for number in stop_signals()}
        return self

    def __exit__(self, *exc) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)

    def _handler(self, signum, frame) -> None:
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True
        try:
            self._say("interrupt: finishing this step and saving (Ctrl-C again to stop at once)")
        except (OSError, ValueError):  # SIGHUP: the terminal may be gone; the save matters, not the message
            pass
