"""Training curves: bits per character against steps, characters or minutes, several runs overlaid.

`draw_curves` builds the terminal's figure with plotext, one colour per run: training bpc as a thin
braille line, validation bpc as a heavier line, each labelled in the legend; it returns the figure
as text with ANSI colours and without. `draw_picture` draws the same series, colours and labels as
an SVG picture with matplotlib (an optional extra: text in a picture would depend on the fonts of
whoever views it, and braille glyphs are often missing or of the wrong width).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from ..core.errors import CharlstmError

X_LABELS = {"steps": "step", "chars": "characters trained on", "minutes": "minutes of training"}
# plotext's 256-colour codes, one per run: blue, red, green, magenta, cyan, yellow, then the dim ones.
RUN_COLOURS = (12, 9, 10, 13, 14, 11, 4, 1, 2, 5, 6, 3)
# The same colours in the picture, as matplotlib names them.
PICTURE_COLOURS = (
    "tab:blue",
    "tab:red",
    "tab:green",
    "tab:purple",
    "tab:cyan",
    "tab:olive",
    "navy",
    "darkred",
    "darkgreen",
    "indigo",
    "teal",
    "goldenrod",
)
SVG_EXTRA = "charlstm[svg]"


@dataclass
class Figure:
    text: str  # with ANSI colour codes
    plain: str  # the same without them


def draw_curves(
    series: list[dict], x: str = "steps", width: int = 100, height: int = 28, title: str | None = "bits per character"
) -> Figure:
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
            xs, ys = zip(*points, strict=True)
            signal = fig.signal(list(xs), list(ys), marker=plt.marker(symbol, pixel=plt.pixel(foreground=colour)))
            signal.label(f"{run['name']} {what}")
            if len(points) > 1:
                signal.lines()
            fig.draw(signal)
    if title:
        fig.title(title)
    fig.label(X_LABELS[x], axis=0)
    xs = [p[0] for run in series for key in ("train", "val") for p in run[key]]
    if xs and max(xs) > min(xs):
        positions = nice_ticks(min(xs), max(xs))
        fig.ruler(axis=0).ticks(positions, [tick_label(v, x) for v in positions])
    points = [p for run in series for key in ("train", "val") for p in run[key]]
    if points:  # the legend's corner at the top right, in data units: falling curves leave it empty
        fig.legend(x=max(p[0] for p in points), y=max(p[1] for p in points), ha="right", va="top", relative=True)
    matrix = fig.build()
    return Figure(text=matrix.string(), plain=matrix.string(colorless=True))


def nice_ticks(low: float, high: float, count: int = 8) -> list[float]:
    """Round positions (1, 2, 2.5 or 5 times a power of ten apart) covering [low, high]."""
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(low / step) * step
    return [round(first + i * step, 12) for i in range(int((high - first) / step + 1e-9) + 1)]


def tick_label(value: float, x: str) -> str:
    """1,500 steps; 1.2M characters; 2.5 minutes."""
    if x == "chars":
        for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(value) >= size:
                return f"{value / size:g}{suffix}"
    return f"{value:,.0f}" if x == "steps" or float(value).is_integer() else f"{value:g}"


def draw_picture(series: list[dict], x: str = "steps", title: str = "bits per character") -> str:
    """The figure as an SVG document (matplotlib's SVG backend, no display needed)."""
    try:
        from matplotlib import rc_context
        from matplotlib.figure import Figure as MplFigure
    except ImportError as exc:
        raise CharlstmError(f"pictures of curves need matplotlib: pip install '{SVG_EXTRA}' ({exc})") from None
    fig = MplFigure(figsize=(9, 5), layout="constrained")
    ax = fig.subplots()
    for i, run in enumerate(series):
        colour = PICTURE_COLOURS[i % len(PICTURE_COLOURS)]
        if run["train"]:
            ax.plot(
                *zip(*run["train"], strict=True), color=colour, linewidth=1, alpha=0.65, label=f"{run['name']} train"
            )
        if run["val"]:
            ax.plot(
                *zip(*run["val"], strict=True),
                color=colour,
                linewidth=2.2,
                marker="o",
                markersize=4,
                label=f"{run['name']} val",
            )
    ax.set_title(title)
    ax.set_xlabel(X_LABELS[x])
    ax.set_ylabel("bits per character")
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend(loc="upper right", frameon=True)
    out = io.StringIO()
    # No date and a fixed id salt: the same runs give the same file (docs/ keeps one under git).
    # Text stays text (searchable, small), in the viewer's sans-serif font.
    with rc_context({"svg.hashsalt": "charlstm", "svg.fonttype": "none"}):
        fig.savefig(out, format="svg", metadata={"Date": None})
    return out.getvalue()
