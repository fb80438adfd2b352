"""Training curves drawn with plotext: bits per character against steps, characters or minutes.

`draw_curves` builds one figure of several runs' series (runs.curve_series), overlaid, one colour
per run: training bpc as a thin braille line, validation bpc as a heavier line, each labelled in
the legend. It returns the figure as text (with ANSI colours, or plain) and as an HTML fragment;
the terminal prints the first, `runs --svg` turns it into a picture (see runs_command.py).
"""

from __future__ import annotations

from dataclasses import dataclass

X_LABELS = {"steps": "step", "chars": "characters trained on", "minutes": "minutes of training"}
# plotext's 256-colour codes, one per run: blue, red, green, magenta, cyan, yellow, then the dim ones.
RUN_COLOURS = (12, 9, 10, 13, 14, 11, 4, 1, 2, 5, 6, 3)


@dataclass
class Figure:
    text: str  # with ANSI colour codes
    plain: str  # the same without them
    html: str  # a <pre> fragment with coloured spans


def draw_curves(series: list[dict], x: str = "steps", width: int = 100, height: int = 28,
                title: str | None = "bits per character") -> Figure:
    """One figure of every run's training and validation bpc. `series`: runs.curve_series' dicts."""
    import plotext as plt

    fig = plt.figure
    fig.clear.all()  # plotext keeps one master figure per process: start each figure afresh
    fig.plot_size(max(width, 30), max(height, 10))
    fig.theme("clear")  # no background: the terminal's own shows through
    for i, run in enumerate(series):
        colour = RUN_COLOURS[i % len(RUN_COLOURS)]
        for key, symbol, what in (("train", "braille", "train"), ("val", "hd", "val")):
            points = run[key]
            if not points:
                continue
            xs, ys = zip(*points)
            signal = fig.signal(list(xs), list(ys), marker=plt.marker(symbol, pixel=plt.pixel(foreground=colour)))
            signal.label(f"{run['name']} {what}")
            if len(points) > 1:
                signal.lines()
            fig.draw(signal)
    if title:
        fig.title(title)
    fig.label(X_LABELS[x], axis=0)
    points = [p for run in series for key in ("train", "val") for p in run[key]]
    if points:  # the legend's corner at the top right, in data units: falling curves leave it empty
        fig.legend(x=max(p[0] for p in points), y=max(p[1] for p in points), ha="right", va="top", relative=True)
    matrix = fig.build()
    return Figure(text=matrix.string(), plain=matrix.string(colorless=True), html=matrix.html())
