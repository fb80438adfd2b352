"""Colouring text by activation values, in the terminal (rich) — the article's neuron view.

Each character's background shows one unit's value at that character: red for negative, blue for
positive, white for zero (hidden state and candidate on −1..1; the cell state, which is unbounded,
scaled by its largest magnitude in the text shown). Gates live on 0..1 and get a sequential scale,
white (closed) to dark blue (open). Whitespace is drawn as dim marks (· for a space, → for a tab,
↵ before a newline) so that an indentation or space-counting neuron can be seen at work.

The same colour functions serve the HTML explorer, so terminal and browser agree; the range each
signal spans is scales.py's. The tables commands print (ingest's summary, inspect-neuron's --find,
--stats, --ablate and --top-contexts) are here too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.text import Text

from ..analysis.interventions import CLASSES
from ..analysis.scales import value_range
from ..core.engine import GATES
from ..core.vocab import NEWLINE_MARK

# ColorBrewer RdBu / Blues end points: readable on light and dark terminals alike.
NEUTRAL = (247, 247, 247)
RED = (178, 24, 43)
BLUE = (33, 102, 172)
GATE_LOW = (247, 251, 255)
GATE_HIGH = (8, 48, 107)

# How whitespace and control characters are drawn so that they stay visible.
VISIBLE = {" ": "·", "\t": "→", "\x1c": "␜", "\r": "␍"}


def _mix(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> tuple[int, int, int]:
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def colour_of(value: float, signal: str, scale: float = 1.0) -> tuple[int, int, int]:
    """RGB background for one value. `scale` is the value shown at full colour (signed signals)."""
    value = float(value)
    if not math.isfinite(value):
        return NEUTRAL
    if signal in GATES:
        return _mix(GATE_LOW, GATE_HIGH, min(max(value, 0.0), 1.0))
    t = min(abs(value) / (scale or 1.0), 1.0)
    return _mix(NEUTRAL, RED if value < 0 else BLUE, t)


def ink_on(rgb: tuple[int, int, int]) -> str:
    """Black or white text, whichever reads better on the background."""
    r, g, b = rgb
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "white"


def hex_colour(rgb: tuple[int, int, int]) -> str:
    """`#rrggbb`, as rich and HTML take a colour."""
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def colour_text(
    text: str, values: Sequence[float], signal: str, scale: float | None = None, newlines: bool = True
) -> Text:
    """`text` with each character on a background coloured by its value of `signal`.

    `scale` overrides the magnitude drawn at full colour for the cell state (default: the largest
    |value| among `values`). Whitespace is drawn with dim marks; the text is never read as markup.
    With `newlines=False` a newline is only marked (↵), keeping a snippet on one line.
    """
    if len(values) != len(text):
        raise ValueError(f"{len(text)} characters but {len(values)} values")
    if scale is None:
        scale = value_range(signal, values)[1]
    out = Text(no_wrap=False)
    for ch, v in zip(text, values, strict=True):
        append_on_colour(out, ch, colour_of(v, signal, scale), newlines)
    return out


def append_on_colour(out: Text, ch: str, bg, newlines: bool = True) -> None:
    """Append one character to `out` on the background colour `bg`, whitespace and control
    characters drawn as dim marks (a newline as ↵, followed by a real one if `newlines`)."""
    style = f"{ink_on(bg)} on {hex_colour(bg)}"
    if ch == "\n":
        out.append(NEWLINE_MARK, style=style + " dim")
        if newlines:
            out.append("\n")
    elif ch in VISIBLE:
        out.append(VISIBLE[ch], style=style + " dim")
    elif not ch.isprintable():
        out.append("?", style=style + " dim")
    else:
        out.append(ch, style=style)


def print_coloured(console, text: str, values: Sequence[float], signal: str, scale: float, piece: int = 8192) -> None:
    """Print `text` coloured by `values` a piece at a time, each cut after a newline where there
    is one: a rich Text keeps every character's style until it is printed, which for a long text
    would cost more memory than the trace that coloured it."""
    start = 0
    while start < len(text):
        end = min(start + piece, len(text))
        last_newline = text.rfind("\n", start, end)
        if end < len(text) and last_newline >= 0:
            end = last_newline + 1
        console.print(colour_text(text[start:end], values[start:end], signal, scale=scale), end="")
        start = end
    if not text.endswith("\n"):
        console.print()


def legend(signal: str, scale: float | None = None, width: int = 15) -> Text:
    """A one-line colour bar with its end values, e.g. ``hidden −1 ▇▇▇…▇▇▇ +1``."""
    if signal in GATES:
        low, high, words = 0.0, 1.0, ("closed", "open")
    else:
        high = scale if scale is not None else value_range(signal)[1]
        low, words = -high, ("", "")
    out = Text()
    out.append(f"{signal} ", style="bold")
    out.append(f"{words[0]} {low:.3g} ".lstrip())
    for k in range(width):
        v = low + (high - low) * k / (width - 1)
        out.append(" ", style=f"on {hex_colour(colour_of(v, signal, high))}")
    out.append(f" {high:{'g' if signal in GATES else '+.3g'}} {words[1]}".rstrip())
    if signal == "cell":
        out.append(" (largest |value| shown)", style="dim")
    out.append("  ·space →tab ↵newline", style="dim")
    return out


# ----- tables for `inspect-neuron --find` and `--stats` ------------------------------------------


def feature_snippet(text: str, feature: Sequence[float]) -> Text:
    """The feature itself drawn like a signed signal scaled by its largest |value| (0 stays white)."""
    return colour_text(text, feature, "feature", newlines=False)


def find_table(feature_name: str, units, snippets, feature, text: str, window: tuple[int, int], title: str, extra=()):
    """A ranked table of units, each with a one-line snippet of the text coloured by its activation.

    `units` are objects with layer (1-based), neuron, signal, score; `snippets` holds for each unit
    its values over `window` and the value drawn at full colour (the cell's over the whole text);
    `extra` holds more columns after the score, as (header, one cell per unit).
    """
    from rich.table import Table

    start, end = window
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("#", justify="right", style="dim", no_wrap=True)
    table.add_column("layer", justify="right", no_wrap=True)
    table.add_column("neuron", justify="right", no_wrap=True)
    table.add_column("signal", no_wrap=True)
    table.add_column("score", justify="right", no_wrap=True)
    for header, cells in extra:
        table.add_column(Text(header), justify="right", no_wrap=True, min_width=max(len(header), *map(len, cells)))
    table.add_column(f"characters {start}–{end}", no_wrap=True, overflow="crop")
    blanks = [""] * len(extra)
    snippet = feature_snippet(text[start:end], feature[start:end])
    table.add_row("", "", "", Text(feature_name), "", *blanks, snippet, style="italic")  # a regex is no markup
    for rank, (unit, (values, scale)) in enumerate(zip(units, snippets, strict=True), 1):
        snippet = colour_text(text[start:end], values, unit.signal, scale=scale, newlines=False)
        colour = "blue" if unit.score > 0 else "red"
        cells = [column[rank - 1] for _, column in extra]
        table.add_row(
            str(rank),
            str(unit.layer),
            str(unit.neuron),
            unit.signal,
            f"[{colour}]{unit.score:+.3f}[/{colour}]",
            *cells,
            snippet,
        )
    return table


def stats_table(rows: list[dict], title: str):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for name, justify in (
        ("layer", "right"),
        ("gate", "left"),
        ("left <0.1", "right"),
        ("right >0.9", "right"),
        ("mostly left", "right"),
        ("mostly right", "right"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)
    table.caption = "share of time each gate is saturated, averaged over units; units saturated > 50 % of the time"
    for r in rows:
        table.add_row(
            str(r["layer"]),
            r["gate"],
            f"{100 * r['left_saturated']:.1f}%",
            f"{100 * r['right_saturated']:.1f}%",
            f"{r['units_mostly_left']}/{r['units']}",
            f"{r['units_mostly_right']}/{r['units']}",
        )
    return table


def ingest_table(report: dict):
    """The terminal summary of an ingest (rich renderable, printed on stderr by the CLI)."""
    from rich.markup import escape
    from rich.table import Table

    from ..core.errors import shown_path

    table = Table(title=f"dataset {escape(shown_path(report['path']))}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row(
        "files kept", f"{report['files_kept']:,} ({report['train_files']:,} train, {report['val_files']:,} val)"
    )
    for reason, n in report["files_skipped"].items():
        table.add_row(f"skipped: {reason}", f"{n:,}")
    table.add_row("train characters", f"{report['train_chars']:,}")
    table.add_row("val characters", f"{report['val_chars']:,}")
    table.add_row("vocabulary", f"{report['vocab_size']} symbols ({report['dtype']})")
    table.add_row("unknown-symbol rate", f"{report['unk_rate']:.4%}")
    if report["invalid_bytes"]:
        table.add_row("invalid UTF-8 bytes", f"{report['invalid_bytes']:,} (replaced by U+FFFD)")
    table.add_row("language", str(report["language"]))
    table.add_row("time", f"{report['seconds']:.2f} s ({report['mb_per_s']:.1f} MB/s)")
    return table


# ----- inspect-neuron --ablate, --find --causal and --top-contexts ------------------------------


def signed(value: float | None, digits: int = 4) -> str:
    """A difference in bits, signed; blank where there is none."""
    return "" if value is None else f"{value:+.{digits}f}"


def ablation_table(report: dict, title: str):
    """Per class of character: how many, bpc as is, the change with the ablation, the control's."""
    from rich.table import Table

    control = report["controls"][0]
    table = Table(title=title, title_justify="left")
    for name, justify in (
        ("characters", "left"),
        ("count", "right"),
        ("bpc", "right"),
        ("Δ ablated", "right"),
        ("Δ control, mean", "right"),
        ("Δ control, max", "right"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)
    delta = report["ablations"][0]["delta"]
    for name in ("all", *CLASSES):
        if not report["counts"][name]:
            continue
        base = report["baseline_bpc"][name]
        table.add_row(
            name if name != "all" else "[bold]all[/bold]",
            f"{report['counts'][name]:,}",
            f"{base:.3f}",
            signed(delta[name]),
            signed(control["delta_mean"][name]),
            signed(control["delta_max"][name]),
        )
    layers = ", ".join(f"{n} in layer {layer}" for layer, n in control["layers"].items())
    table.caption = (
        f"Δ: bits per character with the ablation minus without. Control: {len(control['groups'])} random groups of "
        f"units ({layers}), each ablated like the units, seed {report['seed']}. Classes: leading indentation, then "
        "inside strings, comments, bracket characters, the rest."
    )
    return table


def own_header(feature: str) -> str:
    return f"Δ {feature}" if len(feature) <= 10 else "Δ feature"


def causal_columns(report: dict, units) -> list[tuple[str, list[str]]]:
    """The columns `--find --causal` adds to the ranking: Δ bpc on all characters and on the feature's."""
    columns = [("Δ all", [signed(report["by_unit"][(u.layer, u.neuron)]["delta"]["all"]) for u in units])]
    if "own" in report["counts"]:
        own = [signed(report["by_unit"][(u.layer, u.neuron)]["delta"]["own"]) for u in units]
        columns.append((own_header(report["feature"]), own))
    return columns


def causal_caption(report: dict) -> str:
    from rich.markup import escape

    feature = escape(report["feature"])  # a regex is no markup
    parts = []
    for control in report["controls"]:
        [layer] = control["layers"]
        own = f", Δ {feature} {signed(control['delta_mean']['own'])}" if "own" in report["counts"] else ""
        parts.append(f"layer {layer}: Δ all {signed(control['delta_mean']['all'])}{own}")
    n = len(report["controls"][0]["groups"]) if report["controls"] else 0
    return (
        f"Δ: bits per character with the unit ablated (zero at every step) minus without, over "
        f"{report['chars']:,} characters"
        + (f", {report['counts']['own']:,} of them {feature}'s" if "own" in report["counts"] else "")
        + f". Control, the mean of {n} random units of the layer ablated alone: "
        + "; ".join(parts)
        + "."
    )


def contexts_view(result: dict, source: str, width: int = 100):
    """Rich renderables: each side's windows coloured by the unit, the peak character underlined;
    on a console `width` columns wide, a window loses characters from its start to fit."""
    from rich.table import Table

    signal = result["signal"]
    scale = value_range(signal, [result["largest"]])[1]
    views = []
    for side, word in (("positive", "highest"), ("negative", "lowest")):
        table = Table(
            title=f"Layer {result['layer']}, neuron {result['neuron']}, {signal}: its {word} values over {source}",
            title_justify="left",
        )
        entries = result[side]
        # Only the context gives way on a narrow terminal: the other columns keep their width.
        wide = lambda cells, header: max([len(header), *map(len, cells)])  # noqa: E731
        places = [f"{e['line']}:{e['column']}" for e in entries]
        chars = [f"{e['position']:,}" for e in entries]
        values = [f"{e['value']:+.3f}" for e in entries]
        widths = [len(str(len(entries))), wide(values, "value"), wide(places, "line:col"), wide(chars, "char")]
        room = max(16, width - sum(widths) - 3 * (len(widths) + 1) - 1)  # cells are padded by 1, ruled by 1
        for header, w in zip(("#", "value", "line:col", "char"), widths, strict=True):
            table.add_column(header, justify="right", no_wrap=True, min_width=w, style="dim" if header == "#" else None)
        table.add_column("context (the peak underlined)", no_wrap=True, overflow="crop")
        for rank, entry in enumerate(entries, 1):
            cut = max(0, len(entry["text"]) - room)
            snippet = colour_text(entry["text"][cut:], entry["values"][cut:], signal, scale=scale, newlines=False)
            peak = entry["position"] - entry["start"] - cut
            snippet.stylize("underline bold", peak, peak + 1)
            colour = "blue" if entry["value"] > 0 else "red"
            table.add_row(
                str(rank),
                f"[{colour}]{entry['value']:+.3f}[/{colour}]",
                places[rank - 1],
                chars[rank - 1],
                snippet,
            )
        views.append(table)
    if result.get("lanes"):
        views[-1].caption = lanes_caption(result["lanes"])
    return views


def _lanes_named(lanes: list[int]) -> str:
    shown = ", ".join(str(lane) for lane in lanes[:5]) + (" …" if len(lanes) > 5 else "")
    return f"lane{'s' if len(lanes) > 1 else ''} {shown}"


def lanes_caption(lanes: dict) -> str:
    """How --top-contexts traced a long text (`unit_top_contexts`' "lanes")."""
    count, passes = lanes["lanes"], lanes["passes"]
    if lanes["retraced"]:
        return f"traced in one piece: {count} lanes did not join for this unit after {passes} passes"
    again = lanes.get("traced_again") or []
    how = (
        f"{_lanes_named(again)} traced again from the last state of the lane before, in {passes - 1} "
        f"round{'s' if passes > 2 else ''}"
        if again
        else "one pass"
    )
    return f"traced in {count} lanes ({how}); they joined for this unit: the values are the trace in one piece's"
