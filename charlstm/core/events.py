"""What the library has to tell the person running it, as data: the Trainer, ingest, the
experiments and the run folder never print. Each takes a listener (`on_event=`), a callable given
every event as it happens; the CLI's (terminal.py) draws the progress bars and writes the messages
on stderr, and a script may print them, log them, or leave them out (the default):

    def show(event):
        if isinstance(event, Message):
            print(event)  # "step 500: validation 1.9123 bpc (best so far)", "warning: ..."

    Trainer(config, run_dir, on_event=show).run()
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Message:
    """A line for the user: what is about to happen, a new best, why a run stopped early."""

    text: str
    warning: bool = False  # something looks wrong, but the work goes on

    def __str__(self) -> str:
        return f"warning: {self.text}" if self.warning else self.text


@dataclass(frozen=True)
class Progress:
    """Work under way: `done` of `total` `unit`s of `task` (total None: no fixed end), with the
    latest figures worth showing beside it; `finished` once the task ends, whether done or not.
    Sent after every unit of work (a training step, a file read): cheap to send, a listener
    decides how often to show it."""

    task: str  # "training", "reading", "training counter"
    done: int
    total: int | None = None
    unit: str = "step"
    stats: Mapping[str, str] = field(default_factory=dict)  # e.g. {"loss": "1.234", "bpc": "1.780"}
    finished: bool = False

    def __str__(self) -> str:
        of = f" of {self.total:,}" if self.total is not None else ""
        figures = "".join(f", {key} {value}" for key, value in self.stats.items())
        return f"{self.task}: {self.done:,}{of} {self.unit}{figures}" + (" (finished)" if self.finished else "")


@dataclass(frozen=True)
class Metrics:
    """A training metrics record as metrics.jsonl has just been given it: step, epoch, loss, bpc,
    lr, chars_per_sec, and val_bpc after a validation (TensorBoard listens for these)."""

    record: Mapping[str, float]

    def __str__(self) -> str:
        return json.dumps(dict(self.record))


Event = Message | Progress | Metrics
Listener = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The listener that hears nothing: the library's default."""
