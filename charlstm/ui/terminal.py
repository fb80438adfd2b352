"""The CLI's listener for the library's events (events.py): a tqdm progress bar per task on stderr,
drawn only on a terminal, and each message written above the bars."""

from __future__ import annotations

import sys

from tqdm import tqdm

from ..core.events import Event, Message, Progress


class Terminal:
    """Renders events on stderr. `leave`: a finished bar stays on screen; `labels`: each bar is
    named after its task. As a context manager, closes any bar an error left open."""

    def __init__(self, leave: bool = True, labels: bool = True):
        self.leave, self.labels = leave, labels
        self._bars: dict[str, tqdm] = {}
        self._stats: dict[str, object] = {}  # the stats each bar shows, to set them only when they change

    def __call__(self, event: Event) -> None:
        if isinstance(event, Message):
            tqdm.write(str(event), file=sys.stderr)
        elif isinstance(event, Progress):
            self._progress(event)

    def _progress(self, event: Progress) -> None:
        bar = self._bars.get(event.task)
        if bar is None:
            if event.finished:
                return
            bar = self._bars[event.task] = tqdm(
                total=event.total,
                initial=event.done,
                desc=event.task if self.labels else None,
                unit=event.unit,
                unit_scale=event.unit == "B",  # bytes as kB, MB
                leave=self.leave,
                file=sys.stderr,
                dynamic_ncols=True,
                disable=None,  # only on a terminal
            )
        if not bar.disable:
            if event.stats and event.stats is not self._stats.get(event.task):
                self._stats[event.task] = event.stats
                bar.set_postfix(event.stats, refresh=False)
            if event.done > bar.n:
                bar.update(event.done - bar.n)
        if event.finished:
            self._bars.pop(event.task).close()
            self._stats.pop(event.task, None)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
        self._stats.clear()

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
