"""`charlstm runs`: its options, and the call they make."""

from __future__ import annotations

from typing import Annotated

import typer

from .guard import err, user_errors

Runs = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="[FOLDER | RUN...]",
        help=(
            "A folder of runs (default: checkpoints/); with --plot, the run folders to draw (default: the newest run)."
        ),
        show_default=False,
    ),
]

Plot = Annotated[
    bool,
    typer.Option(
        "--plot",
        help="Draw training and validation bpc of the runs, overlaid with a legend, in the terminal.",
        rich_help_panel="Curves",
    ),
]

XAxis = Annotated[
    str,
    typer.Option(
        "--x",
        help="The curves' x-axis: steps, chars (characters trained on) or minutes (of training, validation excluded).",
        rich_help_panel="Curves",
    ),
]

Svg = Annotated[
    str | None,
    typer.Option(
        "--svg",
        metavar="FILE",
        help="Also write the figure as an SVG picture (implies --plot).",
        rich_help_panel="Curves",
        show_default=False,
    ),
]

Html = Annotated[
    str | None,
    typer.Option(
        "--html",
        metavar="FILE",
        help="Also write the figure as an HTML page (implies --plot).",
        rich_help_panel="Curves",
        show_default=False,
    ),
]

JsonOut = Annotated[
    bool, typer.Option("--json", help="Print the rows (with --plot: the curves' points) as JSON on stdout.")
]


@user_errors
def runs_command(
    runs: Runs = None,
    plot: Plot = False,
    x: XAxis = "steps",
    svg: Svg = None,
    html: Html = None,
    json_out: JsonOut = False,
) -> None:
    """List the runs in a folder, oldest first: model, data, steps, best validation bpc, training time, and whether each finished, stopped (with the command that resumes it), is training now (the PID), or is damaged (and how)."""  # noqa: E501
    from .runs_command import show_runs

    show_runs(runs, plot=plot, x=x, svg=svg, html=html, json_out=json_out, err=err)
