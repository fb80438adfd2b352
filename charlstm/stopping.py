"""How a training run ends before its budget: Ctrl-C, and the two ways the CLI reports.

`CtrlC` lets the loop finish its step and save on the first Ctrl-C; `TrainingInterrupted` then
carries the command that resumes. `TrainingStopped` is a run that cannot go on (a NaN loss, a
full disk): one line saying what was kept.
"""

from __future__ import annotations

import signal
import threading

from charlstm.errors import CharlstmError


class TrainingInterrupted(Exception):
    """Ctrl-C: the run was saved; `message` says how to resume it."""


class TrainingStopped(CharlstmError):
    """The loss became NaN or infinite, or a save failed; nothing was saved after the last good checkpoint."""


class CtrlC:
    """While held: the first Ctrl-C sets `pressed` (the loop finishes its step, saves and stops);
    a second raises KeyboardInterrupt at once. Only the main thread receives signals."""

    def __init__(self, say):
        self.pressed = False
        self._say = say
        self._previous = None

    def __enter__(self) -> CtrlC:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handler(self, signum, frame) -> None:
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True
        self._say("interrupt: finishing this step and saving (Ctrl-C again to stop at once)")
