"""`charlstm train`'s terminal side: the run's events drawn on stderr (its progress bar and
messages), Ctrl-C's resume command, and the report that ends it."""

from __future__ import annotations

import os

import typer
from rich.console import Console
from rich.markup import escape

from ..core.errors import one_line_text
from .terminal import Terminal


def run_training(
    options: dict,
    *,
    resume: bool,
    force: bool,
    tensorboard: str | None,
    new_data: bool,
    json_output: bool,
    err: Console,
) -> None:
    """Train (train_setup.train) with its events shown on stderr; on Ctrl-C, say how to resume and exit 130."""
    from ..core.stopping import TrainingInterrupted
    from ..training.train_setup import train
    from .eval_command import syntax_line, training_syntax
    from .runs_command import report_training  # the 'done' line, and on a terminal the run's curve

    try:
        with Terminal(labels=False) as show:
            summary = train(
                options, resume=resume, force=force, tensorboard=tensorboard, new_data=new_data, on_event=show
            )
    except TrainingInterrupted as exc:
        err.print(f"[yellow]{escape(one_line_text(str(exc)))}[/yellow]", highlight=False, soft_wrap=True)
        raise typer.Exit(code=130) from None
    if summary.get("world_size", 1) > 1 and os.environ.get("RANK", "0") != "0":
        return  # only rank 0 reports
    summary["syntax"] = training_syntax(summary["run_dir"])
    report_training(summary, json_output, err)
    if summary["syntax"] is not None and not json_output:
        err.print(syntax_line(summary["syntax"]), highlight=False, soft_wrap=True)
