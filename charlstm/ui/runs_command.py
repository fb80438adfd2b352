"""`charlstm runs`: the table of runs, their curves in the terminal or as a picture, and the small
curve that ends a finished `train` on a terminal. Rows and points come from runs.py, figures from
curves.py; this module only renders them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..core.errors import CharlstmError, one_line_text, shown_path
from ..core.userio import write_output
from ..training.curves import draw_curves, draw_picture
from ..training.runs import DAMAGED, FINISHED, STOPPED, TRAINING, X_AXES, curve_series, find_runs, newest_run

DEFAULT_FOLDER = "checkpoints"
STATUS_STYLE = {FINISHED: "green", STOPPED: "yellow", TRAINING: "bold cyan", DAMAGED: "bold red"}


def show_runs(
    paths: list[str] | None, *, plot: bool, x: str, svg: str | None, html: str | None, json_out: bool, err: Console
) -> None:
    """The table of the runs in a folder, or (--plot, --svg, --html) the curves of the runs named."""
    if x not in X_AXES:
        raise CharlstmError(f"--x {x!r}: choose one of {', '.join(X_AXES)}")
    if plot or svg is not None or html is not None:
        plot_runs(paths, x=x, svg=svg, html=html, json_out=json_out, err=err)
        return
    if paths and len(paths) > 1:
        raise CharlstmError("give one folder of runs (several runs go with --plot)")
    folder = paths[0] if paths else DEFAULT_FOLDER
    # No checkpoints/ here is no runs yet; a FOLDER named that is missing is a mistake.
    rows = [] if not paths and not Path(folder).is_dir() else find_runs(folder)
    if json_out:
        typer.echo(json.dumps(rows))
    elif not rows:
        err.print(f"no runs in {escape(shown_path(folder))}", highlight=False)
    else:
        # A pipe gets whole lines (rich would fit 80 columns); a terminal gets its own width.
        out = err if err.is_terminal else Console(file=err.file, width=200, highlight=False)
        out.print(runs_table(rows))
        for note in runs_notes(rows):
            err.print(note, soft_wrap=True, highlight=False)


def runs_table(rows: list[dict]) -> Table:
    """One line per run; what a stopped or damaged run needs said comes under the table (runs_notes)."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    numeric = ("steps", "epoch", "best val", "train", "min")
    for column in ("run", "model", "data", "steps", "epoch", "best val", "train", "backend", "min", "status"):
        table.add_column(column, justify="right" if column in numeric else "left", no_wrap=column != "data")
    for row in rows:
        backend = "/".join(str(v) for v in (row["precision"], row["device"]) if v)
        table.add_row(
            Text(row["name"]),
            Text(row["model"] or "?"),
            Text(row["dataset"] or "?"),
            f"{row['steps']:,}",
            _number(row["epoch"], "{}"),
            _number(row["best_val_bpc"], "{:.4f}"),
            _number(row["train_bpc"], "{:.3f}"),
            Text(backend or "?"),
            _number(row["minutes"], "{:.1f}"),
            Text(row["status"], style=STATUS_STYLE.get(row["status"], "")),
        )
    return table


def runs_notes(rows: list[dict]) -> list[Text]:
    """'NAME: resume with: ...', 'NAME: in use by PID N', 'NAME: latest.pt is not a whole checkpoint...'."""
    return [
        Text.assemble((f"{row['name']}: ", "bold"), (row["note"], STATUS_STYLE.get(row["status"], "")))
        for row in rows
        if row.get("note")
    ]


def _number(value, form: str) -> str:
    return "–" if value is None else form.format(value)


def plot_runs(
    paths: list[str] | None, *, x: str, svg: str | None, html: str | None, json_out: bool, err: Console
) -> None:
    """The runs' bpc curves overlaid: on the terminal (stderr), and as an SVG picture or an HTML page."""
    runs = paths or [str(newest_run(DEFAULT_FOLDER))]
    series = [curve_series(path, x) for path in runs]
    names = [s["name"] for s in series]
    for s in series:  # two runs of the same name in different folders: tell them apart by path
        if names.count(s["name"]) > 1:
            s["name"] = s["path"]
    for s in series:
        for problem in s["problems"]:
            err.print(
                f"[yellow]warning:[/yellow] {escape(shown_path(s['path']))}: {escape(one_line_text(problem))}",
                highlight=False,
            )
    if json_out:
        typer.echo(json.dumps([{k: s[k] for k in ("name", "path", "x", "train", "val")} for s in series]))
    if svg is not None or html is not None:
        picture = draw_picture(series, x)
        if svg is not None:
            write_output(svg, picture.encode("utf-8"))
            err.print(f"wrote {escape(shown_path(svg))}", highlight=False)
        if html is not None:
            write_output(html, figure_page(picture, "charlstm runs: " + ", ".join(names)).encode("utf-8"))
            err.print(f"wrote {escape(shown_path(html))}", highlight=False)
    if not json_out or err.is_terminal:
        width, height = shutil.get_terminal_size((100, 30))
        figure = draw_curves(series, x, min(width, 120), max(16, min(height - 4, 32)))
        _print_figure(err, figure)


def _print_figure(console: Console, figure) -> None:
    # plotext's own colour codes, kept as they are on a terminal; plain text elsewhere (a pipe, a test).
    if console.is_terminal:
        console.print(Text.from_ansi(figure.text), soft_wrap=True)
    else:
        console.print(Text(figure.plain), soft_wrap=True, highlight=False)


def figure_page(svg: str, title: str) -> str:
    """The picture inline in a page of its own (no files beside it, nothing fetched)."""
    svg = svg[svg.index("<svg") :]  # the XML declaration and doctype belong to a file, not a page
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{_html_escape(title)}</title></head>\n'
        f'<body style="margin:1em">\n{svg}\n</body></html>\n'
    )


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def report_training(summary: dict, json_output: bool, err: Console) -> None:
    """The end of `charlstm train`: JSON on stdout, or the 'done' line; on a terminal, the run's curve."""
    if json_output:
        typer.echo(json.dumps(summary))
    else:
        val, best = summary["val_bpc"], summary["best_val_bpc"]
        scores = f", validation {val:.4f} bpc (best {best:.4f})" if val is not None and best is not None else ""
        err.print(
            f"done: {summary['steps']:,} steps{scores}; run in {escape(shown_path(summary['run_dir']))}",
            highlight=False,
        )
    if err.is_terminal:
        try:
            series = curve_series(Path(summary["run_dir"]))
        except CharlstmError:
            return  # nothing logged to draw (a run of a few steps): the line above says how it went
        width = min(shutil.get_terminal_size((80, 24)).columns, 80)
        _print_figure(err, draw_curves([series], "steps", width, 14, title=None))
