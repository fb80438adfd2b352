"""The command line: each command wires its options to a library function, nothing more.

Domain errors (CharlstmError) become one red line on stderr and exit code 1.
"""

from __future__ import annotations

import functools
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from charlstm import __version__
from charlstm.errors import CharlstmError

app = typer.Typer(
    name="charlstm",
    help="Character-level LSTMs that learn to write code, and the tools to look inside them.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
# Messages, tables and progress go to stderr; generated text and --json go to stdout.
err = Console(stderr=True)


def fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


def user_errors(command):
    """Turn domain errors into a one-line message and a non-zero exit, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CharlstmError as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/yellow]")
            raise typer.Exit(code=130) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"charlstm {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = None,
) -> None:
    """Character-level LSTMs that learn to write code, and the tools to look inside them."""


# Commands follow, one section each, in pipeline order: ingest, train, eval, sample,
# inspect-neuron, experiment.


# ----- experiment --------------------------------------------------------------------------------

import json  # noqa: E402
from pathlib import Path  # noqa: E402


@app.command("experiment", rich_help_panel="Inspect")
@user_errors
def experiment_command(
    name: Annotated[
        str, typer.Argument(help="counter | selective-counter | state | copy | all (the four, then one table).")
    ],
    seed: Annotated[int, typer.Option(help="Seed for data, initial weights and evaluation prompts.")] = 0,
    steps: Annotated[
        Optional[int], typer.Option(help="Training steps (default: each study's own, about a minute in all).")
    ] = None,
    max_n: Annotated[
        Optional[int], typer.Option(help="Largest N (or length) in the training data (default 10, as the article).")
    ] = None,
    eval_max_n: Annotated[
        Optional[int], typer.Option(help="Judge every N from 1 to this (default: each study's own, past training).")
    ] = None,
    out_dir: Annotated[
        Path, typer.Option(help="Runs are kept in OUT_DIR/experiment-NAME/ (best.pt and results.json).")
    ] = Path("checkpoints"),
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the results as one JSON object on stdout (for all: keyed by study).")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or per-study report.")] = False,
) -> None:
    """Reproduce the source article's small studies: train a tiny LSTM on a synthetic language,
    judge its greedy generations, and show the units that solve it (layers numbered from 1)."""
    from charlstm.experiments import run_experiments, strip_views

    results = run_experiments(
        name, err, quiet=quiet, seed=seed, out_dir=out_dir, steps=steps, max_n=max_n, eval_max_n=eval_max_n
    )
    if json_out:
        payload = {k: strip_views(v) for k, v in results.items()} if name == "all" else strip_views(results[name])
        typer.echo(json.dumps(payload))
